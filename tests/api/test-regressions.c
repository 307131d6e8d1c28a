/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Regression tests for the defects an adversarial review of the engine
 * found through the public API, and behaviour nobody had tested before.
 *
 * Each regress_* test guards against one defect, now fixed: its name says
 * what went wrong, the comment above it what the code did then (names of
 * functions and fields as they were) and so what the test must keep
 * failing on. The other tests pin down API calls from inside event
 * callbacks, the throttle after MIRRORING and during the final sync,
 * progress accounting and unaligned sizes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Dispatch until the next event; its status (30 s at most). */
static int next_status(void)
{
	uint64_t deadline = now_ms() + 30000;

	while (fx.consumed == fx.nevents) {
		ck_assert_msg(now_ms() < deadline, "no event within 30 s");
		ck_assert_int_ge(bc_engine_dispatch(fx.eng, 200), 0);
	}
	return fx.events[fx.consumed++].status;
}

static void expect_mirroring(void)
{
	int st = next_status();

	ck_assert_msg(st == BC_BLOCK_JOB_MIRRORING,
		      "expected MIRRORING, got status %d (%s)", st,
		      st == BC_BLOCK_JOB_FAILED ? fx.last_err.message : "-");
}

/* A raw source of @size bytes, every byte set (pattern), opened. */
static uint8_t *open_raw_pattern(uint64_t size, unsigned int flags)
{
	const char *path = fx_path(&fx, "src.raw");
	uint8_t *buf = malloc(size);
	uint64_t i;
	int fd;

	ck_assert_ptr_nonnull(buf);
	for (i = 0; i < size; i++)
		buf[i] = (uint8_t)(1 + i % 251);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, size, 0), (ssize_t)size);
	ck_assert_int_eq(close(fd), 0);
	fx.layers[0] = strdup(path);
	fx.nlayers = 1;
	fx.top = fx.layers[0];
	fx.disk = bc_disk_open(fx.eng, fx.top, "raw", flags);
	ck_assert_msg(fx.disk, "bc_disk_open: %s", bc_last_error()->message);
	return buf;
}

static void check_file_equals(const char *path, const uint8_t *want,
			      uint64_t size)
{
	uint8_t *got = malloc(size + 1);
	uint64_t i;
	struct stat st;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, size);
	ck_assert_int_eq(pread(fd, got, size, 0), (ssize_t)size);
	close(fd);
	for (i = 0; i < size; i++) {
		if (got[i] != want[i])
			ck_abort_msg("%s differs at offset %llu: 0x%02x, expected 0x%02x",
				     path, (unsigned long long)i, got[i], want[i]);
	}
	free(got);
}

/* --- bugs ----------------------------------------------------------------- */

/*
 * bc_disk_path() hands out disk->path itself; the pivot (mirror.c
 * pivot_swap) frees it. Any pointer an embedder holds -- or obtains on
 * another thread while the pivot runs -- dangles. Under ASan this is a
 * heap-use-after-free report; without it the freed chunk is reused below.
 */
/* R25 */
START_TEST(regress_disk_path_pointer_freed_by_pivot)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	char want[PATH_MAX];
	void *junk[256];
	const char *p;
	size_t n, i;

	fx_open_chain(&fx, 1);
	p = bc_disk_path(fx.disk);
	snprintf(want, sizeof(want), "%s", p);
	n = strlen(want) + 1;
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	for (i = 0; i < 256; i++) {
		junk[i] = malloc(n);
		memset(junk[i], 'X', n);
	}
	ck_assert_msg(memcmp(p, want, n) == 0,
		      "the string bc_disk_path() returned before the pivot was freed by the pivot");
	for (i = 0; i < 256; i++)
		free(junk[i]);
}
END_TEST

/*
 * A copy whose destination is an image of the disk's own open chain is
 * accepted (REUSE_EXT): the file is opened a second time read-write and
 * two qcow2 metadata caches allocate clusters in it independently, or
 * the copy rewrites a backing file the source reads through. QEMU
 * refuses this (image locking: 'Failed to get "write" lock'); nothing in
 * job.c open_destination() compares the destination with the chain.
 */
/* R15 */
START_TEST(regress_copy_into_own_chain_is_accepted)
{
	int i;

	fx_open_chain(&fx, 2);
	for (i = 1; i >= 0; i--) {
		int ret = bc_block_copy(fx.disk, fx.layers[i], NULL,
					BC_BLOCK_COPY_REUSE_EXT);

		if (ret == 0) {
			/* Stop it before it writes more into the source. */
			(void)bc_block_job_abort(fx.disk, 0);
			(void)next_status();
		}
		ck_assert_msg(ret == -1,
			      "copy into %s, an image of the disk's own chain, was accepted",
			      i == 1 ? "the top" : "the backing file");
	}
}
END_TEST

/*
 * With BC_DISK_DIRECT the destination is opened O_DIRECT, and a raw
 * destination is written through the I/O backend (mirror.c slot_write)
 * with the chunk's length as is; the last chunk of a disk whose size is
 * not a multiple of the destination's alignment is refused with EINVAL
 * and the whole job FAILS. The source side checks the alignment and
 * falls back to the driver (slot_start); the destination side does not.
 */
/* R18 */
START_TEST(regress_direct_copy_of_unaligned_size_fails)
{
	const uint64_t size = (1u << 20) + 1000;
	const char *dst = fx_path(&fx, "dst.raw");
	uint8_t *want = open_raw_pattern(size, BC_DISK_DIRECT);

	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_close_disk(&fx);
	check_file_equals(dst, want, size);
	free(want);
}
END_TEST

/*
 * A nonzero limit below 1 MiB/s is reported as bandwidth 0 in MiB/s,
 * which means "unlimited" (job.c job_get_info shifts right by 20). A
 * limited job must never read as unlimited: round up to whole MiB/s
 * (I believe libvirt's qemu driver does the same; not verified here).
 */
/* R21 */
START_TEST(regress_info_reports_small_limit_as_unlimited)
{
	bc_block_copy_params p = { .bandwidth = 1000 };

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), &p, 0), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info,
					       BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES), 1);
	ck_assert_uint_eq(fx.info.bandwidth, 1000);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_msg(fx.info.bandwidth == 1,
		      "a 1000 B/s limit reads as %lu MiB/s (0 = unlimited)",
		      fx.info.bandwidth);
}
END_TEST

/*
 * A pull on a disk without backing file has nothing to do; QEMU's
 * block-stream (and so libvirt's pull) completes. Here pull_finish()
 * (pull.c) always rewrites the backing pointer, which a raw image cannot
 * hold, so the job ends FAILED with "raw images have no backing file".
 */
/* R9 */
START_TEST(regress_pull_of_raw_disk_fails)
{
	uint8_t *want = open_raw_pattern(1u << 20, 0);
	int st;

	ck_assert_int_eq(bc_block_pull(fx.disk, 0, 0), 0);
	st = next_status();
	ck_assert_msg(st == BC_BLOCK_JOB_COMPLETED,
		      "pull of a raw disk ended with status %d: %s", st,
		      fx.last_err.message);
	fx_close_disk(&fx);
	check_file_equals(fx.top, want, 1u << 20);
	free(want);
}
END_TEST

struct race {
	pthread_barrier_t go;
	const char *overlay;
	int ret;
};

static void *snapshot_thread(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(&r->go);
	r->ret = bc_snapshot_create(fx.disk, r->overlay, 0);
	return NULL;
}

/*
 * bc_snapshot_create checks disk->job, drops the lock, and swaps the top
 * much later (disk.c disk_snapshot_create); a copy started in between
 * attaches to the disk and reads the old top (mirror.c mirror_setup takes
 * disk->top once) while guest writes go to the new overlay: those writes
 * are marked dirty but copied from the old top, so the pivot loses them.
 * Both calls racing must leave either the snapshot refused or a copy of
 * what the guest wrote.
 */
/* R8 */
START_TEST(regress_snapshot_racing_copy_loses_writes)
{
	int iter, both = 0;

	for (iter = 0; iter < 30; iter++) {
		const char *dst = fx_fmt(&fx, "%s/dst%d.qcow2", fx.dir, iter);
		const char *ov = fx_fmt(&fx, "%s/ov%d.qcow2", fx.dir, iter);
		struct race r = { .overlay = ov };
		pthread_t tid;
		int cret;
		char dstc[PATH_MAX];

		snprintf(dstc, sizeof(dstc), "%s", dst);
		if (iter == 0)
			fx_open_chain(&fx, 2);
		pthread_barrier_init(&r.go, NULL, 2);
		ck_assert_int_eq(pthread_create(&tid, NULL, snapshot_thread, &r), 0);
		pthread_barrier_wait(&r.go);
		usleep((useconds_t)(iter % 4) * 300);
		cret = bc_block_copy(fx.disk, dstc, NULL, 0);
		pthread_join(tid, NULL);
		pthread_barrier_destroy(&r.go);
		if (cret < 0)
			continue;
		both += r.ret == 0;
		fx_guest_write(&fx, (uint64_t)(iter % 25) * 300000 + 4096, 200000,
			       (uint8_t)(0x40 + iter));
		expect_mirroring();
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
		ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
		ck_assert_msg(bc_disk_path(fx.disk) &&
			      strcmp(bc_disk_path(fx.disk), dstc) == 0,
			      "iteration %d: disk not on the copy", iter);
		{
			uint8_t *buf = malloc(FX_SIZE);

			ck_assert_int_eq(bc_disk_pread(fx.disk, buf, FX_SIZE, 0), FX_SIZE);
			ck_assert_msg(memcmp(buf, fx.shadow, FX_SIZE) == 0,
				      "iteration %d (snapshot %s): the pivoted copy lost guest data",
				      iter, r.ret == 0 ? "accepted" : "refused");
			free(buf);
		}
	}
	(void)both;
}
END_TEST

/*
 * The bandwidth limit is charged for zero writes too (mirror.c issue()
 * charges every extent, whatever slot_start() then does with it), so a
 * mostly empty disk copied into a REUSE_EXT destination crawls at the
 * limit through its holes. QEMU charges only copied data
 * (mirror_iteration: io_bytes_acct = 0 for zero/discard), docs/rules.md
 * R22 says the limit counts copied data, and pull.c charges only that.
 */
/* R22 */
START_TEST(regress_throttle_charges_zero_writes)
{
	const char *dst = fx_path(&fx, "dst.raw");
	static uint8_t data[65536];
	uint64_t t0, t;
	int fd;

	fx.disk = NULL;
	fd = open(fx_path(&fx, "src.raw"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	memset(data, 0xa5, sizeof(data));
	ck_assert_int_eq(pwrite(fd, data, sizeof(data), 0), (ssize_t)sizeof(data));
	ck_assert_int_eq(ftruncate(fd, FX_SIZE), 0);
	close(fd);
	fd = open(dst, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, FX_SIZE), 0);
	close(fd);
	fx.disk = bc_disk_open(fx.eng, fx_path(&fx, "src.raw"), "raw", 0);
	ck_assert_ptr_nonnull(fx.disk);
	t0 = now_ms();
	/* 1 MiB/s: 64 KiB of data is 1/16 s; 8 MiB of holes must not cost 8 s. */
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 1, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_REUSE_EXT), 0);
	expect_mirroring();
	t = now_ms() - t0;
	ck_assert_msg(t < 2000,
		      "MIRRORING after %llu ms: 64 KiB of data and 8 MiB of holes at 1 MiB/s",
		      (unsigned long long)t);
}
END_TEST

static int second_close_ret = 2;

static void close_again(bc_engine *eng, bc_disk *disk, const char *path,
			int type, int status, void *opaque)
{
	(void)eng;
	(void)path;
	(void)type;
	(void)opaque;
	if (status == BC_BLOCK_JOB_CANCELED)
		second_close_ret = bc_disk_close(disk);
}

/*
 * An event queued before bc_disk_close() still hands the disk to the
 * callbacks; a callback that closes it (an embedder closing disks when
 * their job ends) drops the event's own reference: disk.c disk_close()
 * sets disk->closed but nothing ever checks it, so the second close
 * frees the disk and the dispatcher's free_event() then unlocks and
 * unrefs freed memory (ASan: heap-use-after-free in disk_unref).
 */
/* R26 */
START_TEST(regress_second_close_from_callback_frees_disk)
{
	fx_open_chain(&fx, 1);
	ck_assert_int_ge(bc_engine_event_register(fx.eng, close_again, NULL), 0);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), NULL, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_close_disk(&fx); /* CANCELED still queued */
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_CANCELED);
	ck_assert_msg(second_close_ret == -1,
		      "bc_disk_close of an already closed disk returned %d",
		      second_close_ret);
}
END_TEST

struct dracer {
	pthread_barrier_t go;
	uint64_t off;
	unsigned int delay_us;
	int ret;
};

static void *discard_racer(void *arg)
{
	struct dracer *r = arg;

	pthread_barrier_wait(&r->go);
	if (r->delay_us)
		usleep(r->delay_us);
	r->ret = bc_disk_discard(fx.disk, r->off, 65536, 0);
	return NULL;
}

/*
 * Write-blocking: a claimed guest write W clears the dirty bits of the
 * granules it covers after writing the destination (mirror.c
 * mirror_guest_write_end), but a discard D of the same granule does not wait
 * for the claim (mirror_guest_write_begin returns at once for GUEST_WRITE_DISCARD).
 * When D discards the source after W wrote it and marks the granule
 * dirty before W clears it, the source reads zeros, the destination
 * holds W's data and nothing is dirty: the pivot changes what the guest
 * reads without any write. Each round races W (256 KiB) and D (one
 * 64 KiB granule inside) on fresh regions, records what the source
 * reads, then pivots and compares.
 */
/* R18, R28 */
START_TEST(regress_sync_write_racing_discard_diverges)
{
	bc_block_copy_params p = { .granularity = 65536 };
	unsigned int seed = (unsigned int)time(NULL);
	int round;

	fx_open_chain(&fx, 1);
	for (round = 0; round < 6; round++) {
		char dst[PATH_MAX];
		uint8_t *buf = malloc(262144);
		uint64_t i;

		snprintf(dst, sizeof(dst), "%s", fx_fmt(&fx, "%s/race%d.qcow2", fx.dir, round));
		ck_assert_int_eq(bc_block_copy(fx.disk, dst, &p,
					       BC_BLOCK_COPY_SYNCHRONOUS_WRITES), 0);
		expect_mirroring();
		for (i = 0; i < FX_SIZE / 262144; i++) {
			struct dracer r = { .off = i * 262144 + 65536,
					    .delay_us = (unsigned int)rand_r(&seed) % 400 };
			pthread_t tid;

			memset(buf, 0x80 + round * 8 + (int)(i & 7), 262144);
			pthread_barrier_init(&r.go, NULL, 2);
			ck_assert_int_eq(pthread_create(&tid, NULL, discard_racer, &r), 0);
			pthread_barrier_wait(&r.go);
			ck_assert_int_eq(bc_disk_pwrite(fx.disk, buf, 262144, i * 262144),
					 262144);
			pthread_join(tid, NULL);
			pthread_barrier_destroy(&r.go);
			ck_assert_int_eq(r.ret, 0);
			ck_assert_int_eq(bc_disk_pread(fx.disk, fx.shadow + i * 262144,
						       262144, i * 262144), 262144);
		}
		free(buf);
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
		ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
		buf = malloc(FX_SIZE);
		ck_assert_int_eq(bc_disk_pread(fx.disk, buf, FX_SIZE, 0), FX_SIZE);
		for (i = 0; i < FX_SIZE; i++) {
			if (buf[i] != fx.shadow[i])
				ck_abort_msg("round %d: after the pivot offset %llu reads 0x%02x, before it read 0x%02x",
					     round, (unsigned long long)i, buf[i],
					     fx.shadow[i]);
		}
		free(buf);
	}
}
END_TEST

struct pivoter {
	int ret, code;
	int done;
};

static void *verify_pivot_thread(void *arg)
{
	struct pivoter *pv = arg;

	pv->ret = bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT |
					      BC_BLOCK_JOB_ABORT_VERIFY);
	pv->code = bc_last_error()->code;
	__atomic_store_n(&pv->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * An abort requested while a verified pivot is pending was swallowed:
 * job_abort() left the pending pivot request alone, and when the
 * verification refused the pivot, refuse_pivot() (mirror.c) reset the
 * request to none, so the job went on mirroring: an ASYNC abort never got
 * its CANCELED event, a synchronous one waited forever. Now the abort is
 * kept (job->finish_after_pivot) and a refused pivot leads to FINISHING.
 */
/* R30 */
START_TEST(regress_abort_during_refused_verify_pivot_is_lost)
{
	const char *dst = fx_path(&fx, "dst.raw");
	struct pivoter pv = { 0 };
	char junk[512];
	pthread_t tid;
	int fd, tries, st;
	bool overlapped = false;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
					  BC_BLOCK_REBASE_COPY_RAW), 0);
	expect_mirroring();
	for (tries = 0; tries < 5 && !overlapped; tries++) {
		/* 7 MiB left dirty (1 MiB/s), so the pivot's final sync takes a while. */
		ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 1, 0), 0);
		fx_guest_write(&fx, 1u << 20, 7u << 20, (uint8_t)(0x31 + tries));
		memset(junk, 0xee, sizeof(junk));
		fd = open(dst, O_WRONLY);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 1000), (ssize_t)sizeof(junk));
		close(fd);
		pv.done = 0;
		ck_assert_int_eq(pthread_create(&tid, NULL, verify_pivot_thread, &pv), 0);
		usleep(1000);
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_ASYNC), 0);
		overlapped = !__atomic_load_n(&pv.done, __ATOMIC_ACQUIRE);
		pthread_join(tid, NULL);
		if (pv.ret == 0 || !overlapped ||
		    pv.code == BC_ERR_OPERATION_INVALID) {
			/*
			 * Not the window: pivoted, the abort came after, or it
			 * came first and the pivot was refused as "already
			 * ending" (slow builds): inconclusive, try again.
			 */
			st = next_status();
			ck_assert(st == BC_BLOCK_JOB_COMPLETED || st == BC_BLOCK_JOB_CANCELED);
			dst = fx_fmt(&fx, "%s/dst-try%d.raw", fx.dir, tries + 1);
			ck_assert_int_eq(bc_block_rebase(fx.disk, dst, 0, BC_BLOCK_REBASE_COPY |
							  BC_BLOCK_REBASE_COPY_RAW), 0);
			expect_mirroring();
			overlapped = false;
			continue;
		}
		ck_assert_int_eq(pv.code, BC_ERR_IO);
		/* The abort was accepted while the pivot was pending: the job must end. */
		{
			uint64_t deadline = now_ms() + 5000;

			while (fx.consumed == fx.nevents && now_ms() < deadline)
				ck_assert_int_ge(bc_engine_dispatch(fx.eng, 100), 0);
			ck_assert_msg(fx.consumed < fx.nevents,
				      "abort (ASYNC) accepted while a verified pivot was pending, but no event within 5 s and the job is %s",
				      bc_get_block_job_info(fx.disk, &fx.info, 0) == 1
					      ? "still mirroring" : "gone");
			ck_assert_int_eq(next_status(), BC_BLOCK_JOB_CANCELED);
		}
	}
	ck_assert_msg(overlapped, "could not hit the window in 5 tries (inconclusive)");
}
END_TEST

/* --- callbacks and the engine's life cycle --------------------------------- */

struct cb_state {
	const char *dst;
	int pivot_ret;
	int pivot_code;
	int close_ret;
	bool pivoted, closed;
};

/* Registered after fx's recorder: pivot from MIRRORING, close at COMPLETED. */
static void pivot_then_close(bc_engine *eng, bc_disk *disk, const char *path,
			     int type, int status, void *opaque)
{
	struct cb_state *s = opaque;

	(void)eng;
	(void)path;
	(void)type;
	if (status == BC_BLOCK_JOB_MIRRORING && !s->pivoted) {
		s->pivoted = true;
		s->pivot_ret = bc_block_job_abort(disk, BC_BLOCK_JOB_ABORT_PIVOT);
		s->pivot_code = bc_last_error()->code;
	} else if (status == BC_BLOCK_JOB_COMPLETED && !s->closed) {
		s->closed = true;
		s->close_ret = bc_disk_close(disk);
	}
}

/* R24 */
START_TEST(pivot_from_mirroring_callback_and_close_from_completed)
{
	struct cb_state s = { .dst = fx_path(&fx, "dst.qcow2"), .close_ret = -2 };
	uint64_t deadline = now_ms() + 30000;

	fx_open_chain(&fx, 3);
	ck_assert_int_ge(bc_engine_event_register(fx.eng, pivot_then_close, &s), 0);
	ck_assert_int_eq(bc_block_copy(fx.disk, s.dst, NULL, 0), 0);
	while (!s.closed) {
		ck_assert_msg(now_ms() < deadline, "no COMPLETED within 30 s");
		ck_assert_int_ge(bc_engine_dispatch(fx.eng, 200), 0);
	}
	ck_assert_msg(s.pivot_ret == 0, "pivot from the callback: %d (code %d)",
		      s.pivot_ret, s.pivot_code);
	ck_assert_int_eq(s.close_ret, 0);
	fx.disk = NULL;
	ck_assert_int_eq(fx.nevents, 2);
	ck_assert_int_eq(fx.events[1].status, BC_BLOCK_JOB_COMPLETED);
	ck_assert_str_eq(fx.events[1].path, s.dst);
	fx_check_image_equals_shadow(&fx, s.dst, "qcow2");
}
END_TEST

/* Events never dispatched still hold disk references: freed, not leaked. */
/* R24 */
START_TEST(engine_free_with_undelivered_events)
{
	struct pollfd pfd;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), NULL, 0), 0);
	pfd.fd = bc_engine_event_fd(fx.eng);
	pfd.events = POLLIN;
	ck_assert_int_eq(poll(&pfd, 1, 30000), 1);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 0);
	fx_close_disk(&fx);
	bc_engine_free(fx.eng); /* MIRRORING and CANCELED still queued */
	fx.eng = NULL;
	ck_assert_int_eq(fx.nevents, 0);
}
END_TEST

/* A new job right after the previous one ended (pivot), then a second pivot. */
/* R18 */
START_TEST(second_copy_right_after_pivot)
{
	const char *dst1 = fx_path(&fx, "dst1.qcow2");
	const char *dst2 = fx_path(&fx, "dst2.qcow2");

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst1, NULL, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst2, NULL, 0), 0);
	fx_guest_write(&fx, 7 * 65536 - 5, 9000, 0x3c);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	ck_assert_str_eq(bc_disk_path(fx.disk), dst2);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst2, "qcow2");
}
END_TEST

/* --- libvirt semantics ------------------------------------------------------ */

/* ASYNC abort after MIRRORING: returns at once, CANCELED follows, copy consistent. */
/* R19 */
START_TEST(abort_async_after_mirroring_leaves_consistent_copy)
{
	const char *dst = fx_path(&fx, "dst.qcow2");

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	expect_mirroring();
	fx_guest_write(&fx, 5 * 65536 + 1, 300000, 0x6b);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_ASYNC), 0);
	/* A pivot after the async abort is refused: the job is ending. */
	if (bc_get_block_job_info(fx.disk, &fx.info, 0) == 1) {
		ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), -1);
		ck_assert_int_eq(bc_last_error()->code, BC_ERR_OPERATION_INVALID);
	}
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_CANCELED);
	ck_assert_str_eq(bc_disk_path(fx.disk), fx.top);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/*
 * The limit applies after MIRRORING (docs/rules.md R22; not in QEMU), a
 * set-speed takes effect at once, and the final sync of a pivot is not
 * throttled: the guest stall depends on the dirty data only.
 */
/* R22 */
START_TEST(throttle_after_mirroring_and_unthrottled_pivot)
{
	const char *dst = fx_path(&fx, "dst.qcow2");
	uint64_t cur0, t0, t;

	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 1, 0), 0); /* 1 MiB/s */
	fx_guest_write(&fx, 0, 6u << 20, 0x21);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_uint_eq(fx.info.bandwidth, 1);
	cur0 = fx.info.cur;
	t0 = now_ms();
	usleep(1500 * 1000);
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	t = now_ms() - t0;
	/* rate * t plus one 1 MiB chunk plus the 2% burst */
	ck_assert_msg(fx.info.cur - cur0 <= (t * 1048576 / 1000) * 102 / 100 + (1u << 20),
		      "copied %llu bytes in %llu ms at 1 MiB/s",
		      (unsigned long long)(fx.info.cur - cur0), (unsigned long long)t);
	ck_assert_uint_gt(fx.info.cur - cur0, 0);
	ck_assert_uint_gt(fx.info.end - fx.info.cur, 2u << 20);

	/* Pivot with ~3+ MiB still dirty at 1 MiB/s: must not wait for the limit. */
	fx_guest_write(&fx, 7u << 20, 1u << 20, 0x22);
	t0 = now_ms();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	t = now_ms() - t0;
	ck_assert_msg(t < 1500, "pivot took %llu ms: the final sync was throttled",
		      (unsigned long long)t);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* Raising the speed wakes a job waiting out a very low limit at once. */
/* R22 */
START_TEST(set_speed_wakes_a_slow_job_at_once)
{
	bc_block_copy_params p = { .bandwidth = 4096 };
	uint64_t t0;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), &p, 0), 0);
	usleep(300 * 1000); /* the first chunk went; the next waits ~256 s */
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_uint_lt(fx.info.cur, fx.info.end);
	t0 = now_ms();
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	expect_mirroring();
	ck_assert_msg(now_ms() - t0 < 5000, "MIRRORING %llu ms after lifting the limit",
		      (unsigned long long)(now_ms() - t0));
}
END_TEST

/*
 * Progress: cur never decreases, end never drops below cur, and with no
 * guest writes cur == end once MIRRORING was reached.
 */
/* R16 */
START_TEST(progress_is_monotonic_under_writes)
{
	bc_block_copy_params p = { .bandwidth = 4u << 20 };
	uint64_t last_cur = 0;
	int i;

	fx_open_chain(&fx, 3);
	ck_assert_int_eq(bc_block_copy(fx.disk, fx_path(&fx, "dst.qcow2"), &p, 0), 0);
	for (i = 0; i < 150; i++) {
		fx_guest_write(&fx, ((uint64_t)i * 77777) % (FX_SIZE - 5000), 5000,
			       (uint8_t)i);
		ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
		ck_assert_uint_ge(fx.info.cur, last_cur);
		ck_assert_uint_ge(fx.info.end, fx.info.cur);
		last_cur = fx.info.cur;
		usleep(5000);
	}
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	expect_mirroring();
	ck_assert_int_eq(bc_get_block_job_info(fx.disk, &fx.info, 0), 1);
	ck_assert_uint_eq(fx.info.cur, fx.info.end);
	ck_assert_uint_ge(fx.info.cur, last_cur);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* Snapshot first, then a full copy of the stitched chain: exact after pivot. */
/* R18 */
START_TEST(copy_after_snapshot_pivots_exact)
{
	const char *ov = fx_path(&fx, "ov.qcow2");
	char dst[PATH_MAX];

	snprintf(dst, sizeof(dst), "%s", fx_path(&fx, "dst.qcow2"));
	fx_open_chain(&fx, 2);
	ck_assert_int_eq(bc_snapshot_create(fx.disk, ov, 0), 0);
	fx_guest_write(&fx, 4096, 200000, 0x41);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	fx_guest_write(&fx, 300000, 200000, 0x42);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/*
 * Write-blocking mode under concurrent guests: each thread owns
 * interleaved 16 KiB stripes (exact shadow) while 64 KiB granules are
 * shared, so active writes, their edge granules, zero writes and
 * discards race the copy loop and each other.
 */
#define LOAD_THREADS 4
#define LOAD_STRIPE  (16u * 1024)

struct loader {
	pthread_t tid;
	unsigned int id, seed;
	volatile int *stop;
	uint64_t ops;
	char failure[BC_ERROR_MESSAGE_MAX + 64];
};

static void *loader_main(void *arg)
{
	struct loader *g = arg;
	uint8_t *buf = malloc(LOAD_STRIPE);
	uint64_t nstripes = FX_SIZE / LOAD_STRIPE;

	while (!__atomic_load_n(g->stop, __ATOMIC_ACQUIRE) && !g->failure[0]) {
		uint64_t st = (uint64_t)rand_r(&g->seed) % (nstripes / LOAD_THREADS) *
			      LOAD_THREADS + g->id;
		uint64_t in = (uint64_t)rand_r(&g->seed) % LOAD_STRIPE;
		uint64_t len = 1 + (uint64_t)rand_r(&g->seed) % (LOAD_STRIPE - in);
		uint64_t off = st * LOAD_STRIPE + in;
		int op = rand_r(&g->seed) % 10;

		if (op < 6) {
			memset(buf, (int)(g->id * 37 + g->ops + 1), len);
			if (bc_disk_pwrite(fx.disk, buf, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "pwrite: %s",
					 bc_last_error()->message);
			memcpy(fx.shadow + off, buf, len);
		} else if (op < 8) {
			if (bc_disk_write_zeroes(fx.disk, off, len,
						 op == 7 ? BC_DISK_ZEROES_MAY_UNMAP : 0) < 0)
				snprintf(g->failure, sizeof(g->failure), "zeroes: %s",
					 bc_last_error()->message);
			memset(fx.shadow + off, 0, len);
		} else if (op == 8) {
			if (bc_disk_discard(fx.disk, off, len, 0) < 0 ||
			    bc_disk_pread(fx.disk, fx.shadow + off, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "discard: %s",
					 bc_last_error()->message);
		} else {
			if (bc_disk_pread(fx.disk, buf, len, off) != (ssize_t)len)
				snprintf(g->failure, sizeof(g->failure), "pread: %s",
					 bc_last_error()->message);
			else if (memcmp(buf, fx.shadow + off, len) != 0)
				snprintf(g->failure, sizeof(g->failure),
					 "read at %llu+%llu differs from the shadow",
					 (unsigned long long)off, (unsigned long long)len);
		}
		g->ops++;
	}
	free(buf);
	return NULL;
}

static void sync_writes_under_load(unsigned int flags, bool pivot)
{
	bc_block_copy_params p = { .bandwidth = 4u << 20, .granularity = 65536 };
	static struct loader g[LOAD_THREADS];
	volatile int stop = 0;
	char dst[PATH_MAX];
	unsigned int i, seed = (unsigned int)time(NULL);

	snprintf(dst, sizeof(dst), "%s", fx_path(&fx, "dst.qcow2"));
	fx_open_chain(&fx, 3);
	fprintf(stderr, "# load seed %u\n", seed);
	memset(g, 0, sizeof(g));
	for (i = 0; i < LOAD_THREADS; i++) {
		g[i].id = i;
		g[i].seed = seed + i;
		g[i].stop = &stop;
		ck_assert_int_eq(pthread_create(&g[i].tid, NULL, loader_main, &g[i]), 0);
	}
	ck_assert_msg(bc_block_copy(fx.disk, dst, &p,
				    BC_BLOCK_COPY_SYNCHRONOUS_WRITES | flags) == 0,
		      "%s", bc_last_error()->message);
	usleep(300 * 1000);
	ck_assert_int_eq(bc_block_job_set_speed(fx.disk, 0, 0), 0);
	expect_mirroring();
	usleep(200 * 1000);
	if (pivot) {
		ck_assert_msg(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT) == 0,
			      "%s", bc_last_error()->message);
		usleep(100 * 1000);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < LOAD_THREADS; i++) {
		pthread_join(g[i].tid, NULL);
		ck_assert_msg(!g[i].failure[0], "guest %u: %s", i, g[i].failure);
	}
	/* Abort after the load: the copy must then equal the source exactly. */
	if (!pivot)
		ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	ck_assert_int_eq(next_status(), pivot ? BC_BLOCK_JOB_COMPLETED
					      : BC_BLOCK_JOB_CANCELED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, NULL);
	if (!pivot)
		fx_check_image_equals_shadow(&fx, fx.top, NULL);
}

/* R18, R28 */
START_TEST(sync_writes_full_pivot_under_load)
{
	sync_writes_under_load(0, true);
}
END_TEST

/* R18 */
START_TEST(sync_writes_shallow_pivot_under_load)
{
	sync_writes_under_load(BC_BLOCK_COPY_SHALLOW, true);
}
END_TEST

/* R19 */
START_TEST(sync_writes_full_abort_under_load)
{
	sync_writes_under_load(0, false);
}
END_TEST

/* --- sizes ------------------------------------------------------------------- */

/* A size that is no multiple of the granularity nor of 512: every byte arrives. */
/* R18 */
START_TEST(unaligned_size_copy_pivots_exact)
{
	const uint64_t size = (1u << 20) + 1000;
	const char *dst = fx_path(&fx, "dst.raw");
	uint8_t *want = open_raw_pattern(size, 0);
	uint8_t tail[7] = { 9, 8, 7, 6, 5, 4, 3 };

	ck_assert_int_eq(bc_disk_size(fx.disk), (int64_t)size);
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	expect_mirroring();
	/* A mirrored write into the partial last granule. */
	ck_assert_int_eq(bc_disk_pwrite(fx.disk, tail, sizeof(tail), size - 7), 7);
	memcpy(want + size - 7, tail, sizeof(tail));
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_close_disk(&fx);
	check_file_equals(dst, want, size);
	free(want);
}
END_TEST

/* Extreme parameters: one granule larger than the disk; 4 KiB granules, one slot. */
static void copy_with_params(const bc_block_copy_params *p)
{
	char dst[PATH_MAX];

	snprintf(dst, sizeof(dst), "%s", fx_path(&fx, "dst.qcow2"));
	fx_open_chain(&fx, 3);
	ck_assert_msg(bc_block_copy(fx.disk, dst, p, 0) == 0, "%s",
		      bc_last_error()->message);
	fx_guest_write(&fx, 1000, 3000, 0x5e);
	expect_mirroring();
	fx_guest_write(&fx, FX_SIZE - 3000, 3000, 0x5f);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}

/* R18 */
START_TEST(granule_larger_than_disk)
{
	bc_block_copy_params p = { .granularity = 64u << 20 };

	copy_with_params(&p);
}
END_TEST

/* R18 */
START_TEST(small_granule_single_slot)
{
	bc_block_copy_params p = { .granularity = 4096, .buf_size = 4096 };

	copy_with_params(&p);
}
END_TEST

/* O_DIRECT on a qcow2 chain: pull and copy (unaligned heap buffers would fail). */
static void reopen_direct(void)
{
	fx_close_disk(&fx);
	fx.disk = bc_disk_open(fx.eng, fx.top, "qcow2", BC_DISK_DIRECT);
	ck_assert_msg(fx.disk, "%s", bc_last_error()->message);
}

/* R9 */
START_TEST(pull_with_direct_io)
{
	int st;

	fx_open_chain(&fx, 3);
	reopen_direct();
	ck_assert_int_eq(bc_block_pull(fx.disk, 0, 0), 0);
	fx_guest_write(&fx, 2u << 20, 100000, 0x19);
	st = next_status();
	ck_assert_msg(st == BC_BLOCK_JOB_COMPLETED, "pull: status %d: %s", st,
		      fx.last_err.message);
	fx_check_disk_equals_shadow(&fx);
}
END_TEST

/* R18 */
START_TEST(copy_with_direct_io)
{
	char dst[PATH_MAX];

	snprintf(dst, sizeof(dst), "%s", fx_path(&fx, "dst.qcow2"));
	fx_open_chain(&fx, 3);
	reopen_direct();
	ck_assert_int_eq(bc_block_copy(fx.disk, dst, NULL, 0), 0);
	fx_guest_write(&fx, 5000, 100000, 0x1a);
	expect_mirroring();
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	fx_check_disk_equals_shadow(&fx);
	fx_close_disk(&fx);
	fx_check_image_equals_shadow(&fx, dst, "qcow2");
}
END_TEST

/* QEMU: a zero-length image is READY at once. */
/* R16 */
START_TEST(zero_length_disk_copy_mirrors)
{
	const char *src = fx_path(&fx, "empty.raw");
	const char *dst = fx_path(&fx, "empty-dst.raw");
	int fd = open(src, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	int st;

	ck_assert_int_ge(fd, 0);
	close(fd);
	fx.disk = bc_disk_open(fx.eng, src, "raw", 0);
	ck_assert_ptr_nonnull(fx.disk);
	ck_assert_msg(bc_block_copy(fx.disk, dst, NULL, 0) == 0, "%s",
		      bc_last_error()->message);
	st = next_status();
	ck_assert_msg(st == BC_BLOCK_JOB_MIRRORING, "status %d: %s", st,
		      fx.last_err.message);
	ck_assert_int_eq(bc_block_job_abort(fx.disk, BC_BLOCK_JOB_ABORT_PIVOT), 0);
	ck_assert_int_eq(next_status(), BC_BLOCK_JOB_COMPLETED);
	ck_assert_str_eq(bc_disk_path(fx.disk), dst);
}
END_TEST

static Suite *regressions_suite(void)
{
	Suite *s = suite_create("regressions");
	TCase *tc;

	tc = tcase_create("bugs");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, regress_disk_path_pointer_freed_by_pivot);
	tcase_add_test(tc, regress_copy_into_own_chain_is_accepted);
	tcase_add_test(tc, regress_direct_copy_of_unaligned_size_fails);
	tcase_add_test(tc, regress_info_reports_small_limit_as_unlimited);
	tcase_add_test(tc, regress_pull_of_raw_disk_fails);
	tcase_add_test(tc, regress_snapshot_racing_copy_loses_writes);
	tcase_add_test(tc, regress_throttle_charges_zero_writes);
	tcase_add_test(tc, regress_second_close_from_callback_frees_disk);
	tcase_add_test(tc, regress_sync_write_racing_discard_diverges);
	tcase_add_test(tc, regress_abort_during_refused_verify_pivot_is_lost);
	suite_add_tcase(s, tc);

	tc = tcase_create("behaviour");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fx_fixture_setup, fx_fixture_teardown);
	tcase_add_test(tc, pivot_from_mirroring_callback_and_close_from_completed);
	tcase_add_test(tc, engine_free_with_undelivered_events);
	tcase_add_test(tc, second_copy_right_after_pivot);
	tcase_add_test(tc, abort_async_after_mirroring_leaves_consistent_copy);
	tcase_add_test(tc, throttle_after_mirroring_and_unthrottled_pivot);
	tcase_add_test(tc, set_speed_wakes_a_slow_job_at_once);
	tcase_add_test(tc, progress_is_monotonic_under_writes);
	tcase_add_test(tc, copy_after_snapshot_pivots_exact);
	tcase_add_test(tc, unaligned_size_copy_pivots_exact);
	tcase_add_test(tc, zero_length_disk_copy_mirrors);
	tcase_add_test(tc, granule_larger_than_disk);
	tcase_add_test(tc, small_granule_single_slot);
	tcase_add_test(tc, pull_with_direct_io);
	tcase_add_test(tc, copy_with_direct_io);
	tcase_add_test(tc, sync_writes_full_pivot_under_load);
	tcase_add_test(tc, sync_writes_shallow_pivot_under_load);
	tcase_add_test(tc, sync_writes_full_abort_under_load);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(regressions_suite());
}
