/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 writes: guest writes with cluster allocation and copy-on-write,
 * write-zeroes, discard, flush, backing file rewrite and the feature-bit
 * bookkeeping of a writable image (spec "Cluster mapping", "Extended L2
 * Entries", "Header"; docs/qcow2.md §2, §4, §5).
 *
 * A write is cut at L2 table boundaries (a chunk). Within a chunk the
 * touched clusters are grouped into runs, each written with one pwritev:
 *  - in place: clusters with a host cluster whose COPIED flag is set
 *    (refcount 1) and contiguous host offsets;
 *  - allocating: any other clusters (unallocated, zero, compressed,
 *    shared), given one contiguous range of new host clusters.
 * Only the first and last cluster of a run can be partly written; their
 * untouched bytes are filled from the cluster's current contents (the
 * backing file for unallocated ranges, zeros for zero ranges, the
 * decompressed or old data otherwise) so the new cluster is complete.
 * With extended L2 entries the unit is the subcluster: a newly allocated
 * cluster gets data only in the subclusters the write touches, and only
 * those get their allocation bit.
 *
 * Concurrency (qcow2.h states the request rules). A chunk is handled as:
 *  lock; plan from the L2 table; wait for conflicting requests (then plan
 *  again); allocate the new clusters (refcounts raised in the cache);
 *  register the chunk's cluster range; unlock; copy-on-write reads and the
 *  data pwritev; lock; look the L2 table up again, set the new entries
 *  (the table becomes dirty), put the replaced clusters on the deferred
 *  free list; unregister (waking waiters); unlock.
 * A chunk that only overwrites data in clusters it owns, with no
 * copy-on-write, no entry change and no partial O_DIRECT block, registers
 * shared: such overwrites (and reads) run side by side. Anything else is
 * exclusive on its clusters. On an error after allocation, the new
 * clusters are released at once (nothing points at them).
 *
 * Ordering (crash safety): the data pwritev returns before the L2 entry
 * is set in the cache, and the cache writes refcount blocks and syncs
 * before any L2 table goes to the file; a new L2 table (zeroed, or a copy
 * of one shared with a snapshot) is counted, written and synced before
 * the L1 entry links it. Clusters losing a reference are released only
 * after the L2 tables are on disk (deferred frees). A crash leaks
 * clusters at worst; qcow2_flush() makes every completed write durable.
 *
 * Write-zeroes and discard change whole clusters (whole subclusters for
 * write-zeroes with extended L2) by metadata only: the zero flag (v3),
 * the subcluster zero bits, or deallocation where nothing shows through
 * (no backing file; v2 has no zero flag). Partial clusters get zero data
 * (write-zeroes) or are left alone (discard, a hint). They wait until no
 * request overlaps their clusters and change the entries without dropping
 * q->lock.
 */
#include "qcow2.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

#define ZERO_CHUNK    (1u << 20) /* zero-data writes go in pieces of this size */
#define EXT_ALL_ALLOC 0x00000000ffffffffull
#define EXT_ALL_ZERO  0xffffffff00000000ull

/* One touched cluster of a write. */
struct plan {
	uint64_t idx; /* L2 index */
	struct qcow2_l2_entry old;
	bool alloc;	 /* needs a new host cluster */
	uint64_t host;	 /* host cluster (in place) */
	uint64_t nhost;	 /* where the data goes: host, or the new cluster */
	uint32_t ws, we; /* written range within the cluster */
	uint32_t gs, ge; /* guest data range within the cluster */
};

static bool has_backing(const struct qcow2 *q)
{
	return q->img->backing_name != NULL;
}

/* Read host bytes (any alignment; bounced under O_DIRECT); zeros past the end. */
static int host_read(struct qcow2 *q, void *buf, size_t n, uint64_t off)
{
	uint64_t align = qcow2_io_align(q);

	if (align == 1)
		return fmt_pread_file_zfill(q->img->fd, buf, n, off);
	return fmt_pread_file_within_bounced(q->img->fd, buf, n, off, 0,
					     (uint32_t)align);
}

/* Write a gather list at host offset @off, whole. */
static int host_writev(struct qcow2 *q, struct iovec *iov, int cnt,
		       uint64_t off)
{
	uint64_t align = qcow2_io_align(q), total = 0;
	int i;

	for (i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	if (align == 1) {
		while (cnt > 0) {
			ssize_t w = pwritev(q->img->fd, iov, cnt, (off_t)off);

			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (w == 0)
				return -EIO;
			off += (uint64_t)w;
			while (cnt > 0 && (size_t)w >= iov->iov_len) {
				w -= (ssize_t)iov->iov_len;
				iov++;
				cnt--;
			}
			if (cnt > 0) {
				iov->iov_base = (uint8_t *)iov->iov_base + w;
				iov->iov_len -= (size_t)w;
			}
		}
		return 0;
	}
	if (cnt == 1 && bc_is_aligned(off, align) &&
	    bc_is_aligned(total, align) &&
	    bc_is_aligned((uintptr_t)iov[0].iov_base, align))
		return fmt_pwrite_file(q->img->fd, iov[0].iov_base, total, off);
	/* O_DIRECT: whole blocks, edges read back first. */
	return fmt_pwritev_file_bounced(q->img->fd, iov, cnt, off,
					(uint32_t)align);
}

/* --- feature bits -------------------------------------------------------- */

/* Write the header's 64-bit feature field at @off, durably. */
static int write_feature_field(struct qcow2 *q, uint64_t off, uint64_t v)
{
	uint8_t be[8];
	int ret;

	bc_put_be64(be, v);
	ret = qcow2_meta_pwrite(q, be, 8, off);
	if (ret == 0 && fdatasync(q->img->fd) < 0)
		ret = -errno;
	if (ret < 0)
		qcow2_io_error(q, ret, "update the header");
	return ret;
}

static int write_incompat(struct qcow2 *q, uint64_t v)
{
	int ret = write_feature_field(q, 72, v);

	if (ret == 0)
		q->hdr.incompatible_features = v;
	return ret;
}

int qcow2_open_rw(struct qcow2 *q)
{
	int ret;

	if (q->hdr.crypt_method) {
		bc_error_set(
			ERR_UNSUPPORTED, ENOTSUP,
			"%s: writing encrypted qcow2 images is not supported",
			qcow2_name(q));
		return -ENOTSUP;
	}
	if (q->hdr.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
		bc_error_set(
			ERR_UNSUPPORTED, ENOTSUP,
			"%s: writing qcow2 images with an external data file is not supported",
			qcow2_name(q));
		return -ENOTSUP;
	}
	if (q->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
		return qcow2_corrupt(
			qcow2_name(q),
			"image is marked corrupt; cannot be opened read/write");
	}
	if (!q->reftable) {
		ret = qcow2_refcount_load(q);
		if (ret < 0)
			return ret;
	}
	if (q->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
		/* Lazy refcounts left stale counts: recount from the tables. */
		ret = qcow2_rebuild_refcounts_locked(q);
		if (ret < 0)
			return ret;
		ret = write_incompat(q, q->hdr.incompatible_features &
						~QCOW2_INCOMPAT_DIRTY);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Of the autoclear features we maintain only the bitmaps (qcow2-bitmap.c
 * keeps them up to date): clear every other one before the first write,
 * as the spec asks of a program that does not maintain them.
 */
static int clear_autoclear(struct qcow2 *q)
{
	uint64_t keep = q->bitmaps.present ? QCOW2_AUTOCLEAR_BITMAPS : 0;
	uint64_t v = q->hdr.autoclear_features & keep;
	int ret;

	if (q->hdr.version >= 3 && q->hdr.autoclear_features != v) {
		ret = write_feature_field(q, 88, v);
		if (ret < 0)
			return ret;
		q->hdr.autoclear_features = v;
	}
	q->autoclear_cleared = true;
	return 0;
}

int qcow2_prepare_write_locked(struct qcow2 *q)
{
	int ret;

	if (!q->autoclear_cleared) {
		ret = clear_autoclear(q);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_bitmaps_start_locked(q);
	if (ret < 0)
		return ret;
	/*
	 * Lazy refcounts: mark the image dirty before its first change, as
	 * QEMU does. We still write refcounts eagerly, so the mark is only
	 * conservative (a crash leads to a rebuild that finds nothing).
	 */
	if (q->dirty_marked || q->hdr.version < 3 ||
	    !(q->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS)) {
		q->write_ready = true;
		return 0;
	}
	if (!(q->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
		ret = write_incompat(q, q->hdr.incompatible_features |
						QCOW2_INCOMPAT_DIRTY);
		if (ret < 0)
			return ret;
	}
	q->dirty_marked = true;
	q->write_ready = true;
	return 0;
}

/*
 * A change of guest range [off, off+len) is about to be made: the image
 * is ready for writes and its enabled bitmaps record the range first.
 */
static int begin_change_locked(struct qcow2 *q, uint64_t off, uint64_t len)
{
	int ret = qcow2_prepare_write_locked(q);

	if (ret == 0)
		qcow2_bitmaps_note_write(q, off, len);
	return ret;
}

/* Write the metadata back when the deferred frees pile up. */
static int trim_deferred_locked(struct qcow2 *q)
{
	if (q->ndeferred < QCOW2_DEFERRED_MAX)
		return 0;
	return qcow2_flush_metadata_locked(q);
}

int qcow2_flush(struct fmt_image *img)
{
	struct qcow2 *q = img->priv;
	bool synced = false;
	int ret;

	if (!q->read_only) {
		pthread_mutex_lock(&q->lock);
		/* The ordered write-back ends with a sync of the file. */
		synced = q->l2_cache.ndirty || q->ndeferred || qcow2_l1_dirty(q);
		ret = qcow2_flush_metadata_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (ret < 0)
			return ret;
	}
	if (synced)
		return 0;
	/* Data written before the call (and refcount blocks alone). */
	if (fdatasync(img->fd) < 0) {
		ret = -errno;
		bc_error_set(bc_errno_to_code(-ret), -ret, "%s: cannot flush",
			     img->filename);
		return ret;
	}
	return 0;
}

int qcow2_close_rw(struct qcow2 *q)
{
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = qcow2_bitmaps_store_locked(q);
	if (ret == 0)
		ret = qcow2_flush_metadata_locked(q);
	/* The frees just applied, then the tail grown ahead. */
	if (ret == 0)
		ret = qcow2_cache_writeback_locked(q, &q->rb_cache);
	if (ret == 0)
		ret = qcow2_trim_file_locked(q);
	if (ret == 0)
		ret = qcow2_sync_locked(q);
	pthread_mutex_unlock(&q->lock);
	if (ret < 0)
		return ret;
	if (q->dirty_marked &&
	    (q->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
		ret = write_incompat(q, q->hdr.incompatible_features &
						~QCOW2_INCOMPAT_DIRTY);
		if (ret < 0)
			return ret;
	}
	q->dirty_marked = false;
	q->write_ready = false;
	return 0;
}

/* --- L2 tables ----------------------------------------------------------- */

/*
 * The L2 table mapping guest offset @off, ready to be modified: a missing
 * table is allocated (zeroed) when @alloc, else *out is NULL; a table
 * shared with a snapshot (L1 COPIED clear) is copied first.
 */
static int l2_for_write(struct qcow2 *q, uint64_t off, bool alloc,
			struct qcow2_table **out)
{
	uint64_t l1i = qcow2_l1_index(q, off), old_e, old, l2;
	struct qcow2_table *t, *shared = NULL;
	int64_t nw;
	int ret;

	*out = NULL;
	if (l1i >= q->l1_size)
		return qcow2_corrupt(qcow2_name(q),
				     "L1 table too small for offset 0x%llx",
				     (unsigned long long)off);
	old_e = q->l1[l1i];
	old = old_e & QCOW2_L1E_OFFSET_MASK;
	if (old && (old_e & QCOW2_OFLAG_COPIED))
		return qcow2_l2_get_locked(q, old, out);
	if (!old && !alloc)
		return 0;
	if (old) {
		ret = qcow2_l2_get_locked(q, old, &shared);
		if (ret < 0)
			return ret;
	}
	nw = qcow2_alloc_clusters_locked(q, 1);
	if (nw < 0) {
		ret = (int)nw;
		goto out_put;
	}
	l2 = (uint64_t)nw;
	/*
	 * The new table lives in the cache, dirty, like any other: it is
	 * written back after the refcount blocks and a sync, and its L1 entry
	 * only at the flush, after the sync that follows the L2 write-back
	 * (qcow2_flush_metadata_locked()). A crash before leaks the cluster.
	 */
	ret = qcow2_cache_get_locked(q, &q->l2_cache, l2, true, &t);
	if (ret < 0)
		goto out_release;
	if (shared)
		memcpy(t->data, shared->data, q->cluster_size);
	q->l1[l1i] = l2 | QCOW2_OFLAG_COPIED;
	qcow2_l1_mark_dirty_locked(q, l1i);
	if (shared) {
		/* A shared table is never dirty: nothing of it is lost. */
		qcow2_l2_put_locked(q, shared);
		qcow2_l2_evict_locked(q, old);
		ret = qcow2_free_clusters_deferred_locked(q, old,
							  q->cluster_size);
		if (ret < 0) {
			qcow2_l2_put_locked(q, t);
			return ret;
		}
	}
	*out = t;
	return 0;

out_release:
	(void)qcow2_free_clusters_locked(q, l2, q->cluster_size);
out_put:
	if (shared)
		qcow2_l2_put_locked(q, shared);
	return ret;
}

/*
 * Drop the host clusters an entry referenced (it no longer points at them
 * in the cache): deferred until the L2 tables are on disk.
 */
static int release_entry(struct qcow2 *q, struct qcow2_l2_entry e)
{
	uint64_t host, n;

	if (e.raw & QCOW2_OFLAG_COMPRESSED) {
		qcow2_compressed_desc(q, e.raw, &host, &n);
		return qcow2_free_clusters_deferred_locked(
			q, host & ~511ull, bc_align_up(n + (host & 511), 512));
	}
	host = e.raw & QCOW2_L2E_OFFSET_MASK;
	if (!host)
		return 0;
	return qcow2_free_clusters_deferred_locked(q, host, q->cluster_size);
}

/* --- copy-on-write -------------------------------------------------------- */

/*
 * Kind of the (sub)cluster holding guest byte @off under entry @e, which
 * was validated (qcow2_l2_classify) when the write was planned: this runs
 * without q->lock, so it reads nothing that may change.
 */
static enum qcow2_cluster_type entry_kind(const struct qcow2 *q,
					  struct qcow2_l2_entry e, uint64_t off,
					  uint64_t *host)
{
	uint64_t h = e.raw & QCOW2_L2E_OFFSET_MASK;
	uint32_t sc = (uint32_t)((off >> q->subcluster_bits) & 31);

	*host = h + (off & (q->cluster_size - 1));
	if (!q->extended_l2) {
		if (e.raw & QCOW2_OFLAG_ZERO)
			return h ? QCOW2_CLUSTER_ZERO_ALLOC
				 : QCOW2_CLUSTER_ZERO_PLAIN;
		return h ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED;
	}
	if ((e.bitmap >> 32) & (1ull << sc))
		return h ? QCOW2_CLUSTER_ZERO_ALLOC : QCOW2_CLUSTER_ZERO_PLAIN;
	if (e.bitmap & (1ull << sc))
		return QCOW2_CLUSTER_NORMAL;
	return QCOW2_CLUSTER_UNALLOCATED;
}

/*
 * Fill @buf with bytes [from, to) of guest cluster @gc (guest offset of
 * the cluster) as this layer currently shows them, entry @e. Runs without
 * q->lock: the cluster is registered exclusive by the caller.
 */
static int fill_view(struct qcow2 *q, struct qcow2_l2_entry e, uint64_t gc,
		     uint8_t *buf, uint64_t from, uint64_t to)
{
	uint64_t pos = from;
	int ret;

	if (from >= to)
		return 0;
	if (e.raw & QCOW2_OFLAG_COMPRESSED) {
		uint8_t *c = qcow2_alloc_buf(q->cluster_size);

		if (!c)
			return -ENOMEM;
		ret = qcow2_read_compressed(q, e.raw, c);
		if (ret == 0)
			memcpy(buf, c + from, to - from);
		free(c);
		return ret;
	}
	while (pos < to) {
		uint64_t sc_end =
			bc_align_down(pos, 1ull << q->subcluster_bits) +
			(1ull << q->subcluster_bits);
		uint64_t seg = BC_MIN(to, sc_end) - pos, host;
		enum qcow2_cluster_type type = entry_kind(q, e, gc + pos, &host);
		uint8_t *dst = buf + (pos - from);

		switch (type) {
		case QCOW2_CLUSTER_UNALLOCATED:
			if (has_backing(q) && !q->img->backing) {
				/* Zeros here would hide the backing's data for good. */
				bc_error_set(
					ERR_UNSUPPORTED, ENOTSUP,
					"%s: backing file not opened: cannot copy-on-write a partial cluster",
					qcow2_name(q));
				return -ENOTSUP;
			}
			ret = fmt_read_backing(q->img, dst, seg, gc + pos);
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
		case QCOW2_CLUSTER_ZERO_ALLOC:
			memset(dst, 0, seg);
			ret = 0;
			break;
		case QCOW2_CLUSTER_NORMAL:
			ret = host_read(q, dst, seg, host);
			break;
		case QCOW2_CLUSTER_COMPRESSED:
			ret = -EUCLEAN; /* handled above */
			break;
		}
		if (ret < 0)
			return ret;
		pos += seg;
	}
	return 0;
}

/* Subcluster mask of the byte range [from, to) of a cluster. */
static uint64_t sc_mask(const struct qcow2 *q, uint64_t from, uint64_t to)
{
	uint64_t first = from >> q->subcluster_bits;
	uint64_t last = (to - 1) >> q->subcluster_bits;

	if (from >= to)
		return 0;
	/* At most 32 subclusters: the shift stays below 64. */
	return ((1ull << (last - first + 1)) - 1) << first;
}

/* Whether the subcluster holding byte @b of a cluster is allocated. */
static bool sc_allocated(const struct qcow2 *q, struct qcow2_l2_entry e,
			 uint64_t b)
{
	return (e.bitmap >> (b >> q->subcluster_bits)) & 1;
}

/* Decide how cluster @p (with gs/ge/old set) is written. */
static void plan_cluster(struct qcow2 *q, struct plan *p)
{
	uint64_t raw = p->old.raw, host = raw & QCOW2_L2E_OFFSET_MASK;
	uint64_t cs = q->cluster_size, sc = 1ull << q->subcluster_bits;
	bool compressed = raw & QCOW2_OFLAG_COMPRESSED;

	p->alloc = compressed || !host || !(raw & QCOW2_OFLAG_COPIED);
	p->host = compressed ? 0 : host;
	if (!q->extended_l2) {
		if (p->alloc || (raw & QCOW2_OFLAG_ZERO)) {
			p->ws = 0;
			p->we = (uint32_t)cs;
		} else {
			p->ws = p->gs;
			p->we = p->ge;
		}
		return;
	}
	if (compressed || (p->alloc && host)) {
		/* A new copy of the whole cluster. */
		p->ws = 0;
		p->we = (uint32_t)cs;
		return;
	}
	p->ws = (uint32_t)bc_align_down(p->gs, sc);
	p->we = (uint32_t)bc_align_up(p->ge, sc);
	if (!p->alloc) {
		/* In place: no COW where the subcluster already has data. */
		if (sc_allocated(q, p->old, p->gs))
			p->ws = p->gs;
		if (sc_allocated(q, p->old, p->ge - 1))
			p->we = p->ge;
	}
}

/* The entry of a written cluster at host offset @host. */
static struct qcow2_l2_entry new_entry(struct qcow2 *q, const struct plan *p,
				       uint64_t host)
{
	struct qcow2_l2_entry e = {.raw = host | QCOW2_OFLAG_COPIED};
	uint64_t touched, alloc, zero;

	if (!q->extended_l2)
		return e;
	if (p->old.raw & QCOW2_OFLAG_COMPRESSED) {
		e.bitmap = EXT_ALL_ALLOC;
		return e;
	}
	touched = sc_mask(q, p->ws, p->we);
	alloc = (p->old.bitmap & EXT_ALL_ALLOC) | touched;
	zero = (p->old.bitmap >> 32) & ~touched;
	e.bitmap = (alloc & EXT_ALL_ALLOC) | (zero << 32);
	return e;
}

/*
 * Write guest data for plans [a, b) (one run: all allocating with
 * contiguous new clusters, or all in place with contiguous host clusters),
 * with the copy-on-write head and tail, in one pwritev. @src is the guest
 * data for the run's first byte. Runs without q->lock (unless
 * q->data_under_lock): uses only the plans and fields fixed at open.
 */
static int write_run_data(struct qcow2 *q, const struct plan *pl, size_t a,
			  size_t b, const uint8_t *src, uint64_t l2_base)
{
	uint64_t cs = q->cluster_size, dlen;
	const struct plan *f = &pl[a], *l = &pl[b - 1];
	uint8_t *head = NULL, *tail = NULL;
	struct iovec iov[3];
	int cnt = 0, ret;

	dlen = (b - a - 1) * cs + l->ge - f->gs;
	if (f->ws < f->gs) {
		head = qcow2_alloc_buf(f->gs - f->ws);
		if (!head)
			return -ENOMEM;
		ret = fill_view(q, f->old,
				l2_base + (f->idx << q->cluster_bits), head,
				f->ws, f->gs);
		if (ret < 0)
			goto out_free;
		iov[cnt].iov_base = head;
		iov[cnt++].iov_len = f->gs - f->ws;
	}
	iov[cnt].iov_base = (void *)(uintptr_t)src;
	iov[cnt++].iov_len = dlen;
	if (l->ge < l->we) {
		tail = qcow2_alloc_buf(l->we - l->ge);
		if (!tail) {
			ret = -ENOMEM;
			goto out_free;
		}
		ret = fill_view(q, l->old,
				l2_base + (l->idx << q->cluster_bits), tail,
				l->ge, l->we);
		if (ret < 0)
			goto out_free;
		iov[cnt].iov_base = tail;
		iov[cnt++].iov_len = l->we - l->ge;
	}
	ret = host_writev(q, iov, cnt, f->nhost + f->ws);
	if (ret < 0)
		qcow2_io_error(q, ret, "write data");
out_free:
	free(head);
	free(tail);
	return ret;
}

/* End of the run starting at plan @a (same kind, contiguous host). */
static size_t run_end(const struct qcow2 *q, const struct plan *pl, size_t np,
		      size_t a)
{
	size_t i;

	for (i = a + 1; i < np; i++)
		if (pl[i].alloc != pl[a].alloc ||
		    pl[i].nhost != pl[i - 1].nhost + q->cluster_size)
			break;
	return i;
}

/*
 * Plan the @np clusters of the chunk [off, off+n) from its L2 table
 * (allocated or copied first when needed). *exclusive: whether the chunk
 * changes the mapping or rewrites bytes it does not own.
 */
static int plan_chunk(struct qcow2 *q, struct plan *pl, size_t np,
		      uint64_t off, uint64_t n, bool *exclusive)
{
	uint64_t cs = q->cluster_size, first = off >> q->cluster_bits;
	uint64_t align = qcow2_io_align(q);
	struct qcow2_table *t;
	size_t i;
	int ret;

	ret = l2_for_write(q, off, true, &t);
	if (ret < 0)
		return ret;
	/* A partial O_DIRECT block is read, patched and written back. */
	*exclusive = !bc_is_aligned(off, align) || !bc_is_aligned(off + n, align);
	for (i = 0; i < np; i++) {
		uint64_t gc = (first + i) << q->cluster_bits;
		struct plan *p = &pl[i];
		struct qcow2_l2_entry ne;

		p->idx = qcow2_l2_index(q, gc);
		p->old = qcow2_l2_entry_get(q, t, p->idx);
		p->gs = (uint32_t)(BC_MAX(off, gc) - gc);
		p->ge = (uint32_t)(BC_MIN(off + n, gc + cs) - gc);
		if (!(p->old.raw & QCOW2_OFLAG_COMPRESSED)) {
			enum qcow2_cluster_type type;
			uint64_t h;

			/* Validates the entry (reserved bits, offsets). */
			ret = qcow2_l2_classify(q, p->old, gc + p->gs, &type,
						&h);
			if (ret < 0)
				break;
		}
		plan_cluster(q, p);
		p->nhost = p->host;
		ne = new_entry(q, p, p->host);
		if (p->alloc || p->ws != p->gs || p->we != p->ge ||
		    ne.raw != p->old.raw || ne.bitmap != p->old.bitmap)
			*exclusive = true;
	}
	qcow2_l2_put_locked(q, t);
	return ret;
}

/* Release the new clusters of the allocating plans (never linked). */
static void free_new_clusters(struct qcow2 *q, struct plan *pl, size_t np)
{
	size_t i;

	for (i = 0; i < np; i++) {
		if (pl[i].alloc && pl[i].nhost) {
			(void)qcow2_free_clusters_locked(q, pl[i].nhost,
							 q->cluster_size);
			pl[i].nhost = 0;
		}
	}
}

/* Give every run of allocating plans one range of new clusters. */
static int alloc_runs(struct qcow2 *q, struct plan *pl, size_t np)
{
	size_t a, i, k;
	int64_t nw;

	for (i = 0; i < np; i++)
		if (pl[i].alloc)
			pl[i].nhost = 0;
	for (a = 0; a < np; a = i) {
		for (i = a + 1; i < np && pl[i].alloc == pl[a].alloc; i++)
			;
		if (!pl[a].alloc)
			continue;
		nw = qcow2_alloc_clusters_locked(q, i - a);
		if (nw < 0) {
			free_new_clusters(q, pl, np);
			return (int)nw;
		}
		for (k = a; k < i; k++)
			pl[k].nhost = (uint64_t)nw + (k - a) * q->cluster_size;
	}
	return 0;
}

/*
 * Set the new entries of the chunk's plans in its L2 table (looked up
 * again: the lock was dropped) and defer the release of what they
 * replaced.
 */
static int commit_chunk(struct qcow2 *q, struct plan *pl, size_t np,
			uint64_t off)
{
	uint64_t l1e = q->l1[qcow2_l1_index(q, off)];
	struct qcow2_table *t;
	size_t i;
	int ret;

	/* No one else changes clusters this chunk holds exclusively. */
	assert((l1e & QCOW2_OFLAG_COPIED) && (l1e & QCOW2_L1E_OFFSET_MASK));
	ret = qcow2_l2_get_locked(q, l1e & QCOW2_L1E_OFFSET_MASK, &t);
	if (ret < 0)
		return ret;
	for (i = 0; i < np; i++) {
		struct qcow2_l2_entry ne = new_entry(q, &pl[i], pl[i].nhost);
		struct qcow2_l2_entry cur = qcow2_l2_entry_get(q, t, pl[i].idx);

		assert(cur.raw == pl[i].old.raw &&
		       cur.bitmap == pl[i].old.bitmap);
		if (ne.raw != cur.raw || ne.bitmap != cur.bitmap)
			qcow2_l2_entry_set(q, t, pl[i].idx, ne);
	}
	qcow2_l2_put_locked(q, t);
	for (i = 0; i < np; i++) {
		if (!pl[i].alloc)
			continue;
		pl[i].alloc = false; /* linked now: not freed on error */
		ret = release_entry(q, pl[i].old);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Write [off, off+n) lying inside one L2 table. Called and returns with
 * q->lock held; drops it around the data I/O (see the top comment).
 */
static int write_chunk(struct qcow2 *q, const uint8_t *src, uint64_t n,
		       uint64_t off)
{
	uint64_t cs = q->cluster_size, span = cs << q->l2_bits;
	uint64_t l2_base = bc_align_down(off, span);
	uint64_t first = off >> q->cluster_bits;
	uint64_t last = (off + n - 1) >> q->cluster_bits;
	uint64_t rs = first << q->cluster_bits, re = (last + 1) << q->cluster_bits;
	size_t np = (size_t)(last - first + 1), i, a;
	struct qcow2_req req;
	struct plan *pl;
	bool exclusive;
	int ret;

	pl = calloc(np, sizeof(*pl));
	if (!pl)
		return -ENOMEM;
	do {
		ret = plan_chunk(q, pl, np, off, n, &exclusive);
		if (ret < 0)
			goto out_free;
	} while (qcow2_req_wait_locked(q, rs, re, exclusive));
	ret = alloc_runs(q, pl, np);
	if (ret < 0)
		goto out_free;
	qcow2_req_add_locked(q, &req, rs, re, exclusive);
	if (!q->data_under_lock)
		pthread_mutex_unlock(&q->lock);
	for (a = 0; a < np && ret == 0; a = i) {
		i = run_end(q, pl, np, a);
		ret = write_run_data(q, pl, a, i,
				     src + (((first + a) << q->cluster_bits) +
					    pl[a].gs - off),
				     l2_base);
	}
	if (!q->data_under_lock)
		pthread_mutex_lock(&q->lock);
	if (ret == 0)
		ret = commit_chunk(q, pl, np, off);
	if (ret < 0)
		free_new_clusters(q, pl, np);
	qcow2_req_remove_locked(q, &req);
out_free:
	free(pl);
	return ret;
}

/* Write [off, off+n); q->lock held, dropped around data I/O. */
static int write_locked(struct qcow2 *q, const uint8_t *src, uint64_t n,
			uint64_t off)
{
	uint64_t span = q->cluster_size << q->l2_bits;
	int ret;

	while (n) {
		uint64_t chunk =
			BC_MIN(n, bc_align_down(off, span) + span - off);

		ret = write_chunk(q, src, chunk, off);
		if (ret < 0)
			return ret;
		src += chunk;
		off += chunk;
		n -= chunk;
	}
	return trim_deferred_locked(q);
}

/* Zero data through the write path (partial clusters, v2 with backing). */
static int write_zero_data_locked(struct qcow2 *q, uint64_t off, uint64_t len)
{
	uint8_t *z;
	int ret = 0;

	if (!len)
		return 0;
	z = qcow2_alloc_buf(BC_MIN(len, ZERO_CHUNK));
	if (!z)
		return -ENOMEM;
	memset(z, 0, BC_MIN(len, ZERO_CHUNK));
	while (len && ret == 0) {
		uint64_t n = BC_MIN(len, ZERO_CHUNK);

		ret = write_locked(q, z, n, off);
		off += n;
		len -= n;
	}
	free(z);
	return ret;
}

int qcow2_pwrite(struct fmt_image *img, const void *buf, size_t n, uint64_t off)
{
	struct qcow2 *q = img->priv;
	int ret;

	BC_LOCK_GUARD(&q->lock);
	ret = begin_change_locked(q, off, n);
	if (ret < 0)
		return ret;
	return write_locked(q, buf, n, off);
}

/* --- mapping for I/O outside the driver (asynchronous guest requests) ------- */

/* What a mapped range holds (struct fmt_io_map's storage). */
struct io_map_state {
	struct qcow2_req req;
	uint64_t new_host; /* allocating: the first new cluster, else 0 */
};

static struct io_map_state *io_map_state(struct fmt_io_map *map)
{
	_Static_assert(sizeof(struct io_map_state) <= sizeof(map->reg),
		       "fmt_io_map.reg holds a struct io_map_state");
	return (struct io_map_state *)(void *)map->reg;
}

/*
 * How a write of [off, off+len), inside one L2 table, can go outside the
 * driver: in place (*alloc false; clusters the image owns, no
 * copy-on-write, no entry change: write_chunk's shared case, contiguous
 * on the host, *host is where @off is) or into new clusters (*alloc true;
 * whole clusters none of which the image owns: nothing to copy, every
 * entry replaced). -ENOTSUP when neither (a mix, partial clusters needing
 * copy-on-write, a missing or shared L2 table, compressed in place).
 */
static int plan_io_write_locked(struct qcow2 *q, uint64_t off, uint64_t len,
				bool *alloc, uint64_t *host)
{
	uint64_t cs = q->cluster_size, first = off >> q->cluster_bits;
	uint64_t last = (off + len - 1) >> q->cluster_bits, i;
	uint64_t l1e = q->l1[qcow2_l1_index(q, off)];
	bool whole = bc_is_aligned(off | len, cs);
	struct qcow2_table *t;
	int ret;

	if (qcow2_l1_index(q, off) != qcow2_l1_index(q, off + len - 1) ||
	    !(l1e & QCOW2_OFLAG_COPIED) || !(l1e & QCOW2_L1E_OFFSET_MASK))
		return -ENOTSUP;
	ret = qcow2_l2_get_locked(q, l1e & QCOW2_L1E_OFFSET_MASK, &t);
	if (ret < 0)
		return ret;
	for (i = first; i <= last && ret == 0; i++) {
		uint64_t gc = i << q->cluster_bits, h;
		struct plan p = { .idx = qcow2_l2_index(q, gc) };
		enum qcow2_cluster_type type;
		struct qcow2_l2_entry ne;
		bool in_place;

		p.old = qcow2_l2_entry_get(q, t, p.idx);
		p.gs = (uint32_t)(BC_MAX(off, gc) - gc);
		p.ge = (uint32_t)(BC_MIN(off + len, gc + cs) - gc);
		if (!(p.old.raw & QCOW2_OFLAG_COMPRESSED)) {
			ret = qcow2_l2_classify(q, p.old, gc + p.gs, &type, &h);
			if (ret < 0)
				break;
		}
		plan_cluster(q, &p);
		ne = new_entry(q, &p, p.host);
		in_place = !p.alloc && p.ws == p.gs && p.we == p.ge &&
			   ne.raw == p.old.raw && ne.bitmap == p.old.bitmap;
		if (i == first) {
			*alloc = !in_place;
			*host = p.host + p.gs;
		}
		if (*alloc ? !whole || !p.alloc : !in_place)
			ret = -ENOTSUP;
		else if (!*alloc &&
			 p.host != *host - (off & (cs - 1)) + (i - first) * cs)
			ret = -ENOTSUP;
	}
	qcow2_l2_put_locked(q, t);
	return ret;
}

int qcow2_io_map(struct fmt_image *img, bool write, uint64_t off, uint64_t len,
		 struct fmt_io_map *map)
{
	struct qcow2 *q = img->priv;
	struct io_map_state *st = io_map_state(map);
	uint64_t rs = bc_align_down(off, q->cluster_size);
	uint64_t re = bc_align_up(off + len, q->cluster_size);
	struct qcow2_mapping m;
	bool alloc = false;
	uint64_t host = 0;
	int64_t nw;
	int ret;

	BC_LOCK_GUARD(&q->lock);
	/* Small clusters share O_DIRECT blocks: their data I/O is locked. */
	if (q->data_under_lock)
		return -ENOTSUP;
	if (write) {
		/* The first write of an image goes through the driver. */
		if (!q->write_ready)
			return -ENOTSUP;
		ret = plan_io_write_locked(q, off, len, &alloc, &host);
	} else {
		ret = qcow2_map_ext_locked(q, off, len, &m);
		if (ret == 0 && (m.type != QCOW2_CLUSTER_NORMAL || m.run < len ||
				 m.host_off + len > q->file_size))
			ret = -ENOTSUP;
		host = m.host_off;
	}
	if (ret < 0)
		return ret;
	/* New clusters are invisible until linked: exclusive until then. */
	if (qcow2_req_conflicts_locked(q, rs, re, alloc))
		return -EAGAIN;
	if (alloc) {
		nw = qcow2_alloc_clusters_locked(q, len >> q->cluster_bits);
		if (nw < 0)
			return (int)nw;
		host = (uint64_t)nw;
	}
	if (write)
		qcow2_bitmaps_note_write(q, off, len);
	qcow2_req_add_locked(q, &st->req, rs, re, alloc);
	st->req.mapped = true;
	st->new_host = alloc ? host : 0;
	map->fd = q->img->fd;
	map->host_off = host;
	map->known_end = q->file_size;
	return 0;
}

/*
 * Link the new clusters of a completed allocating write: the data is in
 * them (the cache's order then puts their refcounts on disk before the
 * table), and the entries they replace are released once the tables are.
 */
static int link_new_clusters_locked(struct qcow2 *q, uint64_t off,
				    uint64_t len, uint64_t host,
				    uint64_t *linked)
{
	uint64_t l1e = q->l1[qcow2_l1_index(q, off)], i;
	struct qcow2_table *t;
	int ret;

	*linked = 0;
	/* The exclusive registration kept the table and the entries. */
	assert((l1e & QCOW2_OFLAG_COPIED) && (l1e & QCOW2_L1E_OFFSET_MASK));
	ret = qcow2_l2_get_locked(q, l1e & QCOW2_L1E_OFFSET_MASK, &t);
	if (ret < 0)
		return ret;
	for (i = 0; i < len >> q->cluster_bits && ret == 0; i++) {
		uint64_t idx = qcow2_l2_index(q, off + (i << q->cluster_bits));
		struct qcow2_l2_entry old = qcow2_l2_entry_get(q, t, idx);
		struct qcow2_l2_entry ne = {
			.raw = (host + (i << q->cluster_bits)) | QCOW2_OFLAG_COPIED,
			.bitmap = q->extended_l2 ? EXT_ALL_ALLOC : 0,
		};

		qcow2_l2_entry_set(q, t, idx, ne);
		(*linked)++;
		ret = release_entry(q, old);
	}
	qcow2_l2_put_locked(q, t);
	return ret < 0 ? ret : trim_deferred_locked(q);
}

int qcow2_io_unmap(struct fmt_image *img, struct fmt_io_map *map, int result)
{
	struct qcow2 *q = img->priv;
	struct io_map_state *st = io_map_state(map);
	uint64_t off = st->req.start, len = st->req.end - st->req.start;
	uint64_t linked = 0;
	int ret = result;

	BC_LOCK_GUARD(&q->lock);
	if (st->new_host && result == 0) {
		ret = link_new_clusters_locked(q, off, len, st->new_host,
					       &linked);
		if (ret < 0)
			qcow2_io_error(q, ret, "link new clusters");
	}
	/* Only clusters no entry points at go back: linked ones stay. */
	if (st->new_host && ret < 0 && (linked << q->cluster_bits) < len)
		(void)qcow2_free_clusters_locked(
			q, st->new_host + (linked << q->cluster_bits),
			len - (linked << q->cluster_bits));
	qcow2_req_remove_locked(q, &st->req);
	return ret;
}

/* --- mapping for overwrite (copy destinations) ----------------------------- */

/*
 * Map the first run of whole clusters of [off, off+len) for an overwrite:
 * clusters already ours (COPIED, not compressed) in place while their host
 * clusters are contiguous, or else a run of fresh contiguous clusters that
 * replaces whatever the entries held (unallocated, zero, compressed,
 * shared). The L2 entries are set in the cache before the caller writes
 * the data (they reach the file at the next flush or eviction): see
 * fmt_map_for_overwrite() for who may use this. Waits until no request
 * overlaps the clusters, then decides without dropping q->lock.
 */
int qcow2_map_for_overwrite(struct fmt_image *img, uint64_t off, uint64_t len,
			    struct fmt_extent *ext)
{
	struct qcow2 *q = img->priv;
	uint64_t cs = q->cluster_size, span = cs << q->l2_bits;
	uint64_t first, n, i, host0 = 0;
	struct qcow2_l2_entry old[64];
	struct qcow2_table *t;
	bool alloc = false;
	int64_t nw;
	int ret;

	if (!bc_is_aligned(off, cs) || len < cs)
		return -ENOTSUP;
	BC_LOCK_GUARD(&q->lock);
	/* Marks the whole request: more than this call maps is harmless. */
	ret = begin_change_locked(q, off, len);
	if (ret < 0)
		return ret;
	/* One L2 table, whole clusters, a bounded run. */
	n = BC_MIN(len, bc_align_down(off, span) + span - off) >> q->cluster_bits;
	n = BC_MIN(n, (uint64_t)BC_ARRAY_SIZE(old));
	(void)qcow2_req_wait_locked(q, off, off + n * cs, true);
	ret = l2_for_write(q, off, true, &t);
	if (ret < 0)
		return ret;
	first = qcow2_l2_index(q, off);
	for (i = 0; i < n; i++) {
		struct qcow2_l2_entry e = qcow2_l2_entry_get(q, t, first + i);
		uint64_t host = e.raw & QCOW2_L2E_OFFSET_MASK;
		bool mine = !(e.raw & QCOW2_OFLAG_COMPRESSED) && host &&
			    (e.raw & QCOW2_OFLAG_COPIED) &&
			    !(!q->extended_l2 && (e.raw & QCOW2_OFLAG_ZERO));

		if (!(e.raw & QCOW2_OFLAG_COMPRESSED)) {
			enum qcow2_cluster_type type;
			uint64_t h;

			ret = qcow2_l2_classify(q, e, off + i * cs, &type, &h);
			if (ret < 0)
				goto out_put;
		}
		if (i == 0) {
			alloc = !mine;
			host0 = host;
		} else if (alloc == mine || (!alloc && host != host0 + i * cs)) {
			break;
		}
		old[i] = e;
	}
	n = i;
	if (alloc) {
		nw = qcow2_alloc_clusters_locked(q, n);
		if (nw < 0) {
			ret = (int)nw;
			goto out_put;
		}
		host0 = (uint64_t)nw;
		for (i = 0; i < n; i++) {
			struct qcow2_l2_entry ne = {
				.raw = (host0 + i * cs) | QCOW2_OFLAG_COPIED,
				.bitmap = q->extended_l2 ? EXT_ALL_ALLOC : 0,
			};

			qcow2_l2_entry_set(q, t, first + i, ne);
		}
		for (i = 0; i < n && ret == 0; i++)
			ret = release_entry(q, old[i]);
		if (ret < 0)
			goto out_put;
	} else if (q->extended_l2) {
		/* In place: every subcluster will hold data. */
		for (i = 0; i < n; i++) {
			struct qcow2_l2_entry ne = old[i];

			ne.bitmap = EXT_ALL_ALLOC;
			if (ne.bitmap != old[i].bitmap)
				qcow2_l2_entry_set(q, t, first + i, ne);
		}
	}
	ext->len = n * cs;
	ext->state = FMT_DATA;
	ext->host_off = (int64_t)host0;
out_put:
	qcow2_l2_put_locked(q, t);
	if (ret == 0)
		ret = trim_deferred_locked(q);
	return ret;
}

/* --- zeroes and discard ---------------------------------------------------- */

enum zmode {
	ZM_ZERO,       /* reads zeros afterwards */
	ZM_ZERO_UNMAP, /* reads zeros, host clusters may go */
	ZM_DISCARD,    /* zeros or backing data; host clusters go */
};

/*
 * Entry for a whole cluster that must read as zeros (or be discarded),
 * and whether its old host cluster is released.
 */
static struct qcow2_l2_entry zero_entry(struct qcow2 *q,
					struct qcow2_l2_entry old,
					enum zmode mode, bool *release)
{
	struct qcow2_l2_entry e = {0, 0};
	uint64_t host = old.raw & QCOW2_L2E_OFFSET_MASK;
	bool compressed = old.raw & QCOW2_OFLAG_COMPRESSED;
	bool keep = mode == ZM_ZERO && !compressed && host &&
		    (old.raw & QCOW2_OFLAG_COPIED) && q->hdr.version >= 3;
	bool need_zero = mode != ZM_DISCARD || has_backing(q);

	*release = !keep && (compressed || host);
	if (q->hdr.version < 3) {
		/* No zero flag: deallocate (callers ensure no backing). */
		return e;
	}
	if (keep)
		e.raw = host | QCOW2_OFLAG_COPIED;
	if (!need_zero && !keep)
		return e; /* unallocated reads zeros without a backing file */
	if (q->extended_l2)
		e.bitmap = need_zero ? EXT_ALL_ZERO : 0;
	else if (need_zero)
		e.raw |= QCOW2_OFLAG_ZERO;
	if (!has_backing(q) && mode == ZM_ZERO_UNMAP && !keep) {
		/* Without a backing file unallocated already reads zeros. */
		e.raw = 0;
		e.bitmap = 0;
	}
	return e;
}

/*
 * Zero or discard [s, e): whole clusters (subclusters with extended L2
 * when !ZM_DISCARD) inside one L2 table. The last cluster of the image
 * counts as whole when the range reaches the image end.
 */
static int zero_chunk(struct qcow2 *q, uint64_t s, uint64_t e, enum zmode mode)
{
	uint64_t cs = q->cluster_size, img_end = q->img->size;
	struct qcow2_l2_entry *olds = NULL;
	uint64_t pos;
	struct qcow2_table *t;
	bool need_table = has_backing(q);
	uint64_t nidx, k;
	int ret;

	(void)qcow2_req_wait_locked(q, bc_align_down(s, cs), bc_align_up(e, cs),
				    true);
	ret = l2_for_write(q, s, need_table, &t);
	if (ret < 0 || !t)
		return ret;
	nidx = ((e - 1) >> q->cluster_bits) - (s >> q->cluster_bits) + 1;
	olds = calloc(nidx, sizeof(*olds));
	if (!olds) {
		qcow2_l2_put_locked(q, t);
		return -ENOMEM;
	}
	for (pos = s, k = 0; pos < e; k++) {
		uint64_t gc = bc_align_down(pos, cs);
		uint64_t ce = BC_MIN(e, gc + cs);
		uint64_t idx = qcow2_l2_index(q, gc);
		struct qcow2_l2_entry old = qcow2_l2_entry_get(q, t, idx), ne;
		bool whole = pos == gc && (ce == gc + cs || ce >= img_end);
		bool release = false;

		olds[k] = old;
		if (whole) {
			ne = zero_entry(q, old, mode, &release);
		} else {
			/* Extended L2, whole subclusters of an uncompressed cluster. */
			uint64_t m = sc_mask(q, pos - gc,
					     ce >= img_end ? cs : ce - gc);

			ne = old;
			ne.bitmap = ((old.bitmap & EXT_ALL_ALLOC) & ~m) |
				    (((old.bitmap >> 32) | m) << 32);
		}
		if (ne.raw != old.raw || ne.bitmap != old.bitmap)
			qcow2_l2_entry_set(q, t, idx, ne);
		if (!release)
			olds[k].raw = 0; /* nothing to free afterwards */
		pos = ce;
	}
	qcow2_l2_put_locked(q, t);
	for (k = 0; ret == 0 && k < nidx; k++)
		ret = release_entry(q, olds[k]);
	free(olds);
	return ret;
}

/*
 * Zero whole subclusters [p, nx) of one cluster (extended L2). A
 * compressed cluster has no subclusters: it gets zero data instead.
 */
static int zero_partial(struct qcow2 *q, uint64_t p, uint64_t nx,
			enum zmode mode)
{
	uint64_t l1e = q->l1[qcow2_l1_index(q, p)] & QCOW2_L1E_OFFSET_MASK;
	struct qcow2_table *t;
	bool comp = false;
	int ret;

	if (l1e) {
		ret = qcow2_l2_get_locked(q, l1e, &t);
		if (ret < 0)
			return ret;
		comp = qcow2_l2_entry_get(q, t, qcow2_l2_index(q, p)).raw &
		       QCOW2_OFLAG_COMPRESSED;
		qcow2_l2_put_locked(q, t);
	}
	if (comp)
		return write_zero_data_locked(q, p,
					      BC_MIN(nx, q->img->size) - p);
	return zero_chunk(q, p, nx, mode);
}

/*
 * Zero/discard [off, off+len): @gran-aligned inner part by metadata,
 * partial parts (zero only) as zero data. Compressed clusters cannot be
 * zeroed per subcluster: they get zero data.
 */
static int zero_range_locked(struct qcow2 *q, uint64_t off, uint64_t len,
			     enum zmode mode)
{
	uint64_t cs = q->cluster_size, span = cs << q->l2_bits;
	uint64_t gran = mode == ZM_DISCARD ? cs : 1ull << q->subcluster_bits;
	uint64_t end = off + len, a, b;
	int ret;

	a = bc_align_up(off, gran);
	b = end >= q->img->size ? bc_align_up(end, gran)
				: bc_align_down(end, gran);
	if (a >= b ||
	    (mode != ZM_DISCARD && q->hdr.version < 3 && has_backing(q))) {
		/* No metadata way to do it (or nothing whole): zero data. */
		if (mode == ZM_DISCARD)
			return 0;
		return write_zero_data_locked(q, off, len);
	}
	if (mode != ZM_DISCARD) {
		ret = write_zero_data_locked(q, off, a - off);
		if (ret == 0 && b < end)
			ret = write_zero_data_locked(q, b, end - b);
		if (ret < 0)
			return ret;
	}
	while (a < b) {
		uint64_t ce = BC_MIN(b, bc_align_down(a, span) + span);
		uint64_t p = a, mid_end;

		if (!q->extended_l2 || mode == ZM_DISCARD) {
			ret = zero_chunk(q, a, ce, mode);
			if (ret < 0)
				return ret;
			a = ce;
			continue;
		}
		if (!bc_is_aligned(p, cs)) {
			uint64_t nx = BC_MIN(ce, bc_align_up(p, cs));

			ret = zero_partial(q, p, nx, mode);
			if (ret < 0)
				return ret;
			p = nx;
		}
		mid_end = ce >= q->img->size ? ce : bc_align_down(ce, cs);
		if (mid_end > p) {
			ret = zero_chunk(q, p, mid_end, mode);
			if (ret < 0)
				return ret;
			p = mid_end;
		}
		if (p < ce) {
			ret = zero_partial(q, p, ce, mode);
			if (ret < 0)
				return ret;
		}
		a = ce;
	}
	return 0;
}

int qcow2_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len,
		       unsigned int flags)
{
	struct qcow2 *q = img->priv;
	int ret;

	BC_LOCK_GUARD(&q->lock);
	ret = begin_change_locked(q, off, len);
	if (ret < 0)
		return ret;
	return zero_range_locked(q, off, len,
				 (flags & FMT_ZERO_MAY_UNMAP) ? ZM_ZERO_UNMAP
							      : ZM_ZERO);
}

int qcow2_discard(struct fmt_image *img, uint64_t off, uint64_t len)
{
	struct qcow2 *q = img->priv;
	int ret;

	if (q->hdr.version < 3 && has_backing(q)) {
		bc_error_set(
			ERR_UNSUPPORTED, ENOTSUP,
			"%s: discard is not supported on qcow2 v2 images with a backing file",
			img->filename);
		return -ENOTSUP;
	}
	BC_LOCK_GUARD(&q->lock);
	ret = begin_change_locked(q, off, len);
	if (ret < 0)
		return ret;
	return zero_range_locked(q, off, len, ZM_DISCARD);
}

/* --- backing file ----------------------------------------------------------- */

/*
 * Cluster 0 is rebuilt in memory (header, extensions, backing name) and
 * written with one write covering the old and the new header area: a
 * crash leaves the old or the new header.
 */
int qcow2_rewrite_header_locked(struct qcow2 *q,
				const struct qcow2_header_change *c)
{
	struct fmt_image *img = q->img;
	uint64_t cs = q->cluster_size, hlen, pos, out, q_ext_end, wlen;
	uint64_t old_boff, old_bsz, bitmaps_at = 0;
	const char *name = c->backing_name, *fmt = c->backing_fmt;
	size_t name_len, fmt_len;
	uint8_t *old = NULL, *nw = NULL;
	char *old_name = NULL;
	int ret;

	old = qcow2_alloc_buf(cs);
	nw = qcow2_alloc_buf(cs);
	if (!old || !nw) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = host_read(q, old, cs, 0);
	if (ret < 0) {
		qcow2_io_error(q, ret, "read the header");
		goto out_free;
	}
	memset(nw, 0, cs);
	hlen = q->hdr.version < 3 ? QCOW2_HDR_V2_LEN : bc_get_be32(old + 100);
	if (hlen > cs) {
		ret = qcow2_corrupt(qcow2_name(q),
				    "qcow2 header exceeds cluster size");
		goto out_free;
	}
	old_boff = bc_get_be64(old + 8);
	old_bsz = bc_get_be32(old + 16);
	if (!c->set_backing) {
		/* Keep the backing name (validated at open) and format. */
		if (old_bsz && old_boff < cs && old_bsz <= cs - old_boff) {
			old_name = strndup((const char *)old + old_boff, old_bsz);
			if (!old_name) {
				ret = -ENOMEM;
				goto out_free;
			}
		}
		name = old_name;
	}
	name_len = name ? strlen(name) : 0;
	memcpy(nw, old, hlen);
	if (c->set_autoclear && q->hdr.version >= 3)
		bc_put_be64(nw + 88, c->autoclear);
	out = hlen;
	/* Keep every extension but the ones being replaced. */
	for (pos = hlen; pos + 8 <= cs;) {
		uint32_t type = bc_get_be32(old + pos);
		uint64_t len = bc_get_be32(old + pos + 4);
		uint64_t sz = 8 + bc_align_up(len, 8);

		if (type == QCOW2_EXT_END)
			break;
		if (len > cs - pos - 8) {
			ret = qcow2_corrupt(qcow2_name(q),
					    "Header extension too large");
			goto out_free;
		}
		if (!(type == QCOW2_EXT_BACKING_FMT && c->set_backing) &&
		    !(type == QCOW2_EXT_BITMAPS && c->set_bitmaps)) {
			if (out + sz > cs)
				goto too_long;
			if (type == QCOW2_EXT_BITMAPS)
				bitmaps_at = out + 8;
			memcpy(nw + out, old + pos, 8 + len);
			out += sz;
		}
		pos += sz;
	}
	if (c->set_bitmaps && c->bitmaps_ext) {
		if (out + 8 + QCOW2_BITMAPS_EXT_LEN > cs)
			goto too_long;
		bc_put_be32(nw + out, QCOW2_EXT_BITMAPS);
		bc_put_be32(nw + out + 4, QCOW2_BITMAPS_EXT_LEN);
		memcpy(nw + out + 8, c->bitmaps_ext, QCOW2_BITMAPS_EXT_LEN);
		bitmaps_at = out + 8;
		out += 8 + QCOW2_BITMAPS_EXT_LEN;
	}
	fmt_len = (c->set_backing && name && fmt) ? strlen(fmt) : 0;
	if (fmt_len) {
		if (out + 8 + bc_align_up(fmt_len, 8) > cs)
			goto too_long;
		bc_put_be32(nw + out, QCOW2_EXT_BACKING_FMT);
		bc_put_be32(nw + out + 4, (uint32_t)fmt_len);
		memcpy(nw + out + 8, fmt, fmt_len);
		out += 8 + bc_align_up(fmt_len, 8);
	}
	if (out + 8 + name_len > cs)
		goto too_long;
	out += 8; /* end marker, zero */
	q_ext_end = out;
	if (name_len) {
		memcpy(nw + out, name, name_len);
		bc_put_be64(nw + 8, out);
		bc_put_be32(nw + 16, (uint32_t)name_len);
	} else {
		bc_put_be64(nw + 8, 0);
		bc_put_be32(nw + 16, 0);
	}
	/* One write covering the old and the new area (4 KiB for O_DIRECT). */
	{
		uint64_t old_end = BC_MIN(cs, pos + 8);

		if (old_boff < cs && old_bsz <= cs - old_boff)
			old_end = BC_MAX(old_end, old_boff + old_bsz);
		wlen = BC_MIN(
			cs, bc_align_up(BC_MAX(old_end, out + name_len), 4096));
	}
	ret = fmt_pwrite_file(img->fd, nw, wlen, 0);
	if (ret == 0 && fdatasync(img->fd) < 0)
		ret = -errno;
	if (ret < 0) {
		qcow2_io_error(q, ret, "write the header");
		goto out_free;
	}
	q->hdr.backing_file_offset = name_len ? out : 0;
	q->hdr.backing_file_size = (uint32_t)name_len;
	if (c->set_autoclear && q->hdr.version >= 3)
		q->hdr.autoclear_features = c->autoclear;
	q->bitmaps.ext_off = bitmaps_at;
	q->ext_end = q_ext_end;
	ret = 0;
	goto out_free;

too_long:
	bc_error_set(
		ERR_INVALID_ARG, EINVAL,
		"%s: backing file name and header extensions do not fit in the header cluster",
		qcow2_name(q));
	ret = -EINVAL;
out_free:
	free(old_name);
	free(old);
	free(nw);
	return ret;
}

int qcow2_set_backing(struct fmt_image *img, const char *name, const char *fmt)
{
	struct qcow2 *q = img->priv;
	struct qcow2_header_change c = {
		.set_backing = true, .backing_name = name, .backing_fmt = fmt,
	};

	BC_LOCK_GUARD(&q->lock);
	return qcow2_rewrite_header_locked(q, &c);
}
