/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One engine, many disks: 16 disks (qcow2 chains and raw images, small and
 * sparse) each with a COPY job (full or shallow; background, write-blocking
 * or auto-converge) and a guest writer thread, all at once. Each job, once
 * MIRRORING, is pivoted or aborted at random under its writer's load. At
 * the end every disk and every image holds exactly what its shadow says.
 *
 * Events go through the event fd and bc_engine_dispatch() on this thread
 * only; the callback records them per disk, and each disk must see
 * exactly MIRRORING then COMPLETED (pivot) or CANCELED (abort): none lost,
 * none repeated, none out of order. Seeded (BC_TEST_SEED repeats a run).
 *
 * It found a race at job start: a guest write that entered the disk before
 * the job was attached is not marked dirty, and the allocation scan could
 * run before that write reached the source's mapping, so its granule was
 * never copied (a whole write missing from the destination).
 */
#include <check.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "formats/fmt.h"
#include "lib/blockcopy.h"
#include "tests/scratch.h"

#define NDISKS    16
#define DISK_SIZE (4u << 20)
#define MAX_EV    8

enum action { ACT_PIVOT, ACT_ABORT };

struct mdisk {
	int idx;
	bool qcow2;              /* else raw */
	bool shallow;
	unsigned int copy_flags;
	enum action action;
	char src[PATH_MAX];      /* top of the source chain */
	char base[PATH_MAX];     /* its backing (qcow2 only) */
	char dst[PATH_MAX];
	bc_disk *disk;
	uint8_t *shadow;         /* what the guest reads; the writer's alone */
	uint8_t *at_abort;       /* the shadow when the abort returned */
	/* The writer: pauses on request so an abort sees a still disk. */
	pthread_t tid;
	unsigned int seed;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool pause_req, paused, stop;
	uint64_t writes;
	char failure[BC_ERROR_MESSAGE_MAX + 64];
	/* Events, in the order the callback saw them. */
	int ev[MAX_EV];
	int nev;
	bool acted;
	bool ended;
};

static char dir[PATH_MAX / 2]; /* leaves room for the file names */
static struct mdisk disks[NDISKS];
static bc_engine *eng;
static int stray_events;

static uint64_t rnd(unsigned int *seed, uint64_t n)
{
	return (uint64_t)rand_r(seed) % n;
}

static void on_event(bc_engine *e, bc_disk *disk, const char *path, int type,
		     int status, void *opaque)
{
	int i;

	(void)e;
	(void)path;
	(void)opaque;
	ck_assert_int_eq(type, BC_BLOCK_JOB_TYPE_COPY);
	for (i = 0; i < NDISKS; i++) {
		struct mdisk *d = &disks[i];

		if (d->disk != disk)
			continue;
		if (d->nev < MAX_EV)
			d->ev[d->nev] = status;
		d->nev++;
		if (status != BC_BLOCK_JOB_MIRRORING)
			d->ended = true;
		return;
	}
	stray_events++;
}

static void *writer_main(void *arg)
{
	struct mdisk *d = arg;
	uint8_t *buf = malloc(65536);

	ck_assert_ptr_nonnull(buf);
	pthread_mutex_lock(&d->lock);
	while (!d->stop && !d->failure[0]) {
		uint64_t len, off;

		if (d->pause_req) {
			d->paused = true;
			pthread_cond_broadcast(&d->cond);
			while (d->pause_req && !d->stop)
				pthread_cond_wait(&d->cond, &d->lock);
			d->paused = false;
			continue;
		}
		pthread_mutex_unlock(&d->lock);
		len = 1 + rnd(&d->seed, 16384);
		off = rnd(&d->seed, DISK_SIZE - len);
		memset(buf, (int)(d->idx * 16 + d->writes % 251 + 1), len);
		if (rnd(&d->seed, 8) == 0) {
			if (bc_disk_flush(d->disk) < 0)
				snprintf(d->failure, sizeof(d->failure), "flush: %s",
					 bc_last_error()->message);
		} else if (bc_disk_pwrite(d->disk, buf, len, off) != (ssize_t)len) {
			snprintf(d->failure, sizeof(d->failure), "pwrite: %s",
				 bc_last_error()->message);
		} else {
			memcpy(d->shadow + off, buf, len);
			d->writes++;
		}
		usleep((useconds_t)rnd(&d->seed, 2000));
		pthread_mutex_lock(&d->lock);
	}
	d->paused = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	free(buf);
	return NULL;
}

static void writer_pause(struct mdisk *d)
{
	pthread_mutex_lock(&d->lock);
	d->pause_req = true;
	while (!d->paused)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

static void writer_resume(struct mdisk *d)
{
	pthread_mutex_lock(&d->lock);
	d->pause_req = false;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void writer_stop(struct mdisk *d)
{
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	ck_assert_int_eq(pthread_join(d->tid, NULL), 0);
}

/* Write @len bytes of @byte at @off into @img and the shadow. */
static void put(struct fmt_image *img, uint8_t *shadow, uint64_t off,
		uint64_t len, uint8_t byte)
{
	uint8_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	memset(buf, byte, len);
	ck_assert_int_eq(fmt_pwrite(img, buf, len, off), 0);
	memcpy(shadow + off, buf, len);
	free(buf);
}

/*
 * Disk @i: qcow2 base <- top (even i) or one raw image (odd i), a little
 * data here and there, the rest sparse.
 */
static void make_disk(struct mdisk *d, int i, unsigned int seed)
{
	struct fmt_image *img;
	int k;

	memset(d, 0, sizeof(*d));
	d->idx = i;
	d->seed = seed * 31u + (unsigned int)i;
	d->qcow2 = i % 2 == 0;
	d->shallow = d->qcow2 && i % 4 == 0;
	d->copy_flags = (d->shallow ? BC_BLOCK_COPY_SHALLOW : 0) |
			(i % 3 == 0 ? BC_BLOCK_COPY_SYNCHRONOUS_WRITES :
			 i % 3 == 1 ? BC_BLOCK_COPY_AUTO_CONVERGE : 0);
	d->action = rnd(&d->seed, 2) ? ACT_PIVOT : ACT_ABORT;
	d->shadow = calloc(1, DISK_SIZE);
	ck_assert_ptr_nonnull(d->shadow);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	snprintf(d->dst, sizeof(d->dst), "%s/dst%d.%s", dir, i, d->qcow2 ? "qcow2" : "raw");
	if (d->qcow2) {
		struct fmt_create_opts bo = { .format = "qcow2", .size = DISK_SIZE };
		struct fmt_create_opts to = { .format = "qcow2", .size = DISK_SIZE,
					      .cluster_size = 4096, .backing_fmt = "qcow2" };

		snprintf(d->base, sizeof(d->base), "%s/base%d.qcow2", dir, i);
		snprintf(d->src, sizeof(d->src), "%s/top%d.qcow2", dir, i);
		ck_assert_int_eq(fmt_create(d->base, &bo), 0);
		ck_assert_int_eq(fmt_open(d->base, "qcow2", FMT_OPEN_RDWR, &img), 0);
		put(img, d->shadow, 0, 300000, (uint8_t)(0x10 + i));
		put(img, d->shadow, 3u << 20, 65536, (uint8_t)(0x20 + i));
		ck_assert_int_eq(fmt_flush(img), 0);
		fmt_close(img);
		to.backing_file = d->base;
		ck_assert_int_eq(fmt_create(d->src, &to), 0);
		ck_assert_int_eq(fmt_open(d->src, "qcow2", FMT_OPEN_RDWR, &img), 0);
	} else {
		struct fmt_create_opts ro = { .format = "raw", .size = DISK_SIZE };

		snprintf(d->src, sizeof(d->src), "%s/src%d.raw", dir, i);
		ck_assert_int_eq(fmt_create(d->src, &ro), 0);
		ck_assert_int_eq(fmt_open(d->src, "raw", FMT_OPEN_RDWR, &img), 0);
	}
	for (k = 0; k < 3; k++)
		put(img, d->shadow, rnd(&d->seed, DISK_SIZE - 20000), 1 + rnd(&d->seed, 20000),
		    (uint8_t)(0x40 + i + k));
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	d->disk = bc_disk_open(eng, d->src, d->qcow2 ? "qcow2" : "raw", 0);
	ck_assert_msg(d->disk, "open %s: %s", d->src, bc_last_error()->message);
}

/*
 * The first run of bytes where @got and @want differ, as "[a, b)": says
 * whether a whole guest write went missing or a few bytes are torn.
 */
static void first_difference(const uint8_t *got, const uint8_t *want,
			     size_t *a, size_t *b)
{
	size_t i = 0;

	while (i < DISK_SIZE && got[i] == want[i])
		i++;
	*a = i;
	while (i < DISK_SIZE && got[i] != want[i])
		i++;
	*b = i;
}

static void check_image(const char *path, const char *format,
			const uint8_t *want, const char *what)
{
	struct fmt_image *img;
	uint8_t *buf = malloc(DISK_SIZE);
	size_t a, b;

	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(fmt_open(path, format, 0, &img) == 0, "open %s: %s", path,
		      bc_last_error()->message);
	ck_assert_int_eq(fmt_pread(img, buf, DISK_SIZE, 0), 0);
	fmt_close(img);
	first_difference(buf, want, &a, &b);
	if (a < DISK_SIZE)
		ck_abort_msg("%s (%s) differs in [%zu, %zu): 0x%02x, want 0x%02x", what,
			     path, a, b, buf[a], want[a]);
	free(buf);
}

static unsigned int test_seed(void)
{
	const char *s = getenv("BC_TEST_SEED");
	unsigned int seed = s ? (unsigned int)strtoul(s, NULL, 10) : (unsigned int)time(NULL);

	fprintf(stderr, "# many-disks seed %u (set BC_TEST_SEED to repeat)\n", seed);
	return seed;
}

static void setup(void)
{
	scratch_dir(dir, sizeof(dir), NULL, "bc-many-");
	eng = bc_engine_new(0);
	ck_assert_ptr_nonnull(eng);
	ck_assert_int_ge(bc_engine_event_register(eng, on_event, NULL), 0);
	stray_events = 0;
}

static void teardown(void)
{
	int i;

	for (i = 0; i < NDISKS; i++) {
		free(disks[i].shadow);
		free(disks[i].at_abort);
		pthread_mutex_destroy(&disks[i].lock);
		pthread_cond_destroy(&disks[i].cond);
	}
	bc_engine_free(eng);
	scratch_remove(dir);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pivot or abort disk @d, which is MIRRORING, while its writer runs. */
static void act(struct mdisk *d)
{
	d->acted = true;
	if (d->action == ACT_PIVOT) {
		ck_assert_msg(bc_block_job_abort(d->disk, BC_BLOCK_JOB_ABORT_PIVOT) == 0,
			      "pivot disk %d: %s", d->idx, bc_last_error()->message);
		return;
	}
	/*
	 * The destination is a consistent copy of the source at the abort:
	 * hold the writer so that "at the abort" is one content.
	 */
	writer_pause(d);
	ck_assert_msg(bc_block_job_abort(d->disk, 0) == 0, "abort disk %d: %s",
		      d->idx, bc_last_error()->message);
	d->at_abort = malloc(DISK_SIZE);
	ck_assert_ptr_nonnull(d->at_abort);
	memcpy(d->at_abort, d->shadow, DISK_SIZE);
	writer_resume(d);
}

/* R23, R35 */
START_TEST(sixteen_disks_sixteen_jobs)
{
	unsigned int seed = test_seed();
	bc_block_copy_params params = { .granularity = 65536 };
	int fd = bc_engine_event_fd(eng), i, ended = 0;
	double deadline;

	ck_assert_int_ge(fd, 0);
	for (i = 0; i < NDISKS; i++)
		make_disk(&disks[i], i, seed);
	for (i = 0; i < NDISKS; i++)
		ck_assert_int_eq(pthread_create(&disks[i].tid, NULL, writer_main, &disks[i]), 0);
	for (i = 0; i < NDISKS; i++) {
		ck_assert_msg(bc_block_copy(disks[i].disk, disks[i].dst, &params,
					    disks[i].copy_flags) == 0,
			      "copy disk %d: %s", i, bc_last_error()->message);
	}

	/* Events only through the fd and dispatch, on this thread. */
	deadline = now_s() + 120;
	while (ended < NDISKS) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		ck_assert_msg(now_s() < deadline, "only %d of %d jobs ended in 120 s", ended, NDISKS);
		(void)poll(&pfd, 1, 200);
		ck_assert_int_ge(bc_engine_dispatch(eng, 0), 0);
		ended = 0;
		for (i = 0; i < NDISKS; i++) {
			struct mdisk *d = &disks[i];

			ck_assert_msg(!d->failure[0], "disk %d writer: %s", i, d->failure);
			if (d->nev >= 1 && d->ev[0] == BC_BLOCK_JOB_MIRRORING && !d->acted &&
			    rnd(&d->seed, 4) == 0)
				act(d);
			ended += d->ended;
		}
	}
	/* Nothing more may come. */
	ck_assert_int_eq(bc_engine_dispatch(eng, 100), 0);
	ck_assert_int_eq(stray_events, 0);

	for (i = 0; i < NDISKS; i++) {
		struct mdisk *d = &disks[i];
		int want = d->action == ACT_PIVOT ? BC_BLOCK_JOB_COMPLETED : BC_BLOCK_JOB_CANCELED;

		ck_assert_msg(d->nev == 2 && d->ev[0] == BC_BLOCK_JOB_MIRRORING && d->ev[1] == want,
			      "disk %d: %d events (%d, %d), want MIRRORING then %d", i, d->nev,
			      d->ev[0], d->nev > 1 ? d->ev[1] : -1, want);
	}
	for (i = 0; i < NDISKS; i++) {
		struct mdisk *d = &disks[i];
		const char *fmt = d->qcow2 ? "qcow2" : "raw";
		uint8_t *buf = malloc(DISK_SIZE);
		size_t a, b;

		writer_stop(d);
		ck_assert_msg(!d->failure[0], "disk %d writer: %s", i, d->failure);
		ck_assert_ptr_nonnull(buf);
		ck_assert_int_eq(bc_disk_pread(d->disk, buf, DISK_SIZE, 0), DISK_SIZE);
		first_difference(buf, d->shadow, &a, &b);
		if (a < DISK_SIZE)
			ck_abort_msg("disk %d differs from its shadow in [%zu, %zu): 0x%02x, want 0x%02x",
				     i, a, b, buf[a], d->shadow[a]);
		free(buf);
		ck_assert_str_eq(bc_disk_path(d->disk), d->action == ACT_PIVOT ? d->dst : d->src);
		ck_assert_int_eq(bc_disk_close(d->disk), 0);
		d->disk = NULL;
		if (d->action == ACT_PIVOT) {
			check_image(d->dst, fmt, d->shadow, "pivoted destination");
		} else {
			check_image(d->src, fmt, d->shadow, "source after the abort");
			check_image(d->dst, fmt, d->at_abort, "destination at the abort");
		}
	}
	for (i = 0; i < NDISKS; i++)
		fprintf(stderr, "# disk %2d: %s %s%s, %s, %llu guest writes\n", i,
			disks[i].qcow2 ? "qcow2" : "raw  ", disks[i].shallow ? "shallow" : "full",
			disks[i].copy_flags & BC_BLOCK_COPY_SYNCHRONOUS_WRITES ? " write-blocking" :
			disks[i].copy_flags & BC_BLOCK_COPY_AUTO_CONVERGE ? " auto-converge" : " background",
			disks[i].action == ACT_PIVOT ? "pivoted" : "aborted",
			(unsigned long long)disks[i].writes);
}
END_TEST

static Suite *many_disks_suite(void)
{
	Suite *s = suite_create("many-disks");
	TCase *tc = tcase_create("jobs");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 280);
	tcase_add_test(tc, sixteen_disks_sixteen_jobs);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(many_disks_suite());
}
