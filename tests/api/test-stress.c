/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest writes from several threads during a copy job, with a shadow of
 * the expected content: through the bulk phase, MIRRORING and a pivot or
 * an abort while the threads keep writing. Every byte is verified after.
 *
 * Each thread owns interleaved 16 KiB stripes, so the shadow is exact,
 * while the 64 KiB granules are shared by all threads: the copy loop sees
 * conflicting writes on the granules it is copying.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"

#define NTHREADS 4
#define STRIPE   (16u * 1024)

struct guest {
	pthread_t tid;
	unsigned int id;
	unsigned int seed;
	atomic_bool *stop;
	uint64_t ops;
	char failure[BC_ERROR_MESSAGE_MAX + 64];
};

static uint64_t rnd(unsigned int *seed, uint64_t n)
{
	return (uint64_t)rand_r(seed) % n;
}

static void *guest_main(void *arg)
{
	struct guest *g = arg;
	uint8_t *buf = malloc(STRIPE);
	uint64_t nstripes = FX_SIZE / STRIPE;

	while (!atomic_load(g->stop) && !g->failure[0]) {
		uint64_t s = rnd(&g->seed, nstripes / NTHREADS) * NTHREADS + g->id;
		uint64_t in = rnd(&g->seed, STRIPE);
		uint64_t len = 1 + rnd(&g->seed, STRIPE - in);
		uint64_t off = s * STRIPE + in;
		unsigned int op = (unsigned int)rnd(&g->seed, 10);

		if (op < 6) {
			memset(buf, (int)(g->id * 31 + g->ops), len);
			if (bc_disk_pwrite(fx.disk, buf, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "pwrite: %s",
					 bc_last_error()->message);
			memcpy(fx.shadow + off, buf, len);
		} else if (op == 6) {
			if (bc_disk_write_zeroes(fx.disk, off, len, 0) < 0)
				snprintf(g->failure, sizeof(g->failure), "zeroes: %s",
					 bc_last_error()->message);
			memset(fx.shadow + off, 0, len);
		} else if (op == 7) {
			/* A discard may leave zeros or old data: learn which. */
			if (bc_disk_discard(fx.disk, off, len, 0) < 0 ||
			    bc_disk_pread(fx.disk, fx.shadow + off, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "discard: %s",
					 bc_last_error()->message);
		} else if (op == 8) {
			if (bc_disk_pread(fx.disk, buf, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "pread: %s",
					 bc_last_error()->message);
			else if (memcmp(buf, fx.shadow + off, len) != 0)
				snprintf(g->failure, sizeof(g->failure),
					 "read at %llu+%llu differs from the shadow",
					 (unsigned long long)off, (unsigned long long)len);
		} else {
			if (bc_disk_flush(fx.disk) < 0)
				snprintf(g->failure, sizeof(g->failure), "flush: %s",
					 bc_last_error()->message);
		}
		g->ops++;
	}
	free(buf);
	return NULL;
}

struct load {
	struct guest g[NTHREADS];
	atomic_bool stop;
};

static void load_start(struct load *l)
{
	unsigned int i;
	const char *seed_env = getenv("BC_TEST_SEED");
	unsigned int seed = seed_env ? (unsigned int)atoi(seed_env)
				     : (unsigned int)time(NULL);

	fprintf(stderr, "# stress seed %u (set BC_TEST_SEED to repeat)\n", seed);
	memset(l, 0, sizeof(*l));
	atomic_init(&l->stop, false);
	for (i = 0; i < NTHREADS; i++) {
		l->g[i].id = i;
		l->g[i].seed = seed + i;
		l->g[i].stop = &l->stop;
		ck_assert_int_eq(pthread_create(&l->g[i].tid, NULL, guest_main,
						&l->g[i]), 0);
	}
}

static void load_stop(struct load *l)
{
	unsigned int i;

	atomic_store(&l->stop, true);
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(l->g[i].tid, NULL);
		ck_assert_msg(!l->g[i].failure[0], "guest %u: %s", i,
			      l->g[i].failure);
		ck_assert_uint_gt(l->g[i].ops, 0);
	}
}

static void open_raw_source(void)
{
	struct fmt_create_opts co = { .format = "raw", .size = FX_SIZE };
	const char *path = fx_path(&fx, "src.raw");
	struct fmt_image *img;
	uint8_t *buf = malloc(3u << 20);
	size_t i;

	ck_assert_int_eq(fmt_create(path, &co), 0);
	ck_assert_int_eq(fmt_open(path, "raw", FMT_OPEN_RDWR, &img), 0);
	for (i = 0; i < (3u << 20); i++)
		buf[i] = (uint8_t)(i * 7);
	ck_assert_int_eq(fmt_pwrite(img, buf, 3u << 20, 1u << 20), 0);
	memcpy(fx.shadow + (1u << 20), buf, 3u << 20);
	fmt_close(img);
	free(buf);
	fx.layers[0] = strdup(path);
	fx.nlayers = 1;
	fx.top = fx.layers[0];
	fx.disk = bc_disk_open(fx.eng, fx.top, "raw", 0);
	ck_assert_ptr_nonnull(fx.disk);
}

/*
 * Copy under load: 4 MiB/s first so the guests overlap the bulk phase,
 * then unlimited to reach MIRRORING, then pivot (or abort) mid-load.
 */
static void copy_under_load(const char *dst, const char *dst_fmt,
			    unsigned int flags, bool pivot)
{
	bc_block_copy_params p = { .bandwidth = 4u << 20 };
	struct load l;

	load_start(&l);
	usleep(50 * 1000);
	/*
	 * Unpaced guests may outrun a background copy (they do under TSan):
	 * auto-converge guarantees MIRRORING and exercises both modes.
	 * Background-mode non-convergence is tested in test-mirror.c.
	 */
	ck_assert_msg(bc_block_copy(fx.disk, dst, &p,
				    flags | BC_BLOCK_COPY_AUTO_CONVERGE) == 0,
		      "%s", bc_last_error()->message);
	usleep(300 * 1000);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	usleep(200 * 1000);
	if (pivot) {
		ck_assert_msg(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT) == 0,
			      "%s", bc_last_error()->message);
		ck_assert_str_eq(bc_disk_path(fx.disk), dst);
		usleep(200 * 1000); /* writes after the pivot go to the copy */
		load_stop(&l);
		fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
		fx_check_disk_equals_shadow(&fx);
		fx_close_disk(&fx);
		fx_check_image_equals_shadow(&fx, dst, dst_fmt);
	} else {
		ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
		ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
		usleep(100 * 1000);
		load_stop(&l);
		fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
		fx_check_disk_equals_shadow(&fx);
		fx_close_disk(&fx);
		fx_check_image_equals_shadow(&fx, fx.top, NULL);
	}
}

/* R18 */
START_TEST(qcow2_full_pivot)
{
	fx_open_chain(&fx, 3);
	copy_under_load(fx_path(&fx, "dst.qcow2"), "qcow2", 0, true);
}
END_TEST

/* R18 */
START_TEST(qcow2_shallow_pivot)
{
	fx_open_chain(&fx, 3);
	copy_under_load(fx_path(&fx, "dst.qcow2"), "qcow2", BC_BLOCK_COPY_SHALLOW,
			true);
}
END_TEST

/* R19 */
START_TEST(qcow2_full_abort)
{
	fx_open_chain(&fx, 2);
	copy_under_load(fx_path(&fx, "dst.qcow2"), "qcow2", 0, false);
}
END_TEST

/* R18 */
START_TEST(raw_full_pivot)
{
	open_raw_source();
	copy_under_load(fx_path(&fx, "dst.raw"), "raw", 0, true);
}
END_TEST

/* R19 */
START_TEST(raw_full_abort)
{
	open_raw_source();
	copy_under_load(fx_path(&fx, "dst.raw"), "raw", 0, false);
}
END_TEST

/* R9 */
START_TEST(pull_under_load)
{
	struct load l;

	fx_open_chain(&fx, 3);
	/*
	 * The pull starts first at 2 MiB/s; the guests then allocate the
	 * top quickly, so most of the remaining ranges become the top's own
	 * and the pull must skip them without overwriting guest data.
	 */
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 2, 0), 0);
	usleep(100 * 1000);
	load_start(&l);
	usleep(300 * 1000);
	(void)bc_block_job_set_speed(fx.disk, 0, 0); /* may have ended */
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	usleep(100 * 1000);
	load_stop(&l);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stress");
	TCase *tc = tcase_create("guest-load");

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, qcow2_full_pivot);
	tcase_add_test(tc, qcow2_shallow_pivot);
	tcase_add_test(tc, qcow2_full_abort);
	tcase_add_test(tc, raw_full_pivot);
	tcase_add_test(tc, raw_full_abort);
	tcase_add_test(tc, pull_under_load);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
