/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Ordering of the writes a copy sends to an NBD destination.
 *
 * The copy hands its destination writes to the NBD driver, which returns
 * once they are queued (write-behind): the copy reads on while they are on
 * the wire. NBD orders nothing between requests in flight, so the driver
 * must hold back any later request that overlaps one of them until it is
 * done, and a flush until all of them are.
 *
 * The server here (tests/nbd/delay-first-plugin.c) holds back the first
 * write that touches AT for DELAY_MS and answers everything else at once.
 * That first write is the copy's chunk over AT. While it sleeps:
 *   - write-blocking: a guest write over AT is mirrored to the
 *     destination at once (the driver's drain_range must make it wait);
 *   - background, under a bandwidth limit that keeps the first pass
 *     going: the guest write dirties AT and the copy sends the range again
 *     (the write-behind must wait for the one it overlaps);
 *   - no guest write: MIRRORING follows the destination flush, which
 *     must wait for the held-back write;
 *   - write-blocking, a guest write elsewhere: it must not wait for the
 *     held-back write it does not overlap.
 * At MIRRORING the destination file must hold what the guest reads. A
 * driver that let a later request pass shows the held-back chunk (0xaa)
 * at AT instead of the guest's 0xbb, or zeros where MIRRORING came first.
 *
 * Skips (77) without nbdkit in PATH or without the test plugin
 * (BC_TEST_DELAYFIRST_PLUGIN, set by meson when nbdkit and libnbd are
 * found).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/blockcopy.h"
#include "tests/api/fixture.h"
#include "tests/api/helpers.h"
#include "tests/check-main.h"
#include "tests/nbdkit-run.h"

#define MiB  (1u << 20)
#define SIZE (4u * MiB)
/* Inside the second 1 MiB copy chunk, on a 64 KiB granule. */
#define AT	 (MiB + 128u * 1024)
#define GW_LEN	 (64u * 1024)
#define DELAY_MS 1500u
#define COPIED	 0xaa
#define GUEST	 0xbb

static pid_t server_pid;
/* The job's mirrored guest writes, read at MIRRORING. */
static uint64_t active_writes;
static const char *uri, *dst, *marker;

static void write_file(const char *path, uint8_t byte, size_t len)
{
	uint8_t *buf = malloc(len);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_ge(fd, 0);
	memset(buf, byte, len);
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	ck_assert_int_eq(close(fd), 0);
	free(buf);
}

/*
 * Serve a zeroed SIZE-byte file with the delay-first plugin on a unix
 * socket; returns once nbdkit has written its pid file (it listens then).
 */
static void start_server(void)
{
	const char *plugin = getenv("BC_TEST_DELAYFIRST_PLUGIN");
	const char *sock = fx_path(&fx, "s.sock");
	const char *pidfile = fx_path(&fx, "nbdkit.pid");
	static char file_arg[PATH_MAX + 8], marker_arg[PATH_MAX + 8];
	char at[32], delay[32];
	int fd;

	dst = fx_path(&fx, "dst.raw");
	marker = fx_path(&fx, "delayed");
	uri = fx_fmt(&fx, "nbd+unix:///?socket=%s", sock);
	fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, SIZE), 0);
	ck_assert_int_eq(close(fd), 0);
	snprintf(at, sizeof(at), "at=%u", AT);
	snprintf(delay, sizeof(delay), "delay-ms=%u", DELAY_MS);
	snprintf(file_arg, sizeof(file_arg), "file=%s", dst);
	snprintf(marker_arg, sizeof(marker_arg), "marker=%s", marker);
	{
		const char *const argv[] = {
			"nbdkit", "-f",	  "--exit-with-parent",
			"-U",	  sock,	  "-P",
			pidfile,  plugin, file_arg,
			at,	  delay,  marker_arg,
			NULL};

		server_pid = nbdkit_start(argv, pidfile);
	}
}

/* Where the other guest write goes: the last copy chunk, not held back. */
#define ELSEWHERE (3u * MiB)
#define NO_GUEST  UINT64_MAX

/* The destination file holds COPIED everywhere but GUEST at [@guest_at, +GW_LEN). */
static void check_destination(uint64_t guest_at, const char *when)
{
	uint8_t *buf = malloc(SIZE);
	int fd = open(dst, O_RDONLY | O_CLOEXEC);
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, SIZE, 0), (ssize_t)SIZE);
	ck_assert_int_eq(close(fd), 0);
	for (i = 0; i < SIZE; i++) {
		bool in_guest = guest_at != NO_GUEST && i >= guest_at &&
				i < guest_at + GW_LEN;
		uint8_t want = in_guest ? GUEST : COPIED, got = buf[i];

		if (got != want) {
			free(buf);
			ck_abort_msg(
				"%s: destination byte at %llu is 0x%02x, want 0x%02x",
				when, (unsigned long long)i, got, want);
		}
	}
	free(buf);
}

/*
 * Copy a SIZE-byte source of COPIED into the export with @flags at
 * @bandwidth bytes/s (0: unlimited); while the chunk over AT is held back
 * by the server, write GUEST at @guest_at (NO_GUEST: none); check the
 * destination at MIRRORING, then end the job. Returns how long the guest
 * write took, in ms.
 */
static long run_copy(unsigned int flags, unsigned long long bandwidth,
		     uint64_t guest_at)
{
	struct timespec t0, t1;
	bc_block_job_stats st;
	long guest_ms = 0;
	const char *src = fx_path(&fx, "src.raw");
	bc_block_copy_params params = {.bandwidth = bandwidth};
	static uint8_t gbuf[GW_LEN];

	write_file(src, COPIED, SIZE);
	start_server();
	fx.disk = bc_disk_open(fx.eng, src, "raw", 0);
	ck_assert_ptr_nonnull(fx.disk);
	ck_assert_msg(bc_block_copy(fx.disk, uri, &params,
				    BC_BLOCK_COPY_REUSE_EXT | flags) == 0,
		      "bc_block_copy: %s", bc_last_error()->message);
	ck_assert_msg(nbdkit_wait_for_file(marker, 10000),
		      "the server never held back a write at %u", AT);
	if (guest_at != NO_GUEST) {
		memset(gbuf, GUEST, sizeof(gbuf));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ck_assert_int_eq(
			bc_disk_pwrite(fx.disk, gbuf, GW_LEN, guest_at),
			(ssize_t)GW_LEN);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		guest_ms = (t1.tv_sec - t0.tv_sec) * 1000 +
			   (t1.tv_nsec - t0.tv_nsec) / 1000000;
	}
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_MIRRORING);
	check_destination(guest_at, "at MIRRORING");
	ck_assert_int_eq(bc_get_block_job_stats(fx.disk, &st, 0), 1);
	active_writes = st.active_writes;
	ck_assert_int_eq(bc_block_job_abort(fx.disk, 0), 0);
	fx_expect_event(&fx, BC_BLOCK_JOB_TYPE_COPY, BC_BLOCK_JOB_CANCELED);
	fx_close_disk(&fx);
	nbdkit_stop(&server_pid);
	check_destination(guest_at, "after abort");
	return guest_ms;
}

START_TEST(mirrored_guest_write_waits_for_the_copy_write_it_overlaps)
{
	run_copy(BC_BLOCK_COPY_SYNCHRONOUS_WRITES, 0, AT);
	ck_assert_uint_eq(active_writes, 1);
}
END_TEST

/*
 * A mirrored guest write elsewhere waits for nothing the server holds: it
 * does not overlap the held write. (Before 7e80cb5 it waited for every
 * write-behind in flight, so for the whole delay.) The job counts it as
 * mirrored, so it went to the export and did not just dirty the bitmap.
 */
START_TEST(mirrored_guest_write_elsewhere_does_not_wait_for_the_held_write)
{
	long ms = run_copy(BC_BLOCK_COPY_SYNCHRONOUS_WRITES, 0, ELSEWHERE);

	ck_assert_msg(
		ms < (long)DELAY_MS / 2,
		"the guest write took %ld ms: it waited for the held write (%u ms)",
		ms, DELAY_MS);
	ck_assert_uint_eq(active_writes, 1);
}
END_TEST

/*
 * The limit keeps the first pass going for about 0.5 s after the guest
 * write, so the copy sends AT again (when it wraps round to it) while the
 * server still holds the first write there; unlimited, the pass would end
 * first and its flush (which waits for all) would hide a missing wait.
 */
START_TEST(copy_rewrite_waits_for_the_write_behind_it_overlaps)
{
	run_copy(0, 8ull * MiB, AT);
}
END_TEST

START_TEST(flush_before_mirroring_waits_for_every_write_behind)
{
	run_copy(0, 0, NO_GUEST);
}
END_TEST

static void teardown(void)
{
	nbdkit_stop(&server_pid);
	fx_fixture_teardown();
}

int main(void)
{
	const char *plugin = getenv("BC_TEST_DELAYFIRST_PLUGIN");
	Suite *s = suite_create("nbd-order");
	TCase *tc = tcase_create("nbd-order");

	if (!plugin || access(plugin, R_OK) != 0 ||
	    system("nbdkit --version >/dev/null 2>&1") != 0) {
		printf("1..0 # SKIP nbdkit or the delay-first test plugin is missing\n");
		return 77;
	}
	tcase_add_checked_fixture(tc, fx_fixture_setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(
		tc, mirrored_guest_write_waits_for_the_copy_write_it_overlaps);
	tcase_add_test(
		tc,
		mirrored_guest_write_elsewhere_does_not_wait_for_the_held_write);
	tcase_add_test(tc, copy_rewrite_waits_for_the_write_behind_it_overlaps);
	tcase_add_test(tc, flush_before_mirroring_waits_for_every_write_behind);
	suite_add_tcase(s, tc);
	return bc_check_run(s);
}
