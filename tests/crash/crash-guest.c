/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A guest for the crash-point tests, on the public API only: it writes
 * self-describing 4 KiB blocks to a disk and flushes now and then, while
 * the main thread runs a live mirror (COPY job, MIRRORING, pivot) or takes
 * snapshots (bc_snapshot_create) — until the test SIGKILLs it.
 *
 *   crash-guest mirror TOP DST LOG SEED [shallow] [reuse] [sync|auto] [bw=BYTES/S]
 *   crash-guest snapshot TOP LOG SEED
 *
 * Every event goes to LOG as a fixed 24-byte record, written with one
 * write() to an O_APPEND file after the event happened (or, for "intent"
 * records, before it starts), so that the log survives SIGKILL and its
 * order is the order of events. check-guest.py reads it back:
 *   'I' block gen   a write of generation gen of block is about to start
 *   'A' block gen   that write was acknowledged
 *   'f' seq         a flush starts
 *   'F' seq         it was acknowledged (covers every 'A' before its 'f')
 *   'M'             the copy job reached MIRRORING
 *   'p' / 'P'       a pivot starts / returned successfully
 *   's' k / 'S' k   snapshot TOP.snap<k> is being taken / was taken
 *   'E' code        the job ended otherwise (event status): a failure
 * Block content of generation g >= 1 (crash_block_fill) is checkable on
 * its own; generation 0 is whatever the disk held at the start.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/blockcopy.h"

#define BLOCK      4096u
#define NTHREADS   2u
#define FLUSH_EVERY 16u

struct rec {
	uint32_t type;
	uint32_t thread;
	uint64_t a;
	uint64_t b;
};

static int log_fd;
static bc_disk *disk;
static uint64_t nblocks;
static unsigned int seed;     /* guest threads derive theirs from it */
static unsigned int main_rs;  /* the main thread's random state */
static atomic_uint flush_seq;
static atomic_int job_status = -1;
static atomic_bool mirroring;

static void die(const char *what)
{
	fprintf(stderr, "crash-guest: %s: %s\n", what, bc_last_error()->message);
	exit(1);
}

static void log_rec(char type, uint32_t thread, uint64_t a, uint64_t b)
{
	struct rec r = { .type = (uint32_t)type, .thread = thread, .a = a, .b = b };

	if (write(log_fd, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
		perror("crash-guest: log");
		exit(1);
	}
}

/* Generation @gen (>= 1) of block @blk; check-guest.py computes the same. */
static void crash_block_fill(uint8_t *buf, uint64_t blk, uint64_t gen)
{
	uint32_t i;

	memcpy(buf, "BCCRASH1", 8);
	for (i = 0; i < 8; i++) {
		buf[8 + i] = (uint8_t)(blk >> (8 * i));
		buf[16 + i] = (uint8_t)(gen >> (8 * i));
	}
	for (i = 24; i < BLOCK; i++)
		buf[i] = (uint8_t)(blk * 131u + gen * 7u + i);
}

static void *guest_thread(void *arg)
{
	uint32_t t = (uint32_t)(uintptr_t)arg;
	unsigned int rs = seed * 7919u + t;
	uint64_t *gen = calloc(nblocks, sizeof(*gen));
	uint8_t *buf = aligned_alloc(4096, BLOCK);
	unsigned int n = 0;

	if (!gen || !buf)
		abort();
	for (;;) {
		/* This thread's stripe: blocks b with b % NTHREADS == t. */
		uint64_t blk = (rand_r(&rs) % (nblocks / NTHREADS)) * NTHREADS + t;

		gen[blk]++;
		crash_block_fill(buf, blk, gen[blk]);
		log_rec('I', t, blk, gen[blk]);
		if (bc_disk_pwrite(disk, buf, BLOCK, blk * BLOCK) != (ssize_t)BLOCK)
			die("guest write");
		log_rec('A', t, blk, gen[blk]);
		if (++n % FLUSH_EVERY == 0) {
			unsigned int s = atomic_fetch_add(&flush_seq, 1);

			log_rec('f', t, s, 0);
			if (bc_disk_flush(disk) < 0)
				die("guest flush");
			log_rec('F', t, s, 0);
		}
		if (rand_r(&rs) % 4 == 0)
			usleep(rand_r(&rs) % 500);
	}
	return NULL;
}

static void on_event(bc_engine *eng, bc_disk *d, const char *path, int type,
		     int status, void *opaque)
{
	(void)eng;
	(void)d;
	(void)path;
	(void)type;
	(void)opaque;
	if (status == BC_BLOCK_JOB_MIRRORING)
		atomic_store(&mirroring, true);
	else
		atomic_store(&job_status, status);
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void run_mirror(bc_engine *eng, const char *dst, int argc, char **argv)
{
	bc_block_copy_params params = { 0 };
	unsigned int flags = 0;
	int i;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "shallow"))
			flags |= BC_BLOCK_COPY_SHALLOW;
		else if (!strcmp(argv[i], "reuse"))
			flags |= BC_BLOCK_COPY_REUSE_EXT;
		else if (!strcmp(argv[i], "sync"))
			flags |= BC_BLOCK_COPY_SYNCHRONOUS_WRITES;
		else if (!strcmp(argv[i], "auto"))
			flags |= BC_BLOCK_COPY_AUTO_CONVERGE;
		else if (!strncmp(argv[i], "bw=", 3))
			params.bandwidth = strtoull(argv[i] + 3, NULL, 10);
	}
	if (bc_block_copy(disk, dst, &params, flags) < 0)
		die("bc_block_copy");
	while (!atomic_load(&mirroring)) {
		if (bc_engine_dispatch(eng, 50) < 0)
			die("dispatch");
		if (atomic_load(&job_status) >= 0) {
			log_rec('E', 0, (uint64_t)atomic_load(&job_status), 0);
			fprintf(stderr, "crash-guest: job ended with status %d before MIRRORING\n",
				atomic_load(&job_status));
			exit(1);
		}
	}
	log_rec('M', 0, 0, 0);
	sleep_ms((unsigned int)(rand_r(&main_rs) % 200));
	log_rec('p', 0, 0, 0);
	if (bc_block_job_abort(disk, BC_BLOCK_JOB_ABORT_PIVOT) < 0)
		die("pivot");
	log_rec('P', 0, 0, 0);
	for (;;) /* the guest goes on, on DST, until the test kills us */
		(void)bc_engine_dispatch(eng, 1000);
}

static void run_snapshots(const char *top)
{
	char path[4096];
	uint64_t k;

	for (k = 1;; k++) {
		sleep_ms((unsigned int)(rand_r(&main_rs) % 60));
		snprintf(path, sizeof(path), "%s.snap%llu", top, (unsigned long long)k);
		log_rec('s', 0, k, 0);
		if (bc_snapshot_create(disk, path, 0) < 0)
			die("bc_snapshot_create");
		log_rec('S', 0, k, 0);
	}
}

int main(int argc, char **argv)
{
	const char *mode, *top, *logp;
	pthread_t th[NTHREADS];
	bc_engine *eng;
	uint32_t t;
	int64_t size;

	if (argc < 5) {
		fprintf(stderr, "usage: crash-guest mirror TOP DST LOG SEED [shallow] [reuse] [sync|auto] [bw=N]\n"
				"       crash-guest snapshot TOP LOG SEED\n");
		return 2;
	}
	mode = argv[1];
	top = argv[2];
	logp = strcmp(mode, "mirror") ? argv[3] : argv[4];
	seed = (unsigned int)strtoul(strcmp(mode, "mirror") ? argv[4] : argv[5], NULL, 10);
	main_rs = seed ^ 0x9e3779b9u;
	log_fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (log_fd < 0) {
		perror(logp);
		return 1;
	}
	eng = bc_engine_new(0);
	if (!eng)
		die("bc_engine_new");
	if (bc_engine_event_register(eng, on_event, NULL) < 0)
		die("event_register");
	disk = bc_disk_open(eng, top, NULL, 0);
	if (!disk)
		die(top);
	size = bc_disk_size(disk);
	nblocks = (uint64_t)size / BLOCK;
	if (nblocks < NTHREADS)
		return 2;
	for (t = 0; t < NTHREADS; t++)
		if (pthread_create(&th[t], NULL, guest_thread, (void *)(uintptr_t)t))
			return 1;
	if (!strcmp(mode, "mirror") && argc >= 6)
		run_mirror(eng, argv[3], argc - 6, argv + 6);
	else if (!strcmp(mode, "snapshot"))
		run_snapshots(top);
	fprintf(stderr, "crash-guest: unknown mode '%s'\n", mode);
	return 2;
}
