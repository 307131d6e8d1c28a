/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * throttle-probe: run one COPY job with a bandwidth limit and print the
 * job's progress every 10 ms, so that bench/run can judge the throttle
 * over 1-second windows: the job's own counter (bc_get_block_job_info)
 * and, measured from outside, the destination file's allocated bytes
 * (st_blocks), read every 100 ms.
 *
 * Usage: throttle-probe [--direct | --buffered] SRC DST RATE_BYTES_PER_S
 * Without an option the engine chooses the data path (the default path);
 * with --direct the source disk and the destination are O_DIRECT; with
 * --buffered the destination goes through the page cache with
 * write-behind (BC_BLOCK_COPY_BUFFERED, the tool's --buffered).
 * Output: one line "t_seconds cur end" per sample, one line
 * "alloc t_seconds bytes" per 100 ms, then "method NAME", "mirroring T"
 * and "completed T" lines. Exit 0 when the job pivoted, 1 otherwise.
 */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	unsigned int dflags = BC_DISK_READONLY, copy_flags = 0;
	bool pivot_sent = false;
	bc_engine *eng;
	bc_disk *disk;
	double start, next_alloc = 0;
	int i = 1, fd;

	if (argc > 1 && !strcmp(argv[1], "--direct")) {
		dflags |= BC_DISK_DIRECT;
		copy_flags = BC_BLOCK_COPY_DIRECT;
		i++;
	} else if (argc > 1 && !strcmp(argv[1], "--buffered")) {
		copy_flags = BC_BLOCK_COPY_BUFFERED;
		i++;
	}
	if (argc - i != 3) {
		fprintf(stderr,
			"usage: throttle-probe [--direct | --buffered] SRC DST RATE\n");
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
	if (bc_block_copy(disk, argv[i + 1], &params, copy_flags) < 0) {
		fprintf(stderr, "copy: %s\n", bc_last_error()->message);
		return 1;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		bc_block_job_info info;

		double t;

		(void)poll(&pfd, 1, 10);
		if (bc_engine_dispatch(eng, 0) < 0)
			return 1;
		t = now_s() - start;
		if (t >= next_alloc) {
			struct stat st;

			if (stat(argv[i + 1], &st) == 0)
				printf("alloc %.6f %llu\n", t,
				       (unsigned long long)st.st_blocks * 512);
			next_alloc += 0.1;
		}
		if (bc_get_block_job_info(disk, &info,
					  BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES) == 1)
			printf("%.6f %llu %llu\n", now_s() - start,
			       (unsigned long long)info.cur,
			       (unsigned long long)info.end);
		if (last_status == BC_BLOCK_JOB_MIRRORING && !pivot_sent) {
			printf("method %s\n", bc_block_job_copy_method(disk));
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
