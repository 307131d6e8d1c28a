/*
 * The tool's one SIGINT/SIGTERM handler (see tool.h): it only records
 * the request; the loops waiting for a job (job-run.c, live-run.c) poll
 * tool_stop_requested() and end the job cleanly.
 */
#include "tool.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
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
}

bool tool_stop_requested(void)
{
	return stop_requested != 0;
}
