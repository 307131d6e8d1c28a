/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bc_disk_block_status (BC_1.1): the guest view's runs as an NBD server
 * reports them (base:allocation) — data, zero, hole+zero — and its
 * argument rules. Fixtures are made through the formats layer.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check-main.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"

#define MiB (1u << 20)

/* An image of 4 MiB: 0xab at [1, 2) MiB; qcow2 also zeroes [2, 3) MiB. */
static const char *make_image(const char *fmt)
{
	struct fmt_create_opts o = { .format = fmt, .size = 4 * MiB };
	const char *path = fx_path(&fx, strcmp(fmt, "raw") ? "bs.qcow2" : "bs.raw");
	struct fmt_image *img;
	uint8_t *buf = malloc(MiB);

	ck_assert_ptr_nonnull(buf);
	memset(buf, 0xab, MiB);
	ck_assert_int_eq(fmt_create(path, &o), 0);
	ck_assert_int_eq(fmt_open(path, fmt, FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, MiB, MiB), 0);
	if (!strcmp(fmt, "qcow2"))
		ck_assert_int_eq(fmt_write_zeroes(img, 2 * MiB, MiB, 0), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	free(buf);
	fx.disk = bc_disk_open(fx.eng, path, fmt, 0);
	ck_assert_ptr_nonnull(fx.disk);
	return path;
}

static void expect(uint64_t off, uint64_t len, int64_t want_len,
		   unsigned int want_status)
{
	unsigned int st = 0xff;

	ck_assert_int_eq(bc_disk_block_status(fx.disk, off, len, &st, 0), want_len);
	ck_assert_uint_eq(st, want_status);
}

START_TEST(raw_reports_data_and_holes)
{
	make_image("raw");
	expect(0, 4 * MiB, MiB, BC_DISK_EXTENT_ZERO);
	expect(MiB, 3 * MiB, MiB, 0);
	expect(MiB + 4096, 4096, 4096, 0);
	expect(2 * MiB, 2 * MiB, 2 * MiB, BC_DISK_EXTENT_ZERO);
}
END_TEST

START_TEST(qcow2_reports_data_zero_and_unallocated)
{
	make_image("qcow2");
	expect(0, 4 * MiB, MiB, BC_DISK_EXTENT_ZERO | BC_DISK_EXTENT_HOLE);
	expect(MiB, 3 * MiB, MiB, 0);
	expect(2 * MiB, 2 * MiB, MiB, BC_DISK_EXTENT_ZERO);
	expect(3 * MiB, MiB, MiB, BC_DISK_EXTENT_ZERO | BC_DISK_EXTENT_HOLE);
}
END_TEST

START_TEST(arguments_are_checked)
{
	unsigned int st;

	make_image("raw");
	ck_assert_int_eq(bc_disk_block_status(fx.disk, 0, MiB, &st, 1), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message, "unsupported flags 0x1");
	ck_assert_int_eq(bc_disk_block_status(fx.disk, 0, 0, &st, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message, "len must not be 0");
	ck_assert_int_eq(bc_disk_block_status(fx.disk, 0, MiB, NULL, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_int_eq(bc_disk_block_status(NULL, 0, MiB, &st, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_int_eq(bc_disk_block_status(fx.disk, 3 * MiB, 2 * MiB, &st, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(bc_last_error()->message, "is beyond the end of disk"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block-status");
	TCase *tc = tcase_create("block-status");

	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, raw_reports_data_and_holes);
	tcase_add_test(tc, qcow2_reports_data_zero_and_unallocated);
	tcase_add_test(tc, arguments_are_checked);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
