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
	return bc_check_run(s);
}
