/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The asynchronous guest interface (bc_queue_*): every call's errors, depth
 * 128 from one thread on raw and qcow2 against a shadow, and asynchronous
 * writes through every phase of a job (bulk copy, MIRRORING, write-
 * blocking, auto-converge, pivot with writes in flight, abort, pull), every
 * byte checked afterwards.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"

/* Engine internals, to hold a disk quiesced as a pivot does. */
void disk_quiesce(bc_disk *disk);
void disk_resume(bc_disk *disk);

#define DEPTH  128
#define STRIPE (16u * 1024)
#define ALIGN  4096u

/* qcow2 disks of a test: cluster size (0: the default). */
static uint32_t chain_cluster;

/* The shared fixture, and the default cluster size again. */
static void setup(void)
{
	fx_fixture_setup();
	chain_cluster = 0;
}

#define ck_assert_error(code_, msg_)                                         \
	do {                                                                 \
		ck_assert_int_eq(bc_last_error()->code, (code_));            \
		ck_assert_str_eq(bc_last_error()->message, (msg_));          \
	} while (0)

/* A raw image holding the shadow's content (the chain's bytes), opened. */
static void open_raw(unsigned int flags)
{
	const char *path = fx_path(&fx, "disk.raw");
	int fd;
	size_t i;

	for (i = 0; i < FX_SIZE; i++)
		fx.shadow[i] = (uint8_t)(i * 7 / 4096 + 1);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, fx.shadow, FX_SIZE, 0), FX_SIZE);
	close(fd);
	fx.layers[0] = strdup(path);
	fx.nlayers = 1;
	fx.top = fx.layers[0];
	fx.disk = bc_disk_open(fx.eng, path, "raw", flags);
	ck_assert_msg(fx.disk, "%s", bc_last_error()->message);
}

static void open_disk(bool raw, unsigned int dflags)
{
	if (raw)
		open_raw(dflags);
	else
		fx_open_chain_with(&fx, 2, chain_cluster, dflags);
}

static void *aligned(size_t n)
{
	void *p = NULL;

	ck_assert_int_eq(posix_memalign(&p, ALIGN, n), 0);
	return p;
}

/* Whether this file system takes O_DIRECT (tmpfs does not). */
static bool have_direct(void)
{
	int fd = open(fx_path(&fx, "probe"), O_CREAT | O_RDWR | O_DIRECT, 0644);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Reap exactly @n completions (30 s at most), each must have succeeded. */
static void reap_ok(bc_queue *q, int n, bc_completion *c)
{
	int got = 0;

	while (got < n) {
		int r = bc_queue_reap(q, c + got, 1, n - got, 30000, 0);

		ck_assert_msg(r > 0, "reap: %d %s", r, bc_last_error()->message);
		got += r;
	}
	for (got = 0; got < n; got++)
		ck_assert_msg(c[got].ret >= 0, "request failed: %s",
			      c[got].error_message);
}

/* --- errors ------------------------------------------------------------ */

START_TEST(new_refuses_bad_arguments)
{
	bc_queue *q;
	char *io;

	open_raw(0);
	ck_assert_ptr_null(bc_queue_new(NULL, 8, 0));
	ck_assert_error(BC_ERR_INVALID_ARG, "disk in bc_queue_new must not be NULL");
	ck_assert_ptr_null(bc_queue_new(fx.disk, 0, 0));
	ck_assert_error(BC_ERR_INVALID_ARG, "queue depth 0 is out of range (1..4096)");
	ck_assert_ptr_null(bc_queue_new(fx.disk, 4097, 0));
	ck_assert_error(BC_ERR_INVALID_ARG, "queue depth 4097 is out of range (1..4096)");
	ck_assert_ptr_null(bc_queue_new(fx.disk, 8, 1u << 3));
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x8) in function bc_queue_new");
	bc_queue_free(NULL); /* no-op */
	/* Restored: without fork mode (valgrind) later tests share it. */
	io = getenv("BLOCKCOPY_IO") ? strdup(getenv("BLOCKCOPY_IO")) : NULL;
	setenv("BLOCKCOPY_IO", "bogus", 1);
	q = bc_queue_new(fx.disk, 8, 0);
	if (io)
		setenv("BLOCKCOPY_IO", io, 1);
	else
		unsetenv("BLOCKCOPY_IO");
	free(io);
	ck_assert_ptr_null(q);
	ck_assert_error(BC_ERR_INVALID_ARG, "BLOCKCOPY_IO=bogus: expected uring or aio");
}
END_TEST

START_TEST(requests_refuse_bad_arguments)
{
	bc_completion c;
	bc_queue *q;
	char buf[512];

	open_raw(0);
	q = bc_queue_new(fx.disk, 4, 0);
	ck_assert_ptr_nonnull(q);
	ck_assert_int_eq(bc_queue_read(NULL, buf, 512, 0, NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "queue in bc_queue_read must not be NULL");
	ck_assert_int_eq(bc_queue_read(q, NULL, 512, 0, NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "buf in bc_queue_read must not be NULL");
	ck_assert_int_eq(bc_queue_write(q, NULL, 512, 0, NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "buf in bc_queue_write must not be NULL");
	ck_assert_int_eq(bc_queue_read(q, buf, 512, 0, NULL, 2), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x2) in function bc_queue_read");
	ck_assert_int_eq(bc_queue_write(q, buf, 512, 0, NULL, 1), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x1) in function bc_queue_write");
	ck_assert_int_eq(bc_queue_write_zeroes(q, 0, 512, NULL, 6), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x6) in function bc_queue_write_zeroes");
	ck_assert_int_eq(bc_queue_discard(q, 0, 512, NULL, 1), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x1) in function bc_queue_discard");
	ck_assert_int_eq(bc_queue_flush(q, NULL, 1), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x1) in function bc_queue_flush");
	ck_assert_int_eq(bc_queue_submit(NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "queue in bc_queue_submit must not be NULL");
	ck_assert_int_eq(bc_queue_submit(q, 1), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x1) in function bc_queue_submit");
	ck_assert_int_eq(bc_queue_completion_fd(NULL), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "queue in bc_queue_completion_fd must not be NULL");
	ck_assert_int_eq(bc_queue_reap(NULL, &c, 0, 1, 0, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "queue in bc_queue_reap must not be NULL");
	ck_assert_int_eq(bc_queue_reap(q, NULL, 0, 1, 0, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "out in bc_queue_reap must not be NULL");
	ck_assert_int_eq(bc_queue_reap(q, &c, 0, 1, 0, 4), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "unsupported flags (0x4) in function bc_queue_reap");
	ck_assert_int_eq(bc_queue_reap(q, &c, 2, 1, 0, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "invalid completion counts: min 2, max 1 (need 0 <= min <= max)");
	ck_assert_int_eq(bc_queue_reap(q, &c, -1, 1, 0, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "invalid completion counts: min -1, max 1 (need 0 <= min <= max)");
	/* Nothing submitted: waiting for one could never end. */
	ck_assert_int_eq(bc_queue_reap(q, &c, 1, 1, -1, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, "cannot wait for 1 completions: 0 requests are submitted and not reaped");
	ck_assert_int_eq(bc_queue_reap(q, &c, 0, 1, -1, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 0);
	bc_queue_free(q);
}
END_TEST

START_TEST(request_past_the_end_is_refused)
{
	char buf[512];
	bc_queue *q;
	char msg[BC_ERROR_MESSAGE_MAX];

	open_raw(0);
	q = bc_queue_new(fx.disk, 4, 0);
	ck_assert_ptr_nonnull(q);
	snprintf(msg, sizeof(msg),
		 "request at offset %u length 512 is beyond the end of disk '%s' (%u bytes)",
		 FX_SIZE - 256, fx.top, FX_SIZE);
	ck_assert_int_eq(bc_queue_read(q, buf, 512, FX_SIZE - 256, NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, msg);
	ck_assert_int_eq(bc_queue_write(q, buf, 512, FX_SIZE - 256, NULL, 0), -1);
	ck_assert_error(BC_ERR_INVALID_ARG, msg);
	ck_assert_int_eq(bc_queue_write_zeroes(q, UINT64_MAX - 10, 512, NULL, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	ck_assert_int_eq(bc_queue_discard(q, FX_SIZE, 1, NULL, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_INVALID_ARG);
	/* The last byte is fine. */
	ck_assert_int_eq(bc_queue_read(q, buf, 1, FX_SIZE - 1, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 1);
	bc_queue_free(q);
}
END_TEST

START_TEST(full_queue_is_refused_not_blocking)
{
	bc_completion c[2];
	char buf[3][512];
	bc_queue *q;

	open_raw(0);
	q = bc_queue_new(fx.disk, 2, 0);
	ck_assert_int_eq(bc_queue_read(q, buf[0], 512, 0, buf[0], 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[1], 512, 512, buf[1], 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[2], 512, 1024, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID,
			"I/O queue is full: 2 requests outstanding (reap completions first)");
	ck_assert_int_eq(bc_last_error()->sys_errno, EAGAIN);
	ck_assert_int_eq(bc_queue_submit(q, 0), 2);
	/* Submitted but not reaped still counts. */
	ck_assert_int_eq(bc_queue_flush(q, NULL, 0), -1);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	reap_ok(q, 2, c);
	ck_assert_int_eq(c[0].ret, 512);
	ck_assert_int_eq(c[0].error_code, BC_ERR_OK);
	ck_assert_str_eq(c[0].error_message, "");
	ck_assert(c[0].tag != c[1].tag);
	ck_assert_int_eq(memcmp(c[0].tag, fx.shadow + ((char *)c[0].tag == buf[0] ? 0 : 512), 512), 0);
	ck_assert_int_eq(memcmp(buf[1], fx.shadow + 512, 512), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[2], 512, 1024, NULL, 0), 0);
	bc_queue_free(q); /* drops the queued request */
}
END_TEST

START_TEST(write_to_read_only_disk_is_refused)
{
	char buf[512] = { 0 };
	bc_queue *q;
	char msg[BC_ERROR_MESSAGE_MAX];

	open_raw(BC_DISK_READONLY);
	q = bc_queue_new(fx.disk, 4, 0);
	snprintf(msg, sizeof(msg), "disk '%s' is read-only", fx.top);
	ck_assert_int_eq(bc_queue_write(q, buf, 512, 0, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID, msg);
	ck_assert_int_eq(bc_queue_write_zeroes(q, 0, 512, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID, msg);
	ck_assert_int_eq(bc_queue_discard(q, 0, 512, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID, msg);
	ck_assert_int_eq(bc_queue_read(q, buf, 512, 0, NULL, 0), 0);
	bc_queue_free(q);
}
END_TEST

START_TEST(closed_disk_refuses_new_requests)
{
	bc_completion c[2];
	char buf[512];
	bc_queue *q;
	char msg[BC_ERROR_MESSAGE_MAX];

	open_raw(0);
	q = bc_queue_new(fx.disk, 4, 0);
	ck_assert_int_eq(bc_queue_read(q, buf, 512, 4096, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 1);
	/* Allowed: the queue keeps the disk alive. */
	ck_assert_int_eq(bc_disk_close(fx.disk), 0);
	snprintf(msg, sizeof(msg), "disk '%s' is closed", fx.top);
	ck_assert_int_eq(bc_queue_read(q, buf, 512, 0, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID, msg);
	ck_assert_int_eq(bc_queue_flush(q, NULL, 0), -1);
	ck_assert_error(BC_ERR_OPERATION_INVALID, msg);
	/* What was in flight completes. */
	reap_ok(q, 1, c);
	ck_assert_int_eq(memcmp(buf, fx.shadow + 4096, 512), 0);
	bc_queue_free(q); /* frees the disk (LSan checks) */
	fx.disk = NULL;
}
END_TEST

START_TEST(completion_fd_is_readable_while_completions_wait)
{
	struct pollfd pfd = { .events = POLLIN };
	bc_completion c[2];
	char buf[2][512];
	bc_queue *q;

	open_raw(0);
	q = bc_queue_new(fx.disk, 4, 0);
	pfd.fd = bc_queue_completion_fd(q);
	ck_assert_int_ge(pfd.fd, 0);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[0], 512, 0, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_write_zeroes(q, 8192, 512, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 2);
	ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
	/* Take one of two: still readable once both are done. */
	ck_assert_int_eq(bc_queue_reap(q, c, 2, 2, 10000, 0), 2);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[0], 512, 0, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf[1], 512, 512, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 2);
	ck_assert_int_eq(bc_queue_reap(q, c, 2, 2, 10000, 0), 2);
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	bc_queue_free(q);
}
END_TEST

START_TEST(reap_times_out_while_the_disk_is_quiesced)
{
	bc_completion c[8];
	uint8_t *buf = aligned(8 * 4096);
	struct timespec t0, t1;
	bc_queue *q;
	int i;

	open_raw(0);
	q = bc_queue_new(fx.disk, 8, 0);
	memset(buf, 0xa5, 8 * 4096);
	/* Four writes in flight, then the owner itself quiesces, not reaping. */
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(bc_queue_write(q, buf + i * 4096, 4096,
						(uint64_t)i * 4096, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 4);
	disk_quiesce(fx.disk);
	/* Submitted during the quiesce: held, not lost, not blocking. */
	for (i = 4; i < 8; i++)
		ck_assert_int_eq(bc_queue_write(q, buf + i * 4096, 4096,
						(uint64_t)i * 4096, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 4);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(bc_queue_reap(q, c, 8, 8, 200, 0), 4);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_int_ge((t1.tv_sec - t0.tv_sec) * 1000 +
				 (t1.tv_nsec - t0.tv_nsec) / 1000000, 150);
	disk_resume(fx.disk);
	reap_ok(q, 4, c);
	memset(fx.shadow, 0xa5, 8 * 4096);
	fx_check_disk_equals_shadow(&fx);
	bc_queue_free(q);
	free(buf);
}
END_TEST

/* A request that fails reports its error in its completion. */
START_TEST(failed_request_reports_in_its_completion)
{
	struct fmt_create_opts co = { .format = "qcow2", .size = FX_SIZE };
	const char *path = fx_path(&fx, "bad.qcow2");
	struct fmt_image *img;
	uint8_t be[8], data[4096];
	uint64_t l1, l2, bad = 0x8000000000001200ull; /* copied, misaligned */
	bc_completion c;
	bc_queue *q;
	int fd, i;

	ck_assert_int_eq(fmt_create(path, &co), 0);
	ck_assert_int_eq(fmt_open(path, "qcow2", FMT_OPEN_RDWR, &img), 0);
	memset(data, 1, sizeof(data));
	ck_assert_int_eq(fmt_pwrite(img, data, sizeof(data), 0), 0);
	fmt_close(img);
	/* Point the first L2 entry at an offset inside a cluster. */
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, be, 8, 40), 8); /* l1_table_offset */
	for (l1 = 0, i = 0; i < 8; i++)
		l1 = l1 << 8 | be[i];
	ck_assert_int_eq(pread(fd, be, 8, (off_t)l1), 8);
	for (l2 = 0, i = 0; i < 8; i++)
		l2 = l2 << 8 | be[i];
	l2 &= 0x00fffffffffffe00ull;
	for (i = 0; i < 8; i++)
		be[i] = (uint8_t)(bad >> (56 - 8 * i));
	ck_assert_int_eq(pwrite(fd, be, 8, (off_t)l2), 8);
	close(fd);

	fx.disk = bc_disk_open(fx.eng, path, "qcow2", 0);
	ck_assert_ptr_nonnull(fx.disk);
	q = bc_queue_new(fx.disk, 2, 0);
	ck_assert_int_eq(bc_queue_read(q, data, 4096, 0, data, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 1);
	ck_assert_int_eq(bc_queue_reap(q, &c, 1, 1, 10000, 0), 1);
	ck_assert_ptr_eq(c.tag, data);
	ck_assert_int_eq(c.ret, -EUCLEAN);
	ck_assert_int_eq(c.error_code, BC_ERR_IMAGE_CORRUPT);
	ck_assert_str_eq(c.error_message,
			 fx_fmt(&fx, "%s: cluster offset 0x1200 unaligned (guest offset 0x0)",
				path));
	/* The calling thread's own error is not touched by it. */
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_OK);
	bc_queue_free(q);
}
END_TEST

/*
 * The owner writes whole clusters through the queue into a range the top
 * does not hold (the direct allocating route: the range stays registered
 * until the completion is harvested), then, without reaping, calls the
 * synchronous API over the same range. Nobody else harvests the ring: the
 * synchronous call must not wait for a harvest only its own thread would
 * do. It lands after the queued write, as overlapping calls in that order.
 */
/*
 * The body of the two tests below: @len bytes (whole clusters of the
 * disk's top) written through the queue at @off, not reaped, then a
 * synchronous write over them from the same thread.
 */
static void sync_over_own_unreaped(uint64_t off, size_t len)
{
	uint8_t *big = aligned(len), *small = aligned(ALIGN);
	uint8_t *back = aligned(len);
	bc_completion c;
	bc_queue *q;

	q = bc_queue_new(fx.disk, 4, 0);
	ck_assert_ptr_nonnull(q);
	memset(big, 0xa1, len);
	memset(small, 0x5c, ALIGN);
	/* The image's first write goes through the driver: not this one. */
	ck_assert_int_eq(bc_disk_pwrite(fx.disk, small, ALIGN, 0), ALIGN);
	ck_assert_int_eq(bc_queue_write(q, big, len, off, big, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 1);
	usleep(100 * 1000); /* the kernel has completed it: not yet harvested */
	ck_assert_int_eq(bc_disk_pwrite(fx.disk, small, ALIGN, off + ALIGN), ALIGN);
	ck_assert_int_eq(bc_queue_reap(q, &c, 1, 1, 10000, 0), 1);
	ck_assert_int_ge(c.ret, 0);
	ck_assert_int_eq(bc_disk_pread(fx.disk, back, len, off), (ssize_t)len);
	ck_assert_mem_eq(back, big, ALIGN);
	ck_assert_mem_eq(back + ALIGN, small, ALIGN);
	ck_assert_mem_eq(back + 2 * ALIGN, big + 2 * ALIGN, len - 2 * ALIGN);
	bc_queue_free(q);
	free(big);
	free(small);
	free(back);
}

START_TEST(sync_call_over_own_unreaped_allocating_write)
{
	chain_cluster = STRIPE;
	open_disk(false, 0);
	sync_over_own_unreaped(7u << 20 /* not in the top (layer1) */, STRIPE);
}
END_TEST

/*
 * The same on the overlay a snapshot put on top (64 KiB clusters): the
 * new top harvests the disk's queues too (disk_snapshot_create sets its
 * io_map_kick). Without, the synchronous write waits forever.
 */
START_TEST(sync_call_over_own_unreaped_write_after_snapshot)
{
	chain_cluster = STRIPE;
	open_disk(false, 0);
	ck_assert_int_eq(bc_snapshot_create(fx.disk, fx_path(&fx, "snap.qcow2"), 0),
			 0);
	sync_over_own_unreaped(6u << 20, 64u * 1024);
}
END_TEST

/*
 * The same on the copy's destination once a pivot made it the top (it
 * keeps the chain's 16 KiB clusters): disk_watch_top() in pivot_swap().
 */
START_TEST(sync_call_over_own_unreaped_write_after_pivot)
{
	const char *dst = fx_path(&fx, "dst.qcow2");

	chain_cluster = STRIPE;
	open_disk(false, 0);
	ck_assert_msg(bc_block_copy(fx.disk, dst, NULL, 0) == 0, "%s",
		      bc_last_error()->message);
	ck_assert_msg(fx_mirroring_within(&fx, 30000), "no MIRRORING");
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_str_eq(bc_disk_path(fx.disk), dst);
	sync_over_own_unreaped(FX_SIZE - 4 * STRIPE, STRIPE);
}
END_TEST

/* A raw file truncated under the disk: the direct path fails as the
 * synchronous call does, never reading zeros. */
START_TEST(short_read_fails_as_the_sync_call)
{
	char buf[4096], msg[BC_ERROR_MESSAGE_MAX];
	bc_completion c;
	bc_queue *q;

	open_raw(0);
	q = bc_queue_new(fx.disk, 2, 0);
	ck_assert_int_eq(truncate(fx.top, FX_SIZE / 2), 0);
	ck_assert_int_eq(bc_disk_pread(fx.disk, buf, 4096, FX_SIZE - 8192), -1);
	snprintf(msg, sizeof(msg), "%s", bc_last_error()->message);
	ck_assert_int_eq(bc_last_error()->code, BC_ERR_IO);
	ck_assert_int_eq(bc_queue_read(q, buf, 4096, FX_SIZE - 8192, buf, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 1);
	ck_assert_int_eq(bc_queue_reap(q, &c, 1, 1, 10000, 0), 1);
	ck_assert_int_eq(c.ret, -EIO);
	ck_assert_int_eq(c.error_code, BC_ERR_IO);
	ck_assert_str_eq(c.error_message, msg);
	bc_queue_free(q);
}
END_TEST

/* Bytes the file at @path has allocated. */
static uint64_t allocated(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/*
 * Zeroes [@off, +1 MiB) of the raw disk through @q (NULL: the synchronous
 * call) with @flags; returns how many bytes the file freed.
 */
static int64_t zero_mib(bc_queue *q, uint64_t off, unsigned int flags)
{
	uint64_t before = allocated(fx.top);
	bc_completion c;

	if (q) {
		ck_assert_int_eq(bc_queue_write_zeroes(q, off, 1u << 20, NULL, flags), 0);
		ck_assert_int_eq(bc_queue_submit(q, 0), 1);
		ck_assert_int_eq(bc_queue_reap(q, &c, 1, 1, 10000, 0), 1);
		ck_assert_msg(c.ret == 0, "%s", c.error_message);
	} else {
		ck_assert_int_eq(bc_disk_write_zeroes(fx.disk, off, 1u << 20, flags), 0);
	}
	memset(fx.shadow + off, 0, 1u << 20);
	return (int64_t)before - (int64_t)allocated(fx.top);
}

/*
 * BC_DISK_ZEROES_MAY_UNMAP deallocates (a raw file gets a hole) and zeroes
 * without it keep the blocks, through a queue as through the synchronous
 * call. Skipped where the file system cannot punch holes.
 */
START_TEST(zeroes_may_unmap_deallocates_as_the_sync_call)
{
	const char *probe = fx_path(&fx, "probe");
	int fd = open(probe, O_CREAT | O_RDWR, 0644);
	bc_queue *q;
	bool can_punch;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 65536), 0);
	can_punch = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			      4096) == 0;
	close(fd);
	if (!can_punch)
		return;
	open_raw(0);
	q = bc_queue_new(fx.disk, 2, 0);
	ck_assert_ptr_nonnull(q);
	ck_assert_int_lt(zero_mib(q, 0, 0), 512 * 1024);
	ck_assert_int_ge(zero_mib(q, 1u << 20, BC_DISK_ZEROES_MAY_UNMAP),
			 (1 << 20) - 8192);
	ck_assert_int_ge(zero_mib(NULL, 2u << 20, BC_DISK_ZEROES_MAY_UNMAP),
			 (1 << 20) - 8192);
	ck_assert_int_lt(zero_mib(NULL, 3u << 20, 0), 512 * 1024);
	bc_queue_free(q);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* --- depth 128 from one thread ------------------------------------------ */

/*
 * Random reads, writes, zeroes, discards (on stripes no other request in
 * flight touches) and flushes, DEPTH in flight, against the shadow.
 */
static void run_random(bc_queue *q, unsigned int nreq, unsigned int seed)
{
	uint64_t nstripes = FX_SIZE / STRIPE;
	bool *busy = calloc(nstripes, sizeof(*busy));
	uint8_t *bufs = aligned((size_t)DEPTH * STRIPE);
	/* Static: the test is single-threaded and the frame stays small. */
	static struct slot {
		int kind;
		uint64_t stripe;
		uint8_t *buf;
	} slots[DEPTH];
	static int free_slots[DEPTH];
	static bc_completion c[DEPTH];
	int nfree = DEPTH, inflight = 0;
	unsigned int issued = 0;
	int i;

	fprintf(stderr, "# seed %u\n", seed);
	for (i = 0; i < DEPTH; i++) {
		free_slots[i] = i;
		slots[i].buf = bufs + (size_t)i * STRIPE;
	}
	while (issued < nreq || inflight) {
		int n;

		while (issued < nreq && nfree) {
			struct slot *s = &slots[free_slots[nfree - 1]];
			uint64_t st = (uint64_t)rand_r(&seed) % nstripes;
			int r;

			if (busy[st])
				break;
			nfree--;
			s->stripe = st;
			s->kind = rand_r(&seed) % 16;
			busy[st] = true;
			if (s->kind < 7) {
				memset(s->buf, rand_r(&seed) & 0xff, STRIPE);
				r = bc_queue_write(q, s->buf, STRIPE, st * STRIPE, s, 0);
			} else if (s->kind < 13) {
				r = bc_queue_read(q, s->buf, STRIPE, st * STRIPE, s, 0);
			} else if (s->kind == 13) {
				r = bc_queue_write_zeroes(q, st * STRIPE, STRIPE, s,
							  BC_DISK_ZEROES_MAY_UNMAP);
			} else if (s->kind == 14) {
				r = bc_queue_flush(q, s, 0);
			} else {
				/* A discard reads back as zeros or as the backing:
				 * write zeroes first so that both are zero. */
				r = bc_queue_write_zeroes(q, st * STRIPE, STRIPE, s, 0);
				s->kind = 13;
			}
			ck_assert_msg(r == 0, "%s", bc_last_error()->message);
			issued++;
			inflight++;
		}
		ck_assert_int_ge(bc_queue_submit(q, 0), 0);
		n = bc_queue_reap(q, c, 1, DEPTH, 30000, 0);
		ck_assert_msg(n > 0, "reap: %s", bc_last_error()->message);
		for (i = 0; i < n; i++) {
			struct slot *s = c[i].tag;
			uint8_t *sh = fx.shadow + s->stripe * STRIPE;

			ck_assert_msg(c[i].ret >= 0, "%s", c[i].error_message);
			if (s->kind < 7) {
				ck_assert_int_eq(c[i].ret, STRIPE);
				memcpy(sh, s->buf, STRIPE);
			} else if (s->kind < 13) {
				ck_assert_int_eq(c[i].ret, STRIPE);
				ck_assert_msg(memcmp(sh, s->buf, STRIPE) == 0,
					      "read of stripe %llu differs",
					      (unsigned long long)s->stripe);
			} else if (s->kind == 13) {
				ck_assert_int_eq(c[i].ret, 0);
				memset(sh, 0, STRIPE);
			}
			busy[s->stripe] = false;
			free_slots[nfree++] = (int)(s - slots);
			inflight--;
		}
	}
	free(busy);
	free(bufs);
}

/* Reaches DEPTH requests in flight at once (checked before reaping). */
static void fill_depth(bc_queue *q)
{
	uint8_t *bufs = aligned((size_t)DEPTH * 4096);
	bc_completion c[DEPTH];
	int i;

	for (i = 0; i < DEPTH; i++)
		ck_assert_int_eq(bc_queue_read(q, bufs + i * 4096, 4096,
					       (uint64_t)i * 4096, bufs + i * 4096,
					       0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), DEPTH);
	reap_ok(q, DEPTH, c);
	for (i = 0; i < DEPTH; i++)
		ck_assert_int_eq(memcmp(c[i].tag,
					fx.shadow + ((uint8_t *)c[i].tag - bufs),
					4096), 0);
	free(bufs);
}

/*
 * @cluster: qcow2 cluster size (0: raw). With STRIPE-sized clusters every
 * write covers whole clusters, so the qcow2 requests go to the kernel
 * directly (new clusters linked at their completion, or owned ones
 * overwritten in place) rather than to the worker pool.
 */
static void depth_test(uint32_t cluster, unsigned int dflags)
{
	bc_queue *q;

	if (!cluster)
		open_raw(dflags);
	else
		fx_open_chain_with(&fx, 2, cluster, dflags);
	q = bc_queue_new(fx.disk, DEPTH, 0);
	ck_assert_msg(q, "%s", bc_last_error()->message);
	fill_depth(q);
	run_random(q, 3000, (unsigned int)time(NULL));
	bc_queue_free(q);
	fx_check_disk_equals_shadow(&fx);
}

START_TEST(depth_128_raw)
{
	depth_test(0, 0);
}
END_TEST

START_TEST(depth_128_qcow2)
{
	depth_test(65536, 0);
}
END_TEST

START_TEST(depth_128_qcow2_whole_clusters)
{
	depth_test(STRIPE, 0);
}
END_TEST

/* O_DIRECT: the direct path of either backend (libaio needs it). */
START_TEST(depth_128_qcow2_whole_clusters_direct)
{
	if (have_direct())
		depth_test(STRIPE, BC_DISK_DIRECT);
}
END_TEST

/* O_DIRECT where the file system has it; misaligned requests are bounced. */
START_TEST(depth_128_raw_direct_and_misaligned)
{
	bc_completion c[2];
	uint8_t *buf;
	bc_queue *q;
	if (!have_direct())
		return; /* no O_DIRECT here (tmpfs): nothing to test */
	depth_test(0, BC_DISK_DIRECT);
	q = bc_queue_new(fx.disk, 4, 0);
	buf = aligned(3 * 4096);
	memset(buf, 0x3c, 3 * 4096);
	ck_assert_int_eq(bc_queue_write(q, buf + 1, 1000, 12345, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_read(q, buf + 5000, 3000, 12000, NULL, 0), 0);
	ck_assert_int_eq(bc_queue_submit(q, 0), 2);
	reap_ok(q, 2, c);
	memset(fx.shadow + 12345, 0x3c, 1000);
	fx_check_disk_equals_shadow(&fx);
	bc_queue_free(q);
	free(buf);
}
END_TEST

/* --- through every job phase ------------------------------------------- */

/*
 * An asynchronous guest on its own thread: random 16 KiB writes and reads
 * at depth 32 on stripes not already in flight, shadow updated at each
 * completion, reads checked against it.
 */
#define HDEPTH 32

struct ahammer {
	pthread_t tid;
	atomic_bool stop;
	bool paced;        /* background mode: leave the copy room to converge */
	atomic_uint_fast64_t done;
	unsigned int seed;
	bc_queue *q;
};

static void *ahammer_main(void *p)
{
	struct ahammer *h = p;
	uint64_t nstripes = FX_SIZE / STRIPE;
	bool *busy = calloc(nstripes, sizeof(*busy));
	uint8_t *bufs = aligned((size_t)HDEPTH * STRIPE);
	struct {
		bool write;
		uint64_t stripe;
	} slots[HDEPTH];
	int free_slots[HDEPTH], nfree = HDEPTH, inflight = 0, i;
	unsigned int seed = h->seed;
	bc_completion c[HDEPTH];

	for (i = 0; i < HDEPTH; i++)
		free_slots[i] = i;
	while (!atomic_load(&h->stop) || inflight) {
		int n;

		while (!atomic_load(&h->stop) && nfree) {
			int s = free_slots[nfree - 1];
			uint64_t st = (uint64_t)rand_r(&seed) % nstripes;
			uint8_t *b = bufs + (size_t)s * STRIPE;

			if (busy[st])
				break;
			nfree--;
			busy[st] = true;
			slots[s].stripe = st;
			slots[s].write = rand_r(&seed) % 4 != 0;
			if (slots[s].write) {
				memset(b, rand_r(&seed) & 0xff, STRIPE);
				if (bc_queue_write(h->q, b, STRIPE, st * STRIPE,
						   &slots[s], 0))
					abort();
			} else if (bc_queue_read(h->q, b, STRIPE, st * STRIPE,
						 &slots[s], 0)) {
				abort();
			}
			inflight++;
		}
		if (bc_queue_submit(h->q, 0) < 0)
			abort();
		if (!inflight)
			continue;
		n = bc_queue_reap(h->q, c, 1, HDEPTH, 30000, 0);
		if (n <= 0)
			abort();
		if (h->paced)
			usleep(2000);
		for (i = 0; i < n; i++) {
			int s = (int)((char *)c[i].tag - (char *)slots) /
				(int)sizeof(slots[0]);
			uint8_t *b = bufs + (size_t)s * STRIPE;
			uint8_t *sh = fx.shadow + slots[s].stripe * STRIPE;

			if (c[i].ret != STRIPE) {
				fprintf(stderr, "# async request failed: %s\n",
					c[i].error_message);
				abort();
			}
			if (slots[s].write)
				memcpy(sh, b, STRIPE);
			else if (memcmp(sh, b, STRIPE) != 0) {
				fprintf(stderr, "# read of stripe %llu differs\n",
					(unsigned long long)slots[s].stripe);
				abort();
			}
			busy[slots[s].stripe] = false;
			free_slots[nfree++] = s;
			inflight--;
			atomic_fetch_add(&h->done, 1);
		}
	}
	free(busy);
	free(bufs);
	return NULL;
}

static void ahammer_start(struct ahammer *h, bool paced)
{
	memset(h, 0, sizeof(*h));
	h->paced = paced;
	h->seed = (unsigned int)time(NULL);
	fprintf(stderr, "# hammer seed %u\n", h->seed);
	h->q = bc_queue_new(fx.disk, HDEPTH, 0);
	ck_assert_msg(h->q, "%s", bc_last_error()->message);
	ck_assert_int_eq(pthread_create(&h->tid, NULL, ahammer_main, h), 0);
}

static void ahammer_stop(struct ahammer *h)
{
	atomic_store(&h->stop, true);
	pthread_join(h->tid, NULL);
	bc_queue_free(h->q);
}

/* Wait until the hammer has finished @n more requests. */
static void ahammer_progress(struct ahammer *h, uint64_t n)
{
	uint64_t want = atomic_load(&h->done) + n;
	time_t deadline = time(NULL) + 30;

	while (atomic_load(&h->done) < want) {
		ck_assert_msg(time(NULL) < deadline, "async guest stalled");
		usleep(1000);
	}
}

/*
 * Background mode converges only while the copy outruns the guest. Under a
 * sanitizer's slowdown the unpaced asynchronous guest can outrun it and
 * MIRRORING never comes (that is what auto-converge is for): background
 * runs are checked in the normal build only.
 */
static bool outrun_by_the_guest(void)
{
	if (!getenv("BC_TEST_SANITIZED"))
		return false;
	printf("# sanitizer build: background mode cannot converge here; skipped\n");
	return true;
}

/*
 * Copy while the asynchronous guest writes: bulk phase, MIRRORING, then
 * pivot (writes in flight across it) or abort; every byte checked.
 */
static void copy_under_async_guest_on(bool raw, unsigned int dflags,
				      unsigned int flags, unsigned long long bw,
				      bool pivot)
{
	bc_block_copy_params p = { .bandwidth = bw };
	const char *dst = fx_path(&fx, raw ? "dst.raw" : "dst.qcow2");
	bc_block_job_stats st;
	struct ahammer h;

	if (!(flags & (BC_BLOCK_COPY_SYNCHRONOUS_WRITES | BC_BLOCK_COPY_AUTO_CONVERGE)) &&
	    outrun_by_the_guest())
		return;
	open_disk(raw, dflags);
	/*
	 * Background mode converges only when the copy outruns the guest's
	 * dirtying: there the guest pauses 2 ms after each batch of
	 * completions (still up to HDEPTH requests in flight).
	 */
	ahammer_start(&h, !(flags & (BC_BLOCK_COPY_SYNCHRONOUS_WRITES |
				     BC_BLOCK_COPY_AUTO_CONVERGE)));
	ahammer_progress(&h, 200);
	ck_assert_msg(bc_block_copy(fx.disk, dst, &p, flags) == 0, "%s",
		      bc_last_error()->message);
	ahammer_progress(&h, 200); /* during the bulk copy */
	ck_assert_msg(fx_mirroring_within(&fx, 30000), "no MIRRORING");
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	if (flags & (BC_BLOCK_COPY_SYNCHRONOUS_WRITES | BC_BLOCK_COPY_AUTO_CONVERGE))
		ck_assert_int_eq(st.mode, BC_BLOCK_JOB_MODE_WRITE_BLOCKING);
	if (flags & BC_BLOCK_COPY_AUTO_CONVERGE)
		ck_assert_uint_gt(st.mode_switch_ns, 0);
	ahammer_progress(&h, 200); /* while mirroring */
	ck_assert_msg(bc_block_job_abort(fx.disk, pivot ? BC_BLOCK_JOB_ABORT_PIVOT
							: 0) == 0,
		      "%s", bc_last_error()->message);
	ahammer_progress(&h, 200); /* after the switch */
	ahammer_stop(&h);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY,
			pivot ? BC_BLOCK_JOB_COMPLETED : BC_BLOCK_JOB_CANCELED);
	if (pivot)
		ck_assert_str_eq(bc_disk_path(fx.disk), dst);
	else
		ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	if (pivot)
		fx_check_image_equals_shadow(&fx, dst, raw ? "raw" : "qcow2");
	else
		fx_check_image_equals_shadow(&fx, fx.top, raw ? "raw" : "qcow2");
}

static void copy_under_async_guest(bool raw, unsigned int flags,
				   unsigned long long bw, bool pivot)
{
	copy_under_async_guest_on(raw, 0, flags, bw, pivot);
}

/* O_DIRECT: the direct path of either backend (libaio needs it). */
START_TEST(copy_background_pivot_raw_direct)
{
	if (have_direct())
		copy_under_async_guest_on(true, BC_DISK_DIRECT, 0, 0, true);
}
END_TEST

START_TEST(copy_background_pivot_raw)
{
	copy_under_async_guest(true, 0, 0, true);
}
END_TEST

START_TEST(copy_background_pivot_qcow2)
{
	copy_under_async_guest(false, 0, 0, true);
}
END_TEST

/* Whole-cluster writes: the guest's requests bypass the pool. */
START_TEST(copy_background_pivot_qcow2_whole_clusters)
{
	chain_cluster = STRIPE;
	copy_under_async_guest(false, 0, 0, true);
}
END_TEST

START_TEST(copy_write_blocking_pivot_raw)
{
	copy_under_async_guest(true, BC_BLOCK_COPY_SYNCHRONOUS_WRITES, 0, true);
}
END_TEST

START_TEST(copy_write_blocking_pivot_qcow2)
{
	copy_under_async_guest(false, BC_BLOCK_COPY_SYNCHRONOUS_WRITES, 0, true);
}
END_TEST

START_TEST(copy_auto_converge_pivot_raw)
{
	copy_under_async_guest(true, BC_BLOCK_COPY_AUTO_CONVERGE, 4u << 20, true);
}
END_TEST

START_TEST(copy_abort_raw)
{
	copy_under_async_guest(true, 0, 0, false);
}
END_TEST

START_TEST(copy_abort_qcow2_write_blocking)
{
	copy_under_async_guest(false, BC_BLOCK_COPY_SYNCHRONOUS_WRITES, 0, false);
}
END_TEST

/*
 * The owner of the requests in flight pivots itself without reaping: the
 * pivot's quiesce must collect their completions, not wait for the owner.
 */
START_TEST(pivot_by_the_owner_with_requests_in_flight)
{
	const char *dst = fx_path(&fx, "dst.raw");
	uint8_t *bufs = aligned((size_t)DEPTH * 4096);
	bc_completion c[DEPTH];
	bc_queue *q;
	int i;

	open_raw(0);
	q = bc_queue_new(fx.disk, DEPTH, 0);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	for (i = 0; i < DEPTH; i++) {
		memset(bufs + i * 4096, i + 1, 4096);
		memset(fx.shadow + (uint64_t)i * 8192, i + 1, 4096);
		ck_assert_int_eq(bc_queue_write(q, bufs + i * 4096, 4096,
						(uint64_t)i * 8192, NULL, 0), 0);
	}
	ck_assert_int_eq(bc_queue_submit(q, 0), DEPTH);
	ck_assert_msg(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT) == 0,
		      "%s", bc_last_error()->message);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	reap_ok(q, DEPTH, c);
	bc_queue_free(q);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "raw");
	free(bufs);
}
END_TEST

START_TEST(pull_under_async_guest)
{
	struct ahammer h;

	fx_open_chain(&fx, 3);
	ahammer_start(&h, false);
	ahammer_progress(&h, 200);
	/* Slow enough that the guest runs through the whole pull. */
	ck_assert_int_eq(bc_block_pull(fx.disk, 8, 0), 0);
	ahammer_progress(&h, 300);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_PULL, BC_BLOCK_JOB_COMPLETED);
	ahammer_progress(&h, 100);
	ahammer_stop(&h);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	/* The top stands alone now and holds every byte. */
	fx_check_image_equals_shadow(&fx, fx.top, "qcow2");
}
END_TEST

static Suite *queue_suite(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase_create("errors");

	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, fx_fixture_teardown);
	tcase_add_test(tc, new_refuses_bad_arguments);
	tcase_add_test(tc, requests_refuse_bad_arguments);
	tcase_add_test(tc, request_past_the_end_is_refused);
	tcase_add_test(tc, full_queue_is_refused_not_blocking);
	tcase_add_test(tc, write_to_read_only_disk_is_refused);
	tcase_add_test(tc, closed_disk_refuses_new_requests);
	tcase_add_test(tc, completion_fd_is_readable_while_completions_wait);
	tcase_add_test(tc, reap_times_out_while_the_disk_is_quiesced);
	tcase_add_test(tc, failed_request_reports_in_its_completion);
	tcase_add_test(tc, short_read_fails_as_the_sync_call);
	tcase_add_test(tc, zeroes_may_unmap_deallocates_as_the_sync_call);
	tcase_add_test(tc, sync_call_over_own_unreaped_allocating_write);
	tcase_add_test(tc, sync_call_over_own_unreaped_write_after_snapshot);
	tcase_add_test(tc, sync_call_over_own_unreaped_write_after_pivot);
	suite_add_tcase(s, tc);

	tc = tcase_create("depth");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, fx_fixture_teardown);
	tcase_add_test(tc, depth_128_raw);
	tcase_add_test(tc, depth_128_qcow2);
	tcase_add_test(tc, depth_128_qcow2_whole_clusters);
	tcase_add_test(tc, depth_128_qcow2_whole_clusters_direct);
	tcase_add_test(tc, depth_128_raw_direct_and_misaligned);
	suite_add_tcase(s, tc);

	tc = tcase_create("jobs");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, fx_fixture_teardown);
	tcase_add_test(tc, copy_background_pivot_raw);
	tcase_add_test(tc, copy_background_pivot_raw_direct);
	tcase_add_test(tc, copy_background_pivot_qcow2);
	tcase_add_test(tc, copy_background_pivot_qcow2_whole_clusters);
	tcase_add_test(tc, copy_write_blocking_pivot_raw);
	tcase_add_test(tc, copy_write_blocking_pivot_qcow2);
	tcase_add_test(tc, copy_auto_converge_pivot_raw);
	tcase_add_test(tc, copy_abort_raw);
	tcase_add_test(tc, copy_abort_qcow2_write_blocking);
	tcase_add_test(tc, pivot_by_the_owner_with_requests_in_flight);
	tcase_add_test(tc, pull_under_async_guest);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(queue_suite());
}
