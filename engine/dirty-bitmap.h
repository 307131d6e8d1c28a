/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hierarchical dirty bitmap: one bit per granule of the byte range
 * [0, size), with summary levels above it so that finding the next dirty
 * granule is O(levels) and the dirty byte count is O(1). The copy job
 * marks guest writes here and takes work from it. Design and invariants:
 * the comment at the top of dirty-bitmap.c.
 *
 * Every offset and length is in bytes. A granule is "touched" by a byte
 * range when they share at least one byte; the last granule may be partial
 * when size is not a multiple of the granularity, and is clipped to size
 * wherever bytes are reported.
 *
 * Locking: none inside. A bitmap is owned by one job and every call,
 * readers included, must hold that job's lock.
 */
#ifndef BC_ENGINE_DIRTY_BITMAP_H
#define BC_ENGINE_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty_bitmap;

#define DIRTY_BITMAP_MIN_GRANULARITY 512u
#define DIRTY_BITMAP_MAX_GRANULARITY (64u << 20)

/*
 * Allocates an all-clean bitmap covering @size bytes with one bit per
 * @granularity bytes. @granularity must be a power of two from
 * DIRTY_BITMAP_MIN_GRANULARITY to DIRTY_BITMAP_MAX_GRANULARITY and @size at most INT64_MAX
 * (offsets are returned as int64_t). A size of 0 is valid: the bitmap is
 * then always clean. The caller owns *@out and frees it with dirty_bitmap_free().
 * Returns 0 or -errno (-EINVAL for a bad granularity or size, recorded
 * with bc_error_set(); -ENOMEM).
 */
int dirty_bitmap_new(uint64_t size, uint32_t granularity, struct dirty_bitmap **out);

/* Frees @d; NULL is a no-op. */
void dirty_bitmap_free(struct dirty_bitmap *d);

/*
 * Marks dirty every granule touched by [@off, @off + @len). The range is
 * clipped to the bitmap size; @len 0 or @off >= size does nothing.
 * Cost: O(len / granularity / 64), and O(1) when the granule's word was
 * already non-empty (the common guest-write case).
 */
void dirty_bitmap_set(struct dirty_bitmap *d, uint64_t off, uint64_t len);

/*
 * Marks clean every granule lying entirely inside [@off, @off + @len)
 * (clipped to the size; the partial last granule counts as inside when
 * the range reaches the size). A granule only partly covered stays dirty:
 * an unaligned clear can never lose a dirty bit. Ranges returned by
 * dirty_bitmap_next_dirty_extent() are always cleared exactly.
 */
void dirty_bitmap_clear(struct dirty_bitmap *d, uint64_t off, uint64_t len);

/* Marks the whole bitmap dirty. */
void dirty_bitmap_set_all(struct dirty_bitmap *d);

/* Marks the whole bitmap clean. */
void dirty_bitmap_clear_all(struct dirty_bitmap *d);

/* Whether the granule holding byte @off is dirty (false beyond the size). */
bool dirty_bitmap_get(const struct dirty_bitmap *d, uint64_t off);

/* Dirty bytes: dirty granules times granularity, last one clipped. O(1). */
uint64_t dirty_bitmap_count_bytes(const struct dirty_bitmap *d);

/*
 * Returns the first dirty byte at or after @from: @from itself when its
 * granule is dirty, else the start of the next dirty granule; -1 when
 * there is none before the size. O(levels).
 */
int64_t dirty_bitmap_next_dirty(const struct dirty_bitmap *d, uint64_t from);

/*
 * Returns the first clean byte at or after @from (same rules as
 * dirty_bitmap_next_dirty()), -1 when everything from @from to the size is dirty.
 * This one scans: O(length of the dirty run / granularity / 64).
 */
int64_t dirty_bitmap_next_clean(const struct dirty_bitmap *d, uint64_t from);

/*
 * Finds the first dirty run at or after @from: *@off = dirty_bitmap_next_dirty(),
 * *@len = bytes of contiguous dirty granules from there, at most @max_len
 * and clipped to the size. With @from and @max_len multiples of the
 * granularity, the extent is granule-aligned except a tail clipped to the
 * size. Returns false (outputs untouched) when nothing is dirty at or
 * after @from or @max_len is 0. Pass UINT64_MAX for no length limit.
 * Cost: O(levels + @len / granularity / 64).
 */
bool dirty_bitmap_next_dirty_extent(const struct dirty_bitmap *d, uint64_t from, uint64_t max_len,
			   uint64_t *off, uint64_t *len);

/*
 * Iterates over maximal dirty runs in offset order, setting the caller's
 * uint64_t variables @off and @len. The body may clear the current run
 * (or anything else); the next search starts at @off + @len.
 */
#define dirty_bitmap_for_each_dirty(d, off, len)                   \
	for ((off) = 0, (len) = 0; dirty_bitmap_next_dirty_extent( \
		     (d), (off) + (len), UINT64_MAX, &(off), &(len));)

/* Bytes of memory the bitmap uses (structure and every level). */
size_t dirty_bitmap_memory_bytes(const struct dirty_bitmap *d);

/* The granularity given to dirty_bitmap_new(), in bytes. */
uint32_t dirty_bitmap_granularity(const struct dirty_bitmap *d);

/* The size given to dirty_bitmap_new(), in bytes. */
uint64_t dirty_bitmap_size(const struct dirty_bitmap *d);

/*
 * Test hooks. dirty_bitmap_next_dirty_extent() that also adds to *@words_read the
 * number of 64-bit bitmap words it loaded, so a test can prove the search
 * climbs the levels instead of scanning.
 */
bool dirty_bitmap_next_dirty_extent_counted(const struct dirty_bitmap *d, uint64_t from,
				   uint64_t max_len, uint64_t *off,
				   uint64_t *len, uint64_t *words_read);

/* Number of levels, bottom included (1 for up to 64 granules). */
unsigned int dirty_bitmap_levels(const struct dirty_bitmap *d);

/*
 * Checks every invariant listed in dirty-bitmap.c (summary bits, padding bits,
 * dirty count) by a full scan. For tests; O(size / granularity).
 */
bool dirty_bitmap_is_consistent(const struct dirty_bitmap *d);

#endif /* BC_ENGINE_DIRTY_BITMAP_H */
