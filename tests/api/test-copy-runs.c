/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A copy chunk whose data lies in several layers of the chain (a guest's
 * writes into the top cut the backing's data into runs) is read as one
 * asynchronous read per run and written once, in order; a failing read
 * among them fails the job with that read's file, once all of them are
 * done with the buffer.
 *
 * The chain: layer0 holds [0, 1 MiB); layer1 overwrites every other
 * 64 KiB cluster of it. Block status thus answers 16 runs of 64 KiB that
 * alternate between the layers; the copy loop reads up to 8 runs into one
 * chunk (RUNS_MAX in engine/mirror.c), so the destination gets two
 * 512 KiB writes, not sixteen of 64 KiB.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/iob-fault.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"
#include "tests/check-main.h"

#define KiB	1024u
#define CLUSTER (64u * KiB)
#define DATA	(1024u * KiB)
/* A count no copy here reaches: the plan only counts. */
#define NEVER 1000000u

static void write_layer(const char *path, const char *backing, uint64_t off,
			uint64_t len, uint64_t stride, uint8_t byte)
{
	struct fmt_create_opts co = {.format = "qcow2",
				     .size = FX_SIZE,
				     .backing_file = backing,
				     .backing_fmt = backing ? "qcow2" : NULL};
	struct fmt_image *img;
	uint8_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	memset(buf, byte, len);
	ck_assert_int_eq(fmt_create(path, &co), 0);
	ck_assert_int_eq(fmt_open(path, "qcow2", FMT_OPEN_RDWR, &img), 0);
	for (; off < DATA; off += stride) {
		ck_assert_int_eq(fmt_pwrite(img, buf, len, off), 0);
		memcpy(fx.shadow + off, buf, len);
	}
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	free(buf);
}

/* The alternating chain, opened as fx.disk; returns the top's path. */
static const char *open_alternating_chain(void)
{
	const char *base = fx_path(&fx, "layer0.qcow2");
	const char *top = fx_path(&fx, "layer1.qcow2");

	write_layer(base, NULL, 0, DATA, DATA, 0x11);
	write_layer(top, "layer0.qcow2", CLUSTER, CLUSTER, 2 * CLUSTER, 0x22);
	fx.disk = bc_disk_open(fx.eng, top, "qcow2", 0);
	ck_assert_msg(fx.disk, "bc_disk_open: %s", bc_last_error()->message);
	return top;
}

static void start_copy(const char *dst)
{
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0,
					 BC_BLOCK_REBASE_COPY |
						 BC_BLOCK_REBASE_COPY_RAW),
			 0);
}

START_TEST(runs_in_other_layers_share_one_chunk_and_one_write)
{
	const char *dst = fx_path(&fx, "dst.raw");

	open_alternating_chain();
	iob_fault_global(IOB_WRITE, -1, NEVER, EIO);
	start_copy(dst);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_uint_eq(iob_fault_global_matched(), 2);
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	fx_check_image_equals_shadow(&fx, dst, "raw");
}
END_TEST

START_TEST(each_run_is_read_from_its_layer)
{
	const char *dst = fx_path(&fx, "dst.raw");

	open_alternating_chain();
	iob_fault_global(IOB_READ, -1, NEVER, EIO);
	start_copy(dst);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_uint_eq(iob_fault_global_matched(), DATA / CLUSTER);
	iob_fault_global(IOB_READ, -1, 0, 0);
}
END_TEST

/*
 * The third read (layer0's second run, inside the first chunk) fails: the
 * job fails with the base's name, after the chunk's other reads are done.
 */
START_TEST(a_failed_run_fails_the_job_with_its_file)
{
	const char *dst = fx_path(&fx, "dst.raw");
	const char *base = fx_path(&fx, "layer0.qcow2");
	char want[PATH_MAX + 64];

	open_alternating_chain();
	iob_fault_global(IOB_READ, -1, 3, EIO);
	start_copy(dst);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	iob_fault_global(IOB_READ, -1, 0, 0);
	snprintf(want, sizeof(want), "%s: read failed at offset ", base);
	ck_assert_msg(strncmp(fx.last_err.message, want, strlen(want)) == 0,
		      "'%s' does not start with '%s'", fx.last_err.message,
		      want);
	ck_assert_int_eq(fx.last_err.sys_errno, EIO);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("copy-runs");
	TCase *tc = tcase_create("copy-runs");

	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, runs_in_other_layers_share_one_chunk_and_one_write);
	tcase_add_test(tc, each_run_is_read_from_its_layer);
	tcase_add_test(tc, a_failed_run_fails_the_job_with_its_file);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
