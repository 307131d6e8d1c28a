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
 * A new engine and @path opened on it as run->disk (@format NULL: probe;
 * @disk_flags BC_DISK_*), then the tool's signal handler installed.
 * Returns 0, or -1 with the failure reported (naming @path) and nothing
 * left open.
 */
int job_run_open(struct job_run *run, const char *path, const char *format,
		 unsigned int disk_flags);

/* Closes the disk and frees the engine of job_run_open(). */
void job_run_close(struct job_run *run);

/*
 * Wait for the job on run->disk to end; returns 0 when it completed,
 * -1 otherwise (run->status / run->err / run->interrupted say why).
 */
int job_run_wait(struct job_run *run);

/*
 * Reports why job_run_wait() failed, one line about @file: @interrupted
 * after SIGINT/SIGTERM, the job's error, else "<what> did not complete".
 */
void job_run_report_failure(const struct job_run *run, const char *file,
			    const char *what, const char *interrupted);

#endif /* BC_TOOLS_JOB_RUN_H */
