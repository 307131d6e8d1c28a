/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A queue maps a direct request through its format (fmt_io_map: for
 * qcow2 under the driver's lock, maybe reading an L2 table) without
 * holding the queue's own lock, which the workers' completions and a
 * quiesce's harvest need (engine/queue.c). The test holds the qcow2
 * driver's lock itself, so a submission blocks inside the mapping; the
 * queue's lock must stay free meanwhile.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine/internal.h"
#include "engine/queue.h"
#include "formats/qcow2.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/check-main.h"

#define LEN 4096u

struct submitter {
	bc_queue *q;
	void *buf;
	atomic_int tid;
	atomic_bool returned;
	int ret;
};

static void *submit(void *arg)
{
	struct submitter *s = arg;

	atomic_store(&s->tid, (int)syscall(SYS_gettid));
	s->ret = bc_queue_read(s->q, s->buf, LEN, 0, s, 0);
	if (s->ret == 0)
		s->ret = bc_queue_submit(s->q, 0);
	atomic_store(&s->returned, true);
	return NULL;
}

struct harvester {
	bc_queue *q;
	atomic_bool returned;
};

static void *harvest(void *arg)
{
	struct harvester *h = arg;

	queue_harvest(h->q); /* takes the queue's lock */
	atomic_store(&h->returned, true);
	return NULL;
}

/* Whether thread @tid sleeps (state S in /proc): blocked on a lock. */
static bool is_sleeping(int tid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* after the command name */
	return p && p[1] == ' ' && p[2] == 'S';
}

START_TEST(mapping_does_not_hold_the_queue_lock)
{
	struct submitter s = {.returned = false};
	struct harvester h = {.returned = false};
	const char *io = getenv("BLOCKCOPY_IO");
	bool direct = fx_dir_can_direct(&fx);
	struct qcow2 *drv;
	bc_completion c;
	pthread_t ts, th;
	int i;

	if (!direct && io && !strcmp(io, "aio")) {
		/* libaio goes direct only for O_DIRECT disks. */
		printf("# no O_DIRECT here: libaio has no direct route; skipped\n");
		return;
	}
	fx_open_chain_with(&fx, 1, 0, direct ? BC_DISK_DIRECT : 0);
	drv = fx.disk->top->priv;
	s.q = h.q = bc_queue_new(fx.disk, 4, 0);
	ck_assert_ptr_nonnull(s.q);
	ck_assert_int_eq(posix_memalign(&s.buf, 4096, LEN), 0);

	pthread_mutex_lock(&drv->lock);
	ck_assert_int_eq(pthread_create(&ts, NULL, submit, &s), 0);
	/* The submission blocks mapping its read (data the top holds). */
	for (i = 0; !atomic_load(&s.tid) || !is_sleeping(atomic_load(&s.tid));
	     i++) {
		ck_assert_msg(i < 5000, "the submission did not block in 5 s");
		ck_assert(!atomic_load(&s.returned));
		usleep(1000);
	}
	ck_assert_int_eq(pthread_create(&th, NULL, harvest, &h), 0);
	for (i = 0; !atomic_load(&h.returned) && i < 5000; i++)
		usleep(1000);
	pthread_mutex_unlock(&drv->lock);
	ck_assert_msg(
		atomic_load(&h.returned),
		"the queue's lock was held while the format mapped a request");
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(pthread_join(ts, NULL), 0);
	ck_assert_int_eq(s.ret, 1);
	ck_assert_int_eq(bc_queue_reap(s.q, &c, 1, 1, 10000, 0), 1);
	ck_assert_ptr_eq(c.tag, &s);
	ck_assert_int_eq(c.ret, LEN);
	ck_assert_int_eq(memcmp(s.buf, fx.shadow, LEN), 0);
	bc_queue_free(s.q);
	free(s.buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("queue-map");
	TCase *tc = tcase_create("lock");

	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, mapping_does_not_hold_the_queue_lock);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
