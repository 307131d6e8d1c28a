/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * An nbdkit server for a Check test: started in the foreground, killed
 * with the test process (--exit-with-parent), ready once its pid file
 * exists (nbdkit writes it when it listens).
 */
#ifndef BC_TESTS_NBDKIT_RUN_H
#define BC_TESTS_NBDKIT_RUN_H

#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Whether @path exists within @ms milliseconds. */
static inline bool nbdkit_wait_for_file(const char *path, unsigned int ms)
{
	struct timespec pause = {0, 10 * 1000 * 1000};
	unsigned int waited;

	for (waited = 0; waited < ms; waited += 10) {
		if (access(path, F_OK) == 0)
			return true;
		nanosleep(&pause, NULL);
	}
	return access(path, F_OK) == 0;
}

/*
 * Run nbdkit with @argv (argv[0] "nbdkit"; it must include "-f",
 * "--exit-with-parent" and "-P" @pidfile) and return its pid once it
 * listens. Fails the test if it has not within 10 s.
 */
static inline pid_t nbdkit_start(const char *const argv[], const char *pidfile)
{
	char *args[32];
	size_t n = 0;
	pid_t pid;

	while (argv[n])
		n++;
	ck_assert_uint_lt(n, sizeof(args) / sizeof(args[0]));
	/* execvp's argv is not const-qualified: a copy of the pointers. */
	memcpy(args, argv, (n + 1) * sizeof(args[0]));
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execvp("nbdkit", args);
		_exit(127);
	}
	ck_assert_msg(nbdkit_wait_for_file(pidfile, 10000),
		      "nbdkit did not start");
	return pid;
}

/* Stop the server *@pid (if any) and reap it. */
static inline void nbdkit_stop(pid_t *pid)
{
	int status;

	if (*pid <= 0)
		return;
	(void)kill(*pid, SIGTERM);
	(void)waitpid(*pid, &status, 0);
	*pid = 0;
}

#endif /* BC_TESTS_NBDKIT_RUN_H */
