/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest writes on one disk from N threads through the synchronous public
 * calls (bc_disk_pwrite, O_DIRECT): how the qcow2 driver scales with the
 * number of requests in flight. Prints one line: threads, ops, seconds,
 * IOPS and MiB/s.
 *
 *   cc -O2 -I. -Ilib bench/qcow2-threads.c BUILD/lib/libblockcopy.a \
 *      -luring -laio -lz -lpthread -o qcow2-threads
 *   qcow2-threads overwrite THREADS SECONDS BS IMG
 *       random BS-aligned overwrites over the whole disk for SECONDS
 *   qcow2-threads alloc THREADS COUNT BS IMG
 *       COUNT writes of BS bytes to distinct BS-aligned random offsets
 *       (into a fresh overlay: every one allocates)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/blockcopy.h"

#define MAX_THREADS 256

struct bench {
	bc_disk *disk;
	uint64_t bs, blocks;
	uint64_t *order;  /* alloc: a permutation of the blocks */
	uint64_t count;   /* alloc: writes to do */
	uint64_t next;    /* alloc: next index into order (atomic) */
	uint64_t stop_ns; /* overwrite: end time */
	int failed;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd64(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

struct worker {
	struct bench *b;
	uint64_t seed, ops;
};

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	void *buf;

	if (posix_memalign(&buf, 4096, b->bs))
		return NULL;
	memset(buf, 0xa5, b->bs);
	for (;;) {
		uint64_t blk;

		if (b->order) {
			uint64_t i = __atomic_fetch_add(&b->next, 1,
							__ATOMIC_RELAXED);

			if (i >= b->count)
				break;
			blk = b->order[i];
		} else {
			if ((w->ops & 63) == 0 && now_ns() >= b->stop_ns)
				break;
			blk = rnd64(&w->seed) % b->blocks;
		}
		if (bc_disk_pwrite(b->disk, buf, b->bs, blk * b->bs) !=
		    (ssize_t)b->bs) {
			fprintf(stderr, "qcow2-threads: %s\n",
				bc_last_error()->message);
			__atomic_store_n(&b->failed, 1, __ATOMIC_RELAXED);
			break;
		}
		w->ops++;
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct worker w[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	struct bench b;
	bc_engine *eng;
	uint64_t t0, t1, ops = 0, arg, i, seed = 88172645463325252ull;
	double secs;
	int n, k;

	if (argc != 6 || (strcmp(argv[1], "overwrite") && strcmp(argv[1], "alloc"))) {
		fprintf(stderr, "usage: qcow2-threads overwrite|alloc THREADS SECONDS|COUNT BS IMG\n");
		return 2;
	}
	memset(&b, 0, sizeof(b));
	n = atoi(argv[2]);
	arg = strtoull(argv[3], NULL, 0);
	b.bs = strtoull(argv[4], NULL, 0);
	if (n < 1 || n > MAX_THREADS || !arg || !b.bs || b.bs % 4096) {
		fprintf(stderr, "qcow2-threads: bad arguments\n");
		return 2;
	}
	eng = bc_engine_new(0);
	if (!eng)
		return 1;
	b.disk = bc_disk_open(eng, argv[5], NULL, BC_DISK_DIRECT);
	if (!b.disk) {
		fprintf(stderr, "qcow2-threads: %s\n", bc_last_error()->message);
		return 1;
	}
	b.blocks = (uint64_t)bc_disk_size(b.disk) / b.bs;
	if (!strcmp(argv[1], "alloc")) {
		b.count = arg < b.blocks ? arg : b.blocks;
		b.order = malloc(b.blocks * sizeof(*b.order));
		if (!b.order)
			return 1;
		for (i = 0; i < b.blocks; i++)
			b.order[i] = i;
		for (i = b.blocks - 1; i > 0; i--) {
			uint64_t j = rnd64(&seed) % (i + 1), t = b.order[i];

			b.order[i] = b.order[j];
			b.order[j] = t;
		}
	}
	t0 = now_ns();
	b.stop_ns = t0 + arg * 1000000000ull;
	for (k = 0; k < n; k++) {
		w[k] = (struct worker){&b, seed + (uint64_t)k * 7919, 0};
		if (pthread_create(&th[k], NULL, run_worker, &w[k]))
			return 1;
	}
	for (k = 0; k < n; k++) {
		pthread_join(th[k], NULL);
		ops += w[k].ops;
	}
	t1 = now_ns();
	if (bc_disk_flush(b.disk) < 0 || bc_disk_close(b.disk) < 0) {
		fprintf(stderr, "qcow2-threads: %s\n", bc_last_error()->message);
		return 1;
	}
	bc_engine_free(eng);
	free(b.order);
	secs = (double)(t1 - t0) / 1e9;
	printf("%s threads %d ops %llu secs %.2f iops %.0f MiB/s %.1f\n",
	       argv[1], n, (unsigned long long)ops, secs, (double)ops / secs,
	       (double)ops * (double)b.bs / secs / 1048576.0);
	return b.failed;
}
