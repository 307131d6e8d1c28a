/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Token bucket on copied bytes, kept as one timestamp (the "theoretical
 * arrival time" of the generic cell rate algorithm): tat_ns is when all
 * bytes charged so far are paid off at the current rate. Debt at time now
 * is max(0, tat_ns - now); charging b bytes moves tat_ns to
 * max(tat_ns, now) + b / rate. Keeping time instead of a byte count means
 * no periodic refill and no rounding drift: state changes only when bytes
 * are charged or the rate changes. Costs are rounded up to the nanosecond,
 * so the achieved rate errs low by at most 1 ns per request.
 *
 * Arithmetic: bytes * 1e9 is done in 128 bits and every time saturates at
 * UINT64_MAX, so rate 1 B/s with huge requests and rates near UINT64_MAX
 * neither overflow nor divide by zero (rate 0 never reaches a division).
 *
 * Semantics, burst and locking: throttle.h.
 */
#include "engine/throttle.h"

#include <time.h>

#include "lib/common/clock.h"
#include "lib/common/util.h"

#define NS_PER_SEC 1000000000ull

static uint64_t monotonic_ns(void *opaque)
{
	(void)opaque;
	return bc_now_ns();
}

static uint64_t now(const struct throttle *t)
{
	return t->now_ns(t->clock_opaque);
}

static uint64_t sat_u64(unsigned __int128 v)
{
	return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

/* Nanoseconds that @bytes cost at @rate (> 0), rounded up. */
static uint64_t cost_ns(uint64_t rate, uint64_t bytes)
{
	unsigned __int128 n = (unsigned __int128)bytes * NS_PER_SEC;

	return sat_u64((n + rate - 1) / rate);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	uint64_t r;

	return bc_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

void throttle_init(struct throttle *t, uint64_t rate, uint64_t (*now_ns)(void *),
	      void *clock_opaque)
{
	t->rate = rate;
	t->tat_ns = 0;
	t->now_ns = now_ns ? now_ns : monotonic_ns;
	t->clock_opaque = clock_opaque;
}

void throttle_set_rate(struct throttle *t, uint64_t rate)
{
	uint64_t old = t->rate, n, debt_ns;
	unsigned __int128 debt_bytes;

	if (rate == old)
		return; /* re-setting the speed must not forgive debt */
	t->rate = rate;
	if (!old || !rate) {
		/* Bytes sent while unlimited are not charged, nor kept. */
		t->tat_ns = 0;
		return;
	}
	n = now(t);
	if (t->tat_ns <= n)
		return; /* no debt: a full bucket at any rate */
	debt_bytes = (unsigned __int128)(t->tat_ns - n) * old / NS_PER_SEC;
	debt_ns = sat_u64((debt_bytes * NS_PER_SEC + rate - 1) / rate);
	t->tat_ns = n + BC_MIN(debt_ns, THR_BURST_NS);
}

uint64_t throttle_delay_ns(const struct throttle *t, uint64_t bytes)
{
	uint64_t n, debt, cost, slack;

	if (!t->rate)
		return 0;
	n = now(t);
	debt = t->tat_ns > n ? t->tat_ns - n : 0;
	/*
	 * Allowed when debt + cost <= depth = max(cost, THR_BURST_NS), i.e.
	 * debt <= depth - cost; wait for the excess to drain.
	 */
	cost = cost_ns(t->rate, bytes);
	slack = cost >= THR_BURST_NS ? 0 : THR_BURST_NS - cost;
	return debt > slack ? debt - slack : 0;
}

void throttle_account(struct throttle *t, uint64_t bytes)
{
	uint64_t n;

	if (!t->rate)
		return;
	n = now(t);
	t->tat_ns = sat_add(BC_MAX(t->tat_ns, n), cost_ns(t->rate, bytes));
}
