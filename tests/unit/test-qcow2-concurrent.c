/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Concurrent writers on one qcow2 image, against a shadow.
 *
 * Eight threads issue random writes (allocating and overwriting, aligned
 * and not), write-zeroes (with and without unmap), cluster-aligned
 * discards and reads. The test serialises operations on the same bytes
 * with its own byte-range lock, so the shadow is well defined; operations
 * on different bytes of one cluster run concurrently, which is what the
 * driver must get right (copy-on-write of a cluster another thread is
 * overwriting, allocation while a neighbour reads, ...). Reads compare
 * with the shadow while the rest of the image is being written.
 *
 * Every cluster size the suite covers (512 B..2 MiB), extended L2 where it
 * exists, with and without a backing file, buffered and O_DIRECT. After
 * each run: read back in-process, our check, close, `qemu-img check`
 * and `qemu-img compare` against the shadow written out as raw.
 *
 * BC_TEST_SEED sets the seed; the seed is printed when a run fails.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check-main.h"
#include "fmt-testutil.h"
#include "formats/qcow2.h"
#include "lib/common/util.h"

#define THREADS 8
#define MiB     (1024ull * 1024)

static bool have_qemu_img;
static unsigned int base_seed;

struct config {
	uint32_t cluster_bits;
	bool extended_l2;
	bool backing;
	bool direct;
	unsigned int ops; /* per thread */
};

/* A held byte range of the test's own range lock. */
struct held {
	uint64_t s, e;
	bool used;
};

struct run {
	const struct config *cfg;
	struct fmt_image *img;
	uint64_t size, cs;
	uint8_t *shadow;
	pthread_mutex_t lock; /* range lock, and the shadow's bytes */
	pthread_cond_t cond;
	struct held held[THREADS];
	int failed;           /* first failure: line number */
	char why[1400];
};

struct worker {
	struct run *r;
	int id;
	unsigned int seed;
};

static void range_lock(struct run *r, int id, uint64_t s, uint64_t e)
{
	int i;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		bool busy = false;

		for (i = 0; i < THREADS; i++)
			if (r->held[i].used && r->held[i].s < e &&
			    s < r->held[i].e)
				busy = true;
		if (!busy)
			break;
		pthread_cond_wait(&r->cond, &r->lock);
	}
	r->held[id] = (struct held){s, e, true};
	pthread_mutex_unlock(&r->lock);
}

static void range_unlock(struct run *r, int id)
{
	pthread_mutex_lock(&r->lock);
	r->held[id].used = false;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void note_failure(struct run *r, int line, const char *what, uint64_t off,
		 uint64_t len, int ret)
{
	pthread_mutex_lock(&r->lock);
	if (!r->failed) {
		r->failed = line;
		(void)snprintf(r->why, sizeof(r->why),
			       "%s at %llu+%llu: %d (%s)", what,
			       (unsigned long long)off,
			       (unsigned long long)len, ret,
			       bc_error_get()->message);
	}
	pthread_mutex_unlock(&r->lock);
}

/* Offsets cluster on a few hot spots so threads share clusters. */
static uint64_t pick_off(struct run *r, unsigned int *seed)
{
	uint64_t hot = r->size / 8;

	if (rand_r(seed) % 2)
		return ((uint64_t)rand_r(seed) % 4) * hot +
		       (uint64_t)rand_r(seed) % BC_MIN(hot, 3 * r->cs);
	return (uint64_t)rand_r(seed) % r->size;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->r;
	uint64_t maxlen = BC_MIN(3 * r->cs, 256 * 1024);
	uint8_t *buf = NULL, *rd = NULL;
	unsigned int i;

	if (posix_memalign((void **)&buf, 4096, maxlen) ||
	    posix_memalign((void **)&rd, 4096, maxlen))
		abort();
	for (i = 0; i < r->cfg->ops && !r->failed; i++) {
		unsigned int op = (unsigned int)rand_r(&w->seed) % 10;
		uint64_t off = pick_off(r, &w->seed), len;
		int ret = 0;

		len = 1 + (uint64_t)rand_r(&w->seed) % maxlen;
		if (r->cfg->direct || op >= 8) {
			/* O_DIRECT writes whole blocks; discards whole clusters. */
			uint64_t g = op >= 8 ? r->cs : 4096;

			off = bc_align_down(off, g);
			len = bc_align_up(len, g);
		}
		if (off >= r->size)
			continue;
		len = BC_MIN(len, r->size - off);
		if (op < 8)
			len = BC_MIN(len, maxlen); /* the buffers' size */
		range_lock(r, w->id, off, off + len);
		if (op < 5) {
			memset(buf, (int)(w->id * 31 + i) | 1, len);
			buf[0] = (uint8_t)i;
			ret = fmt_pwrite(r->img, buf, len, off);
			if (ret == 0)
				memcpy(r->shadow + off, buf, len);
		} else if (op < 6) {
			ret = fmt_write_zeroes(r->img, off, len,
					       (i & 1) ? FMT_ZERO_MAY_UNMAP : 0);
			if (ret == 0)
				memset(r->shadow + off, 0, len);
		} else if (op < 8) {
			ret = fmt_pread(r->img, rd, len, off);
			if (ret == 0 && memcmp(rd, r->shadow + off, len))
				note_failure(r, __LINE__, "read differs", off, len, 0);
		} else {
			ret = fmt_discard(r->img, off, len);
			if (ret == 0)
				memset(r->shadow + off, 0, len);
		}
		if (ret < 0)
			note_failure(r, __LINE__, "op failed", off, len, ret);
		range_unlock(r, w->id);
	}
	free(buf);
	free(rd);
	return NULL;
}

static void run_config(const struct config *cfg, unsigned int seed)
{
	struct fmt_create_opts o = {.format = "qcow2"};
	struct fmt_check_report rep;
	struct worker w[THREADS];
	pthread_t th[THREADS];
	struct run r;
	uint8_t *back = NULL, *all;
	unsigned int flags = FMT_OPEN_RDWR;
	char desc[128];
	uint64_t i;
	int fd, t;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	r.cs = 1ull << cfg->cluster_bits;
	(void)snprintf(desc, sizeof(desc), "seed %u cluster %llu%s%s%s", seed,
		       (unsigned long long)r.cs,
		       cfg->extended_l2 ? " extl2" : "",
		       cfg->backing ? " backing" : "",
		       cfg->direct ? " direct" : "");
	r.size = BC_MAX(MiB, BC_MIN(64 * r.cs, 16 * MiB));
	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	r.shadow = malloc(r.size);
	ck_assert_ptr_nonnull(r.shadow);
	memset(r.shadow, 0, r.size);
	if (cfg->backing) {
		back = malloc(r.size);
		ck_assert_ptr_nonnull(back);
		for (i = 0; i < r.size; i++)
			back[i] = (uint8_t)(i * 7 + (i >> 12));
		fd = open("base.raw", O_CREAT | O_TRUNC | O_WRONLY, 0644);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, back, r.size), (ssize_t)r.size);
		close(fd);
		memcpy(r.shadow, back, r.size);
		o.backing_file = "base.raw";
		o.backing_fmt = "raw";
		free(back);
	}
	o.size = r.size;
	o.cluster_size = (uint32_t)r.cs;
	o.extended_l2 = cfg->extended_l2;
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	if (cfg->direct)
		flags |= FMT_OPEN_DIRECT;
	if (fmt_open("t.qcow2", "qcow2", flags, &r.img) < 0) {
		ck_assert(cfg->direct); /* file system without O_DIRECT */
		goto out;
	}
	for (t = 0; t < THREADS; t++) {
		w[t] = (struct worker){&r, t, seed * 977 + (unsigned int)t};
		ck_assert_int_eq(pthread_create(&th[t], NULL, worker_main, &w[t]),
				 0);
	}
	for (t = 0; t < THREADS; t++)
		ck_assert_int_eq(pthread_join(th[t], NULL), 0);
	if (r.failed)
		ck_abort_msg("%s: line %d: %s", desc, r.failed, r.why);
	all = malloc(r.size);
	ck_assert_ptr_nonnull(all);
	ck_assert_int_eq(fmt_pread(r.img, all, r.size, 0), 0);
	ck_assert_msg(memcmp(all, r.shadow, r.size) == 0,
		      "%s: image differs from the shadow", desc);
	free(all);
	ck_assert_int_eq(fmt_check(r.img, &rep), 0);
	ck_assert_msg(rep.corruptions == 0 && rep.leaks == 0,
		      "%s: %llu corruptions, %llu leaks", desc,
		      (unsigned long long)rep.corruptions,
		      (unsigned long long)rep.leaks);
	fmt_close(r.img);
	fd = open("shadow.raw", O_CREAT | O_TRUNC | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, r.shadow, r.size), (ssize_t)r.size);
	close(fd);
	if (have_qemu_img) {
		ck_assert_msg(system("qemu-img check -q t.qcow2") == 0,
			      "%s: qemu-img check", desc);
		ck_assert_msg(system("qemu-img compare -q -f qcow2 -F raw "
				     "t.qcow2 shadow.raw") == 0,
			      "%s: qemu-img compare", desc);
	}
out:
	free(r.shadow);
	pthread_mutex_destroy(&r.lock);
	pthread_cond_destroy(&r.cond);
	(void)unlink("t.qcow2");
	(void)unlink("shadow.raw");
	(void)unlink("base.raw");
}

static const struct config configs[] = {
	{9, false, false, false, 150},  {9, false, true, false, 150},
	{12, false, false, false, 200}, {12, false, true, false, 200},
	{16, false, false, false, 200}, {16, false, true, false, 200},
	{16, true, false, false, 200},  {16, true, true, false, 200},
	{21, false, false, false, 60},  {21, false, true, false, 60},
	{21, true, true, false, 60},    {9, false, true, true, 100},
	{16, false, true, true, 200},   {16, true, false, true, 200},
};

START_TEST(concurrent_writers_match_shadow)
{
	run_config(&configs[_i], base_seed + (unsigned int)_i);
}
END_TEST

static Suite *concurrent_suite(void)
{
	Suite *s = suite_create("qcow2-concurrent");
	TCase *tc = tcase_create("writers");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, concurrent_writers_match_shadow, 0,
			    (int)BC_ARRAY_SIZE(configs));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("BC_TEST_SEED");

	base_seed = env ? (unsigned int)strtoul(env, NULL, 0)
			: (unsigned int)getpid();
	printf("# seed %u (BC_TEST_SEED)\n", base_seed);
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	return bc_check_run(concurrent_suite());
}
