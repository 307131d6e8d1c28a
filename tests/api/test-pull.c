/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PULL job against guest writes racing its chunks (engine/pull.c): a
 * chunk reads the backing without holding guests and writes the top under
 * the write gate; a guest write that lands in between must win. A chaser
 * thread watches the job's progress and, each time a chunk starts, writes
 * a block a little inside it (where the top does not hold data yet): while
 * the chunk reads the backing. The disk and the top alone must then read
 * what the guest wrote.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/check-main.h"

#define BLOCK  4096u
#define ROUNDS 8u
/* Into the chunk starting at cur: past the top's own cluster at 192 KiB
 * + 100 (helpers.c), so that the top does not hold it yet. */
#define AHEAD (320u * 1024)

struct chaser {
	atomic_bool stop;
	unsigned int writes; /* blocks written into a starting chunk */
	int failed;	     /* a call's result when it failed */
};

static void *chase(void *arg)
{
	struct chaser *c = arg;
	uint64_t last = UINT64_MAX;
	uint8_t buf[BLOCK];

	while (!atomic_load(&c->stop)) {
		bc_block_job_info info;
		uint64_t off;
		int ret;

		ret = bc_get_block_job_info(fx.disk, &info, 0);
		if (ret < 0) {
			c->failed = ret;
			break;
		}
		if (ret == 0 || info.cur == last)
			continue;
		last = info.cur;
		off = info.cur + AHEAD;
		if (off + BLOCK > FX_SIZE)
			continue;
		memset(buf, (int)(0xc1 + c->writes % 32), BLOCK);
		if (bc_disk_pwrite(fx.disk, buf, BLOCK, off) != BLOCK) {
			c->failed = -1;
			break;
		}
		memcpy(fx.shadow + off, buf, BLOCK);
		c->writes++;
	}
	return NULL;
}

/* One pull of a fresh chain under the chaser; returns its writes. */
static unsigned int chased_pull(void)
{
	struct chaser c = {.stop = false};
	pthread_t tid;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(pthread_create(&tid, NULL, chase, &c), 0);
	ck_assert_int_eq(bc_block_pull(fx.disk, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	atomic_store(&c.stop, true);
	ck_assert_int_eq(pthread_join(tid, NULL), 0);
	ck_assert_msg(!c.failed, "chaser failed: %d", c.failed);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	/* The top stands alone now (no backing name): it holds them too. */
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
	return c.writes;
}

/*
 * Rounds, each a fresh chain: a lost write shows in some round. A round
 * whose pull ended before the chaser ran (a loaded machine) tests
 * nothing, so the rounds together must have raced some.
 */
/* R9 */
START_TEST(pull_racing_guest_writes_keeps_them)
{
	unsigned int round, writes = 0;

	for (round = 0; round < ROUNDS; round++) {
		if (round) {
			fx_teardown(&fx);
			fx_setup(&fx);
		}
		writes += chased_pull();
	}
	fprintf(stderr, "# %u guest writes into starting chunks in %u rounds\n",
		writes, ROUNDS);
	ck_assert_uint_gt(writes, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pull");
	TCase *tc = tcase_create("race");

	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, pull_racing_guest_writes_keeps_them);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
