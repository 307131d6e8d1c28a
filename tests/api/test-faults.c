/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection walk: fail the Nth read (source) or write (destination)
 * of a copy job with EIO or ENOSPC, for N = 1, 2, ... until the job gets
 * through without reaching the fault. Every run must end either in FAILED
 * with the injected error (guest unharmed, disk still on the source, no
 * pivot possible) or, once N is past the job's last request, in a normal
 * MIRRORING and pivot. This covers each error exit of the copy loop.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "engine/iob-fault.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/helpers.h"

static struct fx fx;

/*
 * The job's error names the file, the offset and the reason, as the
 * synchronous paths do: "<file>: <what> failed at offset <N>: <reason>".
 * @file NULL: any file.
 */
static void check_io_message(const bc_error *e, const char *file,
			     const char *what, int err)
{
	char reason[256], prefix[PATH_MAX + 64];
	const char *p = e->message, *tail;
	unsigned long long off;
	int n = 0;

	snprintf(reason, sizeof(reason), ": %s", strerror(err));
	snprintf(prefix, sizeof(prefix), ": %s failed at offset ", what);
	if (file) {
		ck_assert_msg(strncmp(p, file, strlen(file)) == 0,
			      "'%s' does not start with '%s'", p, file);
		p += strlen(file);
		ck_assert_msg(strncmp(p, prefix, strlen(prefix)) == 0,
			      "'%s' lacks '%s'", e->message, prefix);
	} else {
		p = strstr(p, prefix);
		ck_assert_msg(p && p > e->message, "'%s' lacks '<file>%s'",
			      e->message, prefix);
	}
	p += strlen(prefix);
	ck_assert_int_eq(sscanf(p, "%llu%n", &off, &n), 1);
	tail = p + n;
	ck_assert_str_eq(tail, reason);
}

/* One copy with the Nth @op failing with @err; true if the fault hit. */
static bool copy_with_fault(enum iob_op op, unsigned int nth, int err)
{
	const char *dst;
	bool hit;

	fx_setup(&fx);
	dst = fx_path(&fx, "dst.raw");
	fx_open_chain(&fx, 2);
	iob_fault_global(op, -1, nth, err);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	while (fx.nevents == 0)
		ck_assert_int_ge(bc_engine_dispatch(fx.eng, 1000), 0);
	hit = fx.events[0].status == BC_BLOCK_JOB_FAILED;
	if (hit) {
		check_io_message(&fx.last_err, op == IOB_WRITE ? dst : NULL,
				 op == IOB_WRITE ? "write" : "read", err);
		ck_assert_int_eq(fx.last_err.sys_errno, err);
		ck_assert_int_eq(fx.last_err.code,
				 err == ENOSPC ? BC_ERR_NO_SPACE : BC_ERR_IO);
		ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), -1);
		ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
		ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	} else {
		ck_assert_int_eq(fx.events[0].status, BC_BLOCK_JOB_MIRRORING);
		ck_assert_uint_lt(iob_fault_global_matched(), nth);
		fx.consumed = 1;
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
		fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	}
	/* Either way the guest reads and writes what it should. */
	fx_guest_write(&fx, 777777, 99999, 0x3c);
	fx_check_disk_equals_shadow(&fx);
	iob_fault_global(op, -1, 0, 0);
	fx_teardown(&fx);
	return hit;
}

static void walk(enum iob_op op, int err)
{
	unsigned int nth;

	for (nth = 1; nth < 1000; nth++) {
		if (!copy_with_fault(op, nth, err))
			break;
	}
	fprintf(stderr, "# %s %s: %u failing runs, then a clean one\n",
		op == IOB_READ ? "read" : "write", strerror(err), nth - 1);
	ck_assert_uint_gt(nth, 2); /* the job did issue requests of this kind */
	ck_assert_uint_lt(nth, 1000);
}

/* R7, R20 */
START_TEST(walk_read_eio)
{
	walk(IOB_READ, EIO);
}
END_TEST

/* R7, R20 */
START_TEST(walk_write_eio)
{
	walk(IOB_WRITE, EIO);
}
END_TEST

/* R7, R20 */
START_TEST(walk_write_enospc)
{
	walk(IOB_WRITE, ENOSPC);
}
END_TEST

/* --- sources that shrink or vanish under a running copy ------------- */

#define SLOW_BW (1ull << 20) /* bytes/s: the copy of FX_SIZE takes 8 s */

/* A raw or qcow2 source of FX_SIZE bytes, all data, as the shadow says. */
static const char *make_source(const char *format)
{
	const char *src = fx_path(&fx, format[0] == 'r' ? "src.raw" : "src.qcow2");
	struct fmt_create_opts co = { .format = format, .size = FX_SIZE };
	struct fmt_image *img;
	uint64_t i;

	for (i = 0; i < FX_SIZE; i++)
		fx.shadow[i] = (uint8_t)(1 + (i >> 12) + i * 7);
	ck_assert_int_eq(fmt_create(src, &co), 0);
	ck_assert_int_eq(fmt_open(src, format, FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, fx.shadow, FX_SIZE, 0), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	fx.top = src;
	fx.disk = bc_disk_open(fx.eng, src, format, 0);
	ck_assert_msg(fx.disk, "%s", bc_last_error()->message);
	return src;
}

static void start_slow_copy(const char *dst, unsigned int flags)
{
	bc_block_copy_params p = { .bandwidth = SLOW_BW };

	ck_assert_msg(bc_block_copy(fx.disk, dst, &p, flags) == 0, "%s",
		      bc_last_error()->message);
}

/*
 * Truncated under the job to a quarter: what lies past the new end was
 * never copied yet, and must fail the job, never be copied as zeros.
 */
static void truncated_source_fails(const char *format)
{
	const char *src, *dst;
	char name[32];

	fx_setup(&fx);
	src = make_source(format);
	dst = fx_path(&fx, "dst");
	start_slow_copy(dst, 0);
	ck_assert_int_eq(truncate(src, FX_SIZE / 4), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	ck_assert_int_eq(fx.last_err.code, BC_ERR_IO);
	ck_assert_int_eq(fx.last_err.sys_errno, EIO);
	snprintf(name, sizeof(name), "src.%s: read failed at offset ", format);
	ck_assert_msg(strstr(fx.last_err.message, name) &&
		      strstr(fx.last_err.message, "truncated while open"),
		      "%s", fx.last_err.message);
	/* No job left; the disk is still on the source. */
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), src);
	fx_teardown(&fx);
}

/* R20 */
START_TEST(raw_source_truncated_fails)
{
	truncated_source_fails("raw");
}
END_TEST

/* R20 */
START_TEST(qcow2_source_truncated_fails)
{
	truncated_source_fails("qcow2");
}
END_TEST

/*
 * A qcow2 file may end inside its last cluster (QEMU's metadata
 * preallocation, a writer that did not write the cluster whole): the bytes
 * past the end read as zeros when the file was already that short at
 * open. Here the last data cluster loses its zero half.
 */
START_TEST(qcow2_file_ending_inside_last_cluster_copies)
{
	struct fmt_create_opts co = { .format = "qcow2", .size = FX_SIZE };
	const char *src, *dst;
	struct fmt_image *img;
	struct stat st;

	fx_setup(&fx);
	src = fx_path(&fx, "tail.qcow2");
	dst = fx_path(&fx, "dst.qcow2");
	ck_assert_int_eq(fmt_create(src, &co), 0);
	ck_assert_int_eq(fmt_open(src, "qcow2", FMT_OPEN_RDWR, &img), 0);
	memset(fx.shadow + FX_SIZE - 65536, 0x5a, 32768);
	ck_assert_int_eq(fmt_pwrite(img, fx.shadow + FX_SIZE - 65536, 65536,
				    FX_SIZE - 65536), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	ck_assert_int_eq(stat(src, &st), 0);
	ck_assert_int_eq(st.st_size % 65536, 0);
	ck_assert_int_eq(truncate(src, st.st_size - 32768), 0);

	fx.top = src;
	fx.disk = bc_disk_open(fx.eng, src, "qcow2", 0);
	ck_assert_msg(fx.disk, "%s", bc_last_error()->message);
	fx_check_disk_equals_shadow(&fx);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
	fx_teardown(&fx);
}
END_TEST

/* Unlinked but still open, a source reads as before: the copy completes. */
static void unlinked_source_completes(const char *format)
{
	const char *src, *dst;

	fx_setup(&fx);
	src = make_source(format);
	dst = fx_path(&fx, "dst");
	start_slow_copy(dst, 0);
	ck_assert_int_eq(unlink(src), 0);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_image_equals_shadow(&fx, dst, format);
	fx_teardown(&fx);
}

/* R20 */
START_TEST(raw_source_unlinked_completes)
{
	unlinked_source_completes("raw");
}
END_TEST

/* R20 */
START_TEST(qcow2_source_unlinked_completes)
{
	unlinked_source_completes("qcow2");
}
END_TEST

/* --- target-error policy ------------------------------------------- */

/* Wait for MIRRORING, pivot, and check the destination holds the shadow. */
static void pivot_and_check(const char *dst)
{
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_msg(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT) == 0,
		      "%s", bc_last_error()->message);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
	fx_check_disk_equals_shadow(&fx);
}

/* Bytes the ended job wrote to the destination (data and zeroes). */
static uint64_t bytes_written(void)
{
	bc_block_job_stats st;

	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.active, 0);
	return st.bytes_copied + st.bytes_zeroed;
}

/* What a copy of the fixture chain writes when nothing fails. */
static uint64_t clean_copy_bytes(void)
{
	const char *dst;
	uint64_t n;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	dst = fx_path(&fx, "dst.qcow2");
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	pivot_and_check(dst);
	n = bytes_written();
	fx_teardown(&fx);
	return n;
}

/* A fixture chain of 2 and a copy of it with @flags; returns dst. */
static const char *start_policy_copy(unsigned int flags)
{
	const char *dst = fx_path(&fx, "dst.qcow2");

	ck_assert_msg(bc_block_copy(fx.disk, dst, NULL, flags) == 0, "%s",
		      bc_last_error()->message);
	return dst;
}

static void expect_paused_by(const char *dst, int err)
{
	bc_error e;
	int state;

	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_PAUSED);
	check_io_message(&fx.last_err, dst, "write", err);
	ck_assert_int_eq(fx.last_err.code,
			 err == ENOSPC ? BC_ERR_NO_SPACE : BC_ERR_IO);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, &state, &e, 0), 1);
	ck_assert_int_eq(state, BC_BLOCK_JOB_STATE_PAUSED);
	ck_assert_int_eq(e.code, fx.last_err.code);
	ck_assert_str_eq(e.message, fx.last_err.message);
	/* Still the disk's job, with something left to copy. */
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_uint_lt(fx.info.cur, fx.info.end);
}

/*
 * STOP: the third destination write fails with ENOSPC; the job pauses
 * (event, state, info), refuses a pivot, keeps tracking guest writes,
 * and a resume copies only what was not written: the destination gets as
 * many bytes as in a copy that never failed.
 */
/* R32 */
START_TEST(stop_pauses_and_resume_copies_the_rest)
{
	uint64_t clean = clean_copy_bytes();
	const char *dst;
	int state;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	iob_fault_global(IOB_WRITE, -1, 3, ENOSPC);
	dst = start_policy_copy(BC_BLOCK_COPY_ON_TARGET_ERROR_STOP);
	expect_paused_by(dst, ENOSPC);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_BLOCK_COPY_ACTIVE);
	/* Nothing more happens while paused. */
	ck_assert_int_eq(bc_engine_dispatch(fx.eng, 300), 0);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, &state, NULL, 0), 1);
	ck_assert_int_eq(state, BC_BLOCK_JOB_STATE_PAUSED);

	iob_fault_global(IOB_WRITE, -1, 0, 0); /* space freed */
	ck_assert_int_eq(bc_block_job_resume(fx.disk, 0), 0);
	ck_assert_int_eq(bc_block_job_resume(fx.disk, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	ck_assert_str_eq(bc_last_error()->message,
			 fx_fmt(&fx, "block job on disk '%s' is not paused", fx.top));
	pivot_and_check(dst);
	ck_assert_uint_eq(bytes_written(), clean);
	fx_teardown(&fx);
}
END_TEST

/*
 * STOP after MIRRORING: a mirrored guest write that fails pauses the job;
 * a pivot is refused as paused; resume goes back to mirroring (no second
 * MIRRORING event) and the pivot then switches to an exact copy.
 */
/* R32 */
START_TEST(stop_after_mirroring_refuses_pivot_until_resumed)
{
	const char *dst;
	int state;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	iob_fault_global(IOB_WRITE, -1, 1000000, ENOSPC); /* wrap, not yet */
	dst = start_policy_copy(BC_BLOCK_COPY_ON_TARGET_ERROR_STOP);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	iob_fault_global(IOB_WRITE, -1, 1, ENOSPC); /* the next write fails */
	fx_guest_write(&fx, 1u << 20, 65536, 0xa5);
	expect_paused_by(dst, ENOSPC);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	ck_assert_str_eq(bc_last_error()->message,
			 fx_fmt(&fx, "block job on disk '%s' is paused after an error: resume or abort it",
				fx.top));
	fx_guest_write(&fx, 3u << 20, 4096, 0x5a); /* tracked while paused */
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	ck_assert_int_eq(bc_block_job_resume(fx.disk, 0), 0);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, &state, NULL, 0), 1);
	ck_assert(state == BC_BLOCK_JOB_STATE_READY);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(fx.nevents, 3); /* MIRRORING, PAUSED, COMPLETED */
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
	fx_teardown(&fx);
}
END_TEST

/* An abort without flags cancels a paused job. */
/* R32 */
START_TEST(stop_then_abort_cancels)
{
	const char *dst;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	iob_fault_global_from(IOB_WRITE, -1, 1, EIO);
	dst = start_policy_copy(BC_BLOCK_COPY_ON_TARGET_ERROR_STOP);
	expect_paused_by(dst, EIO);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	fx_guest_write(&fx, 4096, 4096, 0x11);
	fx_check_disk_equals_shadow(&fx);
	fx_teardown(&fx);
}
END_TEST

/* IGNORE: a failed write is retried; the copy completes exactly. */
/* R33 */
START_TEST(ignore_retries_and_completes)
{
	uint64_t clean = clean_copy_bytes();
	const char *dst;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	iob_fault_global(IOB_WRITE, -1, 3, EIO);
	dst = start_policy_copy(BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE);
	pivot_and_check(dst); /* MIRRORING first: no FAILED, no PAUSED */
	ck_assert_uint_ge(iob_fault_global_matched(), 3);
	ck_assert_uint_eq(bytes_written(), clean);
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	fx_teardown(&fx);
}
END_TEST

/*
 * IGNORE is bounded: a destination that keeps failing fails the job
 * after JOB_TARGET_RETRY_MAX (8) rounds of retries, about 2.3 s.
 */
/* R33 */
START_TEST(ignore_gives_up_on_a_dead_destination)
{
	const char *dst;
	struct timespec t0, t1;
	double s;

	fx_setup(&fx);
	fx_open_chain(&fx, 2);
	iob_fault_global_from(IOB_WRITE, -1, 1, EIO);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	dst = start_policy_copy(BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	check_io_message(&fx.last_err, dst, "write", EIO);
	/* 10+20+...+640 ms + 1 s of back-off before the 9th round fails. */
	ck_assert_msg(s >= 2.2 && s < 20, "gave up after %.2f s", s);
	ck_assert_uint_gt(iob_fault_global_matched(), 9);
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fx_teardown(&fx);
}
END_TEST

/* R34 */
START_TEST(policy_arguments)
{
	const char *dst;
	int state = -7;

	fx_setup(&fx);
	fx_open_chain(&fx, 1);
	dst = fx_path(&fx, "dst.qcow2");
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL,
				       BC_BLOCK_COPY_ON_TARGET_ERROR_STOP |
				       BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_str_eq(bc_last_error()->message,
			 "on-target-error stop and ignore are mutually exclusive");
	ck_assert_int_eq(access(dst, F_OK), -1);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, &state, NULL, 0), 0);
	ck_assert_int_eq(bc_block_job_resume(fx.disk, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	ck_assert_str_eq(bc_last_error()->message,
			 fx_fmt(&fx, "disk '%s' does not have an active block job", fx.top));
	ck_assert_int_eq(bc_block_job_resume(fx.disk, 1), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, NULL, NULL, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	/* Without a policy flag a job in progress reports RUNNING. */
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	ck_assert_int_eq(bc_get_block_job_state(fx.disk, &state, NULL, 0), 1);
	ck_assert(state == BC_BLOCK_JOB_STATE_RUNNING || state == BC_BLOCK_JOB_STATE_READY);
	fx_teardown(&fx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("walk");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, walk_read_eio);
	tcase_add_test(tc, walk_write_eio);
	tcase_add_test(tc, walk_write_enospc);
	suite_add_tcase(s, tc);

	tc = tcase_create("source");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, raw_source_truncated_fails);
	tcase_add_test(tc, qcow2_source_truncated_fails);
	tcase_add_test(tc, qcow2_file_ending_inside_last_cluster_copies);
	tcase_add_test(tc, raw_source_unlinked_completes);
	tcase_add_test(tc, qcow2_source_unlinked_completes);
	suite_add_tcase(s, tc);

	tc = tcase_create("target-error");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, stop_pauses_and_resume_copies_the_rest);
	tcase_add_test(tc, stop_after_mirroring_refuses_pivot_until_resumed);
	tcase_add_test(tc, stop_then_abort_cancels);
	tcase_add_test(tc, ignore_retries_and_completes);
	tcase_add_test(tc, ignore_gives_up_on_a_dead_destination);
	tcase_add_test(tc, policy_arguments);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
