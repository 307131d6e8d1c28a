/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest's expected disk content as one generation per block (see
 * shadow.h).
 */
#include "shadow.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Reads of the whole disk go in pieces of this size. */
#define VERIFY_CHUNK (1u << 20)

/* shadow.kind: what the block's switch record says. */
enum { KIND_SAME = 0, KIND_SAVED = 1, KIND_UNCERTAIN = 2 };

/* shadow.mark of a SAVED block whose switch record could not be kept. */
#define MARK_UNRECORDED (SHADOW_ZERO | SHADOW_GEN_MASK)

/* The contents an UNCERTAIN block may hold. */
struct candidates {
	uint32_t n;
	bool overflow; /* more than SHADOW_CANDIDATES_MAX: not checkable */
	uint32_t state[SHADOW_CANDIDATES_MAX];
};

struct shadow {
	uint64_t size;
	uint64_t nblocks;
	uint64_t seed;
	shadow_initial_fn initial; /* NULL: generation 0 is initial_crc */
	void *initial_arg;
	uint32_t *state;       /* per block; written by its owning thread */
	uint32_t *initial_crc; /* per block, without @initial */
	uint8_t *kind;         /* KIND_* per block */
	uint32_t *mark;        /* SAVED: state at the switch; UNCERTAIN: index */
	pthread_mutex_t lock;  /* protects cands, ncands */
	struct candidates *cands;
	uint32_t ncands, cands_cap;
};

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t block_len(const struct shadow *s, uint64_t b)
{
	uint64_t off = b * SHADOW_BLOCK;

	return (size_t)(s->size - off < SHADOW_BLOCK ? s->size - off
						     : SHADOW_BLOCK);
}

uint64_t shadow_footprint(uint64_t size, bool hashed)
{
	uint64_t nb = (size + SHADOW_BLOCK - 1) / SHADOW_BLOCK;

	return nb * (sizeof(uint32_t) * 2 + 1 + (hashed ? sizeof(uint32_t) : 0));
}

struct shadow *shadow_new(uint64_t size, uint64_t seed,
			  shadow_initial_fn initial, void *arg)
{
	struct shadow *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->size = size;
	s->nblocks = (size + SHADOW_BLOCK - 1) / SHADOW_BLOCK;
	s->seed = seed;
	s->initial = initial;
	s->initial_arg = arg;
	pthread_mutex_init(&s->lock, NULL);
	s->state = calloc(s->nblocks ? s->nblocks : 1, sizeof(*s->state));
	s->kind = calloc(s->nblocks ? s->nblocks : 1, 1);
	s->mark = calloc(s->nblocks ? s->nblocks : 1, sizeof(*s->mark));
	if (!initial)
		s->initial_crc = calloc(s->nblocks ? s->nblocks : 1,
					sizeof(*s->initial_crc));
	if (!s->state || !s->kind || !s->mark || (!initial && !s->initial_crc)) {
		shadow_free(s);
		return NULL;
	}
	return s;
}

void shadow_free(struct shadow *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s->state);
	free(s->initial_crc);
	free(s->kind);
	free(s->mark);
	free(s->cands);
	free(s);
}

uint64_t shadow_size(const struct shadow *s)
{
	return s->size;
}

uint32_t shadow_state(const struct shadow *s, uint64_t b)
{
	return s->state[b];
}

uint32_t shadow_next_gen(const struct shadow *s, uint64_t b)
{
	return (s->state[b] & SHADOW_GEN_MASK) + 1;
}

int shadow_hash_initial(struct shadow *s, bc_disk *disk, char *err, size_t len)
{
	uint8_t *buf = malloc(VERIFY_CHUNK);
	uint64_t off, b;

	if (!buf) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	for (off = 0; off < s->size; off += VERIFY_CHUNK) {
		size_t n = (size_t)(s->size - off < VERIFY_CHUNK ? s->size - off
								 : VERIFY_CHUNK);

		if (bc_disk_pread(disk, buf, n, off) != (ssize_t)n) {
			snprintf(err, len, "cannot read the disk at offset %" PRIu64 ": %s",
				 off, bc_last_error()->message);
			free(buf);
			return -1;
		}
		for (b = shadow_block_of(off); b * SHADOW_BLOCK < off + n; b++)
			s->initial_crc[b] = (uint32_t)crc32(
				0L, buf + (b * SHADOW_BLOCK - off),
				(uInt)block_len(s, b));
	}
	free(buf);
	return 0;
}

bool shadow_fill(const struct shadow *s, uint64_t b, uint32_t state,
		 uint64_t off, size_t len, uint8_t *buf)
{
	uint64_t pos = off - b * SHADOW_BLOCK, end = pos + len, z;

	if (state & SHADOW_ZERO) {
		memset(buf, 0, len);
		return true;
	}
	if (state == 0) {
		if (!s->initial)
			return false;
		s->initial(s->initial_arg, off, buf, len);
		return true;
	}
	/*
	 * One splitmix stream per (seed, block, generation): word k of the
	 * block is mix(z + (k + 1) * golden), so any range is made directly.
	 */
	z = mix(s->seed ^ mix(b * 0x9e3779b97f4a7c15ull + state));
	while (pos < end) {
		uint64_t k = pos / 8, v = mix(z + (k + 1) * 0x9e3779b97f4a7c15ull);
		size_t skip = (size_t)(pos % 8), n = 8 - skip;

		if (n > end - pos)
			n = (size_t)(end - pos);
		memcpy(buf, (uint8_t *)&v + skip, n);
		buf += n;
		pos += n;
	}
	return true;
}

/* Whether @data (all of block @b) holds @state. */
static bool block_holds(const struct shadow *s, uint64_t b, uint32_t state,
			const uint8_t *data)
{
	uint8_t want[SHADOW_BLOCK];
	size_t n = block_len(s, b);

	if (state == 0 && !s->initial)
		return (uint32_t)crc32(0L, data, (uInt)n) == s->initial_crc[b];
	shadow_fill(s, b, state, b * SHADOW_BLOCK, n, want);
	return !memcmp(want, data, n);
}

bool shadow_can_check(const struct shadow *s, uint64_t off, size_t len)
{
	uint64_t b, end = off + len;

	if (s->initial)
		return true;
	for (b = shadow_block_of(off); b * SHADOW_BLOCK < end; b++) {
		uint64_t bs = b * SHADOW_BLOCK;

		if (s->state[b] == 0 && (off > bs || end < bs + block_len(s, b)))
			return false;
	}
	return true;
}

uint64_t shadow_check(const struct shadow *s, uint64_t off, size_t len,
		      const uint8_t *data)
{
	uint64_t b, end = off + len;
	uint8_t want[SHADOW_BLOCK];

	for (b = shadow_block_of(off); b * SHADOW_BLOCK < end; b++) {
		uint64_t bs = b * SHADOW_BLOCK, lo = off > bs ? off : bs;
		uint64_t be = bs + block_len(s, b), hi = end < be ? end : be;
		size_t i;

		if (s->state[b] == 0 && !s->initial) {
			/* Only whole blocks get here (shadow_can_check). */
			if (!block_holds(s, b, 0, data + (lo - off)))
				return lo + 1;
			continue;
		}
		shadow_fill(s, b, s->state[b], lo, (size_t)(hi - lo), want);
		if (!memcmp(want, data + (lo - off), (size_t)(hi - lo)))
			continue;
		for (i = 0; want[i] == data[lo - off + i]; i++)
			;
		return lo + i + 1;
	}
	return 0;
}

/* Adds @state to block @b's candidates (lock held). */
static void add_candidate(struct shadow *s, uint64_t b, uint32_t state)
{
	struct candidates *c = &s->cands[s->mark[b]];
	uint32_t i;

	for (i = 0; i < c->n; i++)
		if (c->state[i] == state)
			return;
	if (c->n == SHADOW_CANDIDATES_MAX)
		c->overflow = true;
	else
		c->state[c->n++] = state;
}

/* Notes that @state is a content block @b may hold at the switch. */
static void note_switch(struct shadow *s, uint64_t b, uint32_t state, int ps,
			int pe)
{
	if (ps == SHADOW_MARK_DONE) {
		if (s->kind[b] == KIND_SAME) {
			s->mark[b] = s->state[b];
			s->kind[b] = KIND_SAVED;
		}
		return;
	}
	if (pe == SHADOW_MARK_NONE)
		return; /* ended before the switch began */
	pthread_mutex_lock(&s->lock);
	if (s->kind[b] == KIND_SAME) {
		if (s->ncands == s->cands_cap) {
			uint32_t cap = s->cands_cap ? s->cands_cap * 2 : 256;
			struct candidates *n = reallocarray(s->cands, cap, sizeof(*n));

			if (!n) {
				/* Cannot record it: counted unverifiable. */
				s->kind[b] = KIND_SAVED;
				s->mark[b] = MARK_UNRECORDED;
				pthread_mutex_unlock(&s->lock);
				return;
			}
			s->cands = n;
			s->cands_cap = cap;
		}
		memset(&s->cands[s->ncands], 0, sizeof(s->cands[0]));
		s->mark[b] = s->ncands++;
		s->kind[b] = KIND_UNCERTAIN;
		add_candidate(s, b, s->state[b]);
	}
	if (s->kind[b] == KIND_UNCERTAIN)
		add_candidate(s, b, state);
	pthread_mutex_unlock(&s->lock);
}

void shadow_set(struct shadow *s, uint64_t b, uint32_t state, int ps, int pe)
{
	note_switch(s, b, state, ps, pe);
	s->state[b] = state;
}

void shadow_may_hold(struct shadow *s, uint64_t b, uint32_t state, int ps,
		     int pe)
{
	if (ps != SHADOW_MARK_DONE)
		note_switch(s, b, state, ps, pe);
}

/*
 * Whether each byte of @data (block @b) equals that byte of one of the
 * candidates. A candidate known only by its CRC is matched whole.
 * Returns 1 matched, 0 not, -1 undecidable (a mix that involves a
 * CRC-only content).
 */
static int holds_candidates(const struct shadow *s, uint64_t b,
			    const struct candidates *c, const uint8_t *data)
{
	uint8_t want[SHADOW_CANDIDATES_MAX][SHADOW_BLOCK / 16];
	size_t n = block_len(s, b), i, part;
	bool crc_only = false;
	uint32_t k;

	for (k = 0; k < c->n; k++) {
		if (block_holds(s, b, c->state[k], data))
			return 1;
		if (c->state[k] == 0 && !s->initial)
			crc_only = true;
	}
	/* Byte by byte, a sixteenth of the block at a time (stack size). */
	for (part = 0; part < n; part += sizeof(want[0])) {
		size_t pl = n - part < sizeof(want[0]) ? n - part : sizeof(want[0]);

		for (k = 0; k < c->n; k++)
			if (!shadow_fill(s, b, c->state[k],
					 b * SHADOW_BLOCK + part, pl, want[k]))
				memset(want[k], 0, pl); /* CRC-only: see below */
		for (i = 0; i < pl; i++) {
			bool ok = false;

			for (k = 0; k < c->n && !ok; k++)
				ok = (c->state[k] != 0 || s->initial) &&
				     want[k][i] == data[part + i];
			if (!ok)
				return crc_only ? -1 : 0;
		}
	}
	return 1;
}

int shadow_verify(const struct shadow *s, bc_disk *disk, bool at_switch,
		  struct shadow_switch_stats *st, char *msg, size_t len)
{
	uint8_t *buf = malloc(VERIFY_CHUNK);
	uint64_t off, b;
	int ret = 0;

	if (st)
		memset(st, 0, sizeof(*st));
	if (!buf) {
		snprintf(msg, len, "out of memory");
		return -1;
	}
	if (bc_disk_size(disk) != (int64_t)s->size) {
		snprintf(msg, len, "size %" PRId64 ", the guest's disk has %" PRIu64,
			 bc_disk_size(disk), s->size);
		free(buf);
		return 1;
	}
	for (off = 0; off < s->size && !ret; off += VERIFY_CHUNK) {
		size_t n = (size_t)(s->size - off < VERIFY_CHUNK ? s->size - off
								 : VERIFY_CHUNK);

		if (bc_disk_pread(disk, buf, n, off) != (ssize_t)n) {
			snprintf(msg, len, "read at offset %" PRIu64 " failed: %s", off,
				 bc_last_error()->message);
			ret = -1;
			break;
		}
		for (b = shadow_block_of(off); b * SHADOW_BLOCK < off + n && !ret; b++) {
			const uint8_t *data = buf + (b * SHADOW_BLOCK - off);
			uint64_t bs = b * SHADOW_BLOCK;
			uint32_t want = s->state[b];
			int r;

			if (at_switch && s->kind[b] == KIND_UNCERTAIN) {
				const struct candidates *c = &s->cands[s->mark[b]];

				r = c->overflow ? -1 : holds_candidates(s, b, c, data);
				if (r < 0) {
					st->unverifiable++;
				} else if (r == 0) {
					snprintf(msg, len, "differs from the content at the switch in block %"
						 PRIu64 "..%" PRIu64 " (neither before nor after the write in flight)",
						 bs, bs + block_len(s, b));
					ret = 1;
				} else {
					st->uncertain++;
				}
				continue;
			}
			if (at_switch && s->kind[b] == KIND_SAVED) {
				want = s->mark[b];
				st->saved++;
				if (want == MARK_UNRECORDED) {
					st->saved--;
					st->unverifiable++;
					continue;
				}
			}
			if (block_holds(s, b, want, data))
				continue;
			if (at_switch) {
				snprintf(msg, len, "differs from the content at the switch in %"
					 PRIu64 "..%" PRIu64, bs, bs + block_len(s, b));
			} else {
				uint64_t at = shadow_can_check(s, bs, block_len(s, b))
						      ? shadow_check(s, bs, block_len(s, b), data) - 1
						      : bs;

				snprintf(msg, len, "differs from what the guest wrote at offset %"
					 PRIu64, at);
			}
			ret = 1;
		}
	}
	free(buf);
	return ret;
}
