/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The synthetic guest (see guest.h).
 */
#include "guest.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/util.h"

#define STRIPE_MAX   (256u * 1024)
#define IO_MIN	     4096u
#define NBUCKETS     512u
/* Longest single sleep of a paced thread, so that stop is seen soon. */
#define PACE_SLICE_NS (50ull * 1000 * 1000)
/* Budget a paced guest may catch up after a slow request. */
#define PACE_BURST_NS (200ull * 1000 * 1000)

/* Blocks one request covers at most: a stripe plus a partial block each side. */
#define GENS_MAX (STRIPE_MAX / SHADOW_BLOCK + 2)

struct gthread {
	pthread_t tid;
	struct guest *g;
	unsigned int id;
	uint64_t rng;
	uint64_t nops;
	uint8_t *buf;
	uint8_t *buf2;
	uint32_t gens[GENS_MAX]; /* the states a request gives its blocks */
	uint64_t writes[GUEST_NPHASES];
	uint64_t wbytes[GUEST_NPHASES];
	uint64_t ops[GUEST_NPHASES];
	uint64_t maxns[GUEST_NPHASES];
	uint64_t hist[GUEST_NPHASES][NBUCKETS];
	uint64_t reads;
	uint64_t zeroes;
	uint64_t discards;
	uint64_t mark_max_ns;
};

struct guest {
	bc_disk *disk;
	uint64_t size;
	uint64_t stripe;
	uint64_t nstripes;
	unsigned int nthreads;
	uint64_t rate;
	unsigned int seed;
	struct shadow *shadow;
	atomic_int phase;
	atomic_int mark;      /* SHADOW_MARK_* */
	atomic_bool stop;
	atomic_bool failed;
	atomic_flag fail_claimed;
	char failure[BC_ERROR_MESSAGE_MAX + 128];
	pthread_mutex_t pace_lock;
	uint64_t pace_tat;     /* GCRA: when the next write may start */
	uint64_t phase_ns[GUEST_NPHASES + 1]; /* phase starts, then the stop */
	struct gthread *th;
	unsigned int nstarted;
};

/* Uniform in [0, n); n > 0. The bias of the modulo does not matter here. */
static uint64_t rnd(uint64_t *s, uint64_t n)
{
	return bc_splitmix64(s) % n;
}

static unsigned int lat_bucket(uint64_t ns)
{
	unsigned int e;

	if (ns < 8)
		return (unsigned int)ns;
	e = 63u - (unsigned int)__builtin_clzll(ns);
	return e * 8u + (unsigned int)((ns >> (e - 3)) & 7u);
}

/* The middle of bucket @b, in ns. */
static double bucket_ns(unsigned int b)
{
	unsigned int e = b / 8, m = b % 8;

	if (b < 8)
		return b;
	return (double)((16ull + 2 * m + 1) << (e - 3)) / 2.0;
}

static void guest_fail(struct guest *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void guest_fail(struct guest *g, const char *fmt, ...)
{
	va_list ap;

	if (atomic_flag_test_and_set(&g->fail_claimed))
		return;
	va_start(ap, fmt);
	vsnprintf(g->failure, sizeof(g->failure), fmt, ap);
	va_end(ap);
	atomic_store(&g->failed, true);
}

/* Waits until the pacing lets @len bytes of writes go; false when stopped. */
static bool pace(struct guest *g, uint64_t len)
{
	uint64_t now = bc_now_ns(), start;

	if (!g->rate)
		return true;
	/*
	 * A write may start at the theoretical arrival time; one that comes
	 * late (after a slow request) may use up to PACE_BURST_NS of unused
	 * budget, so a stall is caught up as a paced fio job would.
	 */
	pthread_mutex_lock(&g->pace_lock);
	start = g->pace_tat + PACE_BURST_NS > now ? g->pace_tat : now - PACE_BURST_NS;
	g->pace_tat = start + (uint64_t)((double)len * 1e9 / (double)g->rate);
	pthread_mutex_unlock(&g->pace_lock);
	while (!atomic_load(&g->stop)) {
		uint64_t t = bc_now_ns(), d;
		struct timespec ts;

		if (t >= start)
			return true;
		d = start - t < PACE_SLICE_NS ? start - t : PACE_SLICE_NS;
		ts.tv_sec = (time_t)(d / 1000000000ull);
		ts.tv_nsec = (long)(d % 1000000000ull);
		nanosleep(&ts, NULL);
	}
	return false;
}

enum op { OP_WRITE, OP_READ, OP_ZEROES, OP_DISCARD, OP_FLUSH };

static enum op pick_op(uint64_t *rng)
{
	uint64_t r = rnd(rng, 1000);

	if (r < 650)
		return OP_WRITE;
	if (r < 850)
		return OP_READ;
	if (r < 915)
		return OP_ZEROES;
	if (r < 995)
		return OP_DISCARD;
	return OP_FLUSH;
}

static const char *const op_names[] = {
	"write", "read", "zero write", "discard", "flush",
};

/*
 * Fills t->buf with guest bytes [@lo, @hi) in the states t->gens (one
 * per block from @b0): each block's content of its new generation.
 */
static void fill_data(struct gthread *t, uint64_t b0, uint64_t lo, uint64_t hi)
{
	struct guest *g = t->g;
	uint64_t b;

	for (b = shadow_block_of(lo); b * SHADOW_BLOCK < hi; b++) {
		uint64_t bs = b * SHADOW_BLOCK;
		uint64_t from = lo > bs ? lo : bs;
		uint64_t to = hi < bs + SHADOW_BLOCK ? hi : bs + SHADOW_BLOCK;

		shadow_fill(g->shadow, b, t->gens[b - b0], from,
			    (size_t)(to - from), t->buf + (from - lo));
	}
}

/* Issues the write (t->buf filled) or zero write of [@lo, @hi). */
static bool put(struct gthread *t, enum op op, uint64_t lo, uint64_t hi,
		unsigned int zflags)
{
	struct guest *g = t->g;
	uint64_t len = hi - lo;

	if (lo == hi)
		return true;
	if (op == OP_ZEROES)
		return bc_disk_write_zeroes(g->disk, lo, len, zflags) >= 0;
	return bc_disk_pwrite(g->disk, t->buf, len, lo) == (ssize_t)len;
}

/* The end of block @b (the disk's end for the last one). */
static uint64_t block_end(const struct guest *g, uint64_t b)
{
	uint64_t e = (b + 1) * SHADOW_BLOCK;

	return e < g->size ? e : g->size;
}

/*
 * A discard of whole blocks [@off, @off+@len) has been read back into
 * t->buf2: each block must read as zeros or as before. Records which.
 * Returns false (guest failed) otherwise.
 */
static bool learn_discard(struct gthread *t, uint64_t off, uint64_t len,
			  int ps, int pe)
{
	struct guest *g = t->g;
	uint64_t b;

	for (b = shadow_block_of(off); b * SHADOW_BLOCK < off + len; b++) {
		uint64_t bs = b * SHADOW_BLOCK, n = block_end(g, b) - bs;
		const uint8_t *data = t->buf2 + (bs - off);
		uint32_t old = shadow_state(g->shadow, b);
		uint32_t zero = (old & SHADOW_GEN_MASK) | SHADOW_ZERO;

		/* Either image may have dropped it, whichever the guest sees. */
		shadow_may_hold(g->shadow, b, zero, ps, pe);
		if (bc_is_zero(data, (size_t)n)) {
			shadow_set(g->shadow, b, zero, ps, pe);
		} else if (shadow_check(g->shadow, bs, (size_t)n, data)) {
			guest_fail(g, "discard at offset %" PRIu64 " left neither the old data nor zeros in %"
				   PRIu64 "..%" PRIu64, off, bs, bs + n);
			return false;
		}
	}
	return true;
}

static void *guest_thread(void *arg)
{
	struct gthread *t = arg;
	struct guest *g = t->g;
	unsigned int n = g->nthreads;
	uint64_t mine = (g->nstripes - t->id + n - 1) / n;

	while (!atomic_load(&g->stop) && !atomic_load(&g->failed)) {
		uint64_t s = rnd(&t->rng, mine) * n + t->id;
		uint64_t soff = s * g->stripe;
		uint64_t slen = g->size - soff < g->stripe ? g->size - soff
							   : g->stripe;
		enum op op = pick_op(&t->rng);
		uint64_t len = (uint64_t)IO_MIN << rnd(&t->rng, 7), in, off, t0, lat;
		uint64_t b, b0, b1, head, tail;
		unsigned int zflags = 0;
		int ps, pe, ph;
		bool bad = false;

		if (len > slen)
			len = slen;
		if (rnd(&t->rng, 8) == 0 && op != OP_DISCARD) {
			/* Unaligned: any length up to the size class, anywhere. */
			len = 1 + rnd(&t->rng, len);
			in = rnd(&t->rng, slen - len + 1);
		} else {
			in = rnd(&t->rng, (slen - len) / IO_MIN + 1) * IO_MIN;
		}
		off = soff + in;
		b0 = shadow_block_of(off);
		b1 = shadow_block_of(off + len - 1);
		head = b0 * SHADOW_BLOCK;
		tail = block_end(g, b1);
		if (op == OP_READ && !shadow_can_check(g->shadow, off, (size_t)len)) {
			/* Only a CRC of those blocks: read them whole. */
			off = head;
			len = tail - head;
		}
		if (op == OP_WRITE || op == OP_ZEROES) {
			for (b = b0; b <= b1; b++)
				t->gens[b - b0] = shadow_next_gen(g->shadow, b) |
						  (op == OP_ZEROES ? SHADOW_ZERO : 0);
			zflags = rnd(&t->rng, 2) ? BC_DISK_ZEROES_MAY_UNMAP : 0;
		}
		if (op == OP_WRITE) {
			fill_data(t, b0, off, off + len);
			if (!pace(g, len))
				break;
		}
		ph = atomic_load(&g->phase);
		ps = atomic_load(&g->mark);
		t0 = bc_now_ns();
		switch (op) {
		case OP_WRITE:
		case OP_ZEROES:
			bad = !put(t, op, off, off + len, zflags);
			break;
		case OP_READ:
			bad = bc_disk_pread(g->disk, t->buf, len, off) != (ssize_t)len;
			break;
		case OP_DISCARD:
			bad = bc_disk_discard(g->disk, off, len, 0) < 0 ||
			      bc_disk_pread(g->disk, t->buf2, len, off) != (ssize_t)len;
			break;
		case OP_FLUSH:
			bad = bc_disk_flush(g->disk) < 0;
			break;
		}
		lat = bc_now_ns() - t0;
		if (!bad && (op == OP_WRITE || op == OP_ZEROES)) {
			/* The rest of a partial first and last block: one generation each. */
			if (op == OP_WRITE)
				fill_data(t, b0, head, off);
			bad = !put(t, op, head, off, zflags);
			if (!bad && op == OP_WRITE)
				fill_data(t, b0, off + len, tail);
			bad = bad || !put(t, op, off + len, tail, zflags);
		}
		pe = atomic_load(&g->mark);
		if (bad) {
			guest_fail(g, "guest %s at offset %" PRIu64 " (%" PRIu64
				   " bytes) failed: %s", op_names[op], off, len,
				   bc_last_error()->message);
			break;
		}
		if (pe != SHADOW_MARK_NONE && ps != SHADOW_MARK_DONE &&
		    lat > t->mark_max_ns)
			t->mark_max_ns = lat;
		t->ops[ph]++;
		if (op == OP_WRITE || op == OP_ZEROES) {
			for (b = b0; b <= b1; b++)
				shadow_set(g->shadow, b, t->gens[b - b0], ps, pe);
		}
		switch (op) {
		case OP_WRITE:
			t->writes[ph]++;
			t->wbytes[ph] += len;
			t->hist[ph][lat_bucket(lat)]++;
			if (lat > t->maxns[ph])
				t->maxns[ph] = lat;
			break;
		case OP_ZEROES:
			t->zeroes++;
			break;
		case OP_READ: {
			uint64_t at = shadow_check(g->shadow, off, (size_t)len, t->buf);

			t->reads++;
			if (at)
				guest_fail(g, "guest read at offset %" PRIu64
					   " differs from what it wrote (first "
					   "difference at %" PRIu64 ")", off, at - 1);
			break;
		}
		case OP_DISCARD:
			t->discards++;
			(void)learn_discard(t, off, len, ps, pe);
			break;
		case OP_FLUSH:
			break;
		}
		t->nops++;
	}
	return NULL;
}

struct guest *guest_new(bc_disk *disk, const struct guest_opts *opts,
			shadow_initial_fn initial, void *initial_arg,
			char *err, size_t errlen)
{
	struct guest *g;
	int64_t size = bc_disk_size(disk);
	unsigned int n = opts->threads ? opts->threads : 4;

	if (size < 0) {
		snprintf(err, errlen, "cannot get the disk size: %s",
			 bc_last_error()->message);
		return NULL;
	}
	if ((uint64_t)size < (uint64_t)n * IO_MIN) {
		snprintf(err, errlen, "disk of %" PRId64 " bytes too small for %u guest threads",
			 size, n);
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto nomem;
	g->disk = disk;
	g->size = (uint64_t)size;
	g->nthreads = n;
	g->rate = opts->rate;
	g->seed = opts->seed ? opts->seed : (unsigned int)bc_now_ns();
	g->stripe = STRIPE_MAX;
	if (g->size / n < g->stripe)
		g->stripe = g->size / n / IO_MIN * IO_MIN;
	g->nstripes = (g->size + g->stripe - 1) / g->stripe;
	atomic_init(&g->phase, GUEST_BEFORE);
	atomic_init(&g->mark, SHADOW_MARK_NONE);
	atomic_init(&g->stop, false);
	atomic_init(&g->failed, false);
	atomic_flag_clear(&g->fail_claimed);
	pthread_mutex_init(&g->pace_lock, NULL);
	g->shadow = shadow_new(g->size, g->seed, initial, initial_arg);
	g->th = calloc(n, sizeof(*g->th));
	if (!g->shadow || !g->th) {
		guest_free(g);
		goto nomem;
	}
	if (initial) {
		/* The disk must read as it was made before the guest writes. */
		char msg[BC_ERROR_MESSAGE_MAX + 128];
		int r = shadow_verify(g->shadow, disk, false, NULL, msg, sizeof(msg));

		if (r) {
			snprintf(err, errlen, "%s before the guest started: %s",
				 r > 0 ? "the disk does not read as it was made"
				       : "cannot read the disk",
				 msg);
			guest_free(g);
			return NULL;
		}
	} else if (shadow_hash_initial(g->shadow, disk, err, errlen) < 0) {
		guest_free(g);
		return NULL;
	}
	return g;
nomem:
	snprintf(err, errlen, "out of memory for the guest's shadow (%" PRIu64 " bytes)",
		 shadow_footprint((uint64_t)size, !initial));
	return NULL;
}

const struct shadow *guest_shadow(const struct guest *g)
{
	return g->shadow;
}

int guest_start(struct guest *g)
{
	unsigned int i;
	int ret;

	g->phase_ns[GUEST_BEFORE] = bc_now_ns();
	g->pace_tat = g->phase_ns[GUEST_BEFORE];
	for (i = 0; i < g->nthreads; i++) {
		struct gthread *t = &g->th[i];

		t->g = g;
		t->id = i;
		t->rng = g->seed * 0x100000001b3ull + i;
		t->buf = malloc(g->stripe);
		t->buf2 = malloc(g->stripe);
		if (!t->buf || !t->buf2) {
			free(t->buf);
			free(t->buf2);
			t->buf = t->buf2 = NULL;
			ret = -ENOMEM;
			goto out_stop;
		}
		ret = -pthread_create(&t->tid, NULL, guest_thread, t);
		if (ret) {
			free(t->buf);
			free(t->buf2);
			t->buf = t->buf2 = NULL;
			goto out_stop;
		}
		g->nstarted++;
	}
	return 0;
out_stop:
	(void)guest_stop(g);
	return ret;
}

void guest_set_phase(struct guest *g, enum guest_phase phase)
{
	int p;

	for (p = atomic_load(&g->phase) + 1; p <= (int)phase; p++)
		g->phase_ns[p] = bc_now_ns();
	atomic_store(&g->phase, (int)phase);
}

void guest_mark_begin(struct guest *g)
{
	atomic_store(&g->mark, SHADOW_MARK_IN_PROGRESS);
}

void guest_mark_end(struct guest *g)
{
	atomic_store(&g->mark, SHADOW_MARK_DONE);
}

int guest_stop(struct guest *g)
{
	unsigned int i;

	atomic_store(&g->stop, true);
	for (i = 0; i < g->nstarted; i++)
		pthread_join(g->th[i].tid, NULL);
	if (g->nstarted && !g->phase_ns[GUEST_NPHASES])
		g->phase_ns[GUEST_NPHASES] = bc_now_ns();
	g->nstarted = 0;
	return atomic_load(&g->failed) ? -1 : 0;
}

const char *guest_failure(const struct guest *g)
{
	return atomic_load(&g->failed) ? g->failure : NULL;
}

void guest_phase_stats(const struct guest *g, enum guest_phase phase,
		       struct guest_phase_stats *st)
{
	uint64_t hist[NBUCKETS] = { 0 }, maxns = 0, start, end, seen;
	unsigned int i, b, p;
	double pct[2] = { 0.50, 0.99 }, val[2] = { 0, 0 };

	memset(st, 0, sizeof(*st));
	for (i = 0; i < g->nthreads; i++) {
		const struct gthread *t = &g->th[i];

		st->writes += t->writes[phase];
		st->write_bytes += t->wbytes[phase];
		st->ops += t->ops[phase];
		if (t->maxns[phase] > maxns)
			maxns = t->maxns[phase];
		for (b = 0; b < NBUCKETS; b++)
			hist[b] += t->hist[phase][b];
	}
	start = g->phase_ns[phase];
	end = 0;
	for (p = (unsigned int)phase + 1; p <= GUEST_NPHASES && !end; p++)
		end = g->phase_ns[p];
	if (start && end > start)
		st->seconds = (double)(end - start) / 1e9;
	if (st->seconds > 0)
		st->mib_s = (double)st->write_bytes / st->seconds / (1024.0 * 1024.0);
	for (p = 0; p < 2 && st->writes; p++) {
		uint64_t want = (uint64_t)((double)st->writes * pct[p] + 0.999999);

		seen = 0;
		for (b = 0; b < NBUCKETS; b++) {
			seen += hist[b];
			if (seen >= want) {
				val[p] = bucket_ns(b);
				break;
			}
		}
	}
	st->p50_ms = val[0] / 1e6;
	st->p99_ms = val[1] / 1e6;
	st->max_ms = (double)maxns / 1e6;
}

void guest_totals(const struct guest *g, struct guest_totals *t)
{
	uint64_t mark_max_ns = 0;
	unsigned int i, p;

	*t = (struct guest_totals){ 0 };
	for (i = 0; i < g->nthreads; i++) {
		const struct gthread *th = &g->th[i];

		for (p = 0; p < GUEST_NPHASES; p++)
			t->writes += th->writes[p];
		t->reads += th->reads;
		t->zeroes += th->zeroes;
		t->discards += th->discards;
		mark_max_ns = BC_MAX(mark_max_ns, th->mark_max_ns);
	}
	t->mark_max_ms = (double)mark_max_ns / 1e6;
}

void guest_free(struct guest *g)
{
	unsigned int i;

	if (!g)
		return;
	(void)guest_stop(g);
	if (g->th) {
		for (i = 0; i < g->nthreads; i++) {
			free(g->th[i].buf);
			free(g->th[i].buf2);
		}
	}
	pthread_mutex_destroy(&g->pace_lock);
	free(g->th);
	shadow_free(g->shadow);
	free(g);
}
