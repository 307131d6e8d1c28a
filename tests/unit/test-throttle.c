/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for engine/throttle.c on a simulated clock.
 *
 * A simulated copy loop asks for the delay, "sleeps" it by advancing the
 * clock, sends a random 64 KiB..1 MiB request, charges it, and loses a few
 * microseconds of overhead. The sends are then measured two ways:
 *  - instant: bytes whose send time falls in the window. Whole requests
 *    make this err by up to one request (1 MiB is 100% of 1 MiB/s), so
 *    the bound checked is the token bucket's own: rate + max(request,
 *    burst) above, rate - request - 1% below;
 *  - fluid: each request's bytes spread evenly from its send time to the
 *    next send (the link is busy with it until then). This measures the
 *    pacing itself, which is what the throttle controls; the brief's
 *    figures apply to it: mean within 1%, every 1 s window (10 ms steps)
 *    within 3%. A burst of requests sent at the same instant stays a
 *    point mass, so bursts are not smoothed away.
 * THR_TEST_SEED=<n> repeats a run.
 */
#include "tests/check-main.h"
#include "engine/throttle.h"
#include "lib/common/util.h"

#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KiB    (UINT64_C(1) << 10)
#define MiB    (UINT64_C(1) << 20)
#define MS     UINT64_C(1000000)
#define SEC    UINT64_C(1000000000)
#define MAXREQ (1 * MiB)

static uint64_t seed;

static uint64_t rnd_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
	return lo + bc_splitmix64(s) % (hi - lo + 1);
}

static uint64_t fake_now(void *opaque)
{
	return *(uint64_t *)opaque;
}

struct send {
	uint64_t t; /* ns */
	uint64_t bytes;
};

struct sim {
	struct throttle thr;
	uint64_t clock; /* ns */
	struct send *sends;
	size_t n, cap;
	uint64_t rng;
	uint64_t change_at; /* ns; UINT64_MAX = never */
	uint64_t new_rate;
	size_t first_after;    /* index of the first send after the change */
	unsigned int idle_pct; /* chance of an idle spell per request */
};

static void sim_init(struct sim *sm, uint64_t rate, uint64_t salt)
{
	sm->clock = 0;
	throttle_init(&sm->thr, rate, fake_now, &sm->clock);
	sm->cap = 1024;
	sm->n = 0;
	sm->sends = malloc(sm->cap * sizeof(*sm->sends));
	ck_assert_ptr_nonnull(sm->sends);
	sm->rng = seed ^ (salt * 0x100000001b3ull);
	sm->change_at = UINT64_MAX;
	sm->first_after = SIZE_MAX;
	sm->idle_pct = 0;
}

static void sim_record(struct sim *sm, uint64_t bytes)
{
	if (sm->n == sm->cap) {
		sm->cap *= 2;
		sm->sends = realloc(sm->sends, sm->cap * sizeof(*sm->sends));
		require(sm->sends, "out of memory");
	}
	sm->sends[sm->n].t = sm->clock;
	sm->sends[sm->n].bytes = bytes;
	sm->n++;
}

/* The copy loop, until the clock passes @until. */
static void sim_run(struct sim *sm, uint64_t until)
{
	while (sm->clock < until) {
		uint64_t bytes = rnd_range(&sm->rng, 128, 2048) * 512;
		uint64_t d;

		for (;;) {
			d = throttle_delay_ns(&sm->thr, bytes);
			/* Same answer when asked twice: no hidden state. */
			require(throttle_delay_ns(&sm->thr, bytes) == d,
				"delay changed without a charge");
			if (sm->clock + d < sm->change_at)
				break;
			/* set-speed wakes the waiting loop, which asks again. */
			sm->clock = sm->change_at;
			sm->change_at = UINT64_MAX;
			throttle_set_rate(&sm->thr, sm->new_rate);
			sm->first_after = sm->n;
		}
		sm->clock += d;
		require(throttle_delay_ns(&sm->thr, bytes) == 0,
			"still delayed after waiting");
		sim_record(sm, bytes);
		throttle_account(&sm->thr, bytes);
		/* Loop overhead and wake-up lateness. */
		sm->clock += rnd_range(&sm->rng, 0, 20000);
		if (sm->idle_pct && rnd_range(&sm->rng, 1, 100) <= sm->idle_pct)
			sm->clock += rnd_range(&sm->rng, 1, 1500) * MS;
	}
}

/* Index of the first send at a time > @x. */
static size_t sends_upto(const struct sim *sm, uint64_t x)
{
	size_t lo = 0, hi = sm->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (sm->sends[mid].t <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Sums of bytes of sends [0, i), for i in 0..n. */
static uint64_t *prefix_sums(const struct sim *sm)
{
	uint64_t *p = malloc((sm->n + 1) * sizeof(*p));
	size_t i;

	ck_assert_ptr_nonnull(p);
	p[0] = 0;
	for (i = 0; i < sm->n; i++)
		p[i + 1] = p[i] + sm->sends[i].bytes;
	return p;
}

/* Bytes sent at times in [a, b). */
static uint64_t instant_bytes(const struct sim *sm, const uint64_t *p,
			      uint64_t a, uint64_t b)
{
	return p[sends_upto(sm, b - 1)] - (a ? p[sends_upto(sm, a - 1)] : 0);
}

/* Fluid bytes up to time x; x must precede the last send. */
static double fluid_upto(const struct sim *sm, const uint64_t *p, uint64_t x)
{
	size_t k = sends_upto(sm, x);
	uint64_t t0, t1;

	require(k < sm->n, "fluid measure past the last send");
	if (k == 0)
		return 0;
	/* Sends before k - 1 ended by x; k - 1 is under way until send k. */
	t0 = sm->sends[k - 1].t;
	t1 = sm->sends[k].t;
	return (double)p[k - 1] + (double)sm->sends[k - 1].bytes *
					  (double)(x - t0) / (double)(t1 - t0);
}

/*
 * Checks every 1 s window starting in [from, to] (10 ms steps) against
 * @rate: fluid within 3%, instant within the bucket bound.
 */
static void check_windows(const struct sim *sm, uint64_t rate, uint64_t from,
			  uint64_t to, const char *what)
{
	uint64_t t, burst = rate / 50 > MAXREQ ? rate / 50 : MAXREQ;
	uint64_t *p = prefix_sums(sm);
	double worst = 0;

	for (t = from; t <= to; t += 10 * MS) {
		double fl = fluid_upto(sm, p, t + SEC) - fluid_upto(sm, p, t);
		double err = (fl - (double)rate) / (double)rate;
		uint64_t in = instant_bytes(sm, p, t, t + SEC);

		if (fabs(err) > fabs(worst))
			worst = err;
		require(fabs(err) <= 0.03,
			"%s: window at %" PRIu64 " ms fluid %.0f vs %" PRIu64
			" (%+.2f%%), seed %" PRIu64,
			what, t / MS, fl, rate, err * 100, seed);
		require(in <= rate + burst,
			"%s: window at %" PRIu64 " ms sent %" PRIu64
			" > %" PRIu64 " + %" PRIu64 ", seed %" PRIu64,
			what, t / MS, in, rate, burst, seed);
		require((double)in >= (double)rate * 0.99 - MAXREQ,
			"%s: window at %" PRIu64 " ms sent only %" PRIu64
			", seed %" PRIu64,
			what, t / MS, in, seed);
	}
	printf("# %s: worst fluid window %+.3f%%\n", what, worst * 100);
	free(p);
}

static const uint64_t rates_mib[] = {1, 20, 100, 1000};

START_TEST(steady_rate_30s)
{
	uint64_t rate = rates_mib[_i] * MiB;
	struct sim sm;
	char what[64];
	uint64_t *p;
	double mean;

	snprintf(what, sizeof(what), "%" PRIu64 " MiB/s", rates_mib[_i]);
	sim_init(&sm, rate, (uint64_t)_i);
	/* Run past 30 s so the last window's requests have an end. */
	sim_run(&sm, 32 * SEC);
	p = prefix_sums(&sm);
	mean = fluid_upto(&sm, p, 30 * SEC) / 30;
	free(p);
	printf("# %s: mean %+.3f%% over %zu requests\n", what,
	       (mean - (double)rate) / (double)rate * 100, sm.n);
	ck_assert_msg(fabs(mean - (double)rate) <= 0.01 * (double)rate,
		      "%s: mean %.0f, seed %" PRIu64, what, mean, seed);
	check_windows(&sm, rate, 0, 29 * SEC, what);
	free(sm.sends);
}
END_TEST

/* Rate changes mid-run, while the loop may be waiting. */
static const uint64_t changes_mib[][2] = {{1000, 20}, {20, 1000}, {1, 100},
					  {100, 1},   {100, 20},  {20, 1}};

START_TEST(rate_change_takes_effect_at_once)
{
	uint64_t r1 = changes_mib[_i][0] * MiB, r2 = changes_mib[_i][1] * MiB;
	uint64_t at = 5 * SEC + 123457, first, last_old;
	struct sim sm;
	char what[64];

	snprintf(what, sizeof(what), "%" PRIu64 " -> %" PRIu64 " MiB/s",
		 changes_mib[_i][0], changes_mib[_i][1]);
	sim_init(&sm, r1, 100 + (uint64_t)_i);
	sm.change_at = at;
	sm.new_rate = r2;
	sim_run(&sm, 17 * SEC);
	ck_assert_uint_ne(sm.first_after, SIZE_MAX);
	first = sm.sends[sm.first_after].t;
	last_old = sm.sends[sm.first_after - 1].t;
	/*
	 * The first request after the change leaves within the burst time
	 * (plus one loop overhead): no stall paying old debt at the new rate.
	 */
	ck_assert_msg(first <= at + THR_BURST_NS + 20000,
		      "%s: first send %" PRIu64 " ns after the change", what,
		      first - at);
	/*
	 * The old rate holds until the last request sent under it (whose
	 * fluid interval the change cuts short); from the first request
	 * after the change, the new rate holds in every window.
	 */
	check_windows(&sm, r1, 0, last_old - SEC, what);
	check_windows(&sm, r2, first, 15 * SEC, what);
	free(sm.sends);
}
END_TEST

/* After idle spells the burst is bounded: rate + max(request, rate/50). */
START_TEST(idle_then_burst_is_bounded)
{
	uint64_t rate = rates_mib[_i] * MiB, t;
	uint64_t burst = rate / 50 > MAXREQ ? rate / 50 : MAXREQ;
	struct sim sm;
	uint64_t *p;

	sim_init(&sm, rate, 200 + (uint64_t)_i);
	sm.idle_pct = rate >= 100 * MiB ? 1 : 10;
	sim_run(&sm, 31 * SEC);
	p = prefix_sums(&sm);
	for (t = 0; t <= 29 * SEC; t += 10 * MS) {
		uint64_t in = instant_bytes(&sm, p, t, t + SEC);

		require(in <= rate + burst,
			"window at %" PRIu64 " ms: %" PRIu64
			" bytes, seed %" PRIu64,
			t / MS, in, seed);
	}
	free(p);
	free(sm.sends);
}
END_TEST

START_TEST(unlimited_never_delays)
{
	uint64_t clock = 0;
	struct throttle t;
	unsigned int i;

	throttle_init(&t, 0, fake_now, &clock);
	for (i = 0; i < 1000; i++) {
		require(throttle_delay_ns(&t, MAXREQ) == 0, "delayed at request %u",
			i);
		throttle_account(&t, MAXREQ);
	}
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), 0);
	throttle_account(&t, UINT64_MAX);
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), 0);

	/* Limited with debt, then unlimited: no delay, debt dropped. */
	throttle_set_rate(&t, 1 * MiB);
	throttle_account(&t, 10 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), 10 * SEC);
	throttle_set_rate(&t, 0);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), 0);
	throttle_set_rate(&t, 1 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), 0);
}
END_TEST

START_TEST(exact_delays)
{
	uint64_t clock = 5 * SEC;
	struct throttle t;

	throttle_init(&t, 10 * MiB, fake_now, &clock);
	/* An idle bucket passes any single request. */
	ck_assert_uint_eq(throttle_delay_ns(&t, 64 * MiB), 0);
	throttle_account(&t, 1 * MiB); /* 100 ms of debt */
	/* Small request: debt may reach 20 ms + its own cost. */
	ck_assert_uint_eq(throttle_delay_ns(&t, 1024),
			  100 * MS - THR_BURST_NS + 97657);
	/* Large request (> 20 ms of rate): waits for zero debt. */
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), 100 * MS);
	clock += 100 * MS;
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), 0);
	/* Debt does not go negative: idling earns no credit beyond 20 ms. */
	clock += 10 * SEC;
	throttle_account(&t, 1 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), 100 * MS);
	/* Re-setting the same rate keeps the debt. */
	throttle_set_rate(&t, 10 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), 100 * MS);
	/* 10x faster: 1 MiB of debt now costs 10 ms. */
	throttle_set_rate(&t, 100 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, 4 * MiB), 10 * MS);
	/* 100x slower: 1 s of debt, capped at the burst time. */
	throttle_set_rate(&t, 1 * MiB);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), THR_BURST_NS);
}
END_TEST

START_TEST(default_clock_is_monotonic)
{
	struct throttle t;
	uint64_t d;

	throttle_init(&t, 1 * MiB, NULL, NULL);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1 * MiB), 0);
	throttle_account(&t, 1 * MiB);
	d = throttle_delay_ns(&t, 1 * MiB);
	ck_assert_uint_le(d, 1 * SEC);
	ck_assert_uint_gt(d, SEC / 2);
}
END_TEST

START_TEST(rate_one_byte_per_second)
{
	uint64_t clock = 0;
	struct throttle t;

	throttle_init(&t, 1, fake_now, &clock);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), 0);
	throttle_account(&t, MAXREQ);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1), MAXREQ * SEC);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), MAXREQ * SEC);
	/* Debt beyond 2^64 ns saturates instead of wrapping to nothing. */
	throttle_account(&t, UINT64_MAX);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1), UINT64_MAX);
	throttle_account(&t, UINT64_MAX);
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), UINT64_MAX);
	clock = UINT64_MAX - 5;
	ck_assert_uint_eq(throttle_delay_ns(&t, 1), 5);
	clock = 1000;
	/* Repricing a saturated debt: no overflow, capped at the burst. */
	throttle_set_rate(&t, 2);
	ck_assert_uint_eq(t.tat_ns, 1000 + THR_BURST_NS);
	ck_assert_uint_eq(throttle_delay_ns(&t, 1), THR_BURST_NS);
	/* 20 ms at 2 B/s is under one byte: nothing left to reprice. */
	throttle_set_rate(&t, UINT64_MAX);
	ck_assert_uint_eq(t.tat_ns, 1000);
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), 0);
	throttle_set_rate(&t, 1);
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), 0);
}
END_TEST

START_TEST(huge_rate)
{
	uint64_t clock = 7, rate = UINT64_MAX / 2;
	struct throttle t;
	unsigned int i;

	throttle_init(&t, rate, fake_now, &clock);
	/* 1 MiB costs 1 ns (rounded up): a million of them, 1 ms of debt. */
	for (i = 0; i < 1000000; i++)
		throttle_account(&t, MAXREQ);
	ck_assert_uint_eq(t.tat_ns, 7 + 1000000);
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ), 0);
	/* UINT64_MAX bytes at UINT64_MAX / 2 per second: 2 s (+1 ns). */
	throttle_account(&t, UINT64_MAX);
	ck_assert_uint_eq(t.tat_ns, 7 + 1000000 + 2 * SEC + 1);
	/* 1 MiB costs 1 ns, so it may go when the debt is 20 ms - 1 ns. */
	ck_assert_uint_eq(throttle_delay_ns(&t, MAXREQ),
			  1000000 + 2 * SEC + 1 - (THR_BURST_NS - 1));
	throttle_set_rate(&t, UINT64_MAX);
	ck_assert_uint_eq(throttle_delay_ns(&t, UINT64_MAX), THR_BURST_NS);
}
END_TEST

static Suite *throttle_suite(void)
{
	Suite *s = suite_create("throttle");
	TCase *tc;

	tc = tcase_create("exact");
	tcase_add_test(tc, unlimited_never_delays);
	tcase_add_test(tc, exact_delays);
	tcase_add_test(tc, default_clock_is_monotonic);
	tcase_add_test(tc, rate_one_byte_per_second);
	tcase_add_test(tc, huge_rate);
	suite_add_tcase(s, tc);

	tc = tcase_create("simulated");
	tcase_set_timeout(tc, 100);
	tcase_add_loop_test(tc, steady_rate_30s, 0,
			    (int)(sizeof(rates_mib) / sizeof(rates_mib[0])));
	tcase_add_loop_test(
		tc, rate_change_takes_effect_at_once, 0,
		(int)(sizeof(changes_mib) / sizeof(changes_mib[0])));
	tcase_add_loop_test(tc, idle_then_burst_is_bounded, 0,
			    (int)(sizeof(rates_mib) / sizeof(rates_mib[0])));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("THR_TEST_SEED");

	seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	printf("# throttle seed %" PRIu64 " (THR_TEST_SEED=%" PRIu64
	       " repeats this run)\n",
	       seed, seed);
	fflush(stdout);
	return bc_check_run(throttle_suite());
}
