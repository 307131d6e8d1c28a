/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Jobs starting under guest writes (docs/rules.md R35, and a pull, R9): a
 * write in flight when the job attaches (untracked: the job does not mark
 * it) is waited for before the job's allocation scan or first chunk, and
 * that wait does not hold the writes that come after it. The untracked write is held in
 * flight by the test itself, through the engine's guest path
 * (disk_guest_enter ... disk_guest_leave), for as long as it needs.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/internal.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/check-main.h"

/* Holes of the two-layer chain (helpers.c): only a copy of them shows. */
#define UNTRACKED_OFF ((7u << 20) + 4096)
#define NEW_OFF	      ((5u << 20) + 512)
#define LEN	      65536u

struct starter {
	const char *dst;
	atomic_bool returned;
	int ret;
};

static void *start_copy(void *arg)
{
	struct starter *st = arg;

	st->ret = bc_block_copy(fx.disk, st->dst, NULL, 0);
	atomic_store(&st->returned, true);
	return NULL;
}

struct writer {
	uint8_t buf[LEN];
	atomic_bool done;
	ssize_t ret;
};

static void *new_write(void *arg)
{
	struct writer *w = arg;

	w->ret = bc_disk_pwrite(fx.disk, w->buf, LEN, NEW_OFF);
	atomic_store(&w->done, true);
	return NULL;
}

/* Whether @flag is set within @ms milliseconds. */
static bool set_within(atomic_bool *flag, int ms)
{
	struct timespec ts = {0, 1000000};

	while (!atomic_load(flag) && ms-- > 0)
		nanosleep(&ts, NULL);
	return atomic_load(flag);
}

/*
 * A new guest write (filled with @fill) goes through at once although an
 * untracked one is held in flight; the shadow takes it.
 */
static void new_write_passes(struct writer *w, int fill)
{
	pthread_t tw;

	memset(w->buf, fill, LEN);
	ck_assert_int_eq(pthread_create(&tw, NULL, new_write, w), 0);
	ck_assert_msg(set_within(&w->done, 5000),
		      "a new write waited for the untracked one");
	ck_assert_int_eq(pthread_join(tw, NULL), 0);
	ck_assert_int_eq(w->ret, LEN);
	memcpy(fx.shadow + NEW_OFF, w->buf, LEN);
}

/* R35 */
START_TEST(new_write_is_not_held_by_the_start)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	struct starter st = {.dst = dst, .returned = false};
	static struct writer w = {.done = false};
	bc_block_job_info info;
	static uint8_t old[LEN];
	struct guest_req req;
	pthread_t tc;
	int i;

	fx_open_chain(&fx, 2);
	/* In flight before the job: untracked. */
	disk_guest_enter(fx.disk, &req);
	ck_assert_ptr_null(req.job);
	ck_assert_int_eq(pthread_create(&tc, NULL, start_copy, &st), 0);
	/* Attached: the job is the disk's, its start waits for our write. */
	for (i = 0; bc_get_block_job_info(fx.disk, &info, 0) != 1; i++) {
		ck_assert_msg(i < 5000, "the job did not attach within 5 s");
		usleep(1000);
	}
	ck_assert(!atomic_load(&st.returned));

	/* A new write goes through at once (tracked: the job marks it). */
	new_write_passes(&w, 0x3e);
	/*
	 * The start still waits: it made no destination yet (that comes
	 * before the scan). A negative check needs a window: 300 ms, in
	 * which a start that did not wait makes it within milliseconds.
	 */
	for (i = 0; i < 300; i++) {
		ck_assert_msg(
			access(dst, F_OK) != 0,
			"the job went on with an untracked write in flight");
		usleep(1000);
	}
	ck_assert(!atomic_load(&st.returned));

	/* The untracked write lands, then leaves: only the scan sees it. */
	memset(old, 0xd5, LEN);
	ck_assert_int_eq(
		disk_guest_pwrite(fx.disk, &req, old, UNTRACKED_OFF, LEN), 0);
	memcpy(fx.shadow + UNTRACKED_OFF, old, LEN);
	disk_guest_leave(fx.disk, &req);
	ck_assert_int_eq(pthread_join(tc, NULL), 0);
	ck_assert_int_eq(st.ret, 0);

	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/*
 * A pull waits the same way (engine/pull.c): its chunks read the backing
 * outside the write gate and count on every write since marking
 * job->dirty, which a write that entered before the job does not.
 */
/* R9 */
START_TEST(pull_waits_for_an_untracked_write)
{
	static struct writer w = {.done = false};
	static uint8_t old[LEN];
	bc_block_job_info info;
	struct guest_req req;
	int i;

	fx_open_chain(&fx, 3);
	disk_guest_enter(fx.disk, &req);
	ck_assert_ptr_null(req.job);
	ck_assert_int_eq(bc_block_pull(fx.disk, 0, 0), 0);
	/* A new write goes through at once. */
	new_write_passes(&w, 0x4f);
	/* No chunk before the untracked write is done (300 ms window). */
	for (i = 0; i < 300; i++) {
		ck_assert_int_eq(bc_get_block_job_info(fx.disk, &info, 0), 1);
		ck_assert_msg(
			info.cur == 0,
			"the pull went on with an untracked write in flight");
		usleep(1000);
	}
	/* Where the backing holds data: a pull racing it would lose it. */
	memset(old, 0xd6, LEN);
	ck_assert_int_eq(disk_guest_pwrite(fx.disk, &req, old, 0, LEN), 0);
	memcpy(fx.shadow, old, LEN);
	disk_guest_leave(fx.disk, &req);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("start");
	TCase *tc = tcase_create("untracked");

	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, new_write_is_not_held_by_the_start);
	tcase_add_test(tc, pull_waits_for_an_untracked_write);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
