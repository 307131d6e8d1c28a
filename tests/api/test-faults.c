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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "engine/iob.h"
#include "lib/blockcopy.h"
#include "tests/api/helpers.h"

static struct fx fx;

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

int main(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("walk");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, walk_read_eio);
	tcase_add_test(tc, walk_write_eio);
	tcase_add_test(tc, walk_write_enospc);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
