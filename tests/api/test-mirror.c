/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Live mirror behaviour beyond libvirt's rules: convergence per mode
 * under a guest that writes faster than the copy, write-blocking
 * acknowledgement, verification at pivot, statistics.
 */
#include <check.h>
#include <fcntl.h>
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

#define NTHREADS 3
#define STRIPE   (16u * 1024)

struct hammer {
	pthread_t tid[NTHREADS];
	atomic_bool stop;
	atomic_uint_fast64_t writes;
	unsigned int seed;
};

struct hammer_arg {
	struct hammer *h;
	unsigned int id;
};

static struct hammer_arg args[NTHREADS];

/* Unthrottled random 16 KiB writes, each thread in its own stripes. */
static void *hammer_main(void *p)
{
	struct hammer_arg *a = p;
	unsigned int seed = a->h->seed + a->id;
	uint8_t *buf = malloc(STRIPE);
	uint64_t nstripes = FX_SIZE / STRIPE;

	while (!atomic_load(&a->h->stop)) {
		uint64_t s = ((uint64_t)rand_r(&seed) % (nstripes / NTHREADS)) *
				     NTHREADS + a->id;

		memset(buf, rand_r(&seed) & 0xff, STRIPE);
		if (bc_disk_pwrite(fx.disk, buf, STRIPE, s * STRIPE) != STRIPE)
			abort();
		memcpy(fx.shadow + s * STRIPE, buf, STRIPE);
		atomic_fetch_add(&a->h->writes, 1);
	}
	free(buf);
	return NULL;
}

static void hammer_start(struct hammer *h)
{
	unsigned int i;

	memset(h, 0, sizeof(*h));
	h->seed = (unsigned int)time(NULL);
	fprintf(stderr, "# hammer seed %u\n", h->seed);
	for (i = 0; i < NTHREADS; i++) {
		args[i].h = h;
		args[i].id = i;
		ck_assert_int_eq(pthread_create(&h->tid[i], NULL, hammer_main,
						&args[i]), 0);
	}
}

static void hammer_stop(struct hammer *h)
{
	unsigned int i;

	atomic_store(&h->stop, true);
	for (i = 0; i < NTHREADS; i++)
		pthread_join(h->tid[i], NULL);
}

/* Copy at 8 MiB/s while three threads write as fast as they can. */
static void start_copy_under_hammer(struct hammer *h, unsigned int flags)
{
	bc_block_copy_params p = { .bandwidth = 8u << 20 };

	fx_open_chain(&fx, 2);
	hammer_start(h);
	usleep(20 * 1000);
	ck_assert_msg(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), &p, flags) == 0,
		      "%s", bc_last_error()->message);
}

/* R27 */
START_TEST(background_does_not_converge_under_heavy_writes)
{
	bc_block_job_stats st;
	struct hammer h;
	int i;

	start_copy_under_hammer(&h, 0);
	for (i = 0; i < 4; i++) {
		ck_assert(!fx_mirroring_within(&fx, 500));
		ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
		ck_assert_int_eq(st.mode, BC_BLOCK_JOB_MODE_BACKGROUND);
		ck_assert_uint_gt(st.dirty_bytes, 0);
		ck_assert_uint_lt(st.cur, st.end);
	}
	ck_assert_uint_gt(atomic_load(&h.writes), 1000);
	hammer_stop(&h);
	/* Once the guest stops, the job catches up and can be finished. */
	ck_assert(fx_mirroring_within(&fx, 30000));
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R28, R31 */
START_TEST(write_blocking_converges_under_heavy_writes)
{
	bc_block_job_stats st;
	struct hammer h;

	start_copy_under_hammer(&h, BC_BLOCK_COPY_SYNCHRONOUS_WRITES);
	ck_assert_msg(fx_mirroring_within(&fx, 20000), "no MIRRORING in write-blocking mode");
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.mode, BC_BLOCK_JOB_MODE_WRITE_BLOCKING);
	ck_assert_uint_gt(st.active_writes, 0);
	/* Pivot while the guest still writes at full speed. */
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	usleep(100 * 1000);
	hammer_stop(&h);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.active, 0);
	ck_assert_int_eq(st.status, BC_BLOCK_JOB_COMPLETED);
	ck_assert_uint_gt(st.pivot_stall_ns, 0);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, fx_path(&fx, "dst.qcow2"), "qcow2");
}
END_TEST

/* R29 */
START_TEST(auto_converge_switches_and_converges)
{
	bc_block_job_stats st;
	struct hammer h;

	start_copy_under_hammer(&h, BC_BLOCK_COPY_AUTO_CONVERGE);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.auto_converge, 1);
	ck_assert_int_eq(st.mode, BC_BLOCK_JOB_MODE_BACKGROUND);
	ck_assert_msg(fx_mirroring_within(&fx, 30000), "auto-converge did not converge");
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.mode, BC_BLOCK_JOB_MODE_WRITE_BLOCKING);
	ck_assert_uint_gt(st.mode_switch_ns, 0);
	ck_assert_uint_le(st.mode_switch_ns, st.mirroring_ns);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	hammer_stop(&h);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/*
 * After MIRRORING, with the copy loop throttled to a crawl, a guest write
 * to a granule already in sync is not in the destination when the write
 * returns in background mode (it is dirty, waiting for the copy loop).
 */
/* R27 */
START_TEST(background_write_is_not_in_destination_at_ack)
{
	const char *dst = fx_path(&fx, "dst.raw");
	static uint8_t data[4096], back[4096];
	bc_block_job_stats st;
	int fd;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 4096,
						BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES), 0);
	/* An idle bucket passes one request: spend it on another granule. */
	fx_guest_write(&fx, 2u << 20, 512, 0x99);
	usleep(100 * 1000);
	memset(data, 0xc3, sizeof(data));
	ck_assert_int_eq(bc_disk_pwrite(fx.disk, data, sizeof(data), 1u << 20),
			 (ssize_t)sizeof(data));
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_uint_eq(st.active_writes, 0);
	ck_assert_uint_eq(st.dirty_bytes, 65536);
	fd = open(dst, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, back, sizeof(back), 1u << 20), (ssize_t)sizeof(back));
	close(fd);
	ck_assert(memcmp(back, data, sizeof(data)) != 0);
	memcpy(fx.shadow + (1u << 20), data, sizeof(data));
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R28 */
START_TEST(write_blocking_write_is_in_destination_at_ack)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	struct fmt_image *img;
	static uint8_t data[4096], back[4096];
	bc_block_job_stats st;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL,
				       BC_BLOCK_COPY_SYNCHRONOUS_WRITES), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 4096,
						BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES), 0);
	memset(data, 0xc3, sizeof(data));
	ck_assert_int_eq(bc_disk_pwrite(fx.disk, data, sizeof(data), 1u << 20),
			 (ssize_t)sizeof(data));
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_uint_eq(st.active_writes, 1);
	/* A partial granule write leaves the granule in sync: nothing dirty. */
	ck_assert_uint_eq(st.dirty_bytes, 0);
	ck_assert_int_eq(fmt_open(dst, "qcow2", 0, &img), 0);
	ck_assert_int_eq(fmt_pread(img, back, sizeof(back), 1u << 20), 0);
	fmt_close(img);
	ck_assert_mem_eq(back, data, sizeof(data));
	memcpy(fx.shadow + (1u << 20), data, sizeof(data));
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R30 */
START_TEST(verify_refuses_pivot_to_corrupted_destination)
{
	const char *dst = fx_path(&fx, "dst.raw");
	bc_block_job_stats st;
	char junk[512];
	int fd;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	/* Someone scribbles on the destination behind the job's back. */
	memset(junk, 0xee, sizeof(junk));
	fd = open(dst, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 1000000), (ssize_t)sizeof(junk));
	ck_assert_int_eq(fsync(fd), 0);
	close(fd);

	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT |
							BC_BLOCK_JOB_ABORT_VERIFY), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_IO);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "verification failed: '%s' and '%s' differ at offset 1000000; pivot refused, mirroring goes on",
			 fx.top, dst));
	/* The job goes on, still on the source. */
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.active, 1);
	/* The mismatch was re-dirtied and recopied: now the pivot verifies. */
	ck_assert_msg(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT |
						      BC_BLOCK_JOB_ABORT_VERIFY) == 0,
		      "%s", bc_last_error()->message);
	ck_assert_str_eq(bc_disk_path(fx.disk), dst);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R30 */
START_TEST(verify_needs_pivot)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_VERIFY), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message, "verify only permitted with pivot");
}
END_TEST

/* R31 */
START_TEST(stats_of_finished_job)
{
	bc_block_job_stats st;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 0);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx_path(&fx, "dst.qcow2"), 0,
					  BC_BLOCK_REBASE_COPY), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.active, 0);
	ck_assert_int_eq(st.type, BC_BLOCK_JOB_TYPE_COPY);
	ck_assert_int_eq(st.status, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(st.ready, 1);
	ck_assert_uint_eq(st.cur, st.end);
	ck_assert_uint_eq(st.dirty_bytes, 0);
	ck_assert_uint_eq(st.bytes_copied, 5u << 20); /* the chain's data */
	ck_assert_uint_gt(st.mirroring_ns, 0);
	ck_assert_uint_gt(st.pivot_stall_ns, 0);
	ck_assert_uint_ge(st.elapsed_ns, st.mirroring_ns);
	ck_assert_uint_eq(st.mode_switch_ns, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mirror");
	TCase *tc = tcase_create("modes");

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, background_does_not_converge_under_heavy_writes);
	tcase_add_test(tc, write_blocking_converges_under_heavy_writes);
	tcase_add_test(tc, auto_converge_switches_and_converges);
	tcase_add_test(tc, background_write_is_not_in_destination_at_ack);
	tcase_add_test(tc, write_blocking_write_is_in_destination_at_ack);
	suite_add_tcase(s, tc);
	tc = tcase_create("verify");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, verify_refuses_pivot_to_corrupted_destination);
	tcase_add_test(tc, verify_needs_pivot);
	tcase_add_test(tc, stats_of_finished_job);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
