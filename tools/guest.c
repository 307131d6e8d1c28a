/*
 * The synthetic guest and the live run (see guest.h).
 */
#include "guest.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define STRIPE_MAX   (256u * 1024)
#define IO_MIN	     4096u
#define NBUCKETS     512u
#define VERIFY_CHUNK (1u << 20)
/* Longest single sleep of a paced thread, so that stop is seen soon. */
#define PACE_SLICE_NS (50ull * 1000 * 1000)
/* Budget a paced guest may catch up after a slow request. */
#define PACE_BURST_NS (200ull * 1000 * 1000)

/* Per-stripe state at the marked switch. */
enum { MARK_SAME = 0, MARK_SAVED = 1, MARK_UNCERTAIN = 2 };
/* guest.mark */
enum { MARK_NONE = 0, MARK_IN_PROGRESS = 1, MARK_DONE = 2 };

struct gthread {
	pthread_t tid;
	struct guest *g;
	unsigned int id;
	uint64_t rng;
	uint64_t nops;
	uint8_t *buf;
	uint8_t *buf2;
	uint64_t writes[GUEST_NPHASES];
	uint64_t wbytes[GUEST_NPHASES];
	uint64_t ops[GUEST_NPHASES];
	uint64_t maxns[GUEST_NPHASES];
	uint64_t hist[GUEST_NPHASES][NBUCKETS];
	uint64_t reads;
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
	uint8_t *shadow;
	uint32_t *mark_crc;   /* a stripe's CRC at the switch, when MARK_SAVED */
	uint8_t *mark_state;  /* MARK_* per stripe */
	atomic_int phase;
	atomic_int mark;
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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. The bias of the modulo does not matter here. */
static uint64_t rnd(uint64_t *s, uint64_t n)
{
	return splitmix(s) % n;
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t v = splitmix(&seed);

		memcpy(buf + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = splitmix(&seed);

		memcpy(buf + i, &v, len - i);
	}
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
	uint64_t now = now_ns(), start;

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
		uint64_t t = now_ns(), d;
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

/* Before the first change of stripe @s after the switch: keep its CRC. */
static void mark_touch(struct guest *g, uint64_t s, int ps, int pe)
{
	if (ps == MARK_DONE) {
		if (g->mark_state[s] == MARK_SAME) {
			uint64_t off = s * g->stripe;
			uint64_t len = g->size - off < g->stripe ? g->size - off
								  : g->stripe;

			g->mark_crc[s] = (uint32_t)crc32(0L, g->shadow + off,
							 (uInt)len);
			g->mark_state[s] = MARK_SAVED;
		}
	} else if (pe != MARK_NONE) {
		g->mark_state[s] = MARK_UNCERTAIN;
	}
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
		int ps, pe, ph;
		bool bad = false;

		if (len > slen)
			len = slen;
		if (rnd(&t->rng, 8) == 0) {
			/* Unaligned: any length up to the size class, anywhere. */
			len = 1 + rnd(&t->rng, len);
			in = rnd(&t->rng, slen - len + 1);
		} else {
			in = rnd(&t->rng, (slen - len) / IO_MIN + 1) * IO_MIN;
		}
		off = soff + in;
		if (op == OP_WRITE) {
			fill(t->buf, len, g->seed ^ ((uint64_t)t->id << 48) ^ t->nops);
			if (!pace(g, len))
				break;
		}
		ph = atomic_load(&g->phase);
		ps = atomic_load(&g->mark);
		t0 = now_ns();
		switch (op) {
		case OP_WRITE:
			bad = bc_disk_pwrite(g->disk, t->buf, len, off) != (ssize_t)len;
			break;
		case OP_READ:
			bad = bc_disk_pread(g->disk, t->buf, len, off) != (ssize_t)len;
			break;
		case OP_ZEROES:
			bad = bc_disk_write_zeroes(g->disk, off, len,
						   rnd(&t->rng, 2) ? BC_DISK_ZEROES_MAY_UNMAP : 0) < 0;
			break;
		case OP_DISCARD:
			/* A discard may leave zeros or old data: learn which. */
			bad = bc_disk_discard(g->disk, off, len, 0) < 0 ||
			      bc_disk_pread(g->disk, t->buf2, len, off) != (ssize_t)len;
			break;
		case OP_FLUSH:
			bad = bc_disk_flush(g->disk) < 0;
			break;
		}
		lat = now_ns() - t0;
		pe = atomic_load(&g->mark);
		if (bad) {
			static const char *const names[] = {
				"write", "read", "zero write", "discard", "flush",
			};

			guest_fail(g, "guest %s at offset %" PRIu64 " (%" PRIu64
				   " bytes) failed: %s", names[op], off, len,
				   bc_last_error()->message);
			break;
		}
		if (pe != MARK_NONE && ps != MARK_DONE && lat > t->mark_max_ns)
			t->mark_max_ns = lat;
		t->ops[ph]++;
		switch (op) {
		case OP_WRITE:
			mark_touch(g, s, ps, pe);
			memcpy(g->shadow + off, t->buf, len);
			t->writes[ph]++;
			t->wbytes[ph] += len;
			t->hist[ph][lat_bucket(lat)]++;
			if (lat > t->maxns[ph])
				t->maxns[ph] = lat;
			break;
		case OP_READ:
			t->reads++;
			if (memcmp(t->buf, g->shadow + off, len) != 0) {
				uint64_t i = 0;

				while (t->buf[i] == g->shadow[off + i])
					i++;
				guest_fail(g, "guest read at offset %" PRIu64
					   " differs from what it wrote (first "
					   "difference at %" PRIu64 ")", off, off + i);
			}
			break;
		case OP_ZEROES:
			mark_touch(g, s, ps, pe);
			memset(g->shadow + off, 0, len);
			break;
		case OP_DISCARD:
			mark_touch(g, s, ps, pe);
			memcpy(g->shadow + off, t->buf2, len);
			break;
		case OP_FLUSH:
			break;
		}
		t->nops++;
	}
	return NULL;
}

struct guest *guest_new(bc_disk *disk, const struct guest_opts *opts,
			char *err, size_t errlen)
{
	struct guest *g;
	int64_t size = bc_disk_size(disk);
	unsigned int n = opts->threads ? opts->threads : 4;
	uint64_t off;

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
	g->seed = opts->seed ? opts->seed : (unsigned int)now_ns();
	g->stripe = STRIPE_MAX;
	if (g->size / n < g->stripe)
		g->stripe = g->size / n / IO_MIN * IO_MIN;
	g->nstripes = (g->size + g->stripe - 1) / g->stripe;
	atomic_init(&g->phase, GUEST_BEFORE);
	atomic_init(&g->mark, MARK_NONE);
	atomic_init(&g->stop, false);
	atomic_init(&g->failed, false);
	atomic_flag_clear(&g->fail_claimed);
	pthread_mutex_init(&g->pace_lock, NULL);
	g->shadow = malloc(g->size);
	g->mark_crc = calloc(g->nstripes, sizeof(*g->mark_crc));
	g->mark_state = calloc(g->nstripes, 1);
	g->th = calloc(n, sizeof(*g->th));
	if (!g->shadow || !g->mark_crc || !g->mark_state || !g->th) {
		guest_free(g);
		goto nomem;
	}
	for (off = 0; off < g->size; off += VERIFY_CHUNK) {
		size_t len = (size_t)(g->size - off < VERIFY_CHUNK ? g->size - off
								   : VERIFY_CHUNK);

		if (bc_disk_pread(disk, g->shadow + off, len, off) != (ssize_t)len) {
			snprintf(err, errlen, "cannot read the disk at offset %" PRIu64 ": %s",
				 off, bc_last_error()->message);
			guest_free(g);
			return NULL;
		}
	}
	return g;
nomem:
	snprintf(err, errlen, "out of memory for the guest's shadow (%" PRId64 " bytes)",
		 size);
	return NULL;
}

const uint8_t *guest_shadow(const struct guest *g)
{
	return g->shadow;
}

uint64_t guest_size(const struct guest *g)
{
	return g->size;
}

int guest_start(struct guest *g)
{
	unsigned int i;
	int ret;

	g->phase_ns[GUEST_BEFORE] = now_ns();
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
		g->phase_ns[p] = now_ns();
	atomic_store(&g->phase, (int)phase);
}

void guest_mark_begin(struct guest *g)
{
	atomic_store(&g->mark, MARK_IN_PROGRESS);
}

void guest_mark_end(struct guest *g)
{
	atomic_store(&g->mark, MARK_DONE);
}

int guest_stop(struct guest *g)
{
	unsigned int i;

	atomic_store(&g->stop, true);
	for (i = 0; i < g->nstarted; i++)
		pthread_join(g->th[i].tid, NULL);
	if (g->nstarted && !g->phase_ns[GUEST_NPHASES])
		g->phase_ns[GUEST_NPHASES] = now_ns();
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

uint64_t guest_total_writes(const struct guest *g)
{
	uint64_t n = 0;
	unsigned int i, p;

	for (i = 0; i < g->nthreads; i++)
		for (p = 0; p < GUEST_NPHASES; p++)
			n += g->th[i].writes[p];
	return n;
}

uint64_t guest_total_reads(const struct guest *g)
{
	uint64_t n = 0;
	unsigned int i;

	for (i = 0; i < g->nthreads; i++)
		n += g->th[i].reads;
	return n;
}

double guest_mark_max_ms(const struct guest *g)
{
	uint64_t m = 0;
	unsigned int i;

	for (i = 0; i < g->nthreads; i++)
		if (g->th[i].mark_max_ns > m)
			m = g->th[i].mark_max_ns;
	return (double)m / 1e6;
}

int guest_verify(const struct guest *g, bc_disk *disk, char *msg, size_t len)
{
	uint8_t *buf = malloc(VERIFY_CHUNK);
	uint64_t off;
	int ret = 0;

	if (!buf) {
		snprintf(msg, len, "out of memory");
		return -1;
	}
	if (bc_disk_size(disk) != (int64_t)g->size) {
		snprintf(msg, len, "size %" PRId64 ", the guest's disk has %" PRIu64,
			 bc_disk_size(disk), g->size);
		free(buf);
		return 1;
	}
	for (off = 0; off < g->size && !ret; off += VERIFY_CHUNK) {
		size_t n = (size_t)(g->size - off < VERIFY_CHUNK ? g->size - off
								 : VERIFY_CHUNK);
		size_t i = 0;

		if (bc_disk_pread(disk, buf, n, off) != (ssize_t)n) {
			snprintf(msg, len, "read at offset %" PRIu64 " failed: %s", off,
				 bc_last_error()->message);
			ret = -1;
		} else if (memcmp(buf, g->shadow + off, n) != 0) {
			while (buf[i] == g->shadow[off + i])
				i++;
			snprintf(msg, len, "differs from what the guest wrote at offset %"
				 PRIu64, off + i);
			ret = 1;
		}
	}
	free(buf);
	return ret;
}

int guest_verify_marked(const struct guest *g, bc_disk *disk,
			uint64_t *skipped, char *msg, size_t len)
{
	uint8_t *buf = malloc(g->stripe);
	uint64_t s;
	int ret = 0;

	*skipped = 0;
	if (!buf) {
		snprintf(msg, len, "out of memory");
		return -1;
	}
	if (bc_disk_size(disk) != (int64_t)g->size) {
		snprintf(msg, len, "size %" PRId64 ", the guest's disk has %" PRIu64,
			 bc_disk_size(disk), g->size);
		free(buf);
		return 1;
	}
	for (s = 0; s < g->nstripes && !ret; s++) {
		uint64_t off = s * g->stripe;
		size_t n = (size_t)(g->size - off < g->stripe ? g->size - off
							     : g->stripe);
		uint32_t want;

		if (g->mark_state[s] == MARK_UNCERTAIN) {
			(*skipped)++;
			continue;
		}
		want = g->mark_state[s] == MARK_SAVED
			       ? g->mark_crc[s]
			       : (uint32_t)crc32(0L, g->shadow + off, (uInt)n);
		if (bc_disk_pread(disk, buf, n, off) != (ssize_t)n) {
			snprintf(msg, len, "read at offset %" PRIu64 " failed: %s", off,
				 bc_last_error()->message);
			ret = -1;
		} else if ((uint32_t)crc32(0L, buf, (uInt)n) != want) {
			snprintf(msg, len, "differs from the content at the switch in %"
				 PRIu64 "..%" PRIu64, off, off + n);
			ret = 1;
		}
	}
	free(buf);
	return ret;
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
	free(g->shadow);
	free(g->mark_crc);
	free(g->mark_state);
	free(g);
}

/* --- the live run ------------------------------------------------------ */

static volatile sig_atomic_t live_stop_requested;

static void live_on_signal(int sig)
{
	(void)sig;
	live_stop_requested = 1;
}

struct live_events {
	bc_disk *disk;
	uint64_t t0;
	uint64_t mirroring_ns; /* 0: not yet */
	uint64_t copied_at_ready; /* bytes_copied when MIRRORING came */
	int status;            /* final status, -1 none */
	bc_error err;
};

static void live_on_event(bc_engine *eng, bc_disk *disk, const char *path,
			  int type, int status, void *opaque)
{
	struct live_events *ev = opaque;

	(void)eng;
	(void)path;
	(void)type;
	if (disk != ev->disk)
		return;
	if (status == BC_BLOCK_JOB_MIRRORING) {
		bc_block_job_stats st;

		if (!ev->mirroring_ns) {
			ev->mirroring_ns = now_ns() - ev->t0;
			/* The copy rate is that of the bulk phase: sample it now. */
			if (bc_get_block_job_stats(disk, &st, 0) == 1)
				ev->copied_at_ready = st.bytes_copied;
		}
		return;
	}
	ev->status = status;
	if (status == BC_BLOCK_JOB_FAILED)
		ev->err = *bc_last_error();
}

/* Waits up to @ms for events and delivers them. */
static void live_poll(bc_engine *eng, int ms)
{
	struct pollfd pfd = { .fd = bc_engine_event_fd(eng), .events = POLLIN };

	(void)poll(&pfd, 1, ms);
	(void)bc_engine_dispatch(eng, 0);
}

/* Sleeps @s seconds while delivering events; false when interrupted. */
static bool live_sleep(bc_engine *eng, double s)
{
	uint64_t end = now_ns() + (uint64_t)(s * 1e9);

	while (now_ns() < end) {
		if (live_stop_requested)
			return false;
		live_poll(eng, 20);
	}
	return true;
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

int live_parse_mode(const char *s)
{
	if (!strcmp(s, "background"))
		return LIVE_BACKGROUND;
	if (!strcmp(s, "write-blocking"))
		return LIVE_WRITE_BLOCKING;
	if (!strcmp(s, "auto"))
		return LIVE_AUTO;
	return -1;
}

const char *live_mode_name(enum live_mode mode)
{
	switch (mode) {
	case LIVE_BACKGROUND:
		return "background";
	case LIVE_WRITE_BLOCKING:
		return "write-blocking";
	case LIVE_AUTO:
		return "auto";
	}
	return "?";
}

/* Records the run's first error in res->error. */
static void live_error(struct live_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void live_error(struct live_result *res, const char *fmt, ...)
{
	va_list ap;

	if (res->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
}

/* Appends to res->checks. */
static void live_note(struct live_result *res, const char *what)
{
	size_t n = strlen(res->checks);

	snprintf(res->checks + n, sizeof(res->checks) - n, "%s%s",
		 n ? "; " : "", what);
}

/*
 * Reopens @path read-only and compares it with the guest's shadow, or
 * with the content at the switch when @marked. Returns 0 when equal.
 */
static int live_check_image(bc_engine *eng, struct guest *g, const char *path,
			    const char *fmt, bool marked, struct live_result *res)
{
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	bc_disk *d = bc_disk_open(eng, path, fmt, BC_DISK_READONLY);
	int r;

	if (!d) {
		live_error(res, "%s: cannot reopen: %s", path, bc_last_error()->message);
		return -1;
	}
	if (marked)
		r = guest_verify_marked(g, d, &res->skipped_stripes, msg, sizeof(msg));
	else
		r = guest_verify(g, d, msg, sizeof(msg));
	(void)bc_disk_close(d);
	if (r) {
		live_error(res, "%s: %s", path, msg);
		return -1;
	}
	return 0;
}

/* How the job was ended by the run (what the marks refer to). */
enum live_switch { SWITCH_NONE, SWITCH_PIVOT, SWITCH_ABORT };

/*
 * Checks the guest's disk (then closes it) and the images reopened: the
 * one the guest ended on must hold exactly the shadow, the other one
 * (if the run switched) the content at the switch. Returns true when
 * every check passed.
 */
static bool live_checks(bc_engine *eng, struct guest *g, bc_disk *disk,
			const struct live_opts *o, enum live_switch sw,
			struct live_result *res)
{
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	const char *cur = bc_disk_path(disk);
	bool ok = true;

	if (guest_verify(g, disk, msg, sizeof(msg))) {
		live_error(res, "%s: %s", cur, msg);
		ok = false;
	} else {
		live_note(res, "the guest's disk reads back as it wrote");
	}
	if (bc_disk_close(disk) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		return false;
	}
	if (sw == SWITCH_PIVOT) {
		if (live_check_image(eng, g, o->dst, o->dst_format, false, res) < 0)
			return false;
		live_note(res, "the copy, reopened, holds exactly what the guest wrote");
		if (live_check_image(eng, g, o->src, NULL, true, res) < 0)
			return false;
		live_note(res, "the source kept its content from the pivot on");
		return ok;
	}
	if (live_check_image(eng, g, o->src, NULL, false, res) < 0)
		return false;
	live_note(res, "the source, reopened, holds exactly what the guest wrote");
	if (sw == SWITCH_ABORT) {
		if (live_check_image(eng, g, o->dst, o->dst_format, true, res) < 0)
			return false;
		live_note(res, "the copy holds the content at the abort");
	}
	return ok;
}

int live_run(bc_engine *eng, const struct live_opts *o,
	     int (*init)(struct guest *g, void *arg, char *err, size_t len),
	     void *init_arg, struct live_result *res)
{
	bc_block_copy_params params = { .bandwidth = o->bandwidth };
	/*
	 * The engine cannot forget a callback: its context outlives the run
	 * (one run per process at a time), and is detached from the disk
	 * at the end so that a later dispatch ignores it.
	 */
	static struct live_events ev;
	unsigned int flags = o->copy_flags, aflags;
	struct guest *g = NULL;
	struct sigaction sa;
	bc_disk *disk;
	uint64_t t_job, t_end = 0;
	bool ended = false, job_started = false;
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	enum live_switch sw = SWITCH_NONE;
	int ret = -1;

	memset(res, 0, sizeof(*res));
	memset(&ev, 0, sizeof(ev));
	ev.status = -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = live_on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);

	if (o->mode == LIVE_WRITE_BLOCKING)
		flags |= BC_BLOCK_COPY_SYNCHRONOUS_WRITES;
	else if (o->mode == LIVE_AUTO)
		flags |= BC_BLOCK_COPY_AUTO_CONVERGE;

	disk = bc_disk_open(eng, o->src, NULL, o->direct ? BC_DISK_DIRECT : 0);
	if (!disk) {
		live_error(res, "%s", bc_last_error()->message);
		return -1;
	}
	g = guest_new(disk, &o->guest, msg, sizeof(msg));
	if (!g) {
		live_error(res, "%s: %s", o->src, msg);
		goto out_disk;
	}
	res->size = guest_size(g);
	if (init && init(g, init_arg, res->error, sizeof(res->error)) < 0)
		goto out_guest;
	ev.disk = disk;
	if (bc_engine_event_register(eng, live_on_event, &ev) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		goto out_guest;
	}
	if (guest_start(g) < 0) {
		live_error(res, "cannot start the guest threads");
		goto out_guest;
	}
	if (!live_sleep(eng, o->before_s))
		goto interrupted;

	guest_set_phase(g, GUEST_DURING);
	t_job = now_ns();
	ev.t0 = t_job;
	if (bc_block_copy(disk, o->dst, &params, flags) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		goto out_stop;
	}
	job_started = true;
	for (;;) {
		double t = secs(now_ns() - t_job);

		live_poll(eng, 20);
		if (live_stop_requested)
			goto interrupted;
		if (ev.status >= 0) {
			live_error(res, "the job ended by itself (%s): %s",
				 ev.status == BC_BLOCK_JOB_FAILED ? "failed" : "status",
				 ev.err.message[0] ? ev.err.message : "no message");
			ended = true;
			goto out_stop;
		}
		if (guest_failure(g)) {
			live_error(res, "%s", guest_failure(g));
			goto out_abort;
		}
		if (ev.mirroring_ns && t >= o->duration_s &&
		    t - secs(ev.mirroring_ns) >= o->settle_s)
			break;
		if (!ev.mirroring_ns && t >= o->timeout_s) {
			snprintf(res->error, sizeof(res->error),
				 "no MIRRORING within %.0f s: the copy did not converge",
				 o->timeout_s);
			goto out_abort;
		}
	}
	res->converged = true;

	aflags = o->pivot ? BC_BLOCK_JOB_ABORT_PIVOT : 0;
	if (o->pivot && o->verify)
		aflags |= BC_BLOCK_JOB_ABORT_VERIFY;
	guest_mark_begin(g);
	if (bc_block_job_abort(disk, aflags) < 0) {
		live_error(res, "%s refused: %s",
			 o->pivot ? "pivot" : "abort", bc_last_error()->message);
		goto out_abort;
	}
	guest_mark_end(g);
	sw = o->pivot ? SWITCH_PIVOT : SWITCH_ABORT;
	res->switched = true;
	t_end = now_ns();
	while (ev.status < 0 && now_ns() - t_end < 10000000000ull)
		live_poll(eng, 20);
	ended = true;
	if (ev.status != (o->pivot ? BC_BLOCK_JOB_COMPLETED : BC_BLOCK_JOB_CANCELED)) {
		live_error(res, "%s: final event %d, want %s",
			 o->dst, ev.status, o->pivot ? "COMPLETED" : "CANCELED");
		goto out_stop;
	}
	guest_set_phase(g, GUEST_AFTER);
	if (!live_sleep(eng, o->after_s))
		goto interrupted;
	goto out_stop;

interrupted:
	res->interrupted = true;
	live_error(res, "interrupted");
out_abort:
	if (job_started && !ended) {
		(void)bc_block_job_abort(disk, 0);
		t_end = now_ns();
		while (ev.status < 0 && now_ns() - t_end < 10000000000ull)
			live_poll(eng, 20);
		ended = true;
	}
out_stop:
	(void)guest_stop(g);
	if (!t_end)
		t_end = now_ns();
	if (job_started) {
		res->job_s = secs(t_end - t_job);
		res->have_stats = bc_get_block_job_stats(disk, &res->stats, 0) == 1;
		res->copied_at_ready = ev.copied_at_ready;
	}
	for (int p = 0; p < GUEST_NPHASES; p++)
		guest_phase_stats(g, (enum guest_phase)p, &res->phase[p]);
	res->writes = guest_total_writes(g);
	res->reads = guest_total_reads(g);
	res->mark_max_ms = guest_mark_max_ms(g);
	if (guest_failure(g)) {
		live_error(res, "%s", guest_failure(g));
		goto out_guest;
	}
	if (job_started && !ended)
		goto out_guest; /* the job could not be ended: nothing to check */

	/*
	 * The checks run whenever the job ended, a failed convergence
	 * included (the source must still hold what the guest wrote); the
	 * first error recorded stays the one reported.
	 */
	res->verified = live_checks(eng, g, disk, o, sw, res);
	disk = NULL;
	ret = res->converged && res->verified && !res->error[0] ? 0 : -1;
out_guest:
	guest_free(g);
	ev.disk = NULL;
out_disk:
	if (disk)
		(void)bc_disk_close(disk);
	return ret;
}

static void json_num_or_null(FILE *f, const char *key, bool have, double v,
			     int prec)
{
	fprintf(f, "\"%s\": ", key);
	if (have)
		fprintf(f, "%.*f", prec, v);
	else
		fputs("null", f);
}

/*
 * Copy rate: data copied over the bulk phase (start to MIRRORING), or
 * over the whole job when it never got there; MiB/s.
 */
static double copy_mib_s(const struct live_result *res)
{
	if (!res->have_stats)
		return 0;
	if (res->stats.mirroring_ns)
		return (double)res->copied_at_ready / secs(res->stats.mirroring_ns) /
		       (1024.0 * 1024.0);
	return res->job_s > 0 ? (double)res->stats.bytes_copied / res->job_s /
					(1024.0 * 1024.0)
			      : 0;
}

void live_print_json(FILE *f, const struct live_opts *o,
		     const struct live_result *res, const char *extra)
{
	const bc_block_job_stats *st = &res->stats;
	const struct guest_phase_stats *d = &res->phase[GUEST_DURING];

	fputc('{', f);
	if (extra)
		fputs(extra, f);
	fprintf(f, "\"converged\": %s, \"mode\": \"%s\", \"final_mode\": ",
		res->converged ? "true" : "false", live_mode_name(o->mode));
	if (res->have_stats)
		fprintf(f, "\"%s\", ", st->mode == BC_BLOCK_JOB_MODE_WRITE_BLOCKING
					     ? "write-blocking" : "background");
	else
		fputs("null, ", f);
	if (res->switched)
		fprintf(f, "\"ended\": \"%s\", ", o->pivot ? "pivot" : "abort");
	else
		fputs("\"ended\": null, ", f);
	json_num_or_null(f, "mirroring_seconds", res->have_stats && st->mirroring_ns,
			 secs(st->mirroring_ns), 3);
	fputs(", ", f);
	json_num_or_null(f, "mode_switch_seconds",
			 res->have_stats && st->mode_switch_ns,
			 secs(st->mode_switch_ns), 3);
	fprintf(f, ", \"pivot_stall_ms\": %.3f, \"copy_bytes\": %" PRIu64
		", \"copy_zeroed_bytes\": %" PRIu64 ", \"copy_mib_s\": %.1f, "
		"\"copy_bytes_to_mirroring\": %" PRIu64 ", \"job_seconds\": %.3f, ",
		res->have_stats ? (double)st->pivot_stall_ns / 1e6 : 0.0,
		res->have_stats ? st->bytes_copied : 0,
		res->have_stats ? st->bytes_zeroed : 0, copy_mib_s(res),
		res->copied_at_ready, res->job_s);
	fprintf(f, "\"guest\": {\"threads\": %u, ", o->guest.threads ? o->guest.threads : 4);
	json_num_or_null(f, "rate_mib_s", o->guest.rate != 0,
			 (double)o->guest.rate / (1024.0 * 1024.0), 1);
	fprintf(f, ", \"before_mib_s\": %.1f, \"during_mib_s\": %.1f, "
		"\"after_mib_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
		"\"max_ms\": %.3f, \"writes\": %" PRIu64 ", \"reads_verified\": %"
		PRIu64 ", \"switch_max_ms\": %.3f}, ",
		res->phase[GUEST_BEFORE].mib_s, d->mib_s,
		res->phase[GUEST_AFTER].mib_s, d->p50_ms, d->p99_ms, d->max_ms,
		res->writes, res->reads, res->mark_max_ms);
	fprintf(f, "\"verified\": %s, \"error\": ", res->verified ? "true" : "false");
	if (res->error[0]) {
		const char *p;

		fputc('"', f);
		for (p = res->error; *p; p++) {
			if (*p == '"' || *p == '\\')
				fprintf(f, "\\%c", *p);
			else if ((unsigned char)*p < 0x20)
				fprintf(f, "\\u%04x", (unsigned int)(unsigned char)*p);
			else
				fputc(*p, f);
		}
		fputc('"', f);
	} else {
		fputs("null", f);
	}
	fputs("}\n", f);
}

static void mib(char *buf, size_t len, uint64_t bytes)
{
	double m = (double)bytes / (1024.0 * 1024.0);

	if (m >= 10 || m == 0)
		snprintf(buf, len, "%.0f MiB", m);
	else
		snprintf(buf, len, "%.1f MiB", m);
}

void live_print_text(FILE *f, const struct live_opts *o,
		     const struct live_result *res)
{
	const bc_block_job_stats *st = &res->stats;
	const struct guest_phase_stats *b = &res->phase[GUEST_BEFORE],
				       *d = &res->phase[GUEST_DURING],
				       *a = &res->phase[GUEST_AFTER];
	char c1[32], c2[32];

	fprintf(f, "job:    %s copy to %s, mode %s\n",
		o->copy_flags & BC_BLOCK_COPY_SHALLOW ? "shallow" : "full", o->dst,
		o->mode == LIVE_AUTO ? "auto-converge"
				     : live_mode_name(o->mode));
	if (res->have_stats) {
		mib(c1, sizeof(c1), st->bytes_copied);
		mib(c2, sizeof(c2), st->bytes_zeroed);
		if (st->mirroring_ns) {
			char c3[32];

			mib(c3, sizeof(c3), res->copied_at_ready);
			fprintf(f, "        MIRRORING after %.2f s: %s copied by then, %.0f MiB/s; %s in all (%s as zeroes)\n",
				secs(st->mirroring_ns), c3, copy_mib_s(res), c1, c2);
		}
		else
			fprintf(f, "        no MIRRORING in %.1f s: %s copied (%s as zeroes)\n",
				res->job_s, c1, c2);
		if (o->mode == LIVE_AUTO && st->mode_switch_ns)
			fprintf(f, "        auto-converge: switched to write-blocking after %.2f s\n",
				secs(st->mode_switch_ns));
		else if (o->mode == LIVE_AUTO)
			fprintf(f, "        auto-converge: stayed in background mode (converged without switching)\n");
		if (res->switched)
			fprintf(f, "        %s under load: guest held %.2f ms%s; longest guest request across it %.2f ms\n",
				o->pivot ? "pivot" : "abort",
				(double)st->pivot_stall_ns / 1e6,
				!o->pivot ? "" : o->verify ? " (pivot stall, including the comparison of source and copy)" : " (pivot stall)",
				res->mark_max_ms);
	}
	fprintf(f, "guest:  %u threads, ", o->guest.threads ? o->guest.threads : 4);
	if (o->guest.rate)
		fprintf(f, "paced at %.0f MiB/s\n", (double)o->guest.rate / (1024.0 * 1024.0));
	else
		fprintf(f, "unpaced\n");
	fprintf(f, "        writes before %.1f MiB/s | during %.1f MiB/s (latency p50 %.2f ms, p99 %.2f ms, max %.1f ms) | after %.1f MiB/s\n",
		b->mib_s, d->mib_s, d->p50_ms, d->p99_ms, d->max_ms, a->mib_s);
	fprintf(f, "        %" PRIu64 " writes, %" PRIu64 " reads verified against the shadow\n",
		res->writes, res->reads);
	if (res->checks[0])
		fprintf(f, "checks: %s\n", res->checks);
	if (res->skipped_stripes)
		fprintf(f, "        (%" PRIu64 " stripes written across the switch skipped)\n",
			res->skipped_stripes);
}
