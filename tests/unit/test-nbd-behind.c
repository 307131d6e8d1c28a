/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD driver's write-behind (fmt_pwrite_behind) with the copy's
 * chunk sizes: a chunk returns once it is queued, whatever its size (the
 * copy loop reads on meanwhile), and lands whole at the flush.
 *
 * nbdkit's memory plugin behind its delay filter (every write answered
 * after DELAY_MS) on a unix socket: a write-behind that waits for the
 * server takes DELAY_MS; one that is queued returns at once.
 *
 * Skips (77) without nbdkit or its delay filter.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "lib/common/util.h"
#include "tests/check-main.h"
#include "tests/nbdkit-run.h"

#define MiB	 (1024u * 1024u)
#define DELAY_MS 1500u

static pid_t server_pid;
static char uri[4200];

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void start_server(void)
{
	char delay[32];

	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s/s.sock", tu_dir);
	snprintf(delay, sizeof(delay), "delay-write=%ums", DELAY_MS);
	const char *const argv[] = {"nbdkit",
				    "-f",
				    "--exit-with-parent",
				    "-U",
				    "s.sock",
				    "-P",
				    "nbdkit.pid",
				    "--filter=delay",
				    "memory",
				    "16M",
				    delay,
				    NULL};

	server_pid = nbdkit_start(argv, "nbdkit.pid");
}

/*
 * 4 MiB (the copy's largest chunk, CHUNK_MAX) and an odd 2.5 MiB at an odd
 * offset: each write-behind returns long before the server answers, and
 * the flush brings both whole.
 */
START_TEST(large_chunks_are_written_behind)
{
	static const struct {
		uint64_t off;
		size_t len;
	} w[] = {{0, 4 * MiB}, {5 * MiB + 4096, 5 * MiB / 2}};
	struct fmt_image *img;
	uint8_t *buf = malloc(4 * MiB), *back = malloc(4 * MiB);
	size_t i, b;

	ck_assert(buf && back);
	start_server();
	ck_assert_int_eq(fmt_open(uri, "raw", FMT_OPEN_RDWR, &img), 0);
	for (i = 0; i < BC_ARRAY_SIZE(w); i++) {
		uint64_t t0 = now_ms(), took;

		memset(buf, (int)(0x41 + i), w[i].len);
		ck_assert_int_eq(
			fmt_pwrite_behind(img, buf, w[i].len, w[i].off), 0);
		took = now_ms() - t0;
		printf("# write-behind of %zu bytes: %llu ms\n", w[i].len,
		       (unsigned long long)took);
		ck_assert_msg(
			took < DELAY_MS / 2,
			"a write-behind of %zu bytes took %llu ms: it waited for the server (%u ms a write)",
			w[i].len, (unsigned long long)took, DELAY_MS);
	}
	ck_assert_int_eq(fmt_flush(img), 0);
	for (i = 0; i < BC_ARRAY_SIZE(w); i++) {
		ck_assert_int_eq(fmt_pread(img, back, w[i].len, w[i].off), 0);
		for (b = 0; b < w[i].len && back[b] == 0x41 + i; b++)
			;
		ck_assert_msg(b == w[i].len, "write %zu: byte %zu reads 0x%02x",
			      i, b, b < w[i].len ? back[b] : 0);
	}
	fmt_close(img);
	nbdkit_stop(&server_pid);
	free(buf);
	free(back);
}
END_TEST

static Suite *behind_suite(void)
{
	Suite *s = suite_create("nbd-behind");
	TCase *tc = tcase_create("behind");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, large_chunks_are_written_behind);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (system("nbdkit --filter=delay memory 1M --dump-plugin >/dev/null 2>&1") !=
	    0) {
		printf("1..0 # SKIP nbdkit or its delay filter is missing\n");
		return 77;
	}
	return bc_check_run(behind_suite());
}
