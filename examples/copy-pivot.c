/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Live storage migration in one page: open a disk, start a COPY job to a
 * new image, wait on the engine's event fd for MIRRORING, pivot, and wait
 * for COMPLETED. The disk then lives on the copy.
 *
 *   copy-pivot SRC DST
 *
 * Built only against the installed header and library
 * (pkg-config --cflags --libs blockcopy). Exit 0 when the disk pivoted.
 */
#include <blockcopy.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>

struct progress {
	int mirroring; /* MIRRORING seen */
	int ended;     /* COMPLETED, FAILED or CANCELED seen */
	int status;    /* the final status */
};

/* Runs on the thread that calls bc_engine_dispatch(): here, main's. */
static void on_event(bc_engine *engine, bc_disk *disk, const char *path,
		     int type, int status, void *opaque)
{
	struct progress *p = opaque;

	(void)engine;
	(void)disk;
	(void)type;
	printf("event on %s: %s\n", path,
	       status == BC_BLOCK_JOB_MIRRORING ? "mirroring" :
	       status == BC_BLOCK_JOB_COMPLETED ? "completed" :
	       status == BC_BLOCK_JOB_CANCELED  ? "canceled" : "failed");
	if (status == BC_BLOCK_JOB_MIRRORING) {
		p->mirroring = 1;
	} else {
		if (status == BC_BLOCK_JOB_FAILED)
			fprintf(stderr, "copy-pivot: %s\n",
				bc_last_error()->message);
		p->ended = 1;
		p->status = status;
	}
}

/* Sleep on the event fd until something is queued, then deliver it. */
static int wait_events(bc_engine *eng)
{
	struct pollfd pfd = { .fd = bc_engine_event_fd(eng), .events = POLLIN };

	if (poll(&pfd, 1, 60 * 1000) <= 0) {
		fprintf(stderr, "copy-pivot: no event within 60 s\n");
		return -1;
	}
	return bc_engine_dispatch(eng, 0);
}

int main(int argc, char **argv)
{
	struct progress p = { 0, 0, -1 };
	bc_engine *eng;
	bc_disk *disk;
	int ret = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: copy-pivot SRC DST\n");
		return 2;
	}
	eng = bc_engine_new(0);
	if (!eng || bc_engine_event_register(eng, on_event, &p) < 0) {
		fprintf(stderr, "copy-pivot: %s\n", bc_last_error()->message);
		return 1;
	}
	disk = bc_disk_open(eng, argv[1], NULL, 0); /* NULL: probe the format */
	if (!disk) {
		fprintf(stderr, "copy-pivot: %s\n", bc_last_error()->message);
		goto out_engine;
	}
	/* NULL params: unlimited bandwidth, default granularity and buffers. */
	if (bc_block_copy(disk, argv[2], NULL, 0) < 0) {
		fprintf(stderr, "copy-pivot: %s\n", bc_last_error()->message);
		goto out_disk;
	}
	while (!p.mirroring && !p.ended)
		if (wait_events(eng) < 0)
			goto out_disk;
	if (p.mirroring && !p.ended &&
	    bc_block_job_abort(disk, BC_BLOCK_JOB_ABORT_PIVOT) < 0) {
		fprintf(stderr, "copy-pivot: %s\n", bc_last_error()->message);
		goto out_disk;
	}
	/* The pivot is synchronous; COMPLETED still arrives as an event. */
	while (!p.ended)
		if (wait_events(eng) < 0)
			goto out_disk;
	if (p.status == BC_BLOCK_JOB_COMPLETED &&
	    strcmp(bc_disk_path(disk), argv[2]) == 0) {
		printf("the disk now lives on %s\n", bc_disk_path(disk));
		ret = 0;
	}
out_disk:
	/* A job still running (we gave up waiting) must end before close. */
	if (!p.ended && bc_get_block_job_info(disk, &(bc_block_job_info){ 0 }, 0) == 1)
		(void)bc_block_job_abort(disk, 0);
	if (bc_disk_close(disk) < 0) {
		fprintf(stderr, "copy-pivot: %s\n", bc_last_error()->message);
		ret = 1;
	}
out_engine:
	bc_engine_free(eng);
	return ret;
}
