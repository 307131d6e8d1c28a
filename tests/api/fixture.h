/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fixture most API tests share: one struct fx named fx, set up before
 * and torn down after each test by
 *   tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
 * (kept apart from helpers.h, whose functions take the fixture as a
 * parameter named fx).
 */
#ifndef BC_TESTS_API_FIXTURE_H
#define BC_TESTS_API_FIXTURE_H

#include "tests/api/helpers.h"

extern struct fx fx;

void fx_fixture_setup(void);
void fx_fixture_teardown(void);

#endif /* BC_TESTS_API_FIXTURE_H */
