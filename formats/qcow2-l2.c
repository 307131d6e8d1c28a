/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 guest→host mapping: the L1 table, the L2 table cache and the
 * decoding of L2 entries (spec "Cluster mapping", "Extended L2 Entries").
 *
 * The L1 table is loaded whole at open and kept host-endian in q->l1; an
 * L1 entry is written when it changes (a new or copied L2 table, itself
 * on disk by then). L2 tables go through q->l2_cache (qcow2-cache.c),
 * kept big-endian as on disk and written back whole; a table is pinned
 * (refs > 0) while a caller holds it under q->lock.
 *
 * Entries are validated when they are classified, not when a table is
 * loaded: a table holds entries for guest ranges that may never be read,
 * and QEMU too reports a bad entry only when it is used.
 *
 * Mapping coalesces: qcow2_map_ext_locked() returns the longest run from
 * the queried offset whose (sub)clusters have the same kind and, where
 * they have host clusters, contiguous host offsets. A sequential read
 * therefore costs one host pread per contiguous run and one cache lookup
 * per L2 table. One call looks at no more than QCOW2_MAP_MAX_ENTRIES
 * entries (a run is then cut short; callers loop), which bounds how long
 * a block status over a huge image holds q->lock.
 *
 * Everything here runs under q->lock (the *_locked functions) or at open,
 * except qcow2_file_pread(), which touches no shared state (reads of guest
 * data call it unlocked).
 */
#include "qcow2.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Buffers for metadata are aligned for O_DIRECT at any logical block size. */
#define META_BUF_ALIGN 4096u

int qcow2_corrupt(const char *name, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	bc_error_set(ERR_IMAGE_CORRUPT, 0, "%s: %s", name, reason);
	return -EUCLEAN;
}

/* Alignment that file I/O on this image needs (1 without O_DIRECT). */
static void io_error(const struct qcow2 *q, int ret, const char *what,
		     uint64_t off)
{
	char eb[128];

	bc_error_set_default(bc_errno_to_code(-ret), -ret,
			     "%s: cannot %s at offset %" PRIu64 ": %s",
			     qcow2_name(q), what, off,
			     strerror_r(-ret, eb, sizeof(eb)));
}

/* Whether [off, off+n) from @buf can go to the file as it is. */
static bool io_is_aligned(const struct qcow2 *q, const void *buf, uint64_t n,
			  uint64_t off)
{
	uint64_t align = qcow2_io_align(q);

	return align == 1 ||
	       (bc_is_aligned(off, align) && bc_is_aligned(n, align) &&
		bc_is_aligned((uintptr_t)buf, align));
}

int qcow2_file_pread(struct qcow2 *q, void *buf, uint64_t n, uint64_t off,
		     uint64_t known_end)
{
	int ret;

	if (io_is_aligned(q, buf, n, off))
		ret = fmt_pread_file_within(q->img->fd, buf, (size_t)n, off,
					    known_end);
	else
		ret = fmt_pread_file_within_bounced(q->img->fd, buf, (size_t)n,
						    off, known_end,
						    (uint32_t)qcow2_io_align(q));
	if (ret < 0)
		io_error(q, ret, "read", off);
	return ret;
}

/*
 * Under O_DIRECT an unaligned range is read, patched and written back
 * whole. q->lock keeps the disk copy authoritative: metadata is written
 * under it, and guest data shares an O_DIRECT block with other clusters
 * only when clusters are smaller than the block, and then is written
 * under it too (q->data_under_lock). Declared in qcow2.h.
 */
int qcow2_meta_pwrite(struct qcow2 *q, const void *buf, size_t n, uint64_t off)
{
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = n };
	int ret;

	if (io_is_aligned(q, buf, n, off))
		ret = fmt_pwrite_file(q->img->fd, buf, n, off);
	else
		ret = fmt_pwritev_file_bounced(q->img->fd, &iov, 1, off,
					       (uint32_t)qcow2_io_align(q));
	if (ret < 0)
		io_error(q, ret, "write metadata", off);
	return ret;
}

/* --- L1 ---------------------------------------------------------------- */

int qcow2_l1_load(struct qcow2 *q)
{
	uint64_t bytes = (uint64_t)q->l1_size * 8;
	uint64_t rounded = bc_align_up(bytes ? bytes : 8, META_BUF_ALIGN);
	uint64_t *l1;
	void *raw;
	uint32_t i;
	int ret;

	l1 = calloc(q->l1_size ? q->l1_size : 1, sizeof(*l1));
	if (!l1)
		return -ENOMEM;
	if (!q->l1_size) {
		q->l1 = l1;
		return 0;
	}
	if (posix_memalign(&raw, META_BUF_ALIGN, (size_t)rounded)) {
		free(l1);
		return -ENOMEM;
	}
	ret = qcow2_file_pread(q, raw, rounded, q->hdr.l1_table_offset,
			       q->file_size);
	if (ret < 0)
		goto out_free;
	for (i = 0; i < q->l1_size; i++) {
		uint64_t e = bc_get_be64((uint8_t *)raw + (size_t)i * 8);
		uint64_t l2_off = e & QCOW2_L1E_OFFSET_MASK;

		if (q->img->flags & FMT_OPEN_CHECK) {
			/* qcow2_check() counts it; qcow2_l2_get_locked() refuses it. */
			l1[i] = e;
			continue;
		}
		if (e & QCOW2_L1E_RESERVED) {
			ret = qcow2_corrupt(
				qcow2_name(q),
				"L1 entry %" PRIu32
				" has reserved bits set (0x%016" PRIx64 ")",
				i, e);
			goto out_free;
		}
		if (!bc_is_aligned(l2_off, q->cluster_size)) {
			ret = qcow2_corrupt(qcow2_name(q),
					    "L2 table offset 0x%" PRIx64
					    " unaligned (L1 index %" PRIu32 ")",
					    l2_off, i);
			goto out_free;
		}
		l1[i] = e;
	}
	free(raw);
	q->l1 = l1;
	return 0;

out_free:
	free(raw);
	free(l1);
	return ret;
}

void qcow2_l1_mark_dirty_locked(struct qcow2 *q, uint64_t idx)
{
	assert(idx < q->l1_size);
	if (q->l1_dirty_lo == q->l1_dirty_hi) {
		q->l1_dirty_lo = idx;
		q->l1_dirty_hi = idx + 1;
	} else {
		q->l1_dirty_lo = BC_MIN(q->l1_dirty_lo, idx);
		q->l1_dirty_hi = BC_MAX(q->l1_dirty_hi, idx + 1);
	}
}

/* The dirty span in one write: a few new tables are usually neighbours. */
int qcow2_l1_writeback_locked(struct qcow2 *q)
{
	uint64_t lo = q->l1_dirty_lo, n = q->l1_dirty_hi - lo, i;
	uint8_t *be;
	int ret;

	if (!n)
		return 0;
	be = malloc(n * 8);
	if (!be)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		bc_put_be64(be + i * 8, q->l1[lo + i]);
	ret = qcow2_meta_pwrite(q, be, n * 8, q->hdr.l1_table_offset + lo * 8);
	free(be);
	if (ret == 0)
		q->l1_dirty_lo = q->l1_dirty_hi = 0;
	return ret;
}

/* --- L2 cache ---------------------------------------------------------- */

int qcow2_l2_get_locked(struct qcow2 *q, uint64_t l2_off,
			struct qcow2_table **out)
{
	uint64_t end;

	if (!l2_off || !bc_is_aligned(l2_off, q->cluster_size))
		return qcow2_corrupt(qcow2_name(q),
				     "L2 table offset 0x%" PRIx64 " unaligned",
				     l2_off);
	if (bc_add_overflow(l2_off, q->cluster_size, &end) ||
	    end > q->file_size)
		return qcow2_corrupt(qcow2_name(q),
				     "L2 table offset 0x%" PRIx64
				     " beyond end of file",
				     l2_off);
	return qcow2_cache_get_locked(q, &q->l2_cache, l2_off, false, out);
}

void qcow2_l2_put_locked(struct qcow2 *q, struct qcow2_table *t)
{
	qcow2_cache_put_locked(&q->l2_cache, t);
}

void qcow2_l2_evict_locked(struct qcow2 *q, uint64_t l2_off)
{
	qcow2_cache_drop_locked(&q->l2_cache, l2_off);
}

struct qcow2_l2_entry qcow2_l2_entry_get(const struct qcow2 *q,
					 const struct qcow2_table *t,
					 uint64_t idx)
{
	struct qcow2_l2_entry e;
	const uint8_t *p = t->data + idx * q->l2_entry_size;

	e.raw = bc_get_be64(p);
	e.bitmap = q->extended_l2 ? bc_get_be64(p + 8) : 0;
	return e;
}

void qcow2_l2_entry_set(struct qcow2 *q, struct qcow2_table *t,
			uint64_t idx, struct qcow2_l2_entry e)
{
	uint8_t *p = t->data + idx * q->l2_entry_size;

	bc_put_be64(p, e.raw);
	if (q->extended_l2)
		bc_put_be64(p + 8, e.bitmap);
	qcow2_cache_mark_dirty_locked(&q->l2_cache, t);
}

/* --- Entries ----------------------------------------------------------- */

void qcow2_compressed_desc(const struct qcow2 *q, uint64_t raw,
			   uint64_t *host_off, uint64_t *nbytes)
{
	uint64_t off = raw & ((1ull << q->csize_shift) - 1);
	uint64_t sectors = ((raw >> q->csize_shift) & q->csize_mask) + 1;

	*host_off = off;
	*nbytes = sectors * 512 - (off & 511);
}

int qcow2_l2_classify(struct qcow2 *q, struct qcow2_l2_entry e, uint64_t off,
		      enum qcow2_cluster_type *type, uint64_t *host_off)
{
	uint64_t raw = e.raw, hoff, reserved;

	if (raw & QCOW2_OFLAG_COMPRESSED) {
		uint64_t nbytes;

		qcow2_compressed_desc(q, raw, &hoff, &nbytes);
		/* Offset bits past 55 must be zero (spec); no subclusters. */
		if ((hoff >> 56) || (q->extended_l2 && e.bitmap))
			return qcow2_corrupt(
				qcow2_name(q),
				"invalid compressed cluster descriptor 0x%016" PRIx64
				" (guest offset 0x%" PRIx64 ")",
				raw, off);
		if (hoff >= q->file_size)
			return qcow2_corrupt(
				qcow2_name(q),
				"compressed cluster at host offset 0x%" PRIx64
				" beyond end of file (guest offset 0x%" PRIx64
				")",
				hoff, off);
		*type = QCOW2_CLUSTER_COMPRESSED;
		*host_off = hoff;
		return 0;
	}

	/* The zero flag exists only in v3 without extended L2. */
	reserved = QCOW2_L2E_STD_RESERVED;
	if (q->extended_l2 || q->hdr.version < 3)
		reserved |= QCOW2_OFLAG_ZERO;
	if (raw & reserved)
		return qcow2_corrupt(
			qcow2_name(q),
			"L2 entry 0x%016" PRIx64
			" has reserved bits set (guest offset 0x%" PRIx64 ")",
			raw, off);
	hoff = raw & QCOW2_L2E_OFFSET_MASK;
	if (!bc_is_aligned(hoff, q->cluster_size))
		return qcow2_corrupt(qcow2_name(q),
				     "cluster offset 0x%" PRIx64
				     " unaligned (guest offset 0x%" PRIx64 ")",
				     hoff, off);
	if (hoff && hoff >= q->file_size)
		return qcow2_corrupt(
			qcow2_name(q),
			"cluster offset 0x%" PRIx64
			" beyond end of file (guest offset 0x%" PRIx64 ")",
			hoff, off);

	if (!q->extended_l2) {
		if (raw & QCOW2_OFLAG_ZERO)
			*type = hoff ? QCOW2_CLUSTER_ZERO_ALLOC
				     : QCOW2_CLUSTER_ZERO_PLAIN;
		else
			*type = hoff ? QCOW2_CLUSTER_NORMAL
				     : QCOW2_CLUSTER_UNALLOCATED;
	} else {
		uint32_t alloc = (uint32_t)e.bitmap;
		uint32_t zero = (uint32_t)(e.bitmap >> 32);
		uint32_t sc = (uint32_t)((off >> q->subcluster_bits) & 31);

		if (alloc & zero)
			return qcow2_corrupt(
				qcow2_name(q),
				"subclusters both allocated and zero (bitmap 0x%016" PRIx64
				", guest offset 0x%" PRIx64 ")",
				e.bitmap, off);
		if (alloc && !hoff)
			return qcow2_corrupt(
				qcow2_name(q),
				"allocated subclusters without a host cluster (bitmap 0x%016" PRIx64
				", guest offset 0x%" PRIx64 ")",
				e.bitmap, off);
		if (zero & (1u << sc))
			*type = hoff ? QCOW2_CLUSTER_ZERO_ALLOC
				     : QCOW2_CLUSTER_ZERO_PLAIN;
		else if (alloc & (1u << sc))
			*type = QCOW2_CLUSTER_NORMAL;
		else
			*type = QCOW2_CLUSTER_UNALLOCATED;
	}
	*host_off = hoff + (off & (q->cluster_size - 1));
	return 0;
}

/*
 * Bytes from @off to the end of the run of subclusters in the same state
 * within its cluster (extended L2; @type as classified at @off).
 */
static uint64_t subcluster_run(const struct qcow2 *q, struct qcow2_l2_entry e,
			       uint64_t off, enum qcow2_cluster_type type)
{
	uint32_t alloc = (uint32_t)e.bitmap;
	uint32_t zero = (uint32_t)(e.bitmap >> 32);
	uint32_t sc = (uint32_t)((off >> q->subcluster_bits) & 31);
	uint32_t same = ~0u, n;

	switch (type) {
	case QCOW2_CLUSTER_ZERO_PLAIN:
	case QCOW2_CLUSTER_ZERO_ALLOC:
		same = zero;
		break;
	case QCOW2_CLUSTER_NORMAL:
		same = alloc;
		break;
	case QCOW2_CLUSTER_UNALLOCATED:
		same = ~(alloc | zero);
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		break;
	}
	same >>= sc;
	/* same & 1 holds: count the run of ones from bit 0. */
	n = ~same ? (uint32_t)__builtin_ctz(~same) : 32 - sc;
	if (n > 32 - sc)
		n = 32 - sc;
	return ((uint64_t)(sc + n) << q->subcluster_bits) -
	       (off & (q->cluster_size - 1));
}

/* Whether a segment continues the run in @m (same kind, contiguous host). */
static bool extend_run(struct qcow2_mapping *m, enum qcow2_cluster_type type,
		       uint64_t host, uint64_t seg)
{
	if (!m->run) {
		m->type = type;
		m->host_off = host;
		m->run = seg;
		return true;
	}
	if (type != m->type || type == QCOW2_CLUSTER_COMPRESSED)
		return false;
	if ((type == QCOW2_CLUSTER_NORMAL ||
	     type == QCOW2_CLUSTER_ZERO_ALLOC) &&
	    host != m->host_off + m->run)
		return false;
	m->run += seg;
	return true;
}

int qcow2_map_ext_locked(struct qcow2 *q, uint64_t off, uint64_t len,
			 struct qcow2_mapping *m)
{
	uint64_t pos = off, end, span_bits = q->cluster_bits + q->l2_bits;
	unsigned int budget = QCOW2_MAP_MAX_ENTRIES;
	int ret;

	assert(len > 0);
	if (bc_add_overflow(off, len, &end))
		end = UINT64_MAX;
	m->run = 0;
	m->l2_raw = 0;
	m->host_off = 0;
	m->type = QCOW2_CLUSTER_UNALLOCATED;
	while (pos < end) {
		uint64_t l1i = pos >> span_bits;
		uint64_t span_end = (l1i + 1) << span_bits;
		uint64_t stop = BC_MIN(end, span_end);
		struct qcow2_table *t;
		uint64_t l2_off = 0;
		bool more = true;

		if (l1i < q->l1_size)
			l2_off = q->l1[l1i] & QCOW2_L1E_OFFSET_MASK;
		if (!l2_off) {
			if (!extend_run(m, QCOW2_CLUSTER_UNALLOCATED, 0,
					stop - pos))
				break;
			pos = stop;
			if (!--budget)
				break;
			continue;
		}
		ret = qcow2_l2_get_locked(q, l2_off, &t);
		if (ret < 0)
			return ret;
		while (pos < stop) {
			uint64_t idx = qcow2_l2_index(q, pos);
			struct qcow2_l2_entry e = qcow2_l2_entry_get(q, t, idx);
			uint64_t cl_end = (pos | (q->cluster_size - 1)) + 1;
			enum qcow2_cluster_type type;
			uint64_t host, seg;

			ret = qcow2_l2_classify(q, e, pos, &type, &host);
			if (ret < 0) {
				qcow2_l2_put_locked(q, t);
				return ret;
			}
			if (q->extended_l2 && type != QCOW2_CLUSTER_COMPRESSED)
				seg = subcluster_run(q, e, pos, type);
			else
				seg = cl_end - pos;
			seg = BC_MIN(seg, stop - pos);
			if (!extend_run(m, type, host, seg)) {
				more = false;
				break;
			}
			if (type == QCOW2_CLUSTER_COMPRESSED)
				m->l2_raw = e.raw;
			pos += seg;
			/* A run stops at a compressed cluster's end. */
			if (type == QCOW2_CLUSTER_COMPRESSED || !--budget) {
				more = false;
				break;
			}
		}
		qcow2_l2_put_locked(q, t);
		if (!more)
			break;
	}
	assert(m->run > 0 && m->run <= len);
	return 0;
}

int qcow2_map_locked(struct qcow2 *q, uint64_t off, uint64_t len,
		     enum qcow2_cluster_type *type, uint64_t *host_off,
		     uint64_t *run)
{
	struct qcow2_mapping m;
	int ret;

	ret = qcow2_map_ext_locked(q, off, len, &m);
	if (ret < 0)
		return ret;
	*type = m.type;
	*host_off = m.host_off;
	*run = m.run;
	return 0;
}
