/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rules of docs/rules.md, each test naming its rule: return value,
 * bc_last_error() code and exact message, events in order, job info.
 *
 * Fixtures are made through the formats layer (no qemu-img needed); the
 * content checks read images back through it too. Each test runs in its
 * own temporary directory (Check's fork mode gives each its own process).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "engine/iob-fault.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"

/* --- argument and flag rules ------------------------------------------ */

/* R1 */
START_TEST(copy_without_base_is_refused)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, BC_BLOCK_REBASE_COPY), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "base is required when starting a copy");
}
END_TEST

/* R2 */
START_TEST(shallow_without_copy_is_refused)
{
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, BC_BLOCK_REBASE_SHALLOW), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "shallow only permitted when requesting a copy");
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
}
END_TEST

/* R2 */
START_TEST(reuse_ext_without_copy_is_refused)
{
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, BC_BLOCK_REBASE_REUSE_EXT), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "reuse_ext only permitted when requesting a copy");
}
END_TEST

/* R3 */
START_TEST(abort_async_with_pivot_is_refused)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_ASYNC |
							BC_BLOCK_JOB_ABORT_PIVOT),
			 -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "async and pivot flags are mutually exclusive");
}
END_TEST

/* R4 */
START_TEST(unknown_flags_are_refused)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, 1u << 20), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "unsupported flags (0x100000) in function bc_block_rebase");
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 4), -1);
	ck_assert_str_eq(bc_last_error()->message,
			 "unsupported flags (0x4) in function bc_block_job_abort");
}
END_TEST

/* R7 */
START_TEST(abort_without_job_is_refused)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "disk '%s' does not have an active block job", fx.top));
}
END_TEST

/* R5 */
START_TEST(block_copy_granularity_is_checked)
{
	bc_block_copy_params p = { .granularity = 3000 };

	fx_open_chain(&fx, 1);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst"), &p, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "granularity must be a power of two between 4096 and 67108864");
	p.granularity = 2048;
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst"), &p, 0), -1);
	p.granularity = 65536;
	p.buf_size = 4096;
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst"), &p, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert(access(fx_path(&fx, "dst"), F_OK) != 0);
}
END_TEST

static int counted;

static void count_cb(bc_engine *eng, bc_disk *disk, const char *path, int type,
		     int status, void *opaque)
{
	(void)eng;
	(void)disk;
	(void)path;
	(void)type;
	(void)status;
	(void)opaque;
	counted++;
}

/* R23 */
START_TEST(deregistered_callback_is_not_called)
{
	int id;

	fx_open_chain(&fx, 2);
	id = bc_engine_event_register(fx.eng, count_cb, NULL);
	ck_assert_int_ge(id, 0);
	ck_assert_int_eq(bc_engine_event_deregister(fx.eng, id), 0);
	ck_assert_int_eq(bc_engine_event_deregister(fx.eng, id), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "no event callback with id %d", id));
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(counted, 0);
	/* The freed id is reused. */
	ck_assert_int_eq(bc_engine_event_register(fx.eng, count_cb, NULL), id);
}
END_TEST

/* The event fd is readable exactly while events are queued. */
/* R23 */
START_TEST(event_fd_readable_while_events_queued)
{
	struct pollfd pfd = { .fd = -1, .events = POLLIN };

	fx_open_chain(&fx, 2);
	pfd.fd = bc_engine_event_fd(fx.eng);
	ck_assert_int_ge(pfd.fd, 0);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, 0), 0);
	ck_assert_int_eq(poll(&pfd, 1, 30000), 1);
	ck_assert_int_eq(bc_engine_dispatch(fx.eng, 0), 1);
	ck_assert_int_eq(fx.events[0].status, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	ck_assert_int_eq(bc_engine_dispatch(fx.eng, 0), 0);
}
END_TEST

/* --- pull --------------------------------------------------------------- */

/* R9 */
START_TEST(pull_completes_and_drops_backing)
{
	struct fmt_image *img;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(fx.top, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_ptr_null(img->backing_name);
	fmt_close(img);
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}
END_TEST

/* R9 */
START_TEST(pull_to_base_keeps_base)
{
	struct fmt_image *img;
	char *base_real;

	fx_open_chain(&fx, 3);
	base_real = realpath(fx.layers[0], NULL);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx.layers[0], 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(fx.top, "qcow2", 0, &img), 0);
	ck_assert_str_eq(img->backing_name, base_real);
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	ck_assert_ptr_nonnull(img->backing);
	ck_assert_ptr_null(img->backing->backing);
	fmt_close(img);
	free(base_real);
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}
END_TEST

/* R9 */
START_TEST(pull_relative_keeps_relative_name)
{
	struct fmt_image *img;

	fx_open_chain(&fx, 3); /* layers record relative names */
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx.layers[0], 0,
					  BC_BLOCK_REBASE_RELATIVE), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(fx.top, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_str_eq(img->backing_name, "layer0.qcow2");
	fmt_close(img);
}
END_TEST

/* R10 */
START_TEST(pull_unknown_base_is_refused)
{
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx.top, 0, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_int_eq(bc_block_rebase(fx.disk, "/nonexistent/x.qcow2", 0, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_NO_SUCH_FILE);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
}
END_TEST

/* R11, R21 */
START_TEST(pull_abort_cancels)
{
	fx_open_chain(&fx, 3);
	/* 1 MiB/s over several MiB of backing data: still running below. */
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 1, 0), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_int_eq(fx.info.type, BC_BLOCK_JOB_TYPE_PULL);
	ck_assert_uint_eq(fx.info.bandwidth, 1);
	ck_assert_uint_eq(fx.info.end, FX_SIZE);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_CANCELED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R11 */
START_TEST(pull_abort_async_returns_then_event)
{
	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 1, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_ASYNC), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R6 */
START_TEST(second_job_is_refused)
{
	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_rebase(fx.disk, NULL, 1, 0), 0);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx_path(&fx, "dst"), 0,
					  BC_BLOCK_REBASE_COPY), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "disk '%s' already has an active block job", fx.top));
	ck_assert(access(fx_path(&fx, "dst"), F_OK) != 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_CANCELED);
}
END_TEST

/* --- copy --------------------------------------------------------------- */

/* R12, R16, R18 */
START_TEST(full_copy_mirrors_then_pivots)
{
	struct fmt_image *img;
	const char *dst = fx_path(&fx, "dst.qcow2");

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_int_eq(fx.info.type, BC_BLOCK_JOB_TYPE_COPY);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_uint_eq(fx.info.cur, fx.info.end);
	ck_assert_uint_gt(fx.info.end, 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), dst);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);

	/* After the pivot, writes go to the copy only. */
	fx_guest_write(&fx, 12345, 70000, 0x77);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
	ck_assert_int_eq(fmt_open(dst, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_ptr_null(img->backing_name);
	fmt_close(img);
	/* The source did not see the write made after the pivot. */
	ck_assert(!fx_image_matches_shadow(&fx, fx.top, "qcow2"));
}
END_TEST

/* R12, R18 */
START_TEST(shallow_copy_keeps_backing)
{
	struct fmt_image *img;
	const char *dst = fx_path(&fx, "dst.qcow2");
	char *backing_real;

	fx_open_chain(&fx, 3);
	backing_real = realpath(fx.layers[1], NULL);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_SHALLOW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(dst, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_str_eq(img->backing_name, backing_real);
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	fmt_close(img);
	free(backing_real);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* R12 */
START_TEST(copy_raw_makes_raw_destination)
{
	const char *dst = fx_path(&fx, "dst.raw");
	struct fmt_image *img;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(dst, NULL, 0, &img), 0);
	ck_assert_str_eq(img->drv->name, "raw");
	fmt_close(img);
	fx_check_image_equals_shadow(&fx, dst, "raw");
}
END_TEST

/* R13 */
START_TEST(existing_destination_is_refused_untouched)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	static const char content[] = "precious data, not an image";
	char back[sizeof(content)];
	int fd;

	fd = open(dst, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, sizeof(content)), (ssize_t)sizeof(content));
	close(fd);
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_EXISTS);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "destination file '%s' already exists; use REUSE_EXT to write into it",
			 dst));
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fd = open(dst, O_RDONLY);
	ck_assert_int_eq(read(fd, back, sizeof(back)), (ssize_t)sizeof(back));
	close(fd);
	ck_assert_mem_eq(back, content, sizeof(content));
}
END_TEST

/* R14 */
START_TEST(reuse_ext_requires_destination)
{
	const char *dst = fx_path(&fx, "missing.qcow2");

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_REUSE_EXT), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_NO_SUCH_FILE);
	ck_assert(access(dst, F_OK) != 0);
}
END_TEST

/* R14 */
START_TEST(reuse_ext_keeps_relative_backing)
{
	struct fmt_create_opts co = { .format = "qcow2", .size = FX_SIZE,
				      .backing_file = "layer1.qcow2",
				      .backing_fmt = "qcow2" };
	const char *dst = fx_path(&fx, "dst.qcow2");
	struct fmt_image *img;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(fmt_create(dst, &co), 0);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_SHALLOW |
					  BC_BLOCK_REBASE_REUSE_EXT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_open(dst, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_str_eq(img->backing_name, "layer1.qcow2");
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	fmt_close(img);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* R17, R21, R22 */
START_TEST(pivot_before_mirroring_is_refused_and_job_goes_on)
{
	bc_block_copy_params p = { .bandwidth = 1u << 20 };
	const char *dst = fx_path(&fx, "dst.qcow2");

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_BLOCK_COPY_ACTIVE);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "block copy still active: disk '%s' not ready for pivot yet",
			 fx.top));
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info,
					       BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES), 1);
	ck_assert_int_eq(fx.info.type, BC_BLOCK_JOB_TYPE_COPY);
	ck_assert_uint_eq(fx.info.bandwidth, 1u << 20);
	ck_assert_uint_lt(fx.info.cur, fx.info.end);
	/* Lift the limit: the job reaches MIRRORING and pivots. */
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R19 */
START_TEST(abort_after_mirroring_leaves_consistent_copy)
{
	const char *dst = fx_path(&fx, "dst.qcow2");

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	/* Mirrored writes after MIRRORING reach the copy before abort returns. */
	fx_guest_write(&fx, 3 * 65536 + 17, 100000, 0x5a);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
	fx_guest_write(&fx, 0, 4096, 0x11); /* source only from now on */
	fx_check_disk_equals_shadow(&fx);
	ck_assert(!fx_image_matches_shadow(&fx, dst, "qcow2"));
}
END_TEST

/* R19 */
START_TEST(abort_before_mirroring_cancels)
{
	bc_block_copy_params p = { .bandwidth = 1u << 20 };

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), &p, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R8 */
START_TEST(snapshot_and_close_refused_during_copy)
{
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, fx_path(&fx, "dst.qcow2"), 0,
					  BC_BLOCK_REBASE_COPY), 0);
	ck_assert_int_eq(bc_snapshot_create(fx.disk, fx_path(&fx, "snap.qcow2"), 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_BLOCK_COPY_ACTIVE);
	ck_assert_str_eq(bc_last_error()->message, fx_fmt(&fx,
			 "block copy still active: disk '%s' has an active block job",
			 fx.top));
	ck_assert(access(fx_path(&fx, "snap.qcow2"), F_OK) != 0);
	ck_assert_int_eq(bc_disk_close(fx.disk), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_BLOCK_COPY_ACTIVE);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_eq(bc_snapshot_create(fx.disk, fx_path(&fx, "snap.qcow2"), 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx_path(&fx, "snap.qcow2"));
	fx_guest_write(&fx, 4096, 8192, 0x33);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R20 */
START_TEST(read_error_fails_job_guest_unharmed)
{
	const char *dst = fx_path(&fx, "dst.raw");

	fx_open_chain(&fx, 2);
	iob_fault_global(IOB_READ, -1, 2, EIO);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	ck_assert_int_eq(fx.last_err.code, BC_ERR_IO);
	ck_assert_int_eq(fx.last_err.sys_errno, EIO);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_guest_write(&fx, 65536 * 5 + 3, 65536, 0x42);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R20 */
START_TEST(full_destination_fails_job)
{
	const char *dst = fx_path(&fx, "dst.raw");

	fx_open_chain(&fx, 2);
	iob_fault_global(IOB_WRITE, -1, 3, ENOSPC);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	ck_assert_int_eq(fx.last_err.code, BC_ERR_NO_SPACE);
	ck_assert_int_eq(fx.last_err.sys_errno, ENOSPC);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_guest_write(&fx, 1000, 300000, 0x24);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

static Suite *rules_suite(void)
{
	Suite *s = suite_create("rules");
	TCase *tc;

	tc = tcase_create("args");
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, copy_without_base_is_refused);
	tcase_add_test(tc, shallow_without_copy_is_refused);
	tcase_add_test(tc, reuse_ext_without_copy_is_refused);
	tcase_add_test(tc, abort_async_with_pivot_is_refused);
	tcase_add_test(tc, unknown_flags_are_refused);
	tcase_add_test(tc, abort_without_job_is_refused);
	tcase_add_test(tc, block_copy_granularity_is_checked);
	tcase_add_test(tc, deregistered_callback_is_not_called);
	tcase_add_test(tc, event_fd_readable_while_events_queued);
	suite_add_tcase(s, tc);

	tc = tcase_create("pull");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, pull_completes_and_drops_backing);
	tcase_add_test(tc, pull_to_base_keeps_base);
	tcase_add_test(tc, pull_relative_keeps_relative_name);
	tcase_add_test(tc, pull_unknown_base_is_refused);
	tcase_add_test(tc, pull_abort_cancels);
	tcase_add_test(tc, pull_abort_async_returns_then_event);
	tcase_add_test(tc, second_job_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("copy");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, full_copy_mirrors_then_pivots);
	tcase_add_test(tc, shallow_copy_keeps_backing);
	tcase_add_test(tc, copy_raw_makes_raw_destination);
	tcase_add_test(tc, existing_destination_is_refused_untouched);
	tcase_add_test(tc, reuse_ext_requires_destination);
	tcase_add_test(tc, reuse_ext_keeps_relative_backing);
	tcase_add_test(tc, pivot_before_mirroring_is_refused_and_job_goes_on);
	tcase_add_test(tc, abort_after_mirroring_leaves_consistent_copy);
	tcase_add_test(tc, abort_before_mirroring_cancels);
	tcase_add_test(tc, snapshot_and_close_refused_during_copy);
	suite_add_tcase(s, tc);

	tc = tcase_create("failure");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, read_error_fails_job_guest_unharmed);
	tcase_add_test(tc, full_destination_fails_job);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(rules_suite());
}
