/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench/guest-io: drive the guest data path of blockcopy as a hypervisor
 * would, for bench/guest-run.
 *
 *   guest-io [--direct] [--format raw|qcow2] --api sync|async --depth N
 *            --rw randwrite|randread|write --bs BYTES [--secs S] IMG
 *
 * sync: N threads, each calling bc_disk_pwrite/pread in a loop. async: one
 * thread keeping N requests in flight on one bc_queue (submit, reap at
 * least one, refill). Offsets are multiples of @bs, random (rand*) or
 * sequential (write), over the whole disk. Prints one JSON line:
 * {"requests":..,"secs":..,"iops":..,"mib_s":..,"cpu_s":..,"cpu_us_per_req":..}
 * where cpu_s is the whole process's user+system time during the run
 * (getrusage), load generator included.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lib/blockcopy.h"

#define MAX_DEPTH 1024

static struct {
	bc_disk *disk;
	uint64_t size;
	uint64_t bs;
	int depth;
	bool async;
	bool write;
	bool seq;
	double secs;
} opt = { .bs = 4096, .depth = 1, .secs = 3 };

static atomic_bool stop;
static atomic_uint_fast64_t next_seq;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint64_t pick(uint64_t *state)
{
	uint64_t n = opt.size / opt.bs;

	if (opt.seq)
		return (atomic_fetch_add(&next_seq, 1) % n) * opt.bs;
	/* xorshift64*: cheap, per thread. */
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return ((*state * 2685821657736338717ull) % n) * opt.bs;
}

static void *alloc_buf(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, n)) {
		fprintf(stderr, "guest-io: out of memory\n");
		exit(1);
	}
	memset(p, 0x5a, n);
	return p;
}

struct worker {
	pthread_t tid;
	uint64_t done;
	uint64_t seed;
};

static void *sync_main(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = alloc_buf(opt.bs);

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t off = pick(&w->seed);
		ssize_t r = opt.write ? bc_disk_pwrite(opt.disk, buf, opt.bs, off)
				      : bc_disk_pread(opt.disk, buf, opt.bs, off);

		if (r != (ssize_t)opt.bs) {
			fprintf(stderr, "guest-io: %s\n", bc_last_error()->message);
			exit(1);
		}
		w->done++;
	}
	free(buf);
	return NULL;
}

static int queue_one(bc_queue *q, uint8_t *buf, uint64_t *seed)
{
	uint64_t off = pick(seed);

	return opt.write ? bc_queue_write(q, buf, opt.bs, off, buf, 0)
			 : bc_queue_read(q, buf, opt.bs, off, buf, 0);
}

static void *async_main(void *arg)
{
	struct worker *w = arg;
	bc_completion c[MAX_DEPTH];
	uint8_t *bufs = alloc_buf(opt.bs * (uint64_t)opt.depth);
	bc_queue *q = bc_queue_new(opt.disk, (unsigned int)opt.depth, 0);
	int i, inflight = 0;

	if (!q) {
		fprintf(stderr, "guest-io: %s\n", bc_last_error()->message);
		exit(1);
	}
	for (i = 0; i < opt.depth; i++) {
		if (queue_one(q, bufs + (uint64_t)i * opt.bs, &w->seed) < 0)
			goto fail;
	}
	inflight = opt.depth;
	if (bc_queue_submit(q, 0) < 0)
		goto fail;
	while (inflight) {
		int n = bc_queue_reap(q, c, 1, opt.depth, -1, 0);

		if (n < 0)
			goto fail;
		inflight -= n;
		for (i = 0; i < n; i++) {
			if (c[i].ret != (int64_t)opt.bs) {
				fprintf(stderr, "guest-io: %s\n", c[i].error_message);
				exit(1);
			}
			w->done++;
			if (atomic_load_explicit(&stop, memory_order_relaxed))
				continue;
			if (queue_one(q, c[i].tag, &w->seed) < 0)
				goto fail;
			inflight++;
		}
		if (bc_queue_submit(q, 0) < 0)
			goto fail;
	}
	bc_queue_free(q);
	free(bufs);
	return NULL;
fail:
	fprintf(stderr, "guest-io: %s\n", bc_last_error()->message);
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: guest-io [--direct] [--format raw|qcow2] --api sync|async "
			"--depth N --rw randwrite|randread|write --bs BYTES [--secs S] IMG\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "direct", no_argument, NULL, 'D' },
		{ "format", required_argument, NULL, 'f' },
		{ "api", required_argument, NULL, 'a' },
		{ "depth", required_argument, NULL, 'd' },
		{ "rw", required_argument, NULL, 'r' },
		{ "bs", required_argument, NULL, 'b' },
		{ "secs", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct worker w[MAX_DEPTH];
	const char *format = NULL;
	unsigned int flags = 0;
	double t0, c0, t, c;
	uint64_t total = 0;
	bc_engine *eng;
	int ch, i, nthreads;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'D':
			flags |= BC_DISK_DIRECT;
			break;
		case 'f':
			format = optarg;
			break;
		case 'a':
			if (strcmp(optarg, "sync") && strcmp(optarg, "async"))
				usage();
			opt.async = strcmp(optarg, "async") == 0;
			break;
		case 'd':
			opt.depth = atoi(optarg);
			break;
		case 'r':
			opt.write = strcmp(optarg, "randread") != 0;
			opt.seq = strcmp(optarg, "write") == 0;
			if (strcmp(optarg, "randwrite") && strcmp(optarg, "randread") &&
			    strcmp(optarg, "write"))
				usage();
			break;
		case 'b':
			opt.bs = strtoull(optarg, NULL, 0);
			break;
		case 's':
			opt.secs = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1 || opt.depth < 1 || opt.depth > MAX_DEPTH ||
	    !opt.bs || opt.secs <= 0)
		usage();
	eng = bc_engine_new(0);
	if (!eng || !(opt.disk = bc_disk_open(eng, argv[optind], format, flags))) {
		fprintf(stderr, "guest-io: %s: %s\n", argv[optind],
			bc_last_error()->message);
		return 1;
	}
	opt.size = (uint64_t)bc_disk_size(opt.disk);
	nthreads = opt.async ? 1 : opt.depth;
	t0 = now();
	c0 = cpu_now();
	for (i = 0; i < nthreads; i++) {
		w[i] = (struct worker){ .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) };
		if (pthread_create(&w[i].tid, NULL, opt.async ? async_main : sync_main,
				   &w[i])) {
			fprintf(stderr, "guest-io: cannot start a thread\n");
			return 1;
		}
	}
	while (now() - t0 < opt.secs) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	atomic_store(&stop, true);
	for (i = 0; i < nthreads; i++) {
		pthread_join(w[i].tid, NULL);
		total += w[i].done;
	}
	t = now() - t0;
	c = cpu_now() - c0;
	printf("{\"requests\": %llu, \"secs\": %.3f, \"iops\": %.1f, \"mib_s\": %.2f, "
	       "\"cpu_s\": %.3f, \"cpu_us_per_req\": %.2f}\n",
	       (unsigned long long)total, t, (double)total / t,
	       (double)total * (double)opt.bs / t / (1 << 20), c,
	       total ? c * 1e6 / (double)total : 0.0);
	if (bc_disk_close(opt.disk) < 0) {
		fprintf(stderr, "guest-io: %s\n", bc_last_error()->message);
		return 1;
	}
	bc_engine_free(eng);
	return 0;
}
