/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Power loss, not just a killed process: what reached the page cache but
 * was not synced may be lost, in any combination. test-qcow2-crash.c
 * kills the writer (the page cache keeps every write it issued, so only
 * the order of the writes is tested); here the order of the syncs is.
 *
 * The test wraps pwrite64, pwritev64, fdatasync and fsync (the executable's
 * definitions win over libc's for the driver linked in) and logs every
 * write to the image file with its bytes, every sync, and the guest's
 * events (write acknowledged, flush started, flush done), in one order.
 * It writes whole clusters at distinct random offsets of an image with
 * many L2 tables (more than the cache holds: tables are evicted), one
 * guest write at a time, and flushes now and then; the image is never
 * closed (a crash). Then, for each sync, it builds images on disk holding
 * every write up to that sync and a subset of the writes after it (none,
 * a random half; after the last sync also all): each must pass `qemu-img check` (0, or 3: leaks
 * only) and read back every write acknowledged before a flush that
 * completed before the next sync; any other written cluster reads as its
 * data or as zeros.
 *
 * With lazy refcounts the image is marked dirty while open: a check must
 * still find every reference counted (the driver writes refcounts anyway).
 * With an internal snapshot (qemu-img snapshot -c) taken first, the L2
 * tables are shared: the writes copy them, free the old ones at the flush,
 * and the snapshot's clusters must read back unchanged.
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "lib/common/util.h"

#define MiB (1024ull * 1024)

enum { EV_WRITE, EV_SYNC, EV_ACK, EV_FLUSH, EV_FLUSHED };

struct ev {
	int type;
	uint64_t off; /* EV_WRITE: file offset; EV_ACK: guest offset */
	uint64_t len;
	uint8_t *data; /* EV_WRITE */
};

static struct ev *evs;
static size_t nev, cap_ev;
static int watch_fd = -1;
static bool have_qemu_img;

static void add_ev(int type, uint64_t off, uint64_t len, uint8_t *data)
{
	if (nev == cap_ev) {
		cap_ev = cap_ev ? cap_ev * 2 : 1024;
		evs = realloc(evs, cap_ev * sizeof(*evs));
		if (!evs)
			abort();
	}
	evs[nev++] = (struct ev){type, off, len, data};
}

/* --- the wrapped calls (single-threaded test: no lock) ------------------ */

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	ssize_t r;

	if (!real)
		real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(
			RTLD_NEXT, "pwrite64");
	r = real(fd, buf, n, off);
	if (fd == watch_fd && r > 0) {
		uint8_t *d = malloc((size_t)r);

		if (!d)
			abort();
		memcpy(d, buf, (size_t)r);
		add_ev(EV_WRITE, (uint64_t)off, (uint64_t)r, d);
	}
	return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	static ssize_t (*real)(int, const struct iovec *, int, off_t);
	ssize_t r;

	if (!real)
		real = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(
			RTLD_NEXT, "pwritev64");
	r = real(fd, iov, cnt, off);
	if (fd == watch_fd && r > 0) {
		uint8_t *d = malloc((size_t)r);
		size_t done = 0;
		int i;

		if (!d)
			abort();
		for (i = 0; i < cnt && done < (size_t)r; i++) {
			size_t k = BC_MIN(iov[i].iov_len, (size_t)r - done);

			memcpy(d + done, iov[i].iov_base, k);
			done += k;
		}
		add_ev(EV_WRITE, (uint64_t)off, (uint64_t)r, d);
	}
	return r;
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (fd == watch_fd)
		add_ev(EV_SYNC, 0, 0, NULL);
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (fd == watch_fd)
		add_ev(EV_SYNC, 0, 0, NULL);
	return real(fd);
}

/* --- the run ------------------------------------------------------------ */

static uint8_t value_of(uint64_t goff, uint64_t i)
{
	uint64_t h = (goff * 0x9e3779b97f4a7c15ull) ^ (i * 0xff51afd7ed558ccdull);

	return (uint8_t)((h >> 29) | 1);
}

/* The writes of events [from, to) onto @img: those @keep picks, or all. */
static void apply(uint8_t *img, size_t from, size_t to, const bool *keep)
{
	size_t i;

	for (i = from; i < to; i++)
		if (evs[i].type == EV_WRITE && (!keep || keep[i - from]))
			memcpy(img + evs[i].off, evs[i].data, evs[i].len);
}

struct layout {
	uint32_t cluster_size;
	uint64_t size;
	uint64_t span;   /* guest writes go to [0, span) */
	bool snapshot;   /* an internal snapshot of some clusters first */
	unsigned int writes;
	bool lazy;       /* lazy refcounts (the image is marked dirty) */
};

/*
 * Check the crash image in "pl.qcow2": qemu-img check, then every cluster
 * the guest wrote (@acked[] in write order; @durable: how many of them
 * must read back) and the snapshot's clusters.
 */
static void check_state(const struct layout *L, const uint64_t *goffs,
			size_t nw, size_t durable, size_t k, int variant)
{
	uint64_t cs = L->cluster_size, i, b;
	uint8_t *buf = malloc(cs);
	struct fmt_image *img;
	int ret;

	ck_assert_ptr_nonnull(buf);
	if (have_qemu_img) {
		ret = system("qemu-img check -q pl.qcow2 >pl.out 2>&1");
		if (WEXITSTATUS(ret) != 0 && WEXITSTATUS(ret) != 3)
			(void)system("head -20 pl.out");
		ck_assert_msg(WEXITSTATUS(ret) == 0 || WEXITSTATUS(ret) == 3,
			      "cluster %u: sync %zu variant %d: qemu-img check exit %d",
			      L->cluster_size, k, variant, WEXITSTATUS(ret));
	}
	ck_assert_int_eq(fmt_open("pl.qcow2", "qcow2", 0, &img), 0);
	for (i = 0; i < nw; i++) {
		bool zero = true, match = true;

		ck_assert_int_eq(fmt_pread(img, buf, cs, goffs[i]), 0);
		for (b = 0; b < cs; b++) {
			zero = zero && buf[b] == 0;
			match = match && buf[b] == value_of(goffs[i], b);
		}
		ck_assert_msg(match || (zero && i >= durable),
			      "cluster %u: sync %zu variant %d: write %llu at %llu (%s) reads %s",
			      L->cluster_size, k, variant,
			      (unsigned long long)i,
			      (unsigned long long)goffs[i],
			      i < durable ? "flushed" : "not flushed",
			      zero ? "zeros" : "other data");
	}
	if (L->snapshot) {
		/* The snapshot's clusters: the first of each other L2 span. */
		uint64_t span = cs * (cs / 8);

		for (i = 0; i < L->span; i += 2 * span) {
			ck_assert_int_eq(fmt_pread(img, buf, cs, i), 0);
			for (b = 0; b < cs && buf[b] == 0x5a; b++)
				;
			ck_assert_msg(b == cs,
				      "sync %zu variant %d: snapshot data at %llu lost",
				      k, variant, (unsigned long long)i);
		}
	}
	fmt_close(img);
	free(buf);
}

static void run_layout(const struct layout *L, unsigned int seed)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = L->size};
	uint64_t cs = L->cluster_size, span = cs * (cs / 8);
	uint64_t nclusters = L->span / cs;
	uint64_t *goffs = calloc(L->writes, sizeof(*goffs));
	uint8_t *used = calloc(nclusters, 1), *buf = malloc(cs);
	uint8_t *base, *img_now;
	size_t base_len, final_len, i, s, nsync = 0, kept = 0;
	struct fmt_image *img;
	struct stat st;
	unsigned int w;

	ck_assert(goffs && used && buf);
	o.cluster_size = L->cluster_size;
	o.lazy_refcounts = L->lazy;
	(void)unlink("t.qcow2");
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	if (L->snapshot) {
		for (i = 0; i < L->span; i += 2 * span) {
			tu_sh("qemu-io -f qcow2 -c 'write -q -P 0x5a %zu %llu' t.qcow2 >/dev/null",
			      i, (unsigned long long)cs);
			used[i / cs] = 1;
		}
		tu_sh("qemu-img snapshot -c s1 t.qcow2");
	}
	base = tu_read_file("t.qcow2", &base_len);

	nev = 0;
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	watch_fd = img->fd;
	for (w = 0; w < L->writes; w++) {
		uint64_t c, b;

		do
			c = (uint64_t)rand_r(&seed) % nclusters;
		while (used[c]);
		used[c] = 1;
		goffs[w] = c * cs;
		for (b = 0; b < cs; b++)
			buf[b] = value_of(goffs[w], b);
		ck_assert_int_eq(fmt_pwrite(img, buf, cs, goffs[w]), 0);
		add_ev(EV_ACK, goffs[w], cs, NULL);
		if (rand_r(&seed) % 16 == 0) {
			add_ev(EV_FLUSH, 0, 0, NULL);
			ck_assert_int_eq(fmt_flush(img), 0);
			add_ev(EV_FLUSHED, 0, 0, NULL);
		}
	}
	/* The crash: the image is never closed while watched. */
	watch_fd = -1;
	ck_assert_int_eq(fstat(img->fd, &st), 0);
	final_len = (size_t)st.st_size;
	for (i = 0; i < nev; i++) {
		if (evs[i].type == EV_SYNC)
			nsync++;
		if (evs[i].type == EV_WRITE)
			final_len = BC_MAX(final_len, evs[i].off + evs[i].len);
	}
	printf("# cluster %u snapshot %d lazy %d: %u writes, %zu events, %zu syncs\n",
	       L->cluster_size, L->snapshot, L->lazy, L->writes, nev, nsync);

	/* img_now: the file with every write up to the current sync. */
	img_now = calloc(final_len, 1);
	ck_assert_ptr_nonnull(img_now);
	memcpy(img_now, base, base_len);
	for (s = 0; s <= nev;) {
		/* Events [s, e): from after one sync up to the next one. */
		size_t e = s, j, durable = 0, nw = 0, flush_start = 0;
		int variant;

		while (e < nev && evs[e].type != EV_SYNC)
			e++;
		/* Flushes done before e: their start says what is durable. */
		for (j = 0; j < e; j++) {
			if (evs[j].type == EV_FLUSH)
				flush_start = j;
			if (evs[j].type == EV_FLUSHED)
				durable = flush_start;
		}
		for (j = 0; j < e; j++)
			if (evs[j].type == EV_ACK)
				nw++;
		{
			size_t d = 0;

			for (j = 0; j < durable; j++)
				if (evs[j].type == EV_ACK)
					d++;
			durable = d;
		}
		/*
		 * 0: none of the writes since the sync, 1: a random half of
		 * them; all of them is the next window's 0, except after the
		 * last sync (2: what a killed process leaves).
		 */
		for (variant = 0; variant < (e == nev ? 3 : 2); variant++) {
			bool *keep = calloc(e - s + 1, sizeof(*keep));
			uint8_t *state = malloc(final_len);
			int fd;

			ck_assert(keep && state);
			for (j = s; j < e; j++)
				keep[j - s] = variant == 2 ||
					      (variant == 1 && rand_r(&seed) % 2);
			memcpy(state, img_now, final_len);
			apply(state, s, e, keep);
			fd = open("pl.qcow2", O_CREAT | O_TRUNC | O_WRONLY, 0644);
			ck_assert_int_ge(fd, 0);
			ck_assert_int_eq(fmt_pwrite_file(fd, state, final_len, 0), 0);
			close(fd);
			check_state(L, goffs, nw, durable, s, variant);
			kept++;
			free(keep);
			free(state);
		}
		apply(img_now, s, e, NULL);
		s = e + 1;
	}
	printf("# %zu crash images checked\n", kept);
	fmt_close(img);
	for (i = 0; i < nev; i++)
		free(evs[i].data);
	nev = 0;
	free(img_now);
	free(base);
	free(goffs);
	free(used);
	free(buf);
}

START_TEST(lost_unsynced_writes_keep_flushed_data)
{
	static const struct layout layouts[] = {
		/* 2048 L2 tables of 2 MiB, the cache holds 256: evictions. */
		{4096, 4096 * MiB, 4096 * MiB, false, 350},
		/* Tables shared with a snapshot: copied, old ones freed. */
		{4096, 256 * MiB, 256 * MiB, true, 250},
		{512, 32 * MiB, 32 * MiB, false, 250},
		/* Marked dirty: qemu-img check still counts every reference. */
		{65536, 8192 * MiB, 8192 * MiB, false, 150, true},
	};
	const char *env = getenv("BC_TEST_SEED");
	unsigned int seed = env ? (unsigned int)strtoul(env, NULL, 0)
				: (unsigned int)getpid();
	size_t i;

	printf("# seed %u (BC_TEST_SEED)\n", seed);
	for (i = 0; i < BC_ARRAY_SIZE(layouts); i++) {
		if (layouts[i].snapshot && !have_qemu_img)
			continue;
		run_layout(&layouts[i], seed + (unsigned int)i);
	}
}
END_TEST

static Suite *powerloss_suite(void)
{
	Suite *s = suite_create("qcow2-powerloss");
	TCase *tc = tcase_create("powerloss");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 500);
	tcase_add_test(tc, lost_unsynced_writes_keep_flushed_data);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	return bc_check_run(powerloss_suite());
}
