/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Resumable copies (issue 12, docs/rules.md R40): the journal DST.bcjournal
 * and BC_BLOCK_COPY_RESUME. Interrupted copies are real: a child process
 * runs the copy (and a guest) and is killed with SIGKILL; the parent
 * resumes and compares byte for byte with the shadow of what the guest
 * wrote and with an uninterrupted copy.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/iob-fault.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/api/helpers.h"
#include "tests/check-main.h"

#define GRAN (64u * 1024)
/* Guest writes of the killed children land in [0, GUEST_AREA). */
#define GUEST_AREA (FX_SIZE / 4)

static struct fx fx;

/* --- helpers ------------------------------------------------------------ */

/*
 * Paths that outlive fx_path()'s rotating scratch buffers (a loop of
 * fx_fmt() calls would overwrite them); freed by teardown().
 */
static char *kept[16];
static unsigned int nkept;

static const char *keep(const char *p)
{
	ck_assert_uint_lt(nkept, 16);
	kept[nkept] = strdup(p);
	ck_assert_ptr_nonnull(kept[nkept]);
	return kept[nkept++];
}

static const char *journal_of(const char *dst)
{
	static char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s.bcjournal", dst);
	return buf;
}

/*
 * Bytes the journal file at @path marks still to copy, read from the file
 * as docs/design.md describes it (le32 header size at 12, le32 log2
 * granularity at 16, le64 virtual size at 24, le64 granules at 32, then
 * one bit per granule); -1 when there is no journal.
 */
static int64_t journal_bytes(const char *path)
{
	uint8_t h[64], *bits;
	uint32_t hs, gb;
	uint64_t size, nbits, i, n = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	ck_assert_int_eq(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	ck_assert_int_eq(memcmp(h, "BCJRNL\r\n", 8), 0);
	memcpy(&hs, h + 12, 4);
	memcpy(&gb, h + 16, 4);
	memcpy(&size, h + 24, 8);
	memcpy(&nbits, h + 32, 8);
	hs = le32toh(hs);
	gb = le32toh(gb);
	size = le64toh(size);
	nbits = le64toh(nbits);
	bits = malloc((nbits + 7) / 8);
	ck_assert_ptr_nonnull(bits);
	ck_assert_int_eq(pread(fd, bits, (nbits + 7) / 8, hs),
			 (ssize_t)((nbits + 7) / 8));
	close(fd);
	for (i = 0; i < nbits; i++)
		if (bits[i / 8] & (1u << (i % 8)))
			n += i == nbits - 1 ? size - (i << gb) : 1ull << gb;
	free(bits);
	return (int64_t)n;
}

/* Wait (10 s at most) until the journal of @dst marks fewer than @bytes. */
static void wait_journal_below(const char *dst, int64_t bytes)
{
	time_t deadline = time(NULL) + 10;
	int64_t j;

	while ((j = journal_bytes(journal_of(dst))) >= bytes) {
		ck_assert_msg(
			time(NULL) < deadline,
			"journal still marks %lld bytes after 10 s (waiting for < %lld)",
			(long long)j, (long long)bytes);
		usleep(5000);
	}
}

static void expect_error(int code, const char *msg)
{
	ck_assert_int_eq(bc_last_error()->code, code);
	ck_assert_str_eq(bc_last_error()->message, msg);
}

static void pivot(void)
{
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
}

static uint64_t last_bytes_copied(void)
{
	bc_block_job_stats st;

	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	ck_assert_int_eq(st.active, 0);
	return st.bytes_copied;
}

/* Guest view of the chain whose top is @path (format @fmt), FX_SIZE bytes. */
static uint8_t *read_view(const char *path, const char *fmt)
{
	struct fmt_image *img;
	uint8_t *buf = malloc(FX_SIZE);

	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(fmt_open(path, fmt, 0, &img) == 0, "open %s: %s", path,
		      bc_last_error()->message);
	ck_assert_int_eq(fmt_pread(img, buf, FX_SIZE, 0), 0);
	fmt_close(img);
	return buf;
}

static void assert_views_equal(const char *a, const char *b, const char *fmt)
{
	uint8_t *x = read_view(a, fmt), *y = read_view(b, fmt);
	size_t i;

	for (i = 0; i < FX_SIZE; i++)
		if (x[i] != y[i])
			ck_abort_msg("%s and %s differ at offset %zu", a, b, i);
	free(x);
	free(y);
}

/* A raw source with the chain's content (in the shadow), opened as the disk. */
static void open_raw_source(void)
{
	struct fmt_create_opts co = {.format = "raw", .size = FX_SIZE};
	const char *src = fx_path(&fx, "src.raw");
	struct fmt_image *img;
	uint64_t off;

	fx_open_chain(&fx, 3);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	ck_assert_int_eq(fmt_create(src, &co), 0);
	ck_assert_int_eq(fmt_open(src, "raw", FMT_OPEN_RDWR, &img), 0);
	/* Sparse where the chain reads zero. */
	for (off = 0; off < FX_SIZE; off += GRAN) {
		uint8_t *p = fx.shadow + off;
		size_t i;

		for (i = 0; i < GRAN && !p[i]; i++)
			;
		if (i < GRAN)
			ck_assert_int_eq(fmt_pwrite(img, p, GRAN, off), 0);
	}
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	fx.disk = bc_disk_open(fx.eng, src, "raw", 0);
	ck_assert_ptr_nonnull(fx.disk);
	fx.top = bc_disk_path(fx.disk);
}

/* --- a copy in a child process, killed --------------------------------- */

struct shared {
	atomic_int ready;  /* the child's copy reached the point to kill at */
	atomic_int failed; /* the child hit an error: line number */
	atomic_uint_fast64_t writes;
	atomic_uint_fast64_t pend_off,
		pend_len; /* the guest write in progress */
	uint8_t shadow[FX_SIZE];
};

enum child_mode {
	CHILD_BULK,	   /* throttled bulk copy, no guest */
	CHILD_BULK_GUEST,  /* throttled bulk copy, guest writing */
	CHILD_MIRROR_SLOW, /* MIRRORING, then a crawling mirror, guest writing */
	CHILD_MIRROR_BLOCK, /* write-blocking mirror, guest writing */
	CHILD_MIRROR_ONCE,  /* mirroring: new clusters written once, no flush,
			       copied and checkpointed; then killed */
};

static int child_mirroring;

static void child_event(bc_engine *e, bc_disk *d, const char *p, int type,
			int status, void *o)
{
	(void)e;
	(void)d;
	(void)p;
	(void)type;
	(void)o;
	if (status == BC_BLOCK_JOB_MIRRORING)
		child_mirroring = 1;
}

#define CHILD_CHECK(sh, cond)                                  \
	do {                                                   \
		if (!(cond)) {                                 \
			atomic_store(&(sh)->failed, __LINE__); \
			_exit(1);                              \
		}                                              \
	} while (0)

/* The child: never returns; killed by the parent. */
static void child_run(struct shared *sh, const char *src, const char *fmt,
		      const char *dst, unsigned int flags, enum child_mode mode,
		      uint64_t bw)
{
	bc_block_copy_params p = {.granularity = GRAN};
	bc_engine *eng = bc_engine_new(0);
	unsigned int seed = (unsigned int)getpid();
	uint8_t *buf = malloc(GRAN);
	bc_disk *disk;

	/* A test that fails before the kill must not leave us running. */
	CHILD_CHECK(sh,
		    prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != 1);
	CHILD_CHECK(sh, eng && buf);
	CHILD_CHECK(sh, bc_engine_event_register(eng, child_event, NULL) == 0);
	disk = bc_disk_open(eng, src, fmt, 0);
	CHILD_CHECK(sh, disk);
	if (mode == CHILD_BULK || mode == CHILD_BULK_GUEST)
		p.bandwidth = bw;
	if (mode == CHILD_MIRROR_BLOCK)
		flags |= BC_BLOCK_COPY_SYNCHRONOUS_WRITES;
	CHILD_CHECK(sh, bc_block_copy(disk, dst, &p, flags) == 0);
	if (mode != CHILD_BULK && mode != CHILD_BULK_GUEST) {
		time_t deadline = time(NULL) + 30;

		while (!child_mirroring) {
			CHILD_CHECK(sh, time(NULL) < deadline);
			CHILD_CHECK(sh, bc_engine_dispatch(eng, 100) >= 0);
		}
		if (mode == CHILD_MIRROR_SLOW)
			CHILD_CHECK(
				sh,
				bc_block_job_set_speed(
					disk, 1,
					BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES) ==
					0);
		/* Wait for a checkpoint to clear the whole journal. */
		deadline = time(NULL) + 30;
		while (journal_bytes(journal_of(dst)) != 0) {
			CHILD_CHECK(sh, time(NULL) < deadline);
			usleep(20000);
		}
	}
	if (mode == CHILD_MIRROR_ONCE) {
		time_t deadline = time(NULL) + 30;
		uint64_t k;

		/*
		 * Clusters the top layer does not hold (allocating writes: a
		 * qcow2 source keeps their mapping in its cache until a
		 * flush), each written once and never flushed by the guest;
		 * wait until the mirror copied them and a checkpoint cleared
		 * their bits: the checkpoint must have flushed the source too.
		 */
		for (k = 0; k < 8; k++) {
			memset(buf, (int)(0xa0 + k), GRAN);
			CHILD_CHECK(sh, bc_disk_pwrite(disk, buf, GRAN,
						       (7u << 20) + k * GRAN) ==
						(ssize_t)GRAN);
			memcpy(sh->shadow + (7u << 20) + k * GRAN, buf, GRAN);
			atomic_fetch_add(&sh->writes, 1);
		}
		while (journal_bytes(journal_of(dst)) != 0) {
			CHILD_CHECK(sh, time(NULL) < deadline);
			usleep(20000);
		}
		atomic_store(&sh->ready, 1);
		for (;;)
			pause();
	}
	atomic_store(&sh->ready, 1);
	for (;;) {
		uint64_t off, len;

		if (mode == CHILD_BULK) {
			pause();
			continue;
		}
		/* In the first quarter only: the rest of the journal stays clear. */
		len = 512u *
		      (1 + (uint64_t)rand_r(&seed) % (2 * GRAN / 512 - 1));
		off = 512u *
		      ((uint64_t)rand_r(&seed) % ((GUEST_AREA - len) / 512));
		memset(buf, rand_r(&seed) & 0xff, len > GRAN ? GRAN : len);
		if (len > GRAN)
			len = GRAN;
		atomic_store(&sh->pend_off, off);
		atomic_store(&sh->pend_len, len);
		CHILD_CHECK(sh, bc_disk_pwrite(disk, buf, len, off) ==
					(ssize_t)len);
		/*
		 * Mirroring modes: each write flushed, so the source must hold
		 * every one acknowledged (qcow2 keeps only flushed writes over
		 * a crash). The bulk mode does not flush: a write the source
		 * loses must then be missing from the copy too.
		 */
		if (mode != CHILD_BULK_GUEST)
			CHILD_CHECK(sh, bc_disk_flush(disk) == 0);
		memcpy(sh->shadow + off, buf, len);
		atomic_fetch_add(&sh->writes, 1);
		usleep(200);
	}
}

/* What the parent saw of the journal since the child was ready. */
struct kill_watch {
	int64_t j0;   /* bytes marked then */
	int64_t prev; /* at the last look */
	bool dropped; /* some look saw fewer than the one before: a checkpoint */
};

/*
 * Whether the child of @mode has run long enough to be killed, with bits
 * still set (guest modes: the guest has written): bulk modes once a
 * checkpoint cleared some since the child was ready; write-blocking once
 * one did while the guest wrote. Mirror-once is ready when it says so:
 * its checkpoint is its own condition.
 */
static bool time_to_kill(enum child_mode mode, struct shared *sh,
			 const char *dst, struct kill_watch *w)
{
	int64_t j = journal_bytes(journal_of(dst));
	bool guest = atomic_load(&sh->writes) >= 100;

	if (j < w->prev)
		w->dropped = true;
	w->prev = j;
	switch (mode) {
	case CHILD_BULK:
		return j > 0 && j < w->j0;
	case CHILD_BULK_GUEST:
		return j > 0 && j < w->j0 && guest;
	case CHILD_MIRROR_SLOW:
		return j > 0 && guest;
	case CHILD_MIRROR_BLOCK:
		return j > 0 && w->dropped && guest;
	case CHILD_MIRROR_ONCE:
		return true;
	}
	return true;
}

/*
 * Run the copy of the open disk's top to @dst in a child (the parent's
 * disk is closed meanwhile: one writer), kill it with SIGKILL once
 * time_to_kill() says so (bulk copy at @bw bytes/s; 60 s at most), reopen
 * the disk. Returns the shared state (shadow included), to munmap.
 */
static struct shared *killed_copy(const char *dst, unsigned int flags,
				  enum child_mode mode, uint64_t bw)
{
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	static char src[PATH_MAX], fmt[16];
	time_t deadline = time(NULL) + 60;
	struct kill_watch w = {.dropped = false};
	int status;
	pid_t pid;

	ck_assert_ptr_ne(sh, MAP_FAILED);
	memcpy(sh->shadow, fx.shadow, FX_SIZE);
	snprintf(src, sizeof(src), "%s", fx.top);
	snprintf(fmt, sizeof(fmt), "%s", strstr(src, ".raw") ? "raw" : "qcow2");
	fx_close_disk(&fx);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		child_run(sh, src, fmt, dst, flags, mode, bw);
	while (!atomic_load(&sh->ready) && !atomic_load(&sh->failed)) {
		ck_assert_msg(time(NULL) < deadline, "child not ready in 60 s");
		usleep(5000);
	}
	ck_assert_msg(!atomic_load(&sh->failed), "child failed at line %d",
		      atomic_load(&sh->failed));
	w.j0 = w.prev = journal_bytes(journal_of(dst));
	ck_assert_int_ge(w.j0, 0);
	while (!time_to_kill(mode, sh, dst, &w)) {
		ck_assert_msg(!atomic_load(&sh->failed),
			      "child failed at line %d",
			      atomic_load(&sh->failed));
		ck_assert_msg(
			time(NULL) < deadline,
			"mode %d: not time to kill in 60 s (journal %lld of %lld bytes, %llu guest writes)",
			(int)mode, (long long)w.prev, (long long)w.j0,
			(unsigned long long)atomic_load(&sh->writes));
		usleep(5000);
	}
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		      "child ended by itself (failed at line %d)",
		      atomic_load(&sh->failed));
	fx.disk = bc_disk_open(fx.eng, src, fmt, 0);
	ck_assert_ptr_nonnull(fx.disk);
	fx.top = bc_disk_path(fx.disk);
	return sh;
}

/* --- the journal's life ------------------------------------------------- */

/* Created, durable, marking all the job will copy, before it copies. */
/* R40 */
START_TEST(journal_created_before_copy_and_removed_on_pivot)
{
	bc_block_copy_params p = {.bandwidth = 1};
	const char *dst = keep(fx_path(&fx, "dst.qcow2"));

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_int_gt(fx.info.end, 0);
	ck_assert_int_eq(journal_bytes(journal_of(dst)), (int64_t)fx.info.end);
	ck_assert_int_eq(access(fx_fmt(&fx, "%s.tmp", journal_of(dst)), F_OK),
			 -1);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	pivot();
	ck_assert_int_eq(access(journal_of(dst), F_OK), -1);
	ck_assert_int_eq(errno, ENOENT);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* A checkpoint clears what is copied; a guest write sets its bits. */
/* R40 */
START_TEST(checkpoint_clears_and_guest_write_sets)
{
	const char *dst = keep(fx_path(&fx, "dst.qcow2"));
	time_t deadline;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	deadline = time(NULL) + 10;
	while (journal_bytes(journal_of(dst)) != 0) {
		ck_assert(time(NULL) < deadline);
		usleep(20000);
	}
	/* Crawling mirror: the write stays dirty, its bits set. */
	ck_assert_int_eq(
		bc_block_job_set_speed(fx.disk, 1,
				       BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES),
		0);
	fx_guest_write(&fx, 3 * GRAN + 10, GRAN, 0x5a); /* touches 2 granules */
	ck_assert_int_eq(journal_bytes(journal_of(dst)), 2 * GRAN);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(journal_bytes(journal_of(dst)), -1);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* Abort after MIRRORING (a complete copy) removes; cancel before keeps. */
/* R40 */
START_TEST(abort_after_mirroring_removes_cancel_before_keeps)
{
	bc_block_copy_params slow = {.bandwidth = 1};
	const char *a = keep(fx_path(&fx, "a.qcow2"));
	const char *b = keep(fx_path(&fx, "b.qcow2"));

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, a, NULL, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_eq(journal_bytes(journal_of(a)), -1);

	ck_assert_int_eq(bc_block_copy(fx.disk, b, &slow, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_int_gt(journal_bytes(journal_of(b)), 0);
	/* Same process, same disk: the disk kept it; the resume completes. */
	fx_guest_write(&fx, 5 * GRAN, 3 * GRAN, 0x77);
	ck_assert_int_eq(bc_block_copy(fx.disk, b, NULL, BC_BLOCK_COPY_RESUME),
			 0);
	pivot();
	ck_assert_int_eq(journal_bytes(journal_of(b)), -1);
	fx_check_image_equals_shadow(&fx, b, "qcow2");
}
END_TEST

/* A FAILED job keeps its journal; resuming completes the copy. */
/* R40 */
START_TEST(resume_after_failed)
{
	bc_block_copy_params p = {.bandwidth = 4u << 20};
	const char *dst = keep(fx_path(&fx, "dst.raw"));
	uint64_t resumed;
	int64_t left;

	open_raw_source();
	/* The destination dies after a second or so of copying. */
	iob_fault_global_from(IOB_WRITE, -1, 70, EIO);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	iob_fault_global(IOB_WRITE, -1, 0, 0);
	ck_assert_int_eq(fx.last_err.code, BC_ERR_IO);
	ck_assert_int_gt(journal_bytes(journal_of(dst)), 0);
	/* The guest goes on meanwhile: its writes are still recorded. */
	fx_guest_write(&fx, 100 * 1024, 300 * 1024, 0xe1);
	fx_guest_write(&fx, FX_SIZE - GRAN, GRAN, 0xe2);
	/* Their granules are marked (the last one was not data before). */
	left = journal_bytes(journal_of(dst));
	ck_assert_int_ge(left, 2 * GRAN);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	pivot();
	resumed = last_bytes_copied();
	/* Only what the journal said remained. */
	ck_assert_uint_le(resumed, (uint64_t)left);
	fx_check_image_equals_shadow(&fx, dst, "raw");
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/*
 * Without RESUME a copy with REUSE_EXT into an interrupted destination
 * starts over: its new journal marks what a full scan finds to copy (job
 * info's end), not the little the interrupted copy had left.
 */
/* R40 */
START_TEST(reuse_ext_without_resume_starts_over)
{
	bc_block_copy_params p = {.bandwidth = 2u << 20};
	const char *dst = keep(fx_path(&fx, "dst.qcow2"));
	int64_t left;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	wait_journal_below(dst, journal_bytes(journal_of(dst)));
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	left = journal_bytes(journal_of(dst));
	p.bandwidth = 1;
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, &p, BC_BLOCK_COPY_REUSE_EXT), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_int_eq(journal_bytes(journal_of(dst)), (int64_t)fx.info.end);
	ck_assert_int_gt((int64_t)fx.info.end, left);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	pivot();
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/*
 * Bytes alone trigger a checkpoint: a copy that passes CHECKPOINT_BYTES
 * (128 MiB, engine/mirror.c) well within CHECKPOINT_NS (1 s) has
 * checkpointed by then. A shallow copy of a 512 MiB qcow2 image that is
 * all zero clusters (over an empty backing file): each chunk is one cheap zero write, so the copy
 * passes 128 MiB in a few milliseconds, and nothing but the bytes can
 * explain a journal that shrank before 1 s (the first time trigger comes
 * 1 s after the job thread starts, after bc_block_copy() was called).
 */
/* R40 */
START_TEST(checkpoint_after_128_mib_within_a_second)
{
	struct fmt_create_opts co = {.format = "qcow2", .size = 512u << 20};
	const char *base = keep(fx_path(&fx, "empty.qcow2"));
	const char *src = keep(fx_path(&fx, "zeros.qcow2"));
	const char *dst = keep(fx_path(&fx, "dst.qcow2"));
	struct fmt_image *img;
	struct timespec t0, t;
	int64_t j0, j, ms;

	/* Zeros over a backing file are zero clusters, not holes. */
	ck_assert_int_eq(fmt_create(base, &co), 0);
	co.backing_file = "empty.qcow2";
	co.backing_fmt = "qcow2";
	ck_assert_int_eq(fmt_create(src, &co), 0);
	ck_assert_int_eq(fmt_open(src, "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_write_zeroes(img, 0, co.size, 0), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	fx.disk = bc_disk_open(fx.eng, src, "qcow2", 0);
	ck_assert_ptr_nonnull(fx.disk);
	fx.top = bc_disk_path(fx.disk);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_SHALLOW), 0);
	j0 = journal_bytes(journal_of(dst));
	/* The journal marked all of it before the copy began (R40). */
	ck_assert_int_eq(j0, (int64_t)co.size);
	for (;;) {
		j = journal_bytes(journal_of(dst));
		clock_gettime(CLOCK_MONOTONIC, &t);
		ms = (t.tv_sec - t0.tv_sec) * 1000 +
		     (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (j < j0 || ms >= 1000)
			break;
		usleep(1000);
	}
	fprintf(stderr, "# journal %lld of %lld bytes after %lld ms\n",
		(long long)j, (long long)j0, (long long)ms);
	ck_assert_msg(
		j < j0,
		"no checkpoint within 1 s of a copy of 512 MiB of zeros (journal %lld bytes)",
		(long long)j);
	/* At least the first 128 MiB were durable and cleared at once. */
	ck_assert_int_le(j, j0 - (128 << 20));
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_COMPLETED);
	ck_assert_int_eq(journal_bytes(journal_of(dst)), -1);
}
END_TEST

/* --- a checkpoint's fdatasync whose submission fails -------------------- */

/* Wait (10 s at most) until the running job has copied something. */
static void wait_progress(void)
{
	time_t deadline = time(NULL) + 10;

	for (;;) {
		ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0),
				 1);
		if (fx.info.cur > 0)
			return;
		ck_assert_msg(time(NULL) < deadline, "no progress within 10 s");
		usleep(2000);
	}
}

/*
 * The checkpoint a cancel takes (raw destination: its fdatasync queued
 * on the ring) is refused at submission once: the teardown still reaps
 * it (iob_free asserted on the request left prepared, aborting the
 * process), and the commit follows it.
 */
/* R40 */
START_TEST(cancel_checkpoint_fsync_submit_refused_once)
{
	bc_block_copy_params p = {.bandwidth = 2u << 20};
	const char *dst = keep(fx_path(&fx, "dst.raw"));
	int64_t left;

	open_raw_source();
	iob_fault_global_submit(IOB_FSYNC, 1, EAGAIN);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	/* Well inside the first CHECKPOINT_NS: the cancel's is the first. */
	wait_progress();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	/* The refused submit, then the wait that handed the fsync over. */
	ck_assert_uint_eq(iob_fault_global_submit_matched(), 2);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	/* Committed: what was copied is no longer marked. */
	left = journal_bytes(journal_of(dst));
	ck_assert_int_gt(left, 0);
	ck_assert_uint_lt((uint64_t)left, FX_SIZE);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	pivot();
	ck_assert_uint_le(last_bytes_copied(), (uint64_t)left);
	fx_check_image_equals_shadow(&fx, dst, "raw");
}
END_TEST

/*
 * The cancel's checkpoint fdatasync completes with EIO: the checkpoint is
 * not committed (the journal still marks all it did), the job still ends
 * CANCELED (the user asked for the end), and a resume completes the copy.
 */
/* R40 */
START_TEST(cancel_checkpoint_fsync_fails)
{
	bc_block_copy_params p = {.bandwidth = 2u << 20};
	const char *dst = keep(fx_path(&fx, "dst.raw"));
	int64_t j0;

	open_raw_source();
	iob_fault_global(IOB_FSYNC, -1, 1, EIO);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	j0 = journal_bytes(journal_of(dst));
	/* Well inside the first CHECKPOINT_NS: the cancel's is the first. */
	wait_progress();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_uint_eq(iob_fault_global_matched(), 1);
	ck_assert_int_eq(journal_bytes(journal_of(dst)), j0);
	iob_fault_global(IOB_FSYNC, -1, 0, 0);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	pivot();
	fx_check_image_equals_shadow(&fx, dst, "raw");
}
END_TEST

/*
 * A periodic checkpoint's fdatasync refused at submission fails the job
 * (the backend refused a request) without waiting forever for the
 * completion: the next wait hands it over and reaps it.
 */
/* R40 */
START_TEST(checkpoint_fsync_submit_refused_fails_the_job)
{
	bc_block_copy_params p = {.bandwidth = 2u << 20};
	const char *dst = keep(fx_path(&fx, "dst.raw"));

	open_raw_source();
	iob_fault_global_submit(IOB_FSYNC, 1, EAGAIN);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_FAILED);
	/* The refused submit, then the wait that handed the fsync over. */
	ck_assert_uint_eq(iob_fault_global_submit_matched(), 2);
	ck_assert_int_eq(fx.last_err.code, BC_ERR_IO);
	ck_assert_str_eq(
		fx.last_err.message,
		"submit (injected fault): Resource temporarily unavailable");
	ck_assert_int_gt(journal_bytes(journal_of(dst)), 0);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	pivot();
	fx_check_image_equals_shadow(&fx, dst, "raw");
}
END_TEST

/* --- identity checks ------------------------------------------------------ */

/* A journal left by a copy canceled before MIRRORING; the disk closed. */
static const char *interrupted_copy(const char *name)
{
	bc_block_copy_params slow = {.bandwidth = 1};
	const char *dst = keep(fx_path(&fx, name));

	ck_assert_int_eq(bc_block_copy(fx.disk, dst, &slow, 0), 0);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	return dst;
}

/* R40 */
START_TEST(resume_errors)
{
	bc_block_copy_params g128 = {.granularity = 128u * 1024};
	const char *dst, *jpath, *other;
	static char real_dst[PATH_MAX], real_src[PATH_MAX],
		real_other[PATH_MAX];
	uint8_t byte;
	int fd;

	fx_open_chain(&fx, 3);
	other = fx.layers[1];
	dst = interrupted_copy("dst.qcow2");
	jpath = keep(journal_of(dst));
	ck_assert_ptr_nonnull(realpath(dst, real_dst));
	ck_assert_ptr_nonnull(realpath(fx.top, real_src));
	ck_assert_ptr_nonnull(realpath(other, real_other));
	fx_close_disk(&fx);
	fx.disk = bc_disk_open(fx.eng, fx.top, "qcow2", 0);
	ck_assert_ptr_nonnull(fx.disk);

	/* No journal. */
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "none.qcow2"),
				       NULL, BC_BLOCK_COPY_RESUME),
			 -1);
	expect_error(BC_ERR_NO_SUCH_FILE,
		     fx_fmt(&fx, "no journal '%s' to resume from",
			    journal_of(fx_path(&fx, "none.qcow2"))));
	/* Shallow against a full copy. */
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL,
			      BC_BLOCK_COPY_RESUME | BC_BLOCK_COPY_SHALLOW),
		-1);
	expect_error(
		BC_ERR_INVALID_ARG,
		fx_fmt(&fx,
		       "journal '%s' records a full copy, not a shallow one",
		       jpath));
	/* Another granularity. */
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, &g128, BC_BLOCK_COPY_RESUME), -1);
	expect_error(
		BC_ERR_INVALID_ARG,
		fx_fmt(&fx,
		       "journal '%s' granularity 65536 differs from the requested 131072",
		       jpath));
	/* With a bitmap. */
	ck_assert_int_eq(bc_block_copy_bitmap(fx.disk, dst, "b0", NULL,
					      BC_BLOCK_COPY_RESUME),
			 -1);
	expect_error(
		BC_ERR_INVALID_ARG,
		"resume and a bitmap are mutually exclusive: the journal says what is left to copy");
	/* Another source. */
	fx_close_disk(&fx);
	fx.disk = bc_disk_open(fx.eng, other, "qcow2", 0);
	ck_assert_ptr_nonnull(fx.disk);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), -1);
	expect_error(BC_ERR_INVALID_ARG,
		     fx_fmt(&fx, "journal '%s' source is '%s', not '%s'", jpath,
			    real_src, real_other));
	fx_close_disk(&fx);
	fx.disk = bc_disk_open(fx.eng, fx.top, "qcow2", 0);
	ck_assert_ptr_nonnull(fx.disk);
	/* The destination replaced by another file (a copy of it). */
	ck_assert_int_eq(rename(dst, fx_path(&fx, "moved.qcow2")), 0);
	{
		struct fmt_create_opts co = {.format = "qcow2",
					     .size = FX_SIZE};

		ck_assert_int_eq(fmt_create(dst, &co), 0);
	}
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), -1);
	expect_error(
		BC_ERR_INVALID_ARG,
		fx_fmt(&fx,
		       "journal '%s' destination '%s' is another file now (device or inode differ)",
		       jpath, real_dst));
	ck_assert_int_eq(rename(fx_path(&fx, "moved.qcow2"), dst), 0);
	/* A damaged header. */
	fd = open(jpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, 200), 1);
	byte ^= 1;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 200), 1);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), -1);
	expect_error(
		BC_ERR_INVALID_ARG,
		fx_fmt(&fx, "journal '%s': header checksum mismatch", jpath));
	byte ^= 1;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 200), 1);
	close(fd);
	/* Nothing was touched: the resume still works. */
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	pivot();
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* --- killed with the process ------------------------------------------------- */

/*
 * SIGKILL while a guest writes; the resumed copy equals the source,
 * and the source holds every acknowledged and flushed write. Modes: during the bulk
 * copy; after MIRRORING with a mirror that crawls (writes stay dirty: only
 * the journal remembers them); write-blocking (checkpoints clear what
 * guests wrote to both sides); new clusters written once without a flush
 * and checkpointed (the checkpoint made them durable on the source).
 */
static const enum child_mode guest_modes[] = {
	CHILD_BULK_GUEST,
	CHILD_MIRROR_SLOW,
	CHILD_MIRROR_BLOCK,
	CHILD_MIRROR_ONCE,
};

/* R40 */
START_TEST(killed_while_guest_writes)
{
	enum child_mode mode = guest_modes[_i];
	const char *dst = keep(fx_path(&fx, "dst.qcow2"));
	struct shared *sh;
	int64_t left;
	uint8_t *src;
	uint64_t i;

	fx_open_chain(&fx, 3);
	sh = killed_copy(dst, 0, mode, 2u << 20);
	ck_assert_uint_gt(atomic_load(&sh->writes), 0);
	left = journal_bytes(journal_of(dst));
	if (mode != CHILD_MIRROR_ONCE)
		ck_assert_int_gt(left, 0);
	/* Mirroring: only what the guest wrote (unaligned edges: +1 granule). */
	if (mode != CHILD_BULK_GUEST)
		ck_assert_int_le(left, GUEST_AREA + GRAN);
	if (mode == CHILD_MIRROR_ONCE)
		ck_assert_int_eq(left, 0);
	fprintf(stderr, "# mode %d: %llu guest writes, journal %lld bytes\n",
		(int)mode, (unsigned long long)atomic_load(&sh->writes),
		(long long)left);
	/* The source: every flushed write (the pending one: either). */
	src = read_view(fx.top, "qcow2");
	for (i = 0; mode != CHILD_BULK_GUEST && i < FX_SIZE; i++) {
		if (i >= atomic_load(&sh->pend_off) &&
		    i < atomic_load(&sh->pend_off) + atomic_load(&sh->pend_len))
			continue;
		if (src[i] != sh->shadow[i])
			ck_abort_msg("source differs from the shadow at %llu",
				     (unsigned long long)i);
	}
	free(src);
	ck_assert_int_eq(
		bc_block_copy(fx.disk, dst, NULL, BC_BLOCK_COPY_RESUME), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0),
			 0); /* keep the source */
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	ck_assert_uint_le(last_bytes_copied(), (uint64_t)left);
	assert_views_equal(fx.top, dst, "qcow2");
	ck_assert_int_eq(journal_bytes(journal_of(dst)), -1);
	munmap(sh, sizeof(*sh));
}
END_TEST

/*
 * Killed, resumed, the result is byte-identical to an uninterrupted
 * copy; raw and qcow2 destinations, full and shallow; the resumed run
 * copies less than the whole.
 */
struct variant {
	bool raw;
	unsigned int flags;
	uint64_t bw; /* bytes/s of the killed copy: killed after its first
		      * checkpoint, well before the end */
};

static const struct variant variants[] = {
	{false, 0, 2u << 20},
	{false, BC_BLOCK_COPY_SHALLOW, 96u << 10},
	{true, 0, 2u << 20},
};

/* R40 */
START_TEST(resumed_equals_uninterrupted)
{
	const struct variant *v = &variants[_i];
	const char *fmt = v->raw ? "raw" : "qcow2";
	const char *ref = keep(fx_path(&fx, v->raw ? "ref.raw" : "ref.qcow2"));
	const char *dst = keep(fx_path(&fx, v->raw ? "dst.raw" : "dst.qcow2"));
	uint64_t whole, resumed;
	struct shared *sh;
	int64_t left;

	if (v->raw)
		open_raw_source();
	else
		fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, ref, NULL, v->flags), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	whole = last_bytes_copied();

	sh = killed_copy(dst, v->flags, CHILD_BULK, v->bw);
	left = journal_bytes(journal_of(dst));
	ck_assert_int_gt(left, 0);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL,
				       v->flags | BC_BLOCK_COPY_RESUME),
			 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	resumed = last_bytes_copied();
	fprintf(stderr, "# %s%s: whole copy %llu bytes, resumed %llu\n", fmt,
		v->flags ? " shallow" : "", (unsigned long long)whole,
		(unsigned long long)resumed);
	ck_assert_uint_lt(resumed, whole);
	ck_assert_uint_le(resumed, (uint64_t)left);
	assert_views_equal(ref, dst, fmt);
	if (v->flags & BC_BLOCK_COPY_SHALLOW) {
		/* The top layers alone, as qemu-img would compare them. */
		static char rb[PATH_MAX], db[PATH_MAX];
		struct fmt_image *a, *b;

		ck_assert_int_eq(fmt_open(ref, fmt, 0, &a), 0);
		ck_assert_int_eq(fmt_open(dst, fmt, 0, &b), 0);
		snprintf(rb, sizeof(rb), "%s", a->backing->filename);
		snprintf(db, sizeof(db), "%s", b->backing->filename);
		ck_assert_str_eq(rb, db);
		fmt_close(a);
		fmt_close(b);
	}
	if (v->raw) {
		uint8_t *x = read_view(ref, "raw"), *y = read_view(dst, "raw");
		struct stat a, b;

		ck_assert_int_eq(memcmp(x, y, FX_SIZE), 0);
		ck_assert_int_eq(stat(ref, &a), 0);
		ck_assert_int_eq(stat(dst, &b), 0);
		ck_assert_int_eq(a.st_size, b.st_size);
		free(x);
		free(y);
	}
	munmap(sh, sizeof(*sh));
}
END_TEST

static void setup(void)
{
	fx_setup(&fx);
}

static void teardown(void)
{
	fx_teardown(&fx);
	while (nkept)
		free(kept[--nkept]);
}

int main(void)
{
	Suite *s = suite_create("resume");
	TCase *tc = tcase_create("journal");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, journal_created_before_copy_and_removed_on_pivot);
	tcase_add_test(tc, checkpoint_clears_and_guest_write_sets);
	tcase_add_test(tc, abort_after_mirroring_removes_cancel_before_keeps);
	tcase_add_test(tc, resume_after_failed);
	tcase_add_test(tc, reuse_ext_without_resume_starts_over);
	tcase_add_test(tc, checkpoint_after_128_mib_within_a_second);
	tcase_add_test(tc, cancel_checkpoint_fsync_submit_refused_once);
	tcase_add_test(tc, cancel_checkpoint_fsync_fails);
	tcase_add_test(tc, checkpoint_fsync_submit_refused_fails_the_job);
	suite_add_tcase(s, tc);

	tc = tcase_create("identity");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, resume_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("killed");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(
		tc, killed_while_guest_writes, 0,
		(int)(sizeof(guest_modes) / sizeof(guest_modes[0])));
	tcase_add_loop_test(tc, resumed_equals_uninterrupted, 0,
			    (int)(sizeof(variants) / sizeof(variants[0])));
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
