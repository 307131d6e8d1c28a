/*
 * throttle-probe: run one COPY job with a bandwidth limit and print the
 * job's progress every 10 ms, so that bench/run can judge the throttle
 * over 1-second windows. The progress counter is only reachable through
 * the API (bc_get_block_job_info), which is why this is a program and not
 * a sampling of the destination file's size.
 *
 * Usage: throttle-probe [--direct] SRC DST RATE_BYTES_PER_S
 * Output: one line "t_seconds cur end" per sample, then "mirroring T" and
 * "completed T" lines. Exit 0 when the job pivoted, 1 otherwise.
 */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/blockcopy.h"

static int last_status = -1;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_event(bc_engine *eng, bc_disk *disk, const char *path,
		     int type, int status, void *opaque)
{
	(void)eng;
	(void)disk;
	(void)path;
	(void)type;
	(void)opaque;
	last_status = status;
}

int main(int argc, char **argv)
{
	bc_block_copy_params params = { 0 };
	unsigned int dflags = BC_DISK_READONLY;
	bool pivot_sent = false;
	bc_engine *eng;
	bc_disk *disk;
	double start;
	int i = 1, fd;

	if (argc > 1 && !strcmp(argv[1], "--direct")) {
		dflags |= BC_DISK_DIRECT;
		i++;
	}
	if (argc - i != 3) {
		fprintf(stderr, "usage: throttle-probe [--direct] SRC DST RATE\n");
		return 2;
	}
	params.bandwidth = strtoull(argv[i + 2], NULL, 10);
	eng = bc_engine_new(0);
	if (!eng)
		return 1;
	disk = bc_disk_open(eng, argv[i], NULL, dflags);
	if (!disk) {
		fprintf(stderr, "open: %s\n", bc_last_error()->message);
		return 1;
	}
	if (bc_engine_event_register(eng, on_event, NULL) < 0)
		return 1;
	fd = bc_engine_event_fd(eng);
	start = now_s();
	if (bc_block_copy(disk, argv[i + 1], &params, 0) < 0) {
		fprintf(stderr, "copy: %s\n", bc_last_error()->message);
		return 1;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		bc_block_job_info info;

		(void)poll(&pfd, 1, 10);
		if (bc_engine_dispatch(eng, 0) < 0)
			return 1;
		if (bc_get_block_job_info(disk, &info,
					  BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES) == 1)
			printf("%.6f %llu %llu\n", now_s() - start,
			       (unsigned long long)info.cur,
			       (unsigned long long)info.end);
		if (last_status == BC_BLOCK_JOB_MIRRORING && !pivot_sent) {
			printf("mirroring %.6f\n", now_s() - start);
			pivot_sent = true;
			if (bc_block_job_abort(disk, BC_BLOCK_JOB_ABORT_PIVOT) < 0) {
				fprintf(stderr, "pivot: %s\n",
					bc_last_error()->message);
				return 1;
			}
		} else if (last_status == BC_BLOCK_JOB_COMPLETED) {
			printf("completed %.6f\n", now_s() - start);
			break;
		} else if (last_status == BC_BLOCK_JOB_FAILED ||
			   last_status == BC_BLOCK_JOB_CANCELED) {
			fprintf(stderr, "job ended with status %d\n", last_status);
			return 1;
		}
	}
	if (bc_disk_close(disk) < 0)
		return 1;
	bc_engine_free(eng);
	return 0;
}
