/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Running a block job from the tool: wait for its events on the engine's
 * event fd, show progress, pivot a copy at MIRRORING, and stop it cleanly
 * on SIGINT/SIGTERM (tool_signals_install()).
 */
#ifndef BC_TOOLS_JOB_RUN_H
#define BC_TOOLS_JOB_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/blockcopy.h"

struct job_run {
	bc_engine *eng;
	bc_disk *disk;
	bool progress;       /* show a progress bar (a line per second off a tty) */
	bool pivot;          /* copy: pivot at MIRRORING (else abort after it) */
	/* results */
	int status;          /* final event status, -1 if none */
	bc_error err;        /* the FAILED event's error */
	uint64_t bytes;      /* job's end when it finished */
	double seconds;      /* start to final event */
	double mirroring_s;  /* copy: start to MIRRORING, -1 if never */
	bool interrupted;
	bool line_open;      /* a progress frame is drawn on a terminal, no newline yet */
};

/*
 * Wait for the job on run->disk to end; returns 0 when it completed,
 * -1 otherwise (run->status / run->err / run->interrupted say why).
 */
int job_run_wait(struct job_run *run);

#endif /* BC_TOOLS_JOB_RUN_H */
