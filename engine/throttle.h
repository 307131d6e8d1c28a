/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bandwidth limit for the copy job: a token bucket on copied bytes.
 *
 * The copy loop asks throttle_delay_ns() before submitting a destination
 * write, waits that long (on its condition variable, so set-speed can wake
 * it early and ask again), submits the write and charges it with
 * throttle_account(): the limit paces what the destination receives, not
 * the reads before it. The pull job asks before each chunk and charges
 * what it wrote. The clock is injected so tests run on simulated time.
 *
 * Model: every byte charged costs 1/rate seconds of "debt"; debt drains
 * in real time. A request may go when, after charging it, the debt would
 * not exceed the bucket depth: the larger of THR_BURST_NS of the rate and
 * the request itself (so any single request can pass an idle bucket).
 * Under a steady backlog the bucket stays full of debt and requests leave
 * exactly at the rate; after an idle spell at most THR_BURST_NS worth of
 * bytes (2% of a second) leaves at once. Any 1-second window therefore
 * sees at most rate + 2% plus one request's rounding to whole requests.
 *
 * A rate change applies at once: outstanding debt is converted to bytes
 * and repriced at the new rate, but capped at THR_BURST_NS, so cutting the
 * speed 50x does not stall the copy for a second to pay for bytes that the
 * old speed allowed, and raising it lets the next request go within
 * THR_BURST_NS. No credit survives a change beyond the new bucket depth.
 * (Each change forgives at most THR_BURST_NS of old-rate bytes; set-speed
 * is a user action, so the long-run rate is unaffected.)
 *
 * Locking: none inside; the job's lock protects the struct, and the
 * clock callback is called with it held.
 */
#ifndef BC_ENGINE_THROTTLE_H
#define BC_ENGINE_THROTTLE_H

#include <stdint.h>

/* Burst a full bucket allows, in time at the current rate: 20 ms. */
#define THR_BURST_NS 20000000ull

struct throttle {
	uint64_t rate;	 /* bytes/s; 0 = unlimited */
	uint64_t tat_ns; /* when all charged bytes are paid off (clock ns) */
	uint64_t (*now_ns)(void *opaque); /* clock; NULL = CLOCK_MONOTONIC */
	void *clock_opaque;		  /* passed to now_ns */
};

/*
 * Initialises @t with @rate bytes/s (0 = unlimited) and an empty debt.
 * @now_ns returns the current time in nanoseconds on a monotonic scale;
 * NULL selects CLOCK_MONOTONIC. Nothing to free.
 */
void throttle_init(struct throttle *t, uint64_t rate, uint64_t (*now_ns)(void *),
	      void *clock_opaque);

/*
 * Changes the rate (bytes/s, 0 = unlimited), effective for the next
 * throttle_delay_ns(): debt is repriced and capped as described above. A
 * waiting copy loop must be woken to ask again.
 */
void throttle_set_rate(struct throttle *t, uint64_t rate);

/*
 * Returns how many nanoseconds to wait before sending @bytes now; 0 when
 * they may go at once (always, when unlimited). Changes nothing: call it
 * again after waking, then throttle_account() what is actually sent.
 */
uint64_t throttle_delay_ns(const struct throttle *t, uint64_t bytes);

/*
 * Charges @bytes that were just sent (submission time, not completion, so
 * requests in flight count). Does nothing when unlimited.
 */
void throttle_account(struct throttle *t, uint64_t bytes);

#endif /* BC_ENGINE_THROTTLE_H */
