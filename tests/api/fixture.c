/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The shared fixture (see fixture.h).
 */
#include "tests/api/fixture.h"

struct fx fx;

void fx_fixture_setup(void)
{
	fx_setup(&fx);
}

void fx_fixture_teardown(void)
{
	fx_teardown(&fx);
}
