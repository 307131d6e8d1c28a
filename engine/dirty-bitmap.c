/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hierarchical dirty bitmap (the idea of QEMU's util/hbitmap.c, our code).
 *
 * What: one bit per granule of [0, size) tells the copy job which ranges
 * still differ between source and destination. A 1 TiB disk at 64 KiB
 * granularity has 16 Mi granules; walking 2 MiB of bits to find the next
 * dirty one after every request would dominate a mostly-clean mirror, so
 * the bits are summarised in levels.
 *
 * Layout: level 0 holds the granule bits in 64-bit words. Bit i of level
 * k + 1 is set exactly when word i of level k is non-zero. Levels are
 * added until one has a single word (the top); a bitmap of up to 64
 * granules has only level 0. All levels live in one allocation, so the
 * memory is size / granularity / 8 bytes plus about 1/63 of that for the
 * summaries (1 TiB @ 64 KiB: 2 MiB + 32.5 KiB).
 *
 * Invariants (checked by dirty_bitmap_is_consistent()):
 *  - summary: level k + 1 bit i == (level k word i != 0), for every k;
 *  - padding: bits at or beyond a level's bit count are zero, so searches
 *    need no end checks inside a word;
 *  - count == number of set bits in level 0.
 *
 * Complexity, with L = levels (4 for 1 TiB @ 64 KiB, at most 10):
 *  - next dirty from a position: look at the word holding it; if empty,
 *    climb one level and look right of the word we came from, until a
 *    non-empty word is found or the top is passed; then descend taking the
 *    lowest set bit of each word. At most 2L words are read.
 *  - set / clear of a range: O(words touched) at level 0, then the range
 *    shrinks 64-fold per level. Setting stops climbing as soon as no word
 *    went from empty to non-empty (one guest write into an already dirty
 *    word costs one word). Clearing passes up only the words that became
 *    empty: the interior of a cleared range, plus each edge word if it
 *    ended up empty.
 *  - dirty byte count: O(1), a running granule count.
 *  - next clean: a level-0 scan (summaries say nothing about full words);
 *    extents bound it by their maximum length.
 *
 * Locking: none; the owning job's lock serialises every call.
 */
#include "engine/dirty-bitmap.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* ceil(log64(2^54 granules)) + 1: INT64_MAX bytes at 512 B granules. */
#define DIRTY_BITMAP_MAX_LEVELS 10

struct dirty_bitmap {
	uint64_t size;		/* bytes covered */
	uint64_t nbits;		/* granules: size / granularity, rounded up */
	uint64_t count;		/* dirty granules (set bits of level 0) */
	uint32_t granularity;	/* bytes, power of two */
	unsigned int gran_bits; /* log2(granularity) */
	unsigned int nlevels;	/* 1..DIRTY_BITMAP_MAX_LEVELS; the top is one word */
	size_t nwords;		/* words in @words, every level */
	uint64_t level_bits[DIRTY_BITMAP_MAX_LEVELS]; /* valid bits per level */
	uint64_t *level[DIRTY_BITMAP_MAX_LEVELS];     /* into @words; [0] = granules */
	uint64_t *words;		     /* owned: all levels */
};

static uint64_t words_for(uint64_t bits)
{
	uint64_t n = (bits + 63) >> 6;

	return n ? n : 1;
}

/* Mask of bits @first..@last (inclusive, 0..63) of one word. */
static uint64_t word_mask(unsigned int first, unsigned int last)
{
	return (~0ull << first) & (~0ull >> (63 - last));
}

static unsigned int popcount(uint64_t w)
{
	return (unsigned int)__builtin_popcountll(w);
}

static unsigned int ctz(uint64_t w)
{
	return (unsigned int)__builtin_ctzll(w);
}

/* Byte offset of granule @g; the size for @g == nbits (no overflow). */
static uint64_t granule_off(const struct dirty_bitmap *d, uint64_t g)
{
	return g < d->nbits ? g << d->gran_bits : d->size;
}

int dirty_bitmap_new(uint64_t size, uint32_t granularity, struct dirty_bitmap **out)
{
	struct dirty_bitmap *d;
	uint64_t bits, total = 0, words;
	unsigned int i;

	if (!bc_is_pow2(granularity) || granularity < DIRTY_BITMAP_MIN_GRANULARITY ||
	    granularity > DIRTY_BITMAP_MAX_GRANULARITY) {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"invalid bitmap granularity %u: must be a power of two from %u to %u",
			granularity, DIRTY_BITMAP_MIN_GRANULARITY, DIRTY_BITMAP_MAX_GRANULARITY);
		return -EINVAL;
	}
	if (size > INT64_MAX) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "invalid bitmap size %llu: larger than %lld",
			     (unsigned long long)size, (long long)INT64_MAX);
		return -EINVAL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->size = size;
	d->granularity = granularity;
	d->gran_bits = ctz(granularity);
	d->nbits = (size >> d->gran_bits) + ((size & (granularity - 1)) != 0);

	bits = d->nbits;
	do {
		assert(d->nlevels < DIRTY_BITMAP_MAX_LEVELS);
		words = words_for(bits);
		d->level_bits[d->nlevels++] = bits;
		total += words;
		bits = words;
	} while (words > 1);

	if (total > SIZE_MAX / sizeof(uint64_t)) {
		free(d);
		return -ENOMEM;
	}
	d->nwords = (size_t)total;
	d->words = calloc(d->nwords, sizeof(uint64_t));
	if (!d->words) {
		free(d);
		return -ENOMEM;
	}
	total = 0;
	for (i = 0; i < d->nlevels; i++) {
		d->level[i] = d->words + total;
		total += words_for(d->level_bits[i]);
	}
	*out = d;
	return 0;
}

void dirty_bitmap_free(struct dirty_bitmap *d)
{
	if (!d)
		return;
	free(d->words);
	free(d);
}

/* The bits of word @i that lie in bits @first..@last. */
static uint64_t span_mask(uint64_t i, uint64_t first, uint64_t last)
{
	unsigned int lo = i == first >> 6 ? (unsigned int)(first & 63) : 0;
	unsigned int hi = i == last >> 6 ? (unsigned int)(last & 63) : 63;

	return word_mask(lo, hi);
}

/* Sets bits @first..@last of level 0 and the summaries, keeps the count. */
static void set_bits(struct dirty_bitmap *d, uint64_t first, uint64_t last)
{
	unsigned int lv;

	for (lv = 0; lv < d->nlevels; lv++) {
		uint64_t *w = d->level[lv];
		uint64_t i, fw = first >> 6, lw = last >> 6, added = 0;
		bool was_empty = false;

		for (i = fw; i <= lw; i++) {
			uint64_t m = span_mask(i, first, last), old = w[i];

			if (!old)
				was_empty = true;
			if (lv == 0)
				added += popcount(m & ~old);
			w[i] = old | m;
		}
		if (lv == 0)
			d->count += added;
		/* No word went from empty to non-empty: summaries are right. */
		if (!was_empty)
			break;
		first = fw;
		last = lw;
	}
}

/* Clears bits @first..@last of level 0 and the summaries that emptied. */
static void clear_bits(struct dirty_bitmap *d, uint64_t first, uint64_t last)
{
	unsigned int lv;

	for (lv = 0; lv < d->nlevels; lv++) {
		uint64_t *w = d->level[lv];
		uint64_t i, fw = first >> 6, lw = last >> 6, removed = 0;

		for (i = fw; i <= lw; i++) {
			uint64_t m = span_mask(i, first, last), old = w[i];

			if (lv == 0)
				removed += popcount(m & old);
			w[i] = old & ~m;
		}
		if (lv == 0) {
			assert(d->count >= removed);
			d->count -= removed;
		}
		/*
		 * Interior words are now empty; an edge word may still hold
		 * bits outside the range and then keeps its summary bit.
		 */
		if (w[fw])
			fw++;
		if (lw >= fw && w[lw])
			lw--;
		if (fw > lw)
			break;
		first = fw;
		last = lw;
	}
}

void dirty_bitmap_set(struct dirty_bitmap *d, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (!len || off >= d->size)
		return;
	end = len > d->size - off ? d->size : off + len;
	set_bits(d, off >> d->gran_bits, (end - 1) >> d->gran_bits);
}

void dirty_bitmap_clear(struct dirty_bitmap *d, uint64_t off, uint64_t len)
{
	uint64_t end, first, stop;

	if (!len || off >= d->size)
		return;
	end = len > d->size - off ? d->size : off + len;
	/* off <= INT64_MAX, so rounding up cannot overflow. */
	first = (off + d->granularity - 1) >> d->gran_bits;
	stop = end == d->size ? d->nbits : end >> d->gran_bits;
	if (first < stop)
		clear_bits(d, first, stop - 1);
}

void dirty_bitmap_set_all(struct dirty_bitmap *d)
{
	if (d->nbits)
		set_bits(d, 0, d->nbits - 1);
}

void dirty_bitmap_clear_all(struct dirty_bitmap *d)
{
	memset(d->words, 0, d->nwords * sizeof(uint64_t));
	d->count = 0;
}

bool dirty_bitmap_get(const struct dirty_bitmap *d, uint64_t off)
{
	uint64_t g;

	if (off >= d->size)
		return false;
	g = off >> d->gran_bits;
	return (d->level[0][g >> 6] >> (g & 63)) & 1;
}

uint64_t dirty_bitmap_count_bytes(const struct dirty_bitmap *d)
{
	uint64_t last;

	if (!d->count)
		return 0;
	last = d->nbits - 1;
	if (!((d->level[0][last >> 6] >> (last & 63)) & 1))
		return d->count << d->gran_bits;
	/* The last granule holds only size - its offset bytes. */
	return ((d->count - 1) << d->gran_bits) + d->size -
	       granule_off(d, last);
}

/*
 * First set level-0 bit at or after @g, or -1. Climbs while the word in
 * hand is empty to the right of the position, then descends along lowest
 * set bits; each word loaded is added to *@nread.
 */
static int64_t find_set(const struct dirty_bitmap *d, uint64_t g, uint64_t *nread)
{
	unsigned int lv = 0;
	uint64_t i = g, w;

	for (;;) {
		if (i >= d->level_bits[lv])
			return -1;
		w = d->level[lv][i >> 6] & (~0ull << (i & 63));
		(*nread)++;
		if (w)
			break;
		if (lv + 1 == d->nlevels)
			return -1;
		/* Bit i >> 6 of the level above covers this word: go right. */
		i = (i >> 6) + 1;
		lv++;
	}
	i = (i & ~63ull) + ctz(w);
	while (lv > 0) {
		lv--;
		w = d->level[lv][i];
		(*nread)++;
		assert(w); /* the summary invariant */
		i = (i << 6) + ctz(w);
	}
	return (int64_t)i;
}

/* First clear level-0 bit in [@g, @limit), or @limit. */
static uint64_t find_clear(const struct dirty_bitmap *d, uint64_t g, uint64_t limit,
			   uint64_t *nread)
{
	while (g < limit) {
		uint64_t w = ~d->level[0][g >> 6] & (~0ull << (g & 63));

		(*nread)++;
		if (w) {
			g = (g & ~63ull) + ctz(w);
			return BC_MIN(g, limit);
		}
		g = (g | 63) + 1;
	}
	return limit;
}

int64_t dirty_bitmap_next_dirty(const struct dirty_bitmap *d, uint64_t from)
{
	uint64_t nread = 0;
	int64_t g;

	if (from >= d->size)
		return -1;
	g = find_set(d, from >> d->gran_bits, &nread);
	if (g < 0)
		return -1;
	return (int64_t)BC_MAX(from, granule_off(d, (uint64_t)g));
}

int64_t dirty_bitmap_next_clean(const struct dirty_bitmap *d, uint64_t from)
{
	uint64_t nread = 0, g;

	if (from >= d->size)
		return -1;
	g = find_clear(d, from >> d->gran_bits, d->nbits, &nread);
	if (g == d->nbits)
		return -1;
	return (int64_t)BC_MAX(from, granule_off(d, g));
}

bool dirty_bitmap_next_dirty_extent_counted(const struct dirty_bitmap *d, uint64_t from,
				   uint64_t max_len, uint64_t *off,
				   uint64_t *len, uint64_t *words_read)
{
	uint64_t start, limit, limit_g, g_end, end;
	int64_t g;

	if (!max_len || from >= d->size)
		return false;
	g = find_set(d, from >> d->gran_bits, words_read);
	if (g < 0)
		return false;
	start = BC_MAX(from, granule_off(d, (uint64_t)g));
	limit = start + BC_MIN(max_len, d->size - start);
	limit_g =
		(limit >> d->gran_bits) + ((limit & (d->granularity - 1)) != 0);
	g_end = find_clear(d, (uint64_t)g + 1, limit_g, words_read);
	end = BC_MIN(granule_off(d, g_end), limit);
	*off = start;
	*len = end - start;
	return true;
}

bool dirty_bitmap_next_dirty_extent(const struct dirty_bitmap *d, uint64_t from, uint64_t max_len,
			   uint64_t *off, uint64_t *len)
{
	uint64_t nread = 0;

	return dirty_bitmap_next_dirty_extent_counted(d, from, max_len, off, len,
					     &nread);
}

size_t dirty_bitmap_memory_bytes(const struct dirty_bitmap *d)
{
	return sizeof(*d) + d->nwords * sizeof(uint64_t);
}

uint32_t dirty_bitmap_granularity(const struct dirty_bitmap *d)
{
	return d->granularity;
}

uint64_t dirty_bitmap_size(const struct dirty_bitmap *d)
{
	return d->size;
}

unsigned int dirty_bitmap_levels(const struct dirty_bitmap *d)
{
	return d->nlevels;
}

bool dirty_bitmap_is_consistent(const struct dirty_bitmap *d)
{
	uint64_t i, set = 0;
	unsigned int lv;

	for (lv = 0; lv < d->nlevels; lv++) {
		uint64_t bits = d->level_bits[lv], nw = words_for(bits);
		const uint64_t *w = d->level[lv];
		unsigned int tail = (unsigned int)(bits & 63);

		/* Padding beyond the last valid bit is zero. */
		if (bits == 0 ? w[0] != 0 : tail && (w[nw - 1] >> tail) != 0)
			return false;
		for (i = 0; i < nw; i++) {
			bool summary;

			if (lv == 0)
				set += popcount(w[i]);
			if (lv + 1 == d->nlevels)
				continue;
			summary = (d->level[lv + 1][i >> 6] >> (i & 63)) & 1;
			if (summary != (w[i] != 0))
				return false;
		}
	}
	return set == d->count;
}
