/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for engine/iob*: the I/O backends and the fault injector.
 *
 * Every loop test runs once per backend (_i: 0 = uring, 1 = aio), chosen
 * the way the engine chooses it, through BLOCKCOPY_IO. A backend that
 * cannot run here (io_uring disabled, built without libaio), or that
 * BLOCKCOPY_IO set on entry excludes (the valgrind setup runs aio only),
 * is reported as a TAP comment and its iterations pass without running.
 *
 * Random offsets come from a seed printed as "# seed N"; IOB_TEST_SEED=N
 * replays a run.
 */
#include "engine/iob-fault.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"
#include "tests/scratch.h"

static const char *const backends[] = {"uring", "aio"};
static bool have_backend[2]; /* works here */
static bool run_backend[2];  /* and selected (BLOCKCOPY_IO restricts) */
static unsigned seed;

static char casedir[4096]; /* per TCase: made and removed by the parent */
static char tmpdir[4200];  /* per test, inside casedir */

struct req {
	enum iob_op op;
	int fd;
	void *buf;
	size_t len;
	uint64_t off;
};

/*
 * Unchecked fixture: runs in the parent, so the directory goes away even
 * when a test fails or crashes in its child.
 */
static void setup_case(void)
{
	scratch_dir(casedir, sizeof(casedir), NULL, "iob-");
}

static void teardown_case(void)
{
	scratch_remove(casedir);
}

/* Checked fixture: a fresh directory and the seeded random sequence. */
static void setup_tmpdir(void)
{
	scratch_dir(tmpdir, sizeof(tmpdir), casedir, "t-");
	srand(seed);
}

static void teardown_tmpdir(void)
{
	scratch_remove(tmpdir);
}

/* Opens (creates) @name in the test's directory; -errno if open fails. */
static int open_tmp(const char *name, int flags)
{
	char path[4200];
	int fd;

	ck_assert_int_lt(snprintf(path, sizeof(path), "%s/%s", tmpdir, name),
			 (int)sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | flags, 0600);
	return fd < 0 ? -errno : fd;
}

/* Selects the backend of loop iteration @i; false if it cannot run here. */
static bool use_backend(int i)
{
	if (!run_backend[i]) {
		printf("# %s backend not selected or unavailable: not run\n",
		       backends[i]);
		(void)fflush(stdout);
		return false;
	}
	ck_assert_int_eq(setenv("BLOCKCOPY_IO", backends[i], 1), 0);
	return true;
}

static struct iob *new_iob(unsigned depth)
{
	struct iob *iob;

	ck_assert_int_eq(iob_new(depth, 0, &iob), 0);
	ck_assert_ptr_nonnull(iob);
	return iob;
}

static int prep_req(struct iob *iob, const struct req *r, uint64_t ud)
{
	switch (r->op) {
	case IOB_READ:
		return iob_prep_read(iob, r->fd, r->buf, r->len, r->off, ud);
	case IOB_WRITE:
		return iob_prep_write(iob, r->fd, r->buf, r->len, r->off, ud);
	case IOB_FSYNC:
		return iob_prep_fsync(iob, r->fd, ud);
	case IOB_ANY:
		break;
	}
	ck_abort_msg("bad op");
	return -EINVAL;
}

/*
 * Runs @n requests keeping the context full, as the copy loop does, and
 * stores each result in res[index]. Checks -EBUSY comes exactly when
 * depth requests are outstanding; submits explicitly or lets iob_wait()
 * do it, at random.
 */
static void pump(struct iob *iob, unsigned depth, const struct req *reqs,
		 unsigned n, int64_t *res)
{
	struct iob_cqe cqes[16];
	unsigned next = 0, done = 0, i;
	bool *seen = calloc(n, sizeof(*seen));
	int ret, got;

	ck_assert_ptr_nonnull(seen);
	while (done < n) {
		while (next < n) {
			ret = prep_req(iob, &reqs[next], next);
			if (ret == -EBUSY) {
				ck_assert_uint_eq(iob_in_flight(iob), depth);
				break;
			}
			ck_assert_int_eq(ret, 0);
			next++;
			ck_assert_uint_le(iob_in_flight(iob), depth);
		}
		if (rand() & 1)
			ck_assert_int_eq(iob_submit(iob), 0);
		got = iob_wait(iob, 1, cqes, BC_ARRAY_SIZE(cqes), 10000);
		ck_assert_int_gt(got, 0);
		for (i = 0; i < (unsigned)got; i++) {
			ck_assert_uint_lt(cqes[i].user_data, n);
			ck_assert(!seen[cqes[i].user_data]);
			seen[cqes[i].user_data] = true;
			res[cqes[i].user_data] = cqes[i].res;
			done++;
		}
	}
	ck_assert_uint_eq(iob_in_flight(iob), 0);
	free(seen);
}

/* Byte @j of block @blk: differs per block and per position. */
static uint8_t pattern(unsigned blk, size_t j)
{
	return (uint8_t)((size_t)blk * 131u + j * 7u + (j >> 9) + 1u);
}

static void shuffle(unsigned *a, unsigned n)
{
	unsigned i, j, t;

	for (i = n; i > 1; i--) {
		j = (unsigned)rand() % i;
		t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

/*
 * Writes @nblk blocks of @bs bytes in random order, reads them back in
 * another random order, each request with its own buffer, @depth in
 * flight; checks every result and byte, and the file with pread.
 */
static void write_read_blocks(struct iob *iob, unsigned depth, int fd,
			      size_t bs, unsigned nblk, size_t align)
{
	unsigned *order = calloc(nblk, sizeof(*order));
	struct req *reqs = calloc(nblk, sizeof(*reqs));
	int64_t *res = calloc(nblk, sizeof(*res));
	uint8_t *mem, *check = malloc(bs);
	unsigned i, b;
	size_t j;

	ck_assert(order && reqs && res && check);
	ck_assert_int_eq(posix_memalign((void **)&mem, align, bs * nblk), 0);
	for (i = 0; i < nblk; i++)
		order[i] = i;
	shuffle(order, nblk);
	for (i = 0; i < nblk; i++) {
		b = order[i];
		for (j = 0; j < bs; j++)
			mem[(size_t)b * bs + j] = pattern(b, j);
		reqs[i] = (struct req){IOB_WRITE, fd, mem + (size_t)b * bs, bs,
				       (uint64_t)b * bs};
	}
	pump(iob, depth, reqs, nblk, res);
	for (i = 0; i < nblk; i++)
		ck_assert_int_eq(res[i], (int64_t)bs);

	memset(mem, 0, bs * nblk);
	shuffle(order, nblk);
	for (i = 0; i < nblk; i++) {
		b = order[i];
		reqs[i] = (struct req){IOB_READ, fd, mem + (size_t)b * bs, bs,
				       (uint64_t)b * bs};
	}
	pump(iob, depth, reqs, nblk, res);
	for (i = 0; i < nblk; i++)
		ck_assert_int_eq(res[i], (int64_t)bs);
	for (b = 0; b < nblk; b++) {
		for (j = 0; j < bs; j++) {
			if (mem[(size_t)b * bs + j] != pattern(b, j))
				ck_abort_msg("block %u byte %zu: read %u", b, j,
					     mem[(size_t)b * bs + j]);
		}
	}
	/* What the kernel reported is what landed in the file. */
	b = order[0];
	ck_assert_int_eq(pread(fd, mem, bs, (off_t)((uint64_t)b * bs)),
			 (ssize_t)bs);
	for (j = 0; j < bs; j++)
		check[j] = pattern(b, j);
	ck_assert_int_eq(memcmp(mem, check, bs), 0);
	free(mem);
	free(check);
	free(order);
	free(reqs);
	free(res);
}

START_TEST(many_in_flight_buffered)
{
	struct iob *iob;
	int fd;

	if (!use_backend(_i))
		return;
	iob = new_iob(32);
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	write_read_blocks(iob, 32, fd, 4096, 512, 4096);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* O_DIRECT, aligned buffers, registered (fixed) buffers on or off. */
static void direct_case(int i, bool fixed)
{
	const size_t bs = 65536;
	const unsigned nblk = 128;
	struct iob *iob;
	int fd;

	if (!use_backend(i))
		return;
	fd = open_tmp("d", O_DIRECT);
	if (fd == -EINVAL) {
		printf("# O_DIRECT unsupported in %s: not run\n", tmpdir);
		(void)fflush(stdout);
		return;
	}
	ck_assert_int_ge(fd, 0);
	iob = new_iob(32);
	if (fixed) {
		/* Registered: a separate arena, so requests outside it are plain. */
		void *arena;
		struct iovec iov;

		ck_assert_int_eq(posix_memalign(&arena, 4096, bs), 0);
		iov.iov_base = arena;
		iov.iov_len = bs;
		ck_assert_int_eq(iob_register_buffers(iob, &iov, 1), 0);
		ck_assert_int_eq(iob_register_buffers(iob, &iov, 1),
				 i == 0 ? -EBUSY : 0);
		write_read_blocks(iob, 32, fd, bs, nblk, 4096);
		iob_free(iob);
		free(arena);
	} else {
		write_read_blocks(iob, 32, fd, bs, nblk, 4096);
		iob_free(iob);
	}
	ck_assert_int_eq(close(fd), 0);
}

START_TEST(many_in_flight_direct)
{
	direct_case(_i, false);
}
END_TEST

/* Requests inside a registered buffer take the read_fixed/write_fixed path. */
START_TEST(fixed_buffers_direct)
{
	const size_t bs = 65536;
	const unsigned nblk = 64;
	struct req reqs[64];
	int64_t res[64];
	struct iovec iov;
	struct iob *iob;
	uint8_t *mem;
	unsigned b;
	size_t j;
	int fd;

	if (!use_backend(_i))
		return;
	fd = open_tmp("d", O_DIRECT);
	if (fd == -EINVAL) {
		printf("# O_DIRECT unsupported in %s: not run\n", tmpdir);
		(void)fflush(stdout);
		return;
	}
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(posix_memalign((void **)&mem, 4096, bs * nblk), 0);
	iob = new_iob(16);
	iov.iov_base = mem;
	iov.iov_len = bs * nblk;
	ck_assert_int_eq(iob_register_buffers(iob, &iov, 1), 0);
	for (b = 0; b < nblk; b++) {
		for (j = 0; j < bs; j++)
			mem[b * bs + j] = pattern(b, j);
		reqs[b] = (struct req){IOB_WRITE, fd, mem + b * bs, bs,
				       (uint64_t)(nblk - 1 - b) * bs};
	}
	pump(iob, 16, reqs, nblk, res);
	memset(mem, 0, bs * nblk);
	for (b = 0; b < nblk; b++) {
		ck_assert_int_eq(res[b], (int64_t)bs);
		reqs[b].op = IOB_READ;
	}
	pump(iob, 16, reqs, nblk, res);
	for (b = 0; b < nblk; b++) {
		ck_assert_int_eq(res[b], (int64_t)bs);
		for (j = 0; j < bs; j++) {
			if (mem[b * bs + j] != pattern(b, j))
				ck_abort_msg("block %u byte %zu: read %u", b, j,
					     mem[b * bs + j]);
		}
	}
	iob_free(iob);
	free(mem);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(ebusy_when_full)
{
	struct iob_cqe cqes[8];
	uint8_t buf[4][512];
	struct iob *iob;
	int fd, n, k;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	iob = new_iob(4);
	/* Prepared-but-unsubmitted requests count toward depth. */
	for (k = 0; k < 3; k++)
		ck_assert_int_eq(iob_prep_read(iob, fd, buf[k], 512, 0, 0), 0);
	ck_assert_int_eq(iob_prep_fsync(iob, fd, 0), 0);
	ck_assert_uint_eq(iob_in_flight(iob), 4);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf[3], 512, 0, 0), -EBUSY);
	ck_assert_int_eq(iob_prep_write(iob, fd, buf[3], 512, 0, 0), -EBUSY);
	ck_assert_int_eq(iob_prep_fsync(iob, fd, 0), -EBUSY);
	ck_assert_int_eq(iob_submit(iob), 0);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf[3], 512, 0, 0), -EBUSY);
	ck_assert_uint_eq(iob_in_flight(iob), 4);
	/* One completion frees exactly one slot. */
	n = iob_wait(iob, 1, cqes, 1, -1);
	ck_assert_int_eq(n, 1);
	ck_assert_uint_eq(iob_in_flight(iob), 3);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf[3], 512, 0, 0), 0);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf[3], 512, 0, 0), -EBUSY);
	n = 0;
	while (iob_in_flight(iob)) {
		k = iob_wait(iob, 1, cqes, 8, -1);
		ck_assert_int_gt(k, 0);
		n += k;
	}
	ck_assert_int_eq(n, 4);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* Whatever the backend, a bad fd is a -EBADF completion, not a prep error. */
START_TEST(bad_fd_completes_with_ebadf)
{
	static uint8_t a[4096], b[4096], c[4096];
	struct iob_cqe cqes[8];
	int64_t res[4] = {1, 1, 1, 1};
	int closed_fd, fd, got = 0, n, k;
	struct iob *iob;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	memset(a, 0xab, sizeof(a));
	ck_assert_int_eq(pwrite(fd, a, sizeof(a), 0), (ssize_t)sizeof(a));
	iob = new_iob(8);
	/* After iob_new: its own descriptors must not reuse the number. */
	closed_fd = open_tmp("g", 0);
	ck_assert_int_ge(closed_fd, 0);
	ck_assert_int_eq(close(closed_fd), 0);
	/* Good, bad, good, bad fsync: the good ones still complete. */
	ck_assert_int_eq(iob_prep_read(iob, fd, b, sizeof(b), 0, 0), 0);
	ck_assert_int_eq(iob_prep_read(iob, closed_fd, a, sizeof(a), 0, 1), 0);
	ck_assert_int_eq(iob_prep_read(iob, fd, c, sizeof(c), 0, 2), 0);
	ck_assert_int_eq(iob_prep_fsync(iob, -1, 3), 0);
	ck_assert_int_eq(iob_submit(iob), 0);
	while (got < 4) {
		n = iob_wait(iob, 1, cqes, 8, 10000);
		ck_assert_int_gt(n, 0);
		for (k = 0; k < n; k++)
			res[cqes[k].user_data] = cqes[k].res;
		got += n;
	}
	ck_assert_int_eq(res[0], 4096);
	ck_assert_int_eq(res[1], -EBADF);
	ck_assert_int_eq(res[2], 4096);
	ck_assert_int_eq(res[3], -EBADF);
	ck_assert_uint_eq(b[100], 0xab);
	ck_assert_uint_eq(c[4095], 0xab);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(fsync_completes_with_zero)
{
	static uint8_t buf[8192];
	struct iob_cqe cqe;
	struct iob *iob;
	int fd;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	iob = new_iob(2);
	memset(buf, 0x5a, sizeof(buf));
	ck_assert_int_eq(iob_prep_write(iob, fd, buf, sizeof(buf), 4096, 7), 0);
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, -1), 1);
	ck_assert_uint_eq(cqe.user_data, 7);
	ck_assert_int_eq(cqe.res, 8192);
	ck_assert_int_eq(iob_prep_fsync(iob, fd, 42), 0);
	ck_assert_int_eq(iob_submit(iob), 0);
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, -1), 1);
	ck_assert_uint_eq(cqe.user_data, 42);
	ck_assert_int_eq(cqe.res, 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), 12288);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(short_read_at_eof)
{
	static uint8_t buf[8192], data[10000];
	struct iob_cqe cqes[4];
	int64_t res[3];
	struct iob *iob;
	int fd, n, k, got = 0;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	memset(data, 0x11, sizeof(data));
	ck_assert_int_eq(pwrite(fd, data, sizeof(data), 0),
			 (ssize_t)sizeof(data));
	iob = new_iob(4);
	memset(buf, 0, sizeof(buf));
	ck_assert_int_eq(iob_prep_read(iob, fd, buf, 8192, 4096, 0), 0);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf, 4096, 10000, 1), 0);
	ck_assert_int_eq(iob_prep_read(iob, fd, buf, 4096, 1u << 20, 2), 0);
	while (got < 3) {
		n = iob_wait(iob, 1, cqes, 4, -1);
		ck_assert_int_gt(n, 0);
		for (k = 0; k < n; k++)
			res[cqes[k].user_data] = cqes[k].res;
		got += n;
	}
	ck_assert_int_eq(res[0], 10000 - 4096);
	ck_assert_int_eq(res[1], 0);
	ck_assert_int_eq(res[2], 0);
	ck_assert_uint_eq(buf[10000 - 4096 - 1], 0x11);
	ck_assert_uint_eq(buf[10000 - 4096], 0);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(invalid_arguments)
{
	struct iob_cqe cqe;
	struct iob *iob;
	uint8_t buf[512];

	if (!use_backend(_i))
		return;
	ck_assert_int_eq(iob_new(0, 0, &iob), -EINVAL);
	ck_assert_ptr_null(iob);
	ck_assert_int_eq(iob_new(IOB_MAX_DEPTH + 1, 0, &iob), -EINVAL);
	ck_assert_int_eq(iob_new(4, 1, &iob), -EINVAL);
	ck_assert_str_eq(bc_error_get()->message,
			 "I/O context: unsupported flags 0x1");
	iob = new_iob(4);
	ck_assert_int_eq(iob_prep_read(iob, 0, buf, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(iob_prep_read(iob, 0, NULL, 512, 0, 0), -EINVAL);
	ck_assert_int_eq(iob_prep_read(iob, 0, buf, 512, UINT64_MAX, 0),
			 -EINVAL);
	ck_assert_int_eq(
		iob_prep_write(iob, 0, buf, (size_t)IOB_MAX_LEN + 1, 0, 0),
		-EINVAL);
	ck_assert_uint_eq(iob_in_flight(iob), 0);
	/* Nothing in flight: waiting for one would never return. */
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, -1), -EINVAL);
	ck_assert_int_eq(iob_wait(iob, 0, &cqe, 1, -1), 0);
	ck_assert_int_eq(iob_wait(iob, 2, &cqe, 1, -1), -EINVAL);
	ck_assert_int_eq(iob_submit(iob), 0);
	ck_assert_int_eq(iob_register_buffers(iob, NULL, 1), -EINVAL);
	iob_free(iob);
	iob_free(NULL);
}
END_TEST

START_TEST(backend_name_reported)
{
	struct iob *iob;

	if (!use_backend(_i))
		return;
	iob = new_iob(1);
	ck_assert_str_eq(iob_backend_name(iob), backends[_i]);
	iob_free(iob);
}
END_TEST

START_TEST(default_backend_is_uring)
{
	struct iob *iob;

	ck_assert_int_eq(unsetenv("BLOCKCOPY_IO"), 0);
	iob = new_iob(1);
	ck_assert_str_eq(iob_backend_name(iob),
			 have_backend[0] ? "uring" : "aio");
	iob_free(iob);
	ck_assert_int_eq(setenv("BLOCKCOPY_IO", "", 1), 0);
	iob = new_iob(1);
	ck_assert_str_eq(iob_backend_name(iob),
			 have_backend[0] ? "uring" : "aio");
	iob_free(iob);
}
END_TEST

START_TEST(unknown_backend_is_refused)
{
	static struct iob dummy;
	struct iob *iob = &dummy; /* iob_new must clear it */

	ck_assert_int_eq(setenv("BLOCKCOPY_IO", "posix", 1), 0);
	bc_error_reset();
	ck_assert_int_eq(iob_new(8, 0, &iob), -EINVAL);
	ck_assert_ptr_null(iob);
	ck_assert_int_eq(bc_error_get()->code, ERR_INVALID_ARG);
	ck_assert_str_eq(
		bc_error_get()->message,
		"BLOCKCOPY_IO=posix: unknown I/O backend (expected uring or aio)");
	ck_assert_int_eq(setenv("BLOCKCOPY_IO", "URING", 1), 0);
	ck_assert_int_eq(iob_new(8, 0, &iob), -EINVAL);
}
END_TEST

/* iob_wait() honours its timeout and min_complete 0 never blocks (a pipe
 * read stays pending; libaio would block in io_submit on a pipe). */
START_TEST(wait_timeout_uring)
{
	struct iob_cqe cqe;
	struct timespec t0, t1;
	struct iob *iob;
	uint8_t buf[16];
	int p[2];
	double ms;

	if (!use_backend(0))
		return;
	ck_assert_int_eq(pipe(p), 0);
	iob = new_iob(2);
	ck_assert_int_eq(iob_prep_read(iob, p[0], buf, sizeof(buf), 0, 9), 0);
	ck_assert_int_eq(iob_wait(iob, 0, &cqe, 1, -1), 0);
	ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &t0), 0);
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, 100), 0);
	ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &t1), 0);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
	     (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	ck_assert_msg(ms >= 95 && ms < 2000, "waited %.1f ms", ms);
	ck_assert_uint_eq(iob_in_flight(iob), 1);
	ck_assert_int_eq(write(p[1], "hello", 5), 5);
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, 5000), 1);
	ck_assert_uint_eq(cqe.user_data, 9);
	ck_assert_int_eq(cqe.res, 5);
	ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
	iob_free(iob);
	ck_assert_int_eq(close(p[0]), 0);
	ck_assert_int_eq(close(p[1]), 0);
}
END_TEST

/* Buffers belong to the kernel between prep and completion. */
START_TEST(buffer_poisoned_while_in_flight)
{
	struct iob_cqe cqe;
	struct iob *iob;
	uint8_t *buf;
	int fd;

	if (!use_backend(_i))
		return;
	if (!IOB_POISONS)
		printf("# not an ASan build: poisoning compiled out\n");
	(void)fflush(stdout);
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	buf = calloc(1, 4096);
	ck_assert_ptr_nonnull(buf);
	iob = new_iob(2);
	ck_assert_int_eq(iob_prep_write(iob, fd, buf, 4096, 0, 0), 0);
	ck_assert(iob_is_poisoned(buf) == IOB_POISONS);
	ck_assert(iob_is_poisoned(buf + 4095) == IOB_POISONS);
	ck_assert_int_eq(iob_wait(iob, 1, &cqe, 1, -1), 1);
	ck_assert(!iob_is_poisoned(buf));
	ck_assert(!iob_is_poisoned(buf + 4095));
	ck_assert_int_eq(cqe.res, 4096);
	iob_free(iob);
	free(buf);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* The nth write fails with -ENOSPC and does not land; the others do. */
START_TEST(fault_nth_write_enospc)
{
	const size_t bs = 4096;
	const unsigned n = 8;
	struct req reqs[9];
	int64_t res[9];
	struct iob *inner, *iob;
	uint8_t *mem, *got;
	unsigned b;
	size_t j;
	int fd;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)(bs * n)), 0);
	mem = malloc(bs * n);
	got = malloc(bs);
	ck_assert(mem && got);
	inner = new_iob(4);
	ck_assert_int_eq(iob_fault_wrap(inner, &iob), 0);
	ck_assert_str_eq(iob_backend_name(iob), backends[_i]);
	iob_fault_set(iob, IOB_WRITE, -1, 3, ENOSPC);
	for (b = 0; b < n; b++) {
		for (j = 0; j < bs; j++)
			mem[b * bs + j] = pattern(b, j);
		reqs[b] = (struct req){IOB_WRITE, fd, mem + b * bs, bs,
				       (uint64_t)b * bs};
	}
	/* A read and an fsync do not match a write rule. */
	reqs[n] = (struct req){IOB_FSYNC, fd, NULL, 0, 0};
	pump(iob, 4, reqs, n + 1, res);
	ck_assert_uint_eq(iob_fault_matched(iob), n);
	for (b = 0; b < n; b++) {
		ck_assert_int_eq(res[b], b == 2 ? -ENOSPC : (int64_t)bs);
		ck_assert_int_eq(pread(fd, got, bs, (off_t)(b * bs)),
				 (ssize_t)bs);
		for (j = 0; j < bs; j++) {
			if (got[j] != (b == 2 ? 0 : pattern(b, j)))
				ck_abort_msg("block %u byte %zu: %u", b, j,
					     got[j]);
		}
	}
	ck_assert_int_eq(res[n], 0);
	iob_free(iob); /* frees inner too */
	free(mem);
	free(got);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/*
 * Walking nth over a fixed request sequence fails exactly the nth
 * matching request each time, and nothing once nth passes the end: the
 * loop the copy-job tests use to reach every error exit.
 */
START_TEST(fault_walk_covers_every_request)
{
	static uint8_t a[4096], b[4096];
	struct req reqs[4];
	int64_t res[4];
	struct iob *iob;
	unsigned nth, k;
	int fd, other;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	other = open_tmp("g", 0);
	ck_assert(fd >= 0 && other >= 0);
	memset(a, 1, sizeof(a));
	/* Sized, so the read returns 4096 even when the write was failed. */
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	reqs[0] = (struct req){IOB_WRITE, fd, a, sizeof(a), 0};
	reqs[1] = (struct req){IOB_FSYNC, fd, NULL, 0, 0};
	reqs[2] = (struct req){IOB_READ, fd, b, sizeof(b), 0};
	reqs[3] = (struct req){IOB_WRITE, other, a, sizeof(a), 0};
	ck_assert_int_eq(iob_fault_wrap(new_iob(1), &iob), 0);
	for (nth = 1; nth <= 5; nth++) {
		iob_fault_set(iob, IOB_ANY, -1, nth, EIO);
		pump(iob, 1, reqs, 4, res);
		ck_assert_uint_eq(iob_fault_matched(iob), 4);
		for (k = 0; k < 4; k++) {
			int64_t want = k == 1 ? 0 : 4096;

			ck_assert_int_eq(res[k], k + 1 == nth ? -EIO : want);
		}
	}
	/* An fd filter only counts that fd's requests. */
	iob_fault_set(iob, IOB_WRITE, other, 1, EIO);
	pump(iob, 1, reqs, 4, res);
	ck_assert_uint_eq(iob_fault_matched(iob), 1);
	ck_assert_int_eq(res[0], 4096);
	ck_assert_int_eq(res[3], -EIO);
	iob_fault_set(iob, IOB_FSYNC, -1, 1, ENOSPC);
	pump(iob, 1, reqs, 4, res);
	ck_assert_int_eq(res[1], -ENOSPC);
	ck_assert_int_eq(res[0], 4096);
	iob_free(iob);
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(close(other), 0);
}
END_TEST

/* The process-wide plan wraps contexts iob_new() makes, counting across them. */
START_TEST(fault_global_plan)
{
	uint8_t a[4096];
	struct iob_cqe cqe;
	struct iob *x, *y;
	int fd;

	if (!use_backend(_i))
		return;
	fd = open_tmp("f", 0);
	ck_assert_int_ge(fd, 0);
	memset(a, 3, sizeof(a));
	iob_fault_global(IOB_WRITE, -1, 3, ENOSPC);
	x = new_iob(2);
	y = new_iob(2);
	ck_assert_str_eq(iob_backend_name(x), backends[_i]);
	/* Matches 1 (x), 2 (y), 3 (x): the third fails. */
	ck_assert_int_eq(iob_prep_write(x, fd, a, sizeof(a), 0, 1), 0);
	ck_assert_int_eq(iob_wait(x, 1, &cqe, 1, -1), 1);
	ck_assert_int_eq(cqe.res, 4096);
	ck_assert_int_eq(iob_prep_write(y, fd, a, sizeof(a), 0, 2), 0);
	ck_assert_int_eq(iob_wait(y, 1, &cqe, 1, -1), 1);
	ck_assert_int_eq(cqe.res, 4096);
	ck_assert_int_eq(iob_prep_read(x, fd, a, sizeof(a), 0, 3), 0);
	ck_assert_int_eq(iob_wait(x, 1, &cqe, 1, -1), 1);
	ck_assert_int_eq(cqe.res, 4096);
	ck_assert_int_eq(iob_prep_write(x, fd, a, sizeof(a), 0, 4), 0);
	ck_assert_int_eq(iob_wait(x, 1, &cqe, 1, -1), 1);
	ck_assert_uint_eq(cqe.user_data, 4);
	ck_assert_int_eq(cqe.res, -ENOSPC);
	ck_assert_int_eq(iob_prep_write(y, fd, a, sizeof(a), 0, 5), 0);
	ck_assert_int_eq(iob_wait(y, 1, &cqe, 1, -1), 1);
	ck_assert_int_eq(cqe.res, 4096);
	ck_assert_uint_eq(iob_fault_global_matched(), 4);
	iob_free(x);
	iob_free(y);
	/* Disarmed: a new context is plain and nothing fails. */
	iob_fault_global(IOB_ANY, -1, 0, 0);
	x = new_iob(1);
	ck_assert_int_eq(iob_prep_write(x, fd, a, sizeof(a), 0, 6), 0);
	ck_assert_int_eq(iob_wait(x, 1, &cqe, 1, -1), 1);
	ck_assert_int_eq(cqe.res, 4096);
	ck_assert_uint_eq(iob_fault_global_matched(), 0);
	iob_free(x);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

static TCase *loop_case(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, setup_case, teardown_case);
	tcase_add_checked_fixture(tc, setup_tmpdir, teardown_tmpdir);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *iob_suite(void)
{
	Suite *s = suite_create("iob");
	TCase *tc;

	tc = loop_case(s, "data");
	tcase_add_loop_test(tc, many_in_flight_buffered, 0, 2);
	tcase_add_loop_test(tc, many_in_flight_direct, 0, 2);
	tcase_add_loop_test(tc, fixed_buffers_direct, 0, 2);
	tcase_add_loop_test(tc, short_read_at_eof, 0, 2);
	tcase_add_loop_test(tc, buffer_poisoned_while_in_flight, 0, 2);
	tc = loop_case(s, "limits");
	tcase_add_loop_test(tc, ebusy_when_full, 0, 2);
	tcase_add_loop_test(tc, invalid_arguments, 0, 2);
	tcase_add_test(tc, wait_timeout_uring);
	tc = loop_case(s, "errors");
	tcase_add_loop_test(tc, bad_fd_completes_with_ebadf, 0, 2);
	tcase_add_loop_test(tc, fsync_completes_with_zero, 0, 2);
	tc = loop_case(s, "selection");
	tcase_add_loop_test(tc, backend_name_reported, 0, 2);
	tcase_add_test(tc, default_backend_is_uring);
	tcase_add_test(tc, unknown_backend_is_refused);
	tc = loop_case(s, "fault");
	tcase_add_loop_test(tc, fault_nth_write_enospc, 0, 2);
	tcase_add_loop_test(tc, fault_walk_covers_every_request, 0, 2);
	tcase_add_loop_test(tc, fault_global_plan, 0, 2);
	return s;
}

int main(void)
{
	const char *env = getenv("IOB_TEST_SEED");
	struct iob *iob;
	SRunner *sr;
	int failed, i;

	seed = env ? (unsigned)strtoul(env, NULL, 0)
		   : (unsigned)time(NULL) ^ (unsigned)getpid();
	printf("# seed %u\n", seed);
	if (iob_uring_new(1, &iob) == 0) {
		have_backend[0] = true;
		iob_free(iob);
	}
	have_backend[1] = iob_aio_probe() == 0;
	if (!have_backend[0])
		printf("# io_uring unavailable here\n");
	if (!have_backend[1])
		printf("# libaio unavailable here\n");
	(void)fflush(stdout);
	/* valgrind runs with BLOCKCOPY_IO=aio: it cannot see io_uring fills. */
	env = getenv("BLOCKCOPY_IO");
	for (i = 0; i < 2; i++)
		run_backend[i] = have_backend[i] &&
				 (!env || !*env || !strcmp(env, backends[i]));
	if (!run_backend[0] && !run_backend[1]) {
		fprintf(stderr, "no I/O backend works here\n");
		return EXIT_FAILURE;
	}

	sr = srunner_create(iob_suite());
	srunner_set_tap(sr, "-");
	srunner_run_all(sr, CK_SILENT);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
