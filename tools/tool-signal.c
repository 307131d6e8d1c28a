/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tool's one signal handler (see tool.h): SIGINT/SIGTERM ask to stop,
 * SIGUSR1 to resume a job paused on a destination error (--on-error=stop).
 * It only records the request; the loops waiting for a job (job-run.c,
 * live-run.c) poll tool_stop_requested()/tool_resume_requested().
 */
#include "tool.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t resume_requested;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		resume_requested = 1;
	else
		stop_requested = 1;
}

void tool_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGUSR1, &sa, NULL);
}

bool tool_stop_requested(void)
{
	return stop_requested != 0;
}

bool tool_resume_requested(void)
{
	if (!resume_requested)
		return false;
	resume_requested = 0;
	return true;
}
