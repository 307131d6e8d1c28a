/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for engine/dirty-bitmap.c, the hierarchical dirty bitmap.
 *
 * The main check runs thousands of random operations on the bitmap and
 * on a naive reference (one byte per granule) and compares every answer
 * (QEMU tests/unit/test-hbitmap.c does the same). The seed is printed;
 * DIRTY_BITMAP_TEST_SEED=<n> repeats a run.
 */
#include "tests/check-main.h"
#include "engine/dirty-bitmap.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

static uint64_t seed;

/* Uniform in [0, n); 0 when n is 0. */
static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return n ? bc_splitmix64(s) % n : 0;
}

/* Reference model: one byte per granule, every answer by linear scan. */
struct ref {
	uint64_t size;
	uint64_t gran;
	uint64_t n;
	uint8_t *b;
};

static void ref_init(struct ref *r, uint64_t size, uint64_t gran)
{
	r->size = size;
	r->gran = gran;
	r->n = (size + gran - 1) / gran;
	r->b = calloc(r->n ? r->n : 1, 1);
	ck_assert_ptr_nonnull(r->b);
}

static uint64_t ref_end(const struct ref *r, uint64_t off, uint64_t len)
{
	return len > r->size - off ? r->size : off + len;
}

static void ref_set(struct ref *r, uint64_t off, uint64_t len)
{
	uint64_t end, g;

	if (!len || off >= r->size)
		return;
	end = ref_end(r, off, len);
	for (g = off / r->gran; g * r->gran < end; g++)
		r->b[g] = 1;
}

/* Clears granules lying entirely inside the range (see dirty_bitmap_clear()). */
static void ref_clear(struct ref *r, uint64_t off, uint64_t len)
{
	uint64_t end, g;

	if (!len || off >= r->size)
		return;
	end = ref_end(r, off, len);
	for (g = 0; g < r->n; g++) {
		uint64_t gs = g * r->gran;
		uint64_t ge = gs + r->gran < r->size ? gs + r->gran : r->size;

		if (gs >= off && ge <= end)
			r->b[g] = 0;
	}
}

static bool ref_get(const struct ref *r, uint64_t off)
{
	return off < r->size && r->b[off / r->gran];
}

static int64_t ref_next(const struct ref *r, uint64_t from, uint8_t want)
{
	uint64_t g;

	if (from >= r->size)
		return -1;
	for (g = from / r->gran; g < r->n; g++) {
		if (r->b[g] == want)
			return (int64_t)(g * r->gran > from ? g * r->gran
							    : from);
	}
	return -1;
}

static uint64_t ref_count(const struct ref *r)
{
	uint64_t g, c = 0;

	for (g = 0; g < r->n; g++) {
		uint64_t gs = g * r->gran;
		uint64_t ge = gs + r->gran < r->size ? gs + r->gran : r->size;

		if (r->b[g])
			c += ge - gs;
	}
	return c;
}

static bool ref_extent(const struct ref *r, uint64_t from, uint64_t max_len,
		       uint64_t *off, uint64_t *len)
{
	int64_t s = ref_next(r, from, 1);
	uint64_t start, limit, g, end;

	if (!max_len || s < 0)
		return false;
	start = (uint64_t)s;
	limit = start + (max_len < r->size - start ? max_len : r->size - start);
	for (g = start / r->gran; g < r->n && r->b[g] && g * r->gran < limit;)
		g++;
	end = g < r->n ? g * r->gran : r->size;
	if (end > limit)
		end = limit;
	*off = start;
	*len = end - start;
	return true;
}

/* An offset biased towards the places bugs live: edges of granules,
 * of 64-granule words, of the bitmap, and past its end. */
static uint64_t pick_off(uint64_t *s, const struct ref *r)
{
	uint64_t g = r->gran, span = r->size + 2 * g;

	switch (rnd_below(s, 6)) {
	case 0:
		return rnd_below(s, span);
	case 1:
		return rnd_below(s, r->n + 2) * g;
	case 2: {
		uint64_t w = rnd_below(s, r->n / 64 + 2) * 64 + 1;

		return (w - rnd_below(s, 3)) * g;
	}
	case 3: {
		uint64_t back = rnd_below(s, 3 * g);

		return back > r->size ? 0 : r->size - back;
	}
	case 4:
		return rnd_below(s, r->n + 1) * g + g - 1;
	default:
		return r->size ? rnd_below(s, r->size) : 0;
	}
}

static uint64_t pick_len(uint64_t *s, const struct ref *r)
{
	uint64_t g = r->gran;

	switch (rnd_below(s, 8)) {
	case 0:
		return 0;
	case 1:
		return UINT64_MAX - rnd_below(s, 2);
	case 2:
		return rnd_below(s, 3 * g) + 1;
	case 3:
		return (rnd_below(s, 4) + 1) * g;
	case 4:
		return rnd_below(s, 200 * g) + 1;
	case 5:
		return (rnd_below(s, 150) + 1) * g;
	case 6:
		return rnd_below(s, r->size + 1) + 1;
	default:
		return rnd_below(s, 70 * g) + 1;
	}
}

static void compare_all(const struct dirty_bitmap *d, const struct ref *r,
			const char *what, unsigned int op)
{
	uint64_t g;

	require(dirty_bitmap_is_consistent(d), "%s: inconsistent after op %u", what, op);
	for (g = 0; g < r->n; g++) {
		require(dirty_bitmap_get(d, g * r->gran) == (r->b[g] != 0),
			"%s: granule %" PRIu64 " after op %u", what, g, op);
	}
}

/* Thousands of random operations on one (size, granularity). */
static void run_random(uint64_t size, uint32_t gran, unsigned int nops,
		       uint64_t *s)
{
	struct dirty_bitmap *d;
	struct ref r;
	char what[96];
	unsigned int op;

	snprintf(what, sizeof(what), "size %" PRIu64 " gran %u seed %" PRIu64,
		 size, gran, seed);
	ck_assert_int_eq(dirty_bitmap_new(size, gran, &d), 0);
	ref_init(&r, size, gran);

	for (op = 0; op < nops; op++) {
		uint64_t off = pick_off(s, &r), len = pick_len(s, &r);
		uint64_t o1 = 1, l1 = 2, o2 = 3, l2 = 4;
		bool f1, f2;

		switch (rnd_below(s, 12)) {
		case 0:
		case 1:
			dirty_bitmap_set(d, off, len);
			ref_set(&r, off, len);
			break;
		case 2:
			dirty_bitmap_clear(d, off, len);
			ref_clear(&r, off, len);
			break;
		case 3:
			require(dirty_bitmap_next_dirty(d, off) == ref_next(&r, off, 1),
				"%s op %u next_dirty(%" PRIu64 ")", what, op,
				off);
			break;
		case 4:
			require(dirty_bitmap_next_clean(d, off) == ref_next(&r, off, 0),
				"%s op %u next_clean(%" PRIu64 ")", what, op,
				off);
			break;
		case 5:
		case 6:
			f1 = dirty_bitmap_next_dirty_extent(d, off, len, &o1, &l1);
			f2 = ref_extent(&r, off, len, &o2, &l2);
			require(f1 == f2 && (!f1 || (o1 == o2 && l1 == l2)),
				"%s op %u extent(%" PRIu64 ", %" PRIu64
				"): %d %" PRIu64 "+%" PRIu64 " want %d %" PRIu64
				"+%" PRIu64,
				what, op, off, len, f1, o1, l1, f2, o2, l2);
			break;
		case 7:
			/* The copy loop: take an aligned extent and clear it. */
			f1 = dirty_bitmap_next_dirty_extent(
				d, off & ~(uint64_t)(gran - 1),
				(rnd_below(s, 40) + 1) * gran, &o1, &l1);
			if (f1) {
				require(dirty_bitmap_get(d, o1), "%s op %u", what, op);
				dirty_bitmap_clear(d, o1, l1);
				ref_clear(&r, o1, l1);
				require(!dirty_bitmap_get(d, o1), "%s op %u", what, op);
			}
			break;
		case 8:
			require(dirty_bitmap_get(d, off) == ref_get(&r, off),
				"%s op %u get(%" PRIu64 ")", what, op, off);
			break;
		case 9:
			/* Rare whole-bitmap operations. */
			if (rnd_below(s, 20) == 0) {
				dirty_bitmap_set_all(d);
				ref_set(&r, 0, UINT64_MAX);
			} else if (rnd_below(s, 20) == 0) {
				dirty_bitmap_clear_all(d);
				memset(r.b, 0, r.n);
			}
			break;
		default:
			/* Aligned ranges: the engine's normal case. */
			off &= ~(uint64_t)(gran - 1);
			len = (rnd_below(s, 130) + 1) * gran;
			if (rnd_below(s, 2)) {
				dirty_bitmap_set(d, off, len);
				ref_set(&r, off, len);
			} else {
				dirty_bitmap_clear(d, off, len);
				ref_clear(&r, off, len);
			}
			break;
		}
		require(dirty_bitmap_count_bytes(d) == ref_count(&r),
			"%s op %u count %" PRIu64 " want %" PRIu64, what, op,
			dirty_bitmap_count_bytes(d), ref_count(&r));
		if (op % 128 == 0)
			compare_all(d, &r, what, op);
	}
	compare_all(d, &r, what, op);
	dirty_bitmap_free(d);
	free(r.b);
}

static const uint32_t rand_grans[] = {512, 4096, 65536, 64u << 20};

START_TEST(random_vs_reference)
{
	/* Granules: 0, 1, a word's worth around 64, two levels, three. */
	static const uint64_t ngran[] = {
		0, 1, 2, 63, 64, 65, 127, 4095, 4096, 4097, 64 * 64 * 64 + 3};
	uint32_t gran = rand_grans[_i];
	uint64_t s = seed ^ ((uint64_t)_i * 0x100000001b3ull);
	size_t i;

	for (i = 0; i < sizeof(ngran) / sizeof(ngran[0]); i++) {
		uint64_t fracs[] = {0, 1, gran / 2, gran - 1};
		unsigned int nops = ngran[i] > 10000 ? 1500 : 3000;
		size_t j;

		for (j = 0; j < 4; j++)
			run_random(ngran[i] * gran + fracs[j], gran, nops, &s);
	}
}
END_TEST

START_TEST(new_rejects_bad_granularity)
{
	static const uint32_t bad[] = {0,	 1,	   256,	  511,
				       513,	 3000,	   65537, 128u << 20,
				       1u << 31, 96 * 1024};
	struct dirty_bitmap *d = NULL;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char msg[160];

		bc_error_reset();
		ck_assert_int_eq(dirty_bitmap_new(1 * MiB, bad[i], &d), -EINVAL);
		ck_assert_ptr_null(d);
		ck_assert_int_eq(bc_error_get()->code, ERR_INVALID_ARG);
		snprintf(
			msg, sizeof(msg),
			"invalid bitmap granularity %u: must be a power of two from 512 to 67108864",
			bad[i]);
		ck_assert_str_eq(bc_error_get()->message, msg);
	}
	ck_assert_int_eq(dirty_bitmap_new((uint64_t)INT64_MAX + 1, 65536, &d), -EINVAL);
	ck_assert_str_eq(
		bc_error_get()->message,
		"invalid bitmap size 9223372036854775808: larger than 9223372036854775807");
	ck_assert_ptr_null(d);
}
END_TEST

START_TEST(new_accepts_every_valid_granularity)
{
	uint32_t g;

	for (g = 512; g <= (64u << 20); g <<= 1) {
		struct dirty_bitmap *d;

		ck_assert_int_eq(dirty_bitmap_new(3 * g + 1, g, &d), 0);
		ck_assert_uint_eq(dirty_bitmap_granularity(d), g);
		ck_assert_uint_eq(dirty_bitmap_size(d), 3 * (uint64_t)g + 1);
		ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
		dirty_bitmap_set_all(d);
		ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 3 * (uint64_t)g + 1);
		dirty_bitmap_free(d);
	}
	dirty_bitmap_free(NULL);
}
END_TEST

START_TEST(size_zero_is_always_clean)
{
	struct dirty_bitmap *d;
	uint64_t off = 7, len = 9;

	ck_assert_int_eq(dirty_bitmap_new(0, 4096, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 1);
	dirty_bitmap_set(d, 0, 4096);
	dirty_bitmap_set_all(d);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
	ck_assert(!dirty_bitmap_get(d, 0));
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 0), -1);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, 0), -1);
	ck_assert(!dirty_bitmap_next_dirty_extent(d, 0, UINT64_MAX, &off, &len));
	ck_assert_uint_eq(off, 7);
	ck_assert_uint_eq(len, 9);
	dirty_bitmap_clear_all(d);
	ck_assert(dirty_bitmap_is_consistent(d));
	dirty_bitmap_free(d);
}
END_TEST

/* 10 full granules of 4 KiB and a last one of 100 bytes. */
#define EDGE_SIZE (UINT64_C(10) * 4096 + 100)
#define EDGE_LAST (UINT64_C(10) * 4096)

START_TEST(last_partial_granule)
{
	struct dirty_bitmap *d;
	uint64_t off, len;

	ck_assert_int_eq(dirty_bitmap_new(EDGE_SIZE, 4096, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 1);
	dirty_bitmap_set(d, EDGE_SIZE - 1, 1);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 100);
	ck_assert(dirty_bitmap_get(d, EDGE_LAST));
	ck_assert(dirty_bitmap_get(d, EDGE_SIZE - 1));
	ck_assert(!dirty_bitmap_get(d, EDGE_SIZE));
	ck_assert(!dirty_bitmap_get(d, EDGE_LAST - 1));
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 0), EDGE_LAST);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, EDGE_SIZE - 1), EDGE_SIZE - 1);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, EDGE_SIZE), -1);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, UINT64_MAX), -1);
	ck_assert(dirty_bitmap_next_dirty_extent(d, 0, UINT64_MAX, &off, &len));
	ck_assert_uint_eq(off, EDGE_LAST);
	ck_assert_uint_eq(len, 100);

	/* Partly covered: stays dirty, even when the range reaches the end. */
	dirty_bitmap_clear(d, EDGE_LAST, 50);
	dirty_bitmap_clear(d, EDGE_LAST + 1, 99);
	ck_assert(dirty_bitmap_get(d, EDGE_LAST));
	dirty_bitmap_clear(d, EDGE_LAST, 100);
	ck_assert(!dirty_bitmap_get(d, EDGE_LAST));
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);

	dirty_bitmap_set(d, EDGE_SIZE - 1, 1);
	dirty_bitmap_clear(d, EDGE_LAST, UINT64_MAX);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
	ck_assert(dirty_bitmap_is_consistent(d));
	dirty_bitmap_free(d);
}
END_TEST

START_TEST(zero_length_and_out_of_range)
{
	struct dirty_bitmap *d;

	ck_assert_int_eq(dirty_bitmap_new(EDGE_SIZE, 4096, &d), 0);
	dirty_bitmap_set(d, 0, 0);
	dirty_bitmap_set(d, EDGE_SIZE, 1);
	dirty_bitmap_set(d, UINT64_MAX, UINT64_MAX);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
	dirty_bitmap_set_all(d);
	dirty_bitmap_clear(d, 0, 0);
	dirty_bitmap_clear(d, EDGE_SIZE, 4096);
	dirty_bitmap_clear(d, UINT64_MAX, 1);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), EDGE_SIZE);
	/* off + len overflows: clipped to the size. */
	dirty_bitmap_clear(d, 4096, UINT64_MAX);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 4096);
	dirty_bitmap_set(d, 1, UINT64_MAX);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), EDGE_SIZE);
	dirty_bitmap_free(d);
}
END_TEST

START_TEST(unaligned_clear_keeps_partial_granules)
{
	struct dirty_bitmap *d;

	ck_assert_int_eq(dirty_bitmap_new(EDGE_SIZE, 4096, &d), 0);
	dirty_bitmap_set_all(d);
	/* Touches granules 0 and 1 but covers neither entirely. */
	dirty_bitmap_clear(d, 1, 4096);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), EDGE_SIZE);
	/* Covers granule 1 entirely, 0 and 2 partly. */
	dirty_bitmap_clear(d, 4095, 4096 + 2);
	ck_assert(dirty_bitmap_get(d, 0));
	ck_assert(!dirty_bitmap_get(d, 4096));
	ck_assert(dirty_bitmap_get(d, 8192));
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), EDGE_SIZE - 4096);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, 0), 4096);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, 5000), 5000);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, 8192), -1);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 4096), 8192);
	dirty_bitmap_free(d);
}
END_TEST

START_TEST(full_set_and_clear)
{
	/* 3 levels, a partial last word at every level, a partial granule. */
	uint64_t size = (64 * 64 * 3 + 5) * 512ull + 17;
	struct dirty_bitmap *d;
	uint64_t off, len;

	ck_assert_int_eq(dirty_bitmap_new(size, 512, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 3);
	dirty_bitmap_set_all(d);
	ck_assert(dirty_bitmap_is_consistent(d));
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), size);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, 0), -1);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, size - 1), (int64_t)size - 1);
	ck_assert(dirty_bitmap_next_dirty_extent(d, 0, UINT64_MAX, &off, &len));
	ck_assert_uint_eq(off, 0);
	ck_assert_uint_eq(len, size);
	ck_assert(dirty_bitmap_next_dirty_extent(d, 1000, 5000, &off, &len));
	ck_assert_uint_eq(off, 1000);
	ck_assert_uint_eq(len, 5000);
	ck_assert(!dirty_bitmap_next_dirty_extent(d, 0, 0, &off, &len));

	dirty_bitmap_clear(d, 0, size);
	ck_assert(dirty_bitmap_is_consistent(d));
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 0), -1);
	ck_assert_int_eq(dirty_bitmap_next_clean(d, size - 1), (int64_t)size - 1);

	dirty_bitmap_set(d, 0, size);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), size);
	dirty_bitmap_clear_all(d);
	ck_assert(dirty_bitmap_is_consistent(d));
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 0), -1);
	dirty_bitmap_free(d);
}
END_TEST

START_TEST(for_each_visits_runs_in_order)
{
	static const uint64_t want[][2] = {
		{4096, 8192}, {5 * UINT64_C(4096), 4096}, {EDGE_LAST, 100}};
	struct dirty_bitmap *d;
	uint64_t off, len;
	unsigned int n = 0;

	ck_assert_int_eq(dirty_bitmap_new(EDGE_SIZE, 4096, &d), 0);
	dirty_bitmap_set(d, 4096, 1);
	dirty_bitmap_set(d, 8191, 2);
	dirty_bitmap_set(d, 5 * 4096 + 7, 3);
	dirty_bitmap_set(d, EDGE_SIZE - 1, 1);
	dirty_bitmap_for_each_dirty (d, off, len) {
		ck_assert_uint_lt(n, 3);
		ck_assert_uint_eq(off, want[n][0]);
		ck_assert_uint_eq(len, want[n][1]);
		dirty_bitmap_clear(d, off, len);
		n++;
	}
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 0);
	dirty_bitmap_free(d);
}
END_TEST

START_TEST(memory_for_1tib)
{
	struct dirty_bitmap *d;
	size_t m;

	/* 2^24 granules: 2 MiB of bits, + 4096 + 64 + 1 summary words. */
	ck_assert_int_eq(dirty_bitmap_new(1 * TiB, 64 * 1024, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 4);
	m = dirty_bitmap_memory_bytes(d);
	printf("# 1 TiB @ 64 KiB: %zu bytes\n", m);
	ck_assert_uint_ge(m, 2 * MiB + (4096 + 64 + 1) * UINT64_C(8));
	ck_assert_uint_le(m, 2 * MiB + 2 * MiB / 63 + 512);
	dirty_bitmap_free(d);

	ck_assert_int_eq(dirty_bitmap_new(1 * TiB, 4096, &d), 0);
	m = dirty_bitmap_memory_bytes(d);
	ck_assert_uint_ge(m, 32 * MiB);
	ck_assert_uint_le(m, 32 * MiB + 32 * MiB / 63 + 512);
	dirty_bitmap_free(d);
}
END_TEST

/*
 * One dirty granule in 1 TiB @ 64 KiB (2^18 words at level 0): finding it
 * and then finding nothing after it must read O(levels) words, not scan.
 */
START_TEST(search_reads_o_levels_words)
{
	static const uint64_t where[] = {0, 700 * GiB + 3 * UINT64_C(65536),
					 1 * TiB - 65536};
	uint64_t off, len, words;
	struct dirty_bitmap *d;
	size_t i;

	ck_assert_int_eq(dirty_bitmap_new(1 * TiB, 64 * 1024, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 4);
	for (i = 0; i < 3; i++) {
		unsigned int runs = 0;

		dirty_bitmap_set(d, where[i], 1);
		off = len = words = 0;
		while (dirty_bitmap_next_dirty_extent_counted(d, off + len, UINT64_MAX,
						     &off, &len, &words)) {
			ck_assert_uint_eq(off, where[i]);
			ck_assert_uint_eq(len, 65536);
			runs++;
		}
		ck_assert_uint_eq(runs, 1);
		/* Find: 2 * 4 words, run end: 1, nothing after: 2 * 4. */
		ck_assert_uint_le(words, 2 * 4 + 1 + 2 * 4);
		dirty_bitmap_clear(d, where[i], 65536);
	}
	/* All dirty: a bounded extent reads what it covers, not the run. */
	dirty_bitmap_set_all(d);
	words = 0;
	ck_assert(dirty_bitmap_next_dirty_extent_counted(d, 0, 4 * MiB, &off, &len,
						&words));
	ck_assert_uint_eq(off, 0);
	ck_assert_uint_eq(len, 4 * MiB);
	ck_assert_uint_le(words, 2);
	dirty_bitmap_free(d);
}
END_TEST

/* 64 GiB + 1 @ 512 B: 2^27 + 1 granules, 5 levels; whole-bitmap ops. */
START_TEST(set_all_on_large_bitmap)
{
	struct dirty_bitmap *d;
	uint64_t off, len;

	ck_assert_int_eq(dirty_bitmap_new(64 * GiB + 1, 512, &d), 0);
	ck_assert_uint_eq(dirty_bitmap_levels(d), 5);
	dirty_bitmap_set(d, 64 * GiB, 1);
	ck_assert_int_eq(dirty_bitmap_next_dirty(d, 0), (int64_t)(64 * GiB));
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 1);
	dirty_bitmap_set_all(d);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 64 * GiB + 1);
	dirty_bitmap_clear(d, 512, 64 * GiB - 1024);
	ck_assert_uint_eq(dirty_bitmap_count_bytes(d), 512 + 512 + 1);
	ck_assert(dirty_bitmap_next_dirty_extent(d, 1, UINT64_MAX, &off, &len));
	ck_assert_uint_eq(off, 1);
	ck_assert_uint_eq(len, 511);
	ck_assert(dirty_bitmap_next_dirty_extent(d, 512, UINT64_MAX, &off, &len));
	ck_assert_uint_eq(off, 64 * GiB - 512);
	ck_assert_uint_eq(len, 513);
	ck_assert(dirty_bitmap_is_consistent(d));
	dirty_bitmap_free(d);
}
END_TEST

static Suite *dirty_bitmap_suite(void)
{
	Suite *s = suite_create("dirty-bitmap");
	TCase *tc;

	tc = tcase_create("new");
	tcase_add_test(tc, new_rejects_bad_granularity);
	tcase_add_test(tc, new_accepts_every_valid_granularity);
	tcase_add_test(tc, size_zero_is_always_clean);
	suite_add_tcase(s, tc);

	tc = tcase_create("edges");
	tcase_add_test(tc, last_partial_granule);
	tcase_add_test(tc, zero_length_and_out_of_range);
	tcase_add_test(tc, unaligned_clear_keeps_partial_granules);
	tcase_add_test(tc, full_set_and_clear);
	tcase_add_test(tc, for_each_visits_runs_in_order);
	suite_add_tcase(s, tc);

	tc = tcase_create("random");
	tcase_set_timeout(tc, 100);
	tcase_add_loop_test(tc, random_vs_reference, 0,
			    (int)(sizeof(rand_grans) / sizeof(rand_grans[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("scale");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, memory_for_1tib);
	tcase_add_test(tc, search_reads_o_levels_words);
	tcase_add_test(tc, set_all_on_large_bitmap);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("DIRTY_BITMAP_TEST_SEED");

	seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	printf("# dirty-bitmap seed %" PRIu64 " (DIRTY_BITMAP_TEST_SEED=%" PRIu64
	       " repeats this run)\n",
	       seed, seed);
	fflush(stdout);
	return bc_check_run(dirty_bitmap_suite());
}
