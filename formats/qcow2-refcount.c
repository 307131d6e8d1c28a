/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 refcounts: the two-level refcount structure (spec "Host cluster
 * management"), cluster allocation and freeing, and the rebuild used when
 * an image is opened read-write with the dirty bit set.
 *
 * The refcount table is kept host-endian in q->reftable; refcount blocks
 * go through q->rb_cache, written back (qcow2-cache.c): a change reaches
 * the file at the next write-back, always before any L2 table that relies
 * on it. Entries are refcount_bits wide; widths below 8 bits
 * are packed with entry 0 in the least significant bits of byte 0 (the
 * spec: "bit 0 means the least significant bit"), widths of 8 bits and
 * more are big-endian.
 *
 * Allocation is first-fit from q->free_hint. A refcount block is always
 * present before a cluster it covers is marked used: qcow2_alloc_clusters
 * makes sure every block covering the chosen run exists (allocating one
 * may take a cluster of the run, so it then searches again). A new block
 * placed inside the range it covers counts itself; the refcount blocks
 * are written back and synced before the table entry pointing at the new
 * block is written. When the table is too small, a larger copy is written
 * past the end of the file together with the new blocks needed to count
 * it, the refcount blocks are written back, the file synced, the header
 * switched with one 12-byte write, and the old table is freed.
 *
 * Freeing: qcow2_free_clusters_locked() lowers refcounts at once (for
 * clusters nothing on disk points at); clusters that a cached L2 or L1
 * entry stopped pointing at go through qcow2_free_clusters_deferred_locked()
 * and are released by qcow2_flush_metadata_locked() after the tables are
 * on disk.
 *
 * Locking: every function here expects q->lock held (or the image not
 * shared yet, at open).
 */
#include "qcow2.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

uint64_t qcow2_refblock_get(const uint8_t *block, uint32_t refcount_order,
			    uint64_t idx)
{
	uint32_t bits = 1u << refcount_order;
	uint64_t byte;
	uint32_t shift;

	switch (refcount_order) {
	case 3:
		return block[idx];
	case 4:
		return bc_get_be16(block + idx * 2);
	case 5:
		return bc_get_be32(block + idx * 4);
	case 6:
		return bc_get_be64(block + idx * 8);
	default:
		break;
	}
	assert(refcount_order < 3);
	byte = (idx << refcount_order) >> 3;
	shift = (uint32_t)((idx << refcount_order) & 7);
	return (uint64_t)(block[byte] >> shift) & ((1u << bits) - 1);
}

void qcow2_refblock_set(uint8_t *block, uint32_t refcount_order, uint64_t idx,
			uint64_t value)
{
	uint32_t bits = 1u << refcount_order;
	uint64_t byte;
	uint32_t shift, mask;

	switch (refcount_order) {
	case 3:
		block[idx] = (uint8_t)value;
		return;
	case 4:
		bc_put_be16(block + idx * 2, (uint16_t)value);
		return;
	case 5:
		bc_put_be32(block + idx * 4, (uint32_t)value);
		return;
	case 6:
		bc_put_be64(block + idx * 8, value);
		return;
	default:
		break;
	}
	assert(refcount_order < 3);
	byte = (idx << refcount_order) >> 3;
	shift = (uint32_t)((idx << refcount_order) & 7);
	mask = ((1u << bits) - 1) << shift;
	block[byte] = (uint8_t)((block[byte] & ~mask) |
				(((uint32_t)value << shift) & mask));
}

void qcow2_io_error(const struct qcow2 *q, int ret, const char *what)
{
	bc_error_set_default(bc_errno_to_code(-ret), -ret, "%s: cannot %s",
			     qcow2_name(q), what);
}

void *qcow2_alloc_buf(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, n ? n : 1))
		return NULL;
	return p;
}

static uint64_t file_clusters(const struct qcow2 *q)
{
	return (q->file_size + q->cluster_size - 1) >> q->cluster_bits;
}

int qcow2_refcount_load(struct qcow2 *q)
{
	const char *name = q->img->filename;
	uint64_t off = q->hdr.refcount_table_offset;
	uint64_t bytes, i;
	uint8_t *buf;
	int ret;

	if (!q->file_size) {
		struct stat st;

		if (fstat(q->img->fd, &st) < 0)
			return -errno;
		q->file_size = (uint64_t)st.st_size;
	}
	q->refcount_order = q->hdr.refcount_order;
	if (q->refcount_order > 6) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: invalid refcount order %u", name,
			     q->refcount_order);
		return -EUCLEAN;
	}
	q->refcount_bits = 1u << q->refcount_order;
	q->refcount_max = q->refcount_bits == 64
				  ? UINT64_MAX
				  : (1ull << q->refcount_bits) - 1;
	q->refblock_bits = q->cluster_bits + 3 - q->refcount_order;

	if (q->hdr.refcount_table_clusters == 0) {
		bc_error_set(
			ERR_IMAGE_CORRUPT, 0,
			"%s: image does not contain a reference count table",
			name);
		return -EUCLEAN;
	}
	bytes = (uint64_t)q->hdr.refcount_table_clusters << q->cluster_bits;
	if (bytes > QCOW2_MAX_REFTABLE_BYTES) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: Reference count table too large", name);
		return -EUCLEAN;
	}
	if (!bc_is_aligned(off, q->cluster_size) || off == 0 ||
	    off > q->file_size || bytes > q->file_size - off) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: Invalid reference count table offset", name);
		return -EUCLEAN;
	}
	buf = malloc(bytes);
	if (!buf)
		return -ENOMEM;
	ret = fmt_pread_file(q->img->fd, buf, bytes, off);
	if (ret < 0) {
		free(buf);
		bc_error_set(bc_errno_to_code(-ret), -ret,
			     "%s: cannot read the reference count table", name);
		return ret;
	}
	free(q->reftable);
	q->reftable_entries = bytes / 8;
	q->reftable = calloc(q->reftable_entries, sizeof(uint64_t));
	if (!q->reftable) {
		free(buf);
		return -ENOMEM;
	}
	for (i = 0; i < q->reftable_entries; i++) {
		uint64_t e = bc_get_be64(buf + i * 8);
		uint64_t rb = e & QCOW2_REFT_OFFSET_MASK;

		if (e & ~QCOW2_REFT_OFFSET_MASK ||
		    (rb && (!bc_is_aligned(rb, q->cluster_size) ||
			    rb > q->file_size ||
			    q->cluster_size > q->file_size - rb))) {
			free(buf);
			bc_error_set(
				ERR_IMAGE_CORRUPT, 0,
				"%s: refcount block %llu at offset 0x%llx is invalid",
				name, (unsigned long long)i,
				(unsigned long long)e);
			return -EUCLEAN;
		}
		q->reftable[i] = rb;
	}
	free(buf);
	q->free_hint = 0;
	return 0;
}

/*
 * Cache slot holding the block at @off (a new zeroed one when @fresh). The
 * pointer is valid until the next cache lookup: nothing here pins.
 */
static int rb_get(struct qcow2 *q, uint64_t off, bool fresh,
		  struct qcow2_table **out)
{
	int ret;

	ret = qcow2_cache_get_locked(q, &q->rb_cache, off, fresh, out);
	if (ret < 0)
		return ret;
	qcow2_cache_put_locked(&q->rb_cache, *out);
	return 0;
}

int qcow2_get_refcount_locked(struct qcow2 *q, uint64_t cluster, uint64_t *rc)
{
	uint64_t rt = cluster >> q->refblock_bits;
	struct qcow2_table *b;
	int ret;

	if (rt >= q->reftable_entries || !q->reftable[rt]) {
		*rc = 0;
		return 0;
	}
	ret = rb_get(q, q->reftable[rt], false, &b);
	if (ret < 0)
		return ret;
	*rc = qcow2_refblock_get(b->data, q->refcount_order,
				 cluster & ((1ull << q->refblock_bits) - 1));
	return 0;
}

/* Write reftable entries [first, last] from q->reftable. */
static int write_reftable_entries(struct qcow2 *q, uint64_t first,
				  uint64_t last)
{
	uint64_t n = last - first + 1, i;
	uint8_t *buf = malloc(n * 8);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		bc_put_be64(buf + i * 8, q->reftable[first + i]);
	ret = qcow2_meta_pwrite(q, buf, n * 8,
				q->hdr.refcount_table_offset + first * 8);
	free(buf);
	return ret;
}

static bool in_range(uint64_t c, uint64_t start, uint64_t end)
{
	return c >= start && c < end;
}

/*
 * First run of @n free clusters at or after q->free_hint that avoids the
 * cluster range [avoid_s, avoid_e). Clusters past the end of the refcount
 * structures are free.
 */
static int find_free(struct qcow2 *q, uint64_t n, uint64_t avoid_s,
		     uint64_t avoid_e, uint64_t *out, uint64_t *first_free)
{
	uint64_t c = q->free_hint, run = 0, start = c;
	uint64_t epb = 1ull << q->refblock_bits;
	bool seen = false;
	int ret;

	for (;;) {
		uint64_t rt = c >> q->refblock_bits, rc, range_end, s;

		if (in_range(c, avoid_s, avoid_e)) {
			c = avoid_e;
			run = 0;
			continue;
		}
		if (rt >= q->reftable_entries) {
			/* Everything from here on is uncounted, hence free. */
			s = run ? start : c;
			if (avoid_e > s && avoid_s < s + n) {
				c = avoid_e;
				run = 0;
				continue;
			}
			*out = s;
			if (first_free)
				*first_free = seen ? *first_free : s;
			return 0;
		}
		range_end = (rt + 1) * epb;
		if (!q->reftable[rt] && !(avoid_e > c && avoid_s < range_end)) {
			/* A range without a refcount block is all free. */
			if (!run)
				start = c;
			if (first_free && !seen) {
				*first_free = c;
				seen = true;
			}
			run += range_end - c;
			if (run >= n) {
				*out = start;
				return 0;
			}
			c = range_end;
			continue;
		}
		ret = qcow2_get_refcount_locked(q, c, &rc);
		if (ret < 0)
			return ret;
		if (rc) {
			run = 0;
		} else {
			if (first_free && !seen) {
				*first_free = c;
				seen = true;
			}
			if (!run)
				start = c;
			if (++run == n) {
				*out = start;
				return 0;
			}
		}
		c++;
	}
}

/*
 * Write @nb new refcount blocks at cluster @start and the new table (@nt
 * clusters, @tbuf) right after them, sync, then switch the header's table
 * offset (48) and size (56) in one write, sync again, and install @*table
 * (@entries entries; ownership taken on success, *table set to NULL). A
 * crash before the header write leaves the old table in force and the
 * new clusters leaked; after it, the new table. Returns 0 or -errno.
 */
static int switch_reftable(struct qcow2 *q, const uint8_t *blocks, uint64_t nb,
			   const uint8_t *tbuf, uint64_t nt, uint64_t start,
			   uint64_t **table, uint64_t entries)
{
	uint64_t table_off = (start + nb) << q->cluster_bits;
	uint8_t hdr[12];
	int ret;

	/* Counts of the new clusters in existing blocks: on disk first. */
	ret = qcow2_cache_writeback_locked(q, &q->rb_cache);
	if (ret < 0)
		return ret;
	if (nb) {
		ret = fmt_pwrite_file(q->img->fd, blocks, nb << q->cluster_bits,
				      start << q->cluster_bits);
		if (ret < 0)
			return ret;
	}
	ret = fmt_pwrite_file(q->img->fd, tbuf, nt << q->cluster_bits, table_off);
	if (ret < 0)
		return ret;
	if (fdatasync(q->img->fd) < 0)
		return -errno;
	bc_put_be64(hdr, table_off);
	bc_put_be32(hdr + 8, (uint32_t)nt);
	ret = qcow2_meta_pwrite(q, hdr, sizeof(hdr), 48);
	if (ret < 0)
		return ret;
	if (fdatasync(q->img->fd) < 0)
		return -errno;
	free(q->reftable);
	q->reftable = *table;
	*table = NULL;
	q->reftable_entries = entries;
	q->hdr.refcount_table_offset = table_off;
	q->hdr.refcount_table_clusters = (uint32_t)nt;
	q->file_size = BC_MAX(q->file_size, table_off + (nt << q->cluster_bits));
	q->file_end = BC_MAX(q->file_end, q->file_size);
	return 0;
}

static int grow_reftable(struct qcow2 *q, uint64_t min_entries,
			 uint64_t avoid_e);

/*
 * Give reftable entry @rt a refcount block. Clusters [avoid_s, avoid_e)
 * are about to be counted by the caller and must not be taken.
 */
static int alloc_refblock(struct qcow2 *q, uint64_t rt, uint64_t avoid_s,
			  uint64_t avoid_e, int depth)
{
	uint64_t epb = 1ull << q->refblock_bits;
	struct qcow2_table *b;
	uint64_t cand, crt;
	int ret;

	if (depth > 4) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: cannot place a refcount block",
			     q->img->filename);
		return -EUCLEAN;
	}
	if (rt >= q->reftable_entries) {
		ret = grow_reftable(q, rt + 1, avoid_e);
		if (ret < 0)
			return ret;
	}
	while (!q->reftable[rt]) {
		ret = find_free(q, 1, avoid_s, avoid_e, &cand, NULL);
		if (ret < 0)
			return ret;
		if (cand == 0) {
			bc_error_set(ERR_IMAGE_CORRUPT, 0,
				     "%s: refcount of the header cluster is 0",
				     q->img->filename);
			return -EUCLEAN;
		}
		crt = cand >> q->refblock_bits;
		if (crt == rt) {
			/* The new block counts itself. */
			ret = rb_get(q, cand << q->cluster_bits, true, &b);
			if (ret < 0)
				return ret;
			qcow2_refblock_set(b->data, q->refcount_order,
					   cand & (epb - 1), 1);
		} else {
			if (crt >= q->reftable_entries || !q->reftable[crt]) {
				ret = alloc_refblock(q, crt, avoid_s, avoid_e,
						     depth + 1);
				if (ret < 0)
					return ret;
				continue;
			}
			ret = qcow2_update_refcount_locked(
				q, cand << q->cluster_bits, q->cluster_size, 1);
			if (ret < 0)
				return ret;
			ret = rb_get(q, cand << q->cluster_bits, true, &b);
			if (ret < 0)
				return ret;
		}
		qcow2_cache_mark_dirty_locked(&q->rb_cache, b);
		/* The block and its count on disk before the table entry. */
		ret = qcow2_grow_file_locked(q, (cand + 1) << q->cluster_bits);
		if (ret == 0)
			ret = qcow2_cache_writeback_locked(q, &q->rb_cache);
		if (ret == 0)
			ret = qcow2_sync_locked(q);
		if (ret < 0) {
			qcow2_cache_drop_locked(&q->rb_cache,
						cand << q->cluster_bits);
			return ret;
		}
		q->reftable[rt] = cand << q->cluster_bits;
		ret = write_reftable_entries(q, rt, rt);
		if (ret < 0) {
			q->reftable[rt] = 0;
			return ret;
		}
	}
	return 0;
}

/*
 * Replace the refcount table by one of at least @min_entries entries,
 * written past the end of the file (and past cluster @avoid_e) together
 * with the refcount blocks that count it.
 */
static int grow_reftable(struct qcow2 *q, uint64_t min_entries,
			 uint64_t avoid_e)
{
	uint64_t epb = 1ull << q->refblock_bits;
	uint64_t ept = q->cluster_size / 8; /* table entries per cluster */
	uint64_t start = BC_MAX(file_clusters(q), avoid_e);
	uint64_t old_off = q->hdr.refcount_table_offset;
	uint64_t old_clusters = q->hdr.refcount_table_clusters;
	uint64_t nb = 0, nt, entries, c, i, r, first_rt, last_rt;
	uint64_t *table = NULL;
	uint8_t *blocks = NULL, *tbuf = NULL;
	int ret;

	/* Grow by half at least so that growth stays rare. */
	entries = BC_MAX(min_entries, q->reftable_entries * 3 / 2);
	for (;;) {
		uint64_t end, nb2, need;

		nt = (entries + ept - 1) / ept;
		end = start + nb + nt;
		first_rt = start / epb;
		last_rt = (end - 1) / epb;
		need = BC_MAX(entries, last_rt + 1);
		nb2 = 0;
		for (r = first_rt; r <= last_rt; r++)
			if (r >= q->reftable_entries || !q->reftable[r])
				nb2++;
		if (need == entries && nb2 == nb)
			break;
		entries = BC_MAX(entries, need);
		nb = BC_MAX(nb, nb2);
	}
	if ((nt << q->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: refcount table would exceed %u bytes",
			     q->img->filename, QCOW2_MAX_REFTABLE_BYTES);
		return -EFBIG;
	}
	entries = nt * ept;
	table = calloc(entries, sizeof(*table));
	tbuf = qcow2_alloc_buf(nt << q->cluster_bits);
	blocks = qcow2_alloc_buf((nb ? nb : 1) << q->cluster_bits);
	if (!table || !tbuf || !blocks) {
		ret = -ENOMEM;
		goto out_free;
	}
	memcpy(table, q->reftable, q->reftable_entries * sizeof(*table));
	memset(blocks, 0, (nb ? nb : 1) << q->cluster_bits);
	/* New blocks at [start, start+nb), in increasing table index. */
	i = 0;
	for (r = first_rt; r <= last_rt; r++) {
		if (r < q->reftable_entries && q->reftable[r])
			continue;
		table[r] = (start + i) << q->cluster_bits;
		i++;
	}
	assert(i == nb);
	/* Count the new clusters: in new blocks directly, in old via update. */
	for (c = start; c < start + nb + nt; c++) {
		r = c / epb;
		if (r < q->reftable_entries && q->reftable[r])
			continue;
		for (i = 0; i < nb; i++)
			if (table[r] == (start + i) << q->cluster_bits)
				break;
		qcow2_refblock_set(blocks + (i << q->cluster_bits),
				   q->refcount_order, c & (epb - 1), 1);
	}
	for (c = start; c < start + nb + nt; c++) {
		r = c / epb;
		if (r < q->reftable_entries && q->reftable[r]) {
			ret = qcow2_update_refcount_locked(
				q, c << q->cluster_bits, q->cluster_size, 1);
			if (ret < 0)
				goto out_free;
		}
	}
	for (i = 0; i < entries; i++)
		bc_put_be64(tbuf + i * 8, table[i]);
	ret = switch_reftable(q, blocks, nb, tbuf, nt, start, &table, entries);
	if (ret < 0)
		goto out_free;
	ret = qcow2_free_clusters_locked(q, old_off,
					 old_clusters << q->cluster_bits);
out_free:
	free(table);
	free(tbuf);
	free(blocks);
	return ret;
}

/* Per-cluster refcount change of [first, last], blocks all present. */
static int apply_delta(struct qcow2 *q, uint64_t first, uint64_t last,
		       int64_t delta, bool dry_run)
{
	uint64_t epb = 1ull << q->refblock_bits, c = first;
	int ret;

	while (c <= last) {
		uint64_t rt = c >> q->refblock_bits;
		uint64_t end = BC_MIN(last, (rt + 1) * epb - 1), i;
		struct qcow2_table *b;

		if (rt >= q->reftable_entries || !q->reftable[rt]) {
			/* Only a decrement can get here: refcount is 0. */
			bc_error_set(
				ERR_IMAGE_CORRUPT, 0,
				"%s: refcount of cluster %llu would drop below 0",
				q->img->filename, (unsigned long long)c);
			return -EUCLEAN;
		}
		ret = rb_get(q, q->reftable[rt], false, &b);
		if (ret < 0)
			return ret;
		for (i = c; i <= end; i++) {
			uint64_t v = qcow2_refblock_get(
				b->data, q->refcount_order, i & (epb - 1));

			if ((delta < 0 && v < (uint64_t)-delta) ||
			    (delta > 0 &&
			     q->refcount_max - v < (uint64_t)delta)) {
				bc_error_set(
					ERR_IMAGE_CORRUPT, 0,
					"%s: refcount of cluster %llu would %s",
					q->img->filename, (unsigned long long)i,
					delta < 0 ? "drop below 0"
						  : "overflow");
				return -EUCLEAN;
			}
			if (!dry_run)
				qcow2_refblock_set(b->data, q->refcount_order,
						   i & (epb - 1),
						   v + (uint64_t)delta);
		}
		if (!dry_run)
			qcow2_cache_mark_dirty_locked(&q->rb_cache, b);
		c = end + 1;
	}
	return 0;
}

int qcow2_update_refcount_locked(struct qcow2 *q, uint64_t off, uint64_t len,
				 int64_t delta)
{
	uint64_t first, last, rt;
	int ret;

	if (!len || !delta)
		return 0;
	first = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	if (delta > 0) {
		for (rt = first >> q->refblock_bits;
		     rt <= last >> q->refblock_bits; rt++) {
			if (rt < q->reftable_entries && q->reftable[rt])
				continue;
			ret = alloc_refblock(q, rt, first, last + 1, 0);
			if (ret < 0)
				return ret;
		}
	}
	/* Check first so that a failure changes nothing. */
	ret = apply_delta(q, first, last, delta, true);
	if (ret < 0)
		return ret;
	return apply_delta(q, first, last, delta, false);
}

int64_t qcow2_alloc_clusters_locked(struct qcow2 *q, uint64_t n)
{
	uint64_t c, rt, end, first_free = 0;
	int ret;

	assert(n > 0);
	ret = find_free(q, n, 0, 0, &c, &first_free);
	if (ret < 0)
		return ret;
	if (c == 0) {
		/* The header cluster is counted 0: refuse to overwrite it. */
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: refcount of the header cluster is 0",
			     q->img->filename);
		return -EUCLEAN;
	}
	if ((c + n) > (1ull << (56 - q->cluster_bits))) {
		bc_error_set(ERR_IMAGE_CORRUPT, 0,
			     "%s: image file would exceed 2^56 bytes",
			     q->img->filename);
		return -EFBIG;
	}
	/* Blocks for the run go outside it (so the run stays free). */
	for (rt = c >> q->refblock_bits; rt <= (c + n - 1) >> q->refblock_bits;
	     rt++) {
		if (rt < q->reftable_entries && q->reftable[rt])
			continue;
		ret = alloc_refblock(q, rt, c, c + n, 0);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_update_refcount_locked(q, c << q->cluster_bits,
					   n << q->cluster_bits, 1);
	if (ret < 0)
		return ret;
	/* No free cluster lies between the hint and the run: move past it. */
	q->free_hint = first_free >= c ? c + n : first_free;
	end = (c + n) << q->cluster_bits;
	/* Every referenced cluster lies inside the file (grown ahead). */
	ret = qcow2_grow_file_locked(q, end);
	if (ret < 0) {
		(void)qcow2_update_refcount_locked(q, c << q->cluster_bits,
						   n << q->cluster_bits, -1);
		return ret;
	}
	return (int64_t)(c << q->cluster_bits);
}

int qcow2_free_clusters_locked(struct qcow2 *q, uint64_t off, uint64_t len)
{
	uint64_t first, last, c, hole = 0, hole_len = 0, rc;
	int ret;

	if (!len)
		return 0;
	ret = qcow2_update_refcount_locked(q, off, len, -1);
	if (ret < 0)
		return ret;
	first = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	for (c = first; c <= last + 1; c++) {
		rc = 1;
		if (c <= last) {
			ret = qcow2_get_refcount_locked(q, c, &rc);
			if (ret < 0)
				return ret;
		}
		if (!rc) {
			if (!hole_len)
				hole = c;
			hole_len++;
			if (c < q->free_hint)
				q->free_hint = c;
			continue;
		}
		if (hole_len &&
		    fallocate(q->img->fd,
			      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(hole << q->cluster_bits),
			      (off_t)(hole_len << q->cluster_bits)) < 0 &&
		    errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		hole_len = 0;
	}
	return 0;
}

int qcow2_free_clusters_deferred_locked(struct qcow2 *q, uint64_t off,
					uint64_t len)
{
	if (!len)
		return 0;
	if (q->ndeferred == q->deferred_cap) {
		size_t cap = q->deferred_cap ? q->deferred_cap * 2 : 64;
		struct qcow2_range *d = realloc(q->deferred, cap * sizeof(*d));

		if (!d)
			return -ENOMEM;
		q->deferred = d;
		q->deferred_cap = cap;
	}
	q->deferred[q->ndeferred].off = off;
	q->deferred[q->ndeferred].len = len;
	q->ndeferred++;
	return 0;
}

int qcow2_apply_deferred_frees_locked(struct qcow2 *q)
{
	size_t i;
	int ret = 0;

	for (i = 0; i < q->ndeferred && ret == 0; i++)
		ret = qcow2_free_clusters_locked(q, q->deferred[i].off,
						 q->deferred[i].len);
	if (ret < 0) {
		/* Keep the ones not applied for the next write-back. */
		memmove(q->deferred, q->deferred + i,
			(q->ndeferred - i) * sizeof(*q->deferred));
		q->ndeferred -= i;
		return ret;
	}
	q->ndeferred = 0;
	return 0;
}

/*
 * Build fresh refcount structures counting @refs (one per cluster, @nb
 * clusters) past the end of the file, then switch the header to them.
 */
int qcow2_write_refcounts_locked(struct qcow2 *q, uint32_t *refs, uint64_t nb)
{
	uint64_t epb = 1ull << q->refblock_bits;
	uint64_t ept = q->cluster_size / 8;
	uint64_t start = BC_MAX(nb, file_clusters(q)), bcount = 0, nt = 1;
	uint64_t total, i, c, entries;
	uint8_t *blocks = NULL, *tbuf = NULL;
	uint64_t *table = NULL;
	int ret;

	for (;;) {
		uint64_t nb2, nt2;

		total = start + bcount + nt;
		nb2 = (total + epb - 1) / epb;
		nt2 = (nb2 + ept - 1) / ept;
		if (nb2 == bcount && nt2 == nt)
			break;
		bcount = nb2;
		nt = nt2;
	}
	if ((nt << q->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES)
		return -EFBIG;
	entries = nt * ept;
	blocks = qcow2_alloc_buf(bcount << q->cluster_bits);
	tbuf = qcow2_alloc_buf(nt << q->cluster_bits);
	table = calloc(entries, sizeof(*table));
	if (!blocks || !tbuf || !table) {
		ret = -ENOMEM;
		goto out_free;
	}
	memset(blocks, 0, bcount << q->cluster_bits);
	memset(tbuf, 0, nt << q->cluster_bits);
	for (c = 0; c < total; c++) {
		uint64_t v = c < nb ? refs[c] : (c >= start ? 1 : 0);

		if (v > q->refcount_max) {
			bc_error_set(ERR_IMAGE_CORRUPT, 0,
				     "%s: cluster %llu has too many references",
				     q->img->filename, (unsigned long long)c);
			ret = -EUCLEAN;
			goto out_free;
		}
		qcow2_refblock_set(blocks + ((c / epb) << q->cluster_bits),
				   q->refcount_order, c & (epb - 1), v);
	}
	for (i = 0; i < bcount; i++) {
		table[i] = (start + i) << q->cluster_bits;
		bc_put_be64(tbuf + i * 8, table[i]);
	}
	ret = switch_reftable(q, blocks, bcount, tbuf, nt, start, &table,
			      entries);
	if (ret < 0)
		goto out_free;
	q->free_hint = 0;
	qcow2_cache_drop_all_locked(&q->rb_cache);
out_free:
	free(blocks);
	free(tbuf);
	free(table);
	return ret;
}

int qcow2_rebuild_refcounts_locked(struct qcow2 *q)
{
	uint32_t *refs = NULL;
	uint64_t nb = 0;
	int ret;

	ret = qcow2_collect_refs_locked(q, false, &refs, &nb, NULL);
	if (ret < 0)
		return ret;
	ret = qcow2_write_refcounts_locked(q, refs, nb);
	free(refs);
	return ret;
}
