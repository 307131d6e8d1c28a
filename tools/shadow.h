/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The synthetic guest's knowledge of its disk: what every byte must hold,
 * without a copy of the disk.
 *
 * The disk is cut into 4 KiB blocks (the last one may be shorter). Each
 * block has a state: generation 0 is the content the disk had when the
 * guest started; generation G > 0 is the content of the guest's G-th
 * write of that block, a deterministic function of (seed, block, G);
 * ZERO means all zeros. Memory is a few bytes per block (8 GiB of disk:
 * about 20 MiB), so the guest runs on disks larger than RAM.
 *
 * Generation 0 is known one of two ways: the caller can produce it (the
 * demo built the chain itself, @initial below), or shadow_hash_initial()
 * reads the disk once and keeps a CRC-32 per block.
 *
 * Concurrency: each block is owned by one guest thread (the guest's
 * stripes), which alone reads and changes its state; the switch records
 * (below) are shared and locked.
 *
 * The switch (a pivot or an abort). The image the guest leaves must keep
 * the content of the switch instant. A block first changed after the
 * switch has its state at the switch saved (SAVED). A block changed by an
 * operation in flight while the switch was in progress could hold the
 * content from before or after that operation (the switch instant within
 * it is unknown): it is UNCERTAIN and keeps the list of contents it may
 * hold; the check accepts each byte if it equals that byte of one of
 * them. The list holds at most SHADOW_CANDIDATES_MAX contents: a block
 * rewritten more often while the switch was in progress is counted as
 * unverifiable, never silently skipped.
 */
#ifndef BC_TOOLS_SHADOW_H
#define BC_TOOLS_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/blockcopy.h"

#define SHADOW_BLOCK	       4096u
#define SHADOW_CANDIDATES_MAX 8u
/* A block's state: a generation, or ZERO ored over the last generation. */
#define SHADOW_ZERO	       0x80000000u
#define SHADOW_GEN_MASK	       0x7fffffffu

struct shadow;

/* Fills @buf with the initial content of guest bytes [@off, @off+@len). */
typedef void (*shadow_initial_fn)(void *arg, uint64_t off, uint8_t *buf,
				  size_t len);

/*
 * A shadow of a disk of @size bytes. With @initial, generation 0 is what
 * it produces; without, shadow_hash_initial() must run before use.
 * Returns NULL when out of memory.
 */
struct shadow *shadow_new(uint64_t size, uint64_t seed,
			  shadow_initial_fn initial, void *arg);
void shadow_free(struct shadow *s);

/* Bytes of memory the shadow of a @size-byte disk takes (for reports). */
uint64_t shadow_footprint(uint64_t size, bool hashed);

/*
 * Reads @disk once and records a CRC-32 of every block as generation 0.
 * Returns 0, or -1 with @err set.
 */
int shadow_hash_initial(struct shadow *s, bc_disk *disk, char *err,
			size_t len);

uint64_t shadow_size(const struct shadow *s);

/* The block holding byte @off, the first byte of block @b, its length. */
static inline uint64_t shadow_block_of(uint64_t off)
{
	return off / SHADOW_BLOCK;
}

uint32_t shadow_state(const struct shadow *s, uint64_t b);

/* The state a new write of block @b gets (not yet recorded). */
uint32_t shadow_next_gen(const struct shadow *s, uint64_t b);

/*
 * Records that block @b now holds @state, after an operation that started
 * in switch phase @ps and ended in @pe (SHADOW_MARK_*).
 */
enum { SHADOW_MARK_NONE, SHADOW_MARK_IN_PROGRESS, SHADOW_MARK_DONE };
void shadow_set(struct shadow *s, uint64_t b, uint32_t state, int ps, int pe);

/*
 * Records that block @b may also have held @state at the switch (a
 * discard in flight: one image may have dropped the data, the other
 * not), without changing its current state.
 */
void shadow_may_hold(struct shadow *s, uint64_t b, uint32_t state, int ps,
		     int pe);

/*
 * Writes the content of block @b in @state for guest bytes [@off,
 * @off+@len) (within the block) into @buf. Generation 0 without
 * @initial cannot be produced: returns false.
 */
bool shadow_fill(const struct shadow *s, uint64_t b, uint32_t state,
		 uint64_t off, size_t len, uint8_t *buf);

/*
 * Whether @data, guest bytes [@off, @off+@len), matches the current
 * states. Returns 0 when it does, else the offset of the first byte that
 * differs plus one. A partial block in generation 0 that only has a CRC
 * cannot be checked: callers read whole blocks there (shadow_can_check).
 */
uint64_t shadow_check(const struct shadow *s, uint64_t off, size_t len,
		      const uint8_t *data);

/* Whether shadow_check() can check [@off, @off+@len) byte by byte. */
bool shadow_can_check(const struct shadow *s, uint64_t off, size_t len);

/* What shadow_verify_switch() found. */
struct shadow_switch_stats {
	uint64_t saved;        /* blocks changed after the switch: checked */
	uint64_t uncertain;    /* changed across it: checked, byte by byte */
	uint64_t unverifiable; /* rewritten too often across it: not checked */
};

/*
 * Compares all of @disk with the current states (@at_switch false) or
 * with the content at the switch. Returns 0 when equal, 1 when it
 * differs (@msg names the first differing offset), -1 on a read error.
 */
int shadow_verify(const struct shadow *s, bc_disk *disk, bool at_switch,
		  struct shadow_switch_stats *st, char *msg, size_t len);

#endif /* BC_TOOLS_SHADOW_H */
