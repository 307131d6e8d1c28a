/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for lib/common: util.h helpers and the error record.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "tests/check-main.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

START_TEST(be_roundtrip)
{
	uint8_t b[8];

	bc_put_be64(b, 0x0102030405060708ull);
	ck_assert_uint_eq(b[0], 1);
	ck_assert_uint_eq(b[7], 8);
	ck_assert_uint_eq(bc_get_be64(b), 0x0102030405060708ull);
	bc_put_be32(b, 0xa1b2c3d4u);
	ck_assert_uint_eq(b[0], 0xa1);
	ck_assert_uint_eq(bc_get_be32(b), 0xa1b2c3d4u);
	bc_put_be16(b, 0xbeef);
	ck_assert_uint_eq(bc_get_be16(b), 0xbeef);
}
END_TEST

START_TEST(align_helpers)
{
	ck_assert(bc_is_pow2(4096));
	ck_assert(!bc_is_pow2(0));
	ck_assert(!bc_is_pow2(4097));
	ck_assert_uint_eq(bc_align_down(65537, 65536), 65536);
	ck_assert_uint_eq(bc_align_up(65537, 65536), 131072);
	ck_assert_uint_eq(bc_align_up(65536, 65536), 65536);
	ck_assert(bc_is_aligned(8192, 4096));
	ck_assert(!bc_is_aligned(8193, 4096));
}
END_TEST

START_TEST(is_zero_detects_every_position)
{
	uint8_t buf[100];
	size_t i;

	memset(buf, 0, sizeof(buf));
	ck_assert(bc_is_zero(buf, sizeof(buf)));
	ck_assert(bc_is_zero(buf, 0));
	for (i = 0; i < sizeof(buf); i++) {
		buf[i] = 1;
		ck_assert(!bc_is_zero(buf, sizeof(buf)));
		ck_assert(bc_is_zero(buf, i));
		buf[i] = 0;
	}
}
END_TEST

START_TEST(overflow_checks)
{
	uint64_t r;

	ck_assert(bc_add_overflow(UINT64_MAX, 1ull, &r));
	ck_assert(!bc_add_overflow(1ull, 2ull, &r));
	ck_assert_uint_eq(r, 3);
	ck_assert(bc_mul_overflow(1ull << 33, 1ull << 31, &r));
}
END_TEST

static void free_on_exit(char **seen)
{
	BC_AUTOFREE char *p = malloc(16);

	*seen = bc_steal_ptr(&p);
	ck_assert_ptr_null(p);
}

START_TEST(steal_ptr_hands_over)
{
	char *got = NULL;

	free_on_exit(&got);
	ck_assert_ptr_nonnull(got);
	free(got);
}
END_TEST

START_TEST(error_record)
{
	bc_error_reset();
	ck_assert_int_eq(bc_error_get()->code, 0);
	ck_assert_str_eq(bc_error_get()->message, "");
	bc_error_set(ERR_IMAGE_CORRUPT, 0, "%s: bad %d", "a.qcow2", 7);
	bc_error_set_default(ERR_IO, EIO, "ignored");
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	ck_assert_str_eq(bc_error_get()->message, "a.qcow2: bad 7");
	ck_assert_int_eq(bc_fail_errno(-EIO), -1);
	ck_assert_str_eq(bc_error_get()->message, "a.qcow2: bad 7");
	bc_error_reset();
	ck_assert_int_eq(bc_fail_errno(-ENOENT), -1);
	ck_assert_int_eq(bc_error_get()->code, ERR_NO_SUCH_FILE);
	ck_assert_int_eq(bc_error_get()->sys_errno, ENOENT);
	ck_assert_str_eq(bc_error_get()->message, "No such file or directory");
	ck_assert_int_eq(bc_fail(ERR_INVALID_ARG, 0, "x %s", "y"), -1);
	ck_assert_int_eq(bc_error_get()->code, ERR_INVALID_ARG);
}
END_TEST

static Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("helpers");

	tcase_add_test(tc, be_roundtrip);
	tcase_add_test(tc, align_helpers);
	tcase_add_test(tc, is_zero_detects_every_position);
	tcase_add_test(tc, overflow_checks);
	tcase_add_test(tc, steal_ptr_hands_over);
	suite_add_tcase(s, tc);
	tc = tcase_create("error");
	tcase_add_test(tc, error_record);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(util_suite());
}
