/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Waiting for a block job in the tool (see job-run.h).
 */
#include "job-run.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/common/clock.h"
#include "tool.h"

static double now_s(void)
{
	return bc_secs(bc_now_ns());
}

/*
 * Before another message on stderr: a progress frame drawn on a terminal
 * has no newline yet; end it so that the message starts on its own line.
 */
static void end_progress_line(struct job_run *run)
{
	if (run->line_open)
		fputc('\n', stderr);
	run->line_open = false;
}

static void on_event(bc_engine *eng, bc_disk *disk, const char *path,
		     int type, int status, void *opaque)
{
	struct job_run *run = opaque;

	(void)eng;
	(void)path;
	(void)type;
	if (disk != run->disk)
		return;
	if (status == BC_BLOCK_JOB_MIRRORING) {
		run->mirroring_s = run->seconds; /* set by the loop */
		return;
	}
	if (status == BC_BLOCK_JOB_PAUSED) {
		/* --on-error stop: say why and how to go on; the job waits. */
		end_progress_line(run);
		fprintf(stderr,
			"blockcopy: %s\nblockcopy: copy paused: send SIGUSR1 to process %ld to resume, SIGINT to cancel\n",
			bc_last_error()->message, (long)getpid());
		return;
	}
	run->status = status;
	if (status == BC_BLOCK_JOB_FAILED)
		run->err = *bc_last_error();
}

/* What the job is doing, as the progress line names it. */
enum run_phase { PHASE_COPYING, PHASE_PULLING, PHASE_MIRRORING, PHASE_PAUSED,
		 PHASE_PIVOTING, PHASE_FINISHING, PHASE_DONE };

static const char *phase_name(enum run_phase p)
{
	switch (p) {
	case PHASE_COPYING:
		return "copying";
	case PHASE_PULLING:
		return "pulling";
	case PHASE_MIRRORING:
		return "mirroring";
	case PHASE_PAUSED:
		return "paused";
	case PHASE_PIVOTING:
		return "pivoting";
	case PHASE_FINISHING:
		return "finishing";
	case PHASE_DONE:
		return "done";
	}
	return "?";
}

/*
 * One progress line: the phase, a bar, percent, bytes, rate, and the
 * time left while there is some (never "--:--": no estimate, no ETA;
 * the final line says how long it took instead). On a terminal the line
 * is redrawn in place with \r and cleared to its end (ESC [K), so a
 * shorter line leaves no debris; elsewhere (a log) it is a plain line
 * per second with no control characters.
 */
static void show_progress(struct job_run *run, enum run_phase phase,
			  double elapsed, bool tty)
{
	bc_block_job_info info;
	char done[32], total[32], rate_s[32], when[48] = "";
	double frac, rate;
	int width = 30, filled;

	if (bc_get_block_job_info(run->disk, &info,
				  BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES) != 1) {
		if (phase != PHASE_DONE)
			return;
		info.cur = info.end = run->bytes;
	}
	frac = info.end ? (double)info.cur / (double)info.end : 1.0;
	rate = elapsed > 0 ? (double)info.cur / elapsed : 0;
	tool_human_size(info.cur, done, sizeof(done));
	tool_human_size(info.end, total, sizeof(total));
	tool_human_size((uint64_t)rate, rate_s, sizeof(rate_s));
	if (phase != PHASE_DONE && phase != PHASE_PIVOTING &&
	    phase != PHASE_FINISHING) {
		int state;

		if (bc_get_block_job_state(run->disk, &state, NULL, 0) == 1 &&
		    state == BC_BLOCK_JOB_STATE_PAUSED)
			phase = PHASE_PAUSED;
	}
	if (phase == PHASE_DONE && elapsed < 60) {
		snprintf(when, sizeof(when), " in %.1f s", elapsed);
	} else if (phase == PHASE_DONE) {
		snprintf(when, sizeof(when), " in %d:%02d", (int)elapsed / 60,
			 (int)elapsed % 60);
	} else if (rate > 0 && info.end > info.cur && phase != PHASE_PAUSED) {
		/* Rounded up: "0:00" would read as done. */
		int left = (int)ceil((double)(info.end - info.cur) / rate);

		snprintf(when, sizeof(when), " ETA %d:%02d", left / 60,
			 left % 60);
	}
	if (!tty) {
		fprintf(stderr, "progress: %s %.1f%% %s/%s %s/s%s\n",
			phase_name(phase), frac * 100, done, total, rate_s, when);
		return;
	}
	filled = (int)(frac * width);
	fprintf(stderr, "\r%-9s [%.*s%*s] %5.1f%% %s/%s %s/s%s\033[K",
		phase_name(phase), filled, "##############################",
		width - filled, "", frac * 100, done, total, rate_s, when);
	run->line_open = true;
	if (phase == PHASE_DONE)
		end_progress_line(run);
}

int job_run_wait(struct job_run *run)
{
	bool tty = isatty(STDERR_FILENO);
	double start = now_s(), last_shown = 0;
	bool pivot_sent = false, cancel_sent = false;
	enum run_phase phase = PHASE_COPYING;
	int fd;

	run->status = -1;
	run->mirroring_s = -1;
	if (bc_engine_event_register(run->eng, on_event, run) < 0)
		return -1;
	fd = bc_engine_event_fd(run->eng);
	while (run->status < 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		bc_block_job_info info;
		double t;

		(void)poll(&pfd, 1, 100);
		run->seconds = now_s() - start;
		if (bc_engine_dispatch(run->eng, 0) < 0)
			return -1;
		t = now_s() - start;
		if (bc_get_block_job_info(run->disk, &info, 0) == 1) {
			run->bytes = info.end;
			if (phase == PHASE_COPYING &&
			    info.type == BC_BLOCK_JOB_TYPE_PULL)
				phase = PHASE_PULLING;
		}
		if (tool_resume_requested() &&
		    bc_block_job_resume(run->disk, 0) == 0) {
			end_progress_line(run);
			fprintf(stderr, "blockcopy: copy resumed\n");
		}
		if (tool_stop_requested() && !cancel_sent) {
			run->interrupted = true;
			cancel_sent = true;
			(void)bc_block_job_abort(run->disk, BC_BLOCK_JOB_ABORT_ASYNC);
		}
		if (run->mirroring_s >= 0 && !pivot_sent && !cancel_sent) {
			pivot_sent = true;
			/* The pivot is synchronous: say so before it blocks. */
			phase = run->pivot ? PHASE_PIVOTING : PHASE_FINISHING;
			if (run->progress) {
				show_progress(run, phase, t, tty);
			}
			if (bc_block_job_abort(run->disk, run->pivot ?
					       BC_BLOCK_JOB_ABORT_PIVOT : 0) < 0) {
				run->err = *bc_last_error();
				run->status = BC_BLOCK_JOB_FAILED;
				(void)bc_block_job_abort(run->disk, 0);
				(void)bc_engine_dispatch(run->eng, 0);
				run->status = BC_BLOCK_JOB_FAILED;
				break;
			}
			phase = PHASE_FINISHING;
			continue;
		}
		if (run->mirroring_s >= 0 && phase == PHASE_COPYING)
			phase = PHASE_MIRRORING;
		if (run->progress && t - last_shown >= (tty ? 0.2 : 1.0)) {
			show_progress(run, phase, t, tty);
			last_shown = t;
		}
	}
	run->seconds = now_s() - start;
	if (run->progress && run->status == BC_BLOCK_JOB_COMPLETED)
		show_progress(run, PHASE_DONE, run->seconds, tty);
	else
		end_progress_line(run); /* keep where it stopped; the error follows */
	return run->status == BC_BLOCK_JOB_COMPLETED ||
			       (!run->pivot && run->status == BC_BLOCK_JOB_CANCELED &&
				!run->interrupted && pivot_sent)
		       ? 0
		       : -1;
}

int job_run_open(struct job_run *run, const char *path, const char *format,
		 unsigned int disk_flags)
{
	run->eng = bc_engine_new(0);
	if (!run->eng) {
		tool_report(path, -ENOMEM);
		return -1;
	}
	run->disk = bc_disk_open(run->eng, path, format, disk_flags);
	if (!run->disk) {
		tool_report(path, -EIO);
		bc_engine_free(run->eng);
		run->eng = NULL;
		return -1;
	}
	tool_signals_install();
	return 0;
}

void job_run_close(struct job_run *run)
{
	(void)bc_disk_close(run->disk);
	bc_engine_free(run->eng);
	run->disk = NULL;
	run->eng = NULL;
}

void job_run_report_failure(const struct job_run *run, const char *file,
			    const char *what, const char *interrupted)
{
	if (run->interrupted)
		tool_error_file("interrupted", file, "%s", interrupted);
	else if (run->err.code)
		tool_report_error(&run->err);
	else
		tool_error_file("incomplete", file, "%s did not complete", what);
}
