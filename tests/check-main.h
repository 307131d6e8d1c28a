/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one way every Check program runs its suite: fork mode (a crash or
 * an ASan leak fails one test), TAP on stdout for meson, exit status
 * from the failure count.
 */
#ifndef BC_TESTS_CHECK_MAIN_H
#define BC_TESTS_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

/* Runs @s (ownership taken) and returns main()'s exit status. */
/*
 * ck_assert() writes to a pipe on every call (Check records the last
 * passing location), which dominates loops of millions of checks: this
 * aborts the test only when @cond fails.
 */
#define require(cond, ...)                         \
	do {                                       \
		if (!(cond))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)

static inline int bc_check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_set_tap(sr, "-");
	srunner_run_all(sr, CK_SILENT);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* BC_TESTS_CHECK_MAIN_H */
