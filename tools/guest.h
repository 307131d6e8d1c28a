/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A synthetic guest for the live-mirror commands (demo, mirror).
 *
 * The guest is N threads issuing random writes of mixed sizes (some
 * unaligned), reads that verify, zero writes, discards and flushes
 * through bc_disk_*, optionally paced to a total write rate. Every
 * thread owns interleaved stripes and changes only those, so what each
 * block must hold (the shadow, shadow.h: one generation per 4 KiB
 * block, not a copy of the disk) needs no lock.
 *
 * An unaligned write or zero write covers part of its first and last
 * block; the guest then writes the rest of those blocks too (a second,
 * complementary request), so that every block holds one generation
 * again. Discards are 4 KiB-aligned: each block then reads as zeros or
 * as before, and the guest reads it back to learn which.
 *
 * Around a pivot or an abort (guest_mark_begin/end), the shadow keeps
 * the content each block had at the switch, so that the image the guest
 * left can be checked too (shadow_verify with at_switch).
 */
#ifndef BC_TOOLS_GUEST_H
#define BC_TOOLS_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/blockcopy.h"
#include "shadow.h"

struct guest;

struct guest_opts {
	unsigned int threads; /* 0 = 4 */
	uint64_t rate;        /* bytes/s of data writes over all threads; 0 = unpaced */
	unsigned int seed;    /* 0 = from the clock */
};

/* Throughput is counted in the phase an operation started in. */
enum guest_phase { GUEST_BEFORE, GUEST_DURING, GUEST_AFTER, GUEST_NPHASES };

struct guest_phase_stats {
	double seconds;       /* how long the phase lasted */
	uint64_t writes;      /* data writes (pwrite) */
	uint64_t write_bytes;
	uint64_t ops;         /* every operation */
	double mib_s;         /* write_bytes per second, MiB */
	double p50_ms;        /* data-write latency (12.5% buckets) */
	double p99_ms;
	double max_ms;        /* longest data write */
};

/*
 * A guest on @disk. With @initial, the disk's content at the start is
 * what @initial produces (checked by reading it all before any write);
 * without, the disk is read once and a CRC of each block kept. Returns
 * NULL and fills @err (one line) on failure.
 */
struct guest *guest_new(bc_disk *disk, const struct guest_opts *opts,
			shadow_initial_fn initial, void *initial_arg,
			char *err, size_t errlen);

/* What each block must hold. */
const struct shadow *guest_shadow(const struct guest *g);

/* Starts the threads in phase GUEST_BEFORE. Returns 0 or -errno. */
int guest_start(struct guest *g);

/* Moves to @phase (only forwards). */
void guest_set_phase(struct guest *g, enum guest_phase phase);

/* A pivot or abort is about to start / has returned (see above). */
void guest_mark_begin(struct guest *g);
void guest_mark_end(struct guest *g);

/*
 * Stops and joins the threads. Returns 0, or -1 when a thread failed
 * (an I/O error or a read that did not match the shadow): guest_failure()
 * says what.
 */
int guest_stop(struct guest *g);
const char *guest_failure(const struct guest *g);

void guest_phase_stats(const struct guest *g, enum guest_phase phase,
		       struct guest_phase_stats *st);
/* Totals over the whole run, summed over the guest's threads. */
struct guest_totals {
	uint64_t writes;     /* data writes */
	uint64_t reads;      /* verified reads */
	uint64_t zeroes;     /* zero writes */
	uint64_t discards;
	double mark_max_ms;  /* longest operation of any kind in flight across
				the marked switch */
};
void guest_totals(const struct guest *g, struct guest_totals *t);

void guest_free(struct guest *g);

#endif /* BC_TOOLS_GUEST_H */
