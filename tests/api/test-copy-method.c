/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy's data path (engine/copy-method.c) through the public API: the
 * flag rules, what bc_block_job_copy_method() reports, and that every path
 * copies what a guest wrote through a buffered disk, before the job and
 * while it runs (the direct path reads the source on its own O_DIRECT
 * descriptors; the kernel writes the guest's page-cache data back first).
 * A pull (engine/pull.c) takes its path from copy-method.c too: the
 * method it reports, and that what it pulls equals the chain's content
 * with guest writes before and during the job, on a buffered and on an
 * O_DIRECT disk.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"

#define EXT4_MAGIC 0xEF53

/* Whether the test directory's filesystem takes O_DIRECT. */
static bool dir_is_ext4(void)
{
	struct statfs sf;

	return statfs(fx.dir, &sf) == 0 && sf.f_type == EXT4_MAGIC;
}

START_TEST(clashing_paths_are_refused)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	struct stat st;

	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_DIRECT |
						       BC_BLOCK_COPY_BUFFERED),
			 -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "direct, buffered and file-range data paths are mutually exclusive");
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_REFLINK |
						       BC_BLOCK_COPY_REFLINK_ALWAYS),
			 -1);
	ck_assert_str_eq(bc_last_error()->message,
			 "reflink and reflink-always are mutually exclusive");
	ck_assert_int_ne(stat(dst, &st), 0);
	/* No copy job ever ran on this disk. */
	ck_assert_ptr_null(bc_block_job_copy_method(fx.disk));
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OK);
	ck_assert_ptr_null(bc_block_job_copy_method(NULL));
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(file_range_from_qcow2_is_refused)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	struct stat st;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_FILE_RANGE), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 fx_fmt(&fx, "cannot use copy_file_range from '%s' to '%s': it needs a raw source without backing file and a raw destination",
				fx.top, dst));
	ck_assert_int_ne(stat(dst, &st), 0); /* the created destination is removed */
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
}
END_TEST

/*
 * Copy with @flags while a guest writes through the (buffered) disk
 * before and during the job; pivot; the destination equals the shadow.
 */
static void copy_under_guest(unsigned int flags, const char *want_method,
			     const char *dst, const char *fmt)
{
	fx_guest_write(&fx, 1u << 20, 300000, 0xa1);   /* in the page cache */
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, flags), 0);
	ck_assert_str_eq(bc_block_job_copy_method(fx.disk), want_method);
	fx_guest_write(&fx, 4096 * 7, 8192, 0xb2);
	fx_guest_write(&fx, (7u << 20) + 12345, 65536, 0xc3);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	fx_guest_write(&fx, 3u << 20, 1u << 20, 0xd4); /* mirrored */
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT |
							BC_BLOCK_JOB_ABORT_VERIFY),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	/* Still reported after the job ended. */
	ck_assert_str_eq(bc_block_job_copy_method(fx.disk), want_method);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, fmt);
}

START_TEST(default_path_copies_buffered_guest_writes)
{
	fx_open_chain(&fx, 3);
	copy_under_guest(
		0, fx_dir_can_direct(&fx) ? "direct" : "buffered+write-behind",
		fx_path(&fx, "dst.qcow2"), "qcow2");
}
END_TEST

START_TEST(buffered_path_with_write_behind)
{
	fx_open_chain(&fx, 3);
	copy_under_guest(BC_BLOCK_COPY_BUFFERED, "buffered+write-behind",
			 fx_path(&fx, "dst.qcow2"), "qcow2");
}
END_TEST

START_TEST(direct_path_to_raw)
{
	if (!fx_dir_can_direct(&fx))
		return;
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx_path(&fx, "dst.raw"), 0,
					 BC_BLOCK_REBASE_COPY | BC_BLOCK_REBASE_COPY_RAW),
			 0);
	ck_assert_str_eq(bc_block_job_copy_method(fx.disk), "direct");
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, fx_path(&fx, "dst.raw"), "raw");
}
END_TEST

/*
 * Pull the chain (the disk opened with @disk_flags) into its top while a
 * guest writes; the top alone then holds the shadow's content.
 */
static void pull_under_guest(unsigned int disk_flags, const char *want_method)
{
	struct fmt_image *img;

	fx_open_chain(&fx, 3);
	fx_close_disk(&fx);
	fx.disk = bc_disk_open(fx.eng, fx.top, "qcow2", disk_flags);
	ck_assert_msg(fx.disk, "%s", bc_last_error()->message);
	fx_guest_write(&fx, (1u << 20) + 4096, 300000, 0xa1); /* before */
	ck_assert_int_eq(bc_block_pull(fx.disk, 0, 0), 0);
	ck_assert_str_eq(bc_block_job_copy_method(fx.disk), want_method);
	fx_guest_write(&fx, 4096 * 7, 8192, 0xb2); /* during */
	fx_guest_write(&fx, (6u << 20) + 12345, 65536, 0xc3);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	ck_assert_str_eq(bc_block_job_copy_method(fx.disk), want_method);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	/* The top stands alone now: no backing file, the guest's content. */
	ck_assert_int_eq(fmt_open(fx.top, "qcow2", FMT_OPEN_NO_BACKING, &img),
			 0);
	ck_assert_ptr_null(img->backing_name);
	fmt_close(img);
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}

START_TEST(pull_on_a_buffered_disk_writes_behind)
{
	pull_under_guest(0, "buffered+write-behind");
}
END_TEST

START_TEST(pull_on_a_direct_disk_is_direct)
{
	if (!fx_dir_can_direct(&fx))
		return;
	pull_under_guest(BC_DISK_DIRECT, "direct");
}
END_TEST

/* A raw source made from the chain's content, opened as the disk. */
static void open_raw_source(struct fx *f)
{
	const char *raw = fx_path(f, "src.raw");
	struct fmt_create_opts co = { .format = "raw", .size = FX_SIZE };
	struct fmt_image *img;

	fx_open_chain(f, 3);
	fx_close_disk(f);
	ck_assert_int_eq(fmt_create(raw, &co), 0);
	ck_assert_int_eq(fmt_open(raw, "raw", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, f->shadow, FX_SIZE, 0), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	f->disk = bc_disk_open(f->eng, raw, "raw", 0);
	ck_assert_ptr_nonnull(f->disk);
}

START_TEST(file_range_raw_to_raw)
{
	if (!dir_is_ext4())
		return; /* elsewhere the kernel may clone: refused with reflink never */
	open_raw_source(&fx);
	copy_under_guest(BC_BLOCK_COPY_FILE_RANGE, "copy_file_range",
			 fx_path(&fx, "dst.raw"), "raw");
}
END_TEST

START_TEST(reflink_always_fails_clearly_on_ext4)
{
	const char *dst = fx_path(&fx, "dst.raw");
	struct stat st;

	if (!dir_is_ext4())
		return;
	open_raw_source(&fx);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_REFLINK_ALWAYS), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_UNSUPPORTED);
	ck_assert_str_eq(bc_last_error()->message,
			 fx_fmt(&fx, "cannot reflink '%s' to '%s': ext4 cannot share extents between files (use --reflink=auto or never)",
				fx_path(&fx, "src.raw"), dst));
	ck_assert_int_ne(stat(dst, &st), 0);
	/* auto copies instead, on the path the engine would choose anyway. */
	copy_under_guest(BC_BLOCK_COPY_REFLINK,
			 fx_dir_can_direct(&fx) ? "direct"
						: "buffered+write-behind",
			 dst, "raw");
}
END_TEST

static Suite *copy_method_suite(void)
{
	Suite *s = suite_create("copy-method");
	TCase *tc = tcase_create("rules");

	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, clashing_paths_are_refused);
	tcase_add_test(tc, file_range_from_qcow2_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("paths");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, default_path_copies_buffered_guest_writes);
	tcase_add_test(tc, buffered_path_with_write_behind);
	tcase_add_test(tc, direct_path_to_raw);
	tcase_add_test(tc, file_range_raw_to_raw);
	tcase_add_test(tc, reflink_always_fails_clearly_on_ext4);
	tcase_add_test(tc, pull_on_a_buffered_disk_writes_behind);
	tcase_add_test(tc, pull_on_a_direct_disk_is_direct);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(copy_method_suite());
}
