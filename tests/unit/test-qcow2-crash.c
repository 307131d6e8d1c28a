/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Crash consistency of qcow2 writes: a child process writes through the
 * format layer with many threads and flushes now and then; the parent
 * kills it with SIGKILL at a random instant, then checks the image:
 *  - `qemu-img check` reports no corruption (leaks are allowed);
 *  - every write acknowledged before the last completed flush reads back,
 *    byte for byte (a byte may also hold the value of a write that
 *    started later, which may or may not have landed).
 *
 * The child logs every operation to a file opened with O_APPEND, one
 * fixed-size record per write(2): S (started) before it calls the
 * driver, A (acknowledged) after it returned, F before a flush, D after
 * it completed. The log order is a linearisation of what happened.
 *
 * Threads own disjoint bytes, so each byte's writes are ordered: threads
 * 0..5 own whole-cluster regions (writes, write-zeroes with and without
 * unmap, discards: clusters are freed and reallocated), threads 6 and 7
 * share a region at 4 KiB interleave (writes into the same clusters).
 * One image lives across several kills (the next child reopens it, and
 * with lazy refcounts rebuilds them); images vary cluster size, extended
 * L2, lazy refcounts and whether a raw backing file shows through. The
 * run is bounded to 30 s (BC_CRASH_SECONDS overrides it, as for the crash
 * suite: tests/run --soak gives 120). BC_TEST_SEED sets the seed, printed
 * on failure.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check-main.h"
#include "fmt-testutil.h"
#include "lib/common/util.h"

#define THREADS    8
#define OWNERS     6       /* threads with regions of their own */
#define MiB        (1024ull * 1024)
#define IMG_SIZE   (4 * MiB)
#define REGION     (IMG_SIZE / 8)
#define SHARED_OFF (OWNERS * REGION)
#define UNIT       4096ull /* interleave of the shared region */
#define MAX_LEN    (64 * 1024)
#define BUDGET_S   30.0 /* default; BC_CRASH_SECONDS overrides */
#define MAX_KILLS  400

enum { REC_S = 1, REC_A, REC_F, REC_D };
enum { OP_WRITE, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD };

struct rec {
	uint32_t type;
	uint32_t op;
	uint64_t id;  /* write id (S/A), flush number (F/D) */
	uint64_t off;
	uint64_t len;
};

static bool have_qemu_img;
static unsigned int base_seed;

struct child {
	struct fmt_image *img;
	int log;
	uint64_t next_id; /* atomically incremented */
	unsigned int seed;
};

static uint8_t value_of(uint64_t id, uint64_t off)
{
	uint64_t h = (id * 0x9e3779b97f4a7c15ull) ^ (off * 0xff51afd7ed558ccdull);

	return (uint8_t)((h >> 29) | 1);
}

static void log_rec(int fd, uint32_t type, uint32_t op, uint64_t id,
		    uint64_t off, uint64_t len)
{
	struct rec r = {type, op, id, off, len};

	if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(3);
}

/* A random range of bytes thread @t owns (the shared region: one unit). */
static void pick_range(int t, unsigned int *seed, uint64_t cs, uint32_t *op,
		       uint64_t *off, uint64_t *len)
{
	uint64_t base, span;

	if (t >= OWNERS) {
		uint64_t units = (IMG_SIZE - SHARED_OFF) / UNIT;
		uint64_t u = ((uint64_t)rand_r(seed) % (units / 2)) * 2 +
			     (uint64_t)(t - OWNERS);
		uint64_t a = (uint64_t)rand_r(seed) % UNIT;

		*op = OP_WRITE;
		*off = SHARED_OFF + u * UNIT + a;
		*len = 1 + (uint64_t)rand_r(seed) % (UNIT - a);
		return;
	}
	base = (uint64_t)t * REGION;
	span = REGION;
	*op = (uint32_t)rand_r(seed) % 10;
	*op = *op < 6 ? OP_WRITE : *op < 7 ? OP_ZERO
			       : *op < 9 ? OP_ZERO_UNMAP
					 : OP_DISCARD;
	*off = base + (uint64_t)rand_r(seed) % span;
	*len = 1 + (uint64_t)rand_r(seed) % MAX_LEN;
	if (*op == OP_DISCARD || *op == OP_ZERO_UNMAP) {
		/* Whole clusters: they are freed. */
		*off = bc_align_down(*off, cs);
		*len = bc_align_up(*len, cs);
	}
	*len = BC_MIN(*len, base + span - *off);
}

struct thread_arg {
	struct child *c;
	int t;
	uint64_t cs;
};

static void *writer_main(void *arg)
{
	struct thread_arg *a = arg;
	struct child *c = a->c;
	unsigned int seed = c->seed * 31 + (unsigned int)a->t;
	uint8_t *buf = malloc(BC_MAX(MAX_LEN, a->cs));

	if (!buf)
		_exit(4);
	for (;;) {
		uint64_t id = __atomic_add_fetch(&c->next_id, 1, __ATOMIC_RELAXED);
		uint64_t off, len, i;
		uint32_t op;
		int ret;

		pick_range(a->t, &seed, a->cs, &op, &off, &len);
		if (op == OP_WRITE)
			for (i = 0; i < len; i++)
				buf[i] = value_of(id, off + i);
		log_rec(c->log, REC_S, op, id, off, len);
		switch (op) {
		case OP_WRITE:
			ret = fmt_pwrite(c->img, buf, len, off);
			break;
		case OP_ZERO:
			ret = fmt_write_zeroes(c->img, off, len, 0);
			break;
		case OP_ZERO_UNMAP:
			ret = fmt_write_zeroes(c->img, off, len,
					       FMT_ZERO_MAY_UNMAP);
			break;
		default:
			ret = fmt_discard(c->img, off, len);
			break;
		}
		if (ret < 0)
			_exit(5);
		log_rec(c->log, REC_A, op, id, off, len);
	}
	return NULL;
}

/* The child: writers, and flushes from the main thread; never returns. */
static void child_main(const char *img_path, const char *log_path,
		       unsigned int seed, uint64_t cs)
{
	struct thread_arg args[THREADS];
	pthread_t th;
	struct child c;
	uint64_t n;
	int t;

	memset(&c, 0, sizeof(c));
	c.seed = seed;
	c.log = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
	if (c.log < 0 || fmt_open(img_path, "qcow2", FMT_OPEN_RDWR, &c.img))
		_exit(2);
	for (t = 0; t < THREADS; t++) {
		args[t] = (struct thread_arg){&c, t, cs};
		if (pthread_create(&th, NULL, writer_main, &args[t]))
			_exit(2);
	}
	for (n = 1;; n++) {
		struct timespec ts = {0, (long)(rand_r(&seed) % 20000) * 1000};

		nanosleep(&ts, NULL);
		log_rec(c.log, REC_F, 0, n, 0, 0);
		if (fmt_flush(c.img) < 0)
			_exit(6);
		log_rec(c.log, REC_D, 0, n, 0, 0);
	}
}

static uint8_t op_value(const struct rec *r, uint64_t b)
{
	return r->op == OP_WRITE ? value_of(r->id, b) : 0;
}

/*
 * Check @actual against the log and @base (the image before the child
 * ran). Returns the first bad byte, or -1.
 */
static int64_t verify(const struct rec *log, size_t nrec, const uint8_t *base,
		      const uint8_t *actual)
{
	uint8_t *expect = malloc(IMG_SIZE);
	int64_t *durable = malloc(IMG_SIZE * sizeof(*durable));
	bool *ok = malloc(IMG_SIZE);
	uint64_t last_done = 0, max_id = 0, b;
	bool *acked;
	size_t i, f = 0;
	int64_t bad = -1;

	ck_assert(expect && durable && ok);
	for (i = 0; i < nrec; i++)
		if (log[i].type == REC_S)
			max_id = BC_MAX(max_id, log[i].id);
	acked = calloc(max_id + 1, sizeof(*acked));
	ck_assert_ptr_nonnull(acked);
	memcpy(expect, base, IMG_SIZE);
	for (b = 0; b < IMG_SIZE; b++)
		durable[b] = -1;
	for (i = 0; i < nrec; i++)
		if (log[i].type == REC_D)
			last_done = log[i].id;
	for (i = 0; last_done && i < nrec; i++)
		if (log[i].type == REC_F && log[i].id == last_done)
			f = i;
	/* Writes acknowledged before that flush started: in start order. */
	for (i = 0; i < f; i++)
		if (log[i].type == REC_A)
			acked[log[i].id] = true;
	for (i = 0; i < f; i++) {
		if (log[i].type != REC_S || !acked[log[i].id])
			continue;
		for (b = log[i].off; b < log[i].off + log[i].len; b++) {
			expect[b] = op_value(&log[i], b);
			durable[b] = (int64_t)i;
		}
	}
	for (b = 0; b < IMG_SIZE; b++)
		ok[b] = actual[b] == expect[b];
	/* Any write started after a byte's durable one may have landed. */
	for (i = 0; i < nrec; i++) {
		if (log[i].type != REC_S)
			continue;
		for (b = log[i].off; b < log[i].off + log[i].len; b++)
			if (!ok[b] && (int64_t)i > durable[b] &&
			    actual[b] == op_value(&log[i], b))
				ok[b] = true;
	}
	for (b = 0; b < IMG_SIZE; b++) {
		if (!ok[b]) {
			bad = (int64_t)b;
			break;
		}
	}
	free(acked);
	free(expect);
	free(durable);
	free(ok);
	return bad;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The run's time budget: BC_CRASH_SECONDS, else BUDGET_S. */
static uint64_t budget_ns(void)
{
	const char *env = getenv("BC_CRASH_SECONDS");
	double s = env ? strtod(env, NULL) : BUDGET_S;

	return (uint64_t)((s > 0 ? s : BUDGET_S) * 1e9);
}

static void read_image(uint8_t *out)
{
	struct fmt_image *img;

	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", 0, &img), 0);
	ck_assert_int_eq(fmt_pread(img, out, IMG_SIZE, 0), 0);
	fmt_close(img);
}

START_TEST(killed_writers_keep_flushed_data)
{
	static const struct {
		uint32_t cluster_size;
		bool extended_l2;
	} layouts[] = {{4096, false}, {65536, true}, {512, false},
		       {16384, true}, {65536, false}};
	uint8_t *base = malloc(IMG_SIZE), *actual = malloc(IMG_SIZE);
	unsigned int seed = base_seed, kills = 0, img_no = 0, k;
	uint64_t t0 = now_ns(), cs = 0;
	struct rec *log = NULL;

	ck_assert(base && actual);
	srand(seed);
	while (kills < MAX_KILLS && now_ns() - t0 < budget_ns()) {
		struct fmt_create_opts o = {.format = "qcow2",
					    .size = IMG_SIZE};
		unsigned int per_image = 10 + (unsigned int)rand() % 20;
		/* Internal snapshots: the writes copy shared L2 tables. */
		bool snap = have_qemu_img && img_no % 4 == 2;

		cs = layouts[img_no % BC_ARRAY_SIZE(layouts)].cluster_size;
		o.cluster_size = (uint32_t)cs;
		o.extended_l2 = layouts[img_no % BC_ARRAY_SIZE(layouts)].extended_l2;
		o.lazy_refcounts = img_no % 2;
		memset(base, 0, IMG_SIZE);
		if (img_no % 3 == 1) {
			/* A backing file: what unallocated clusters show. */
			uint64_t b;
			int fd;

			for (b = 0; b < IMG_SIZE; b++)
				base[b] = (uint8_t)(b * 13 + (b >> 9));
			fd = open("base.raw", O_CREAT | O_TRUNC | O_WRONLY, 0644);
			ck_assert_int_ge(fd, 0);
			ck_assert_int_eq(write(fd, base, IMG_SIZE),
					 (ssize_t)IMG_SIZE);
			close(fd);
			o.backing_file = "base.raw";
			o.backing_fmt = "raw";
		}
		img_no++;
		(void)unlink("t.qcow2");
		ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
		for (k = 0; k < per_image && kills < MAX_KILLS; k++, kills++) {
			unsigned int cseed = (unsigned int)rand();
			long delay_us = 1000 + rand() % 50000;
			struct timespec ts = {delay_us / 1000000,
					      (delay_us % 1000000) * 1000};
			size_t nrec;
			int64_t bad;
			FILE *f;
			pid_t pid;
			int st, ret;

			if (snap) {
				/* Every table shared again (COPIED cleared). */
				tu_sh("qemu-img snapshot -c s%u t.qcow2", k);
			}
			pid = fork();
			ck_assert_int_ge(pid, 0);
			if (pid == 0)
				child_main("t.qcow2", "log.bin", cseed, cs);
			nanosleep(&ts, NULL);
			ck_assert_int_eq(kill(pid, SIGKILL), 0);
			ck_assert_int_eq(waitpid(pid, &st, 0), pid);
			ck_assert_msg(WIFSIGNALED(st),
				      "seed %u kill %u: child exited %d", seed,
				      kills, WEXITSTATUS(st));
			if (have_qemu_img) {
				ret = system("qemu-img check -q t.qcow2 >check.txt 2>&1");
				/* 0 clean, 3 leaks only; 2 = corruption. */
				ck_assert_msg(WEXITSTATUS(ret) == 0 ||
						      WEXITSTATUS(ret) == 3,
					      "seed %u kill %u cluster %llu snapshots %d: qemu-img check exit %d",
					      seed, kills,
					      (unsigned long long)cs, snap,
					      WEXITSTATUS(ret));
			}
			f = fopen("log.bin", "rb");
			nrec = 0;
			if (f) {
				long sz;

				ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
				sz = ftell(f);
				rewind(f);
				nrec = (size_t)sz / sizeof(*log);
				free(log);
				log = malloc(nrec ? nrec * sizeof(*log) : 1);
				ck_assert_ptr_nonnull(log);
				ck_assert_uint_eq(fread(log, sizeof(*log), nrec, f),
						  nrec);
				fclose(f);
			}
			read_image(actual);
			bad = verify(log, nrec, base, actual);
			ck_assert_msg(bad < 0,
				      "seed %u kill %u cluster %llu extl2 %d lazy %d backing %d snapshots %d: byte %lld lost a flushed write",
				      seed, kills, (unsigned long long)cs,
				      o.extended_l2, o.lazy_refcounts,
				      o.backing_file != NULL, snap, (long long)bad);
			memcpy(base, actual, IMG_SIZE);
			(void)unlink("log.bin");
		}
	}
	printf("# %u kills on %u images in %.1f s\n", kills, img_no,
	       (double)(now_ns() - t0) / 1e9);
	/* Even on a loaded machine under a sanitizer the loop gets this far. */
	ck_assert_uint_ge(kills, 20);
	free(log);
	free(base);
	free(actual);
}
END_TEST

static Suite *crash_suite(void)
{
	Suite *s = suite_create("qcow2-crash");
	TCase *tc = tcase_create("kill");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 280);
	tcase_add_test(tc, killed_writers_keep_flushed_data);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("BC_TEST_SEED");

	base_seed = env ? (unsigned int)strtoul(env, NULL, 0)
			: (unsigned int)getpid();
	printf("# seed %u (BC_TEST_SEED)\n", base_seed);
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	return bc_check_run(crash_suite());
}
