/*
 * Waiting for a block job in the tool (see job-run.h).
 */
#include "job-run.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t resume_requested;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		resume_requested = 1;
	else
		stop_requested = 1;
}

void job_run_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGUSR1, &sa, NULL); /* resume a paused job */
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
		fprintf(stderr,
			"blockcopy: %s\nblockcopy: copy paused: send SIGUSR1 to process %ld to resume, SIGINT to cancel\n",
			bc_last_error()->message, (long)getpid());
		return;
	}
	run->status = status;
	if (status == BC_BLOCK_JOB_FAILED)
		run->err = *bc_last_error();
}

static void show_progress(struct job_run *run, double elapsed, bool tty,
			  bool final)
{
	bc_block_job_info info;
	char done[32], total[32], rate_s[32];
	double frac, rate;
	int width = 30, filled;

	if (bc_get_block_job_info(run->disk, &info,
				  BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES) != 1) {
		if (!final)
			return;
		info.cur = info.end = run->bytes;
	}
	frac = info.end ? (double)info.cur / (double)info.end : 1.0;
	rate = elapsed > 0 ? (double)info.cur / elapsed : 0;
	tool_human_size(info.cur, done, sizeof(done));
	tool_human_size(info.end, total, sizeof(total));
	tool_human_size((uint64_t)rate, rate_s, sizeof(rate_s));
	filled = (int)(frac * width);
	if (tty) {
		char eta[32] = "--:--";

		if (rate > 0 && info.end > info.cur) {
			double left = (double)(info.end - info.cur) / rate;

			snprintf(eta, sizeof(eta), "%d:%02d", (int)left / 60,
				 (int)left % 60);
		}
		fprintf(stderr, "\r[%.*s%*s] %5.1f%% %s/%s %s/s ETA %s ",
			filled, "##############################",
			width - filled, "", frac * 100, done, total, rate_s,
			eta);
		if (final)
			fputc('\n', stderr);
	} else {
		fprintf(stderr, "progress: %.1f%% %s/%s %s/s\n", frac * 100,
			done, total, rate_s);
	}
}

int job_run_wait(struct job_run *run)
{
	bool tty = isatty(STDERR_FILENO);
	double start = now_s(), last_shown = 0;
	bool pivot_sent = false, cancel_sent = false;
	int fd;

	run->status = -1;
	run->mirroring_s = -1;
	if (bc_engine_event_register(run->eng, on_event, run) < 0)
		return -1;
	fd = bc_engine_event_fd(run->eng);
	while (run->status < 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		double t;

		(void)poll(&pfd, 1, 100);
		run->seconds = now_s() - start;
		if (bc_engine_dispatch(run->eng, 0) < 0)
			return -1;
		t = now_s() - start;
		{
			bc_block_job_info info;

			if (bc_get_block_job_info(run->disk, &info, 0) == 1)
				run->bytes = info.end;
		}
		if (resume_requested) {
			resume_requested = 0;
			if (bc_block_job_resume(run->disk, 0) == 0)
				fprintf(stderr, "blockcopy: copy resumed\n");
		}
		if (stop_requested && !cancel_sent) {
			run->interrupted = true;
			cancel_sent = true;
			(void)bc_block_job_abort(run->disk, BC_BLOCK_JOB_ABORT_ASYNC);
		}
		if (run->mirroring_s >= 0 && !pivot_sent && !cancel_sent) {
			pivot_sent = true;
			if (bc_block_job_abort(run->disk, run->pivot ?
					       BC_BLOCK_JOB_ABORT_PIVOT : 0) < 0) {
				run->err = *bc_last_error();
				run->status = BC_BLOCK_JOB_FAILED;
				(void)bc_block_job_abort(run->disk, 0);
				(void)bc_engine_dispatch(run->eng, 0);
				run->status = BC_BLOCK_JOB_FAILED;
				break;
			}
			continue;
		}
		if (run->progress && t - last_shown >= (tty ? 0.2 : 1.0)) {
			show_progress(run, t, tty, false);
			last_shown = t;
		}
	}
	run->seconds = now_s() - start;
	if (run->progress && run->status != BC_BLOCK_JOB_FAILED)
		show_progress(run, run->seconds, tty, true);
	return run->status == BC_BLOCK_JOB_COMPLETED ||
			       (!run->pivot && run->status == BC_BLOCK_JOB_CANCELED &&
				!run->interrupted && pivot_sent)
		       ? 0
		       : -1;
}
