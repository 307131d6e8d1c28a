/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 driver internals (private to formats/qcow2*.c).
 *
 * Spec: QEMU docs/interop/qcow2.txt. Files:
 *   qcow2.c          header parsing and validation, extensions, open/close,
 *                    get_info, the driver table, pread, block_status
 *   qcow2-cache.c    the write-back metadata cache (L2 tables, refcount
 *                    blocks), in-flight request tracking, file growth
 *   qcow2-l2.c       L1/L2 decoding, guest→host mapping
 *   qcow2-compress.c compressed cluster reads (raw deflate, window -12)
 *   qcow2-refcount.c refcount table/blocks of every width, cluster
 *                    allocation, immediate and deferred freeing, rebuild
 *   qcow2-write.c    pwrite (allocation, copy-on-write), write_zeroes,
 *                    discard, flush, set_backing, dirty/autoclear handling
 *   qcow2-create.c   create
 *   qcow2-check.c    check (refcounts against actual references)
 *
 * Locking. q->lock protects every field below that changes after open
 * (caches, L1, refcount table, allocation state, the in-flight request
 * list, the deferred-free list). It covers metadata decisions only: guest
 * data I/O and copy-on-write reads from the backing chain run without it.
 * Functions named *_locked expect it held; none of them drops it, except
 * where a comment says so (the write path). No pointer into a cache slot
 * is kept across an unlock: after relocking, tables are looked up again.
 *
 * In-flight requests (struct qcow2_req, q->reqs) are registered by guest
 * cluster range while their data I/O runs unlocked. A request is either
 * shared (reads, in-place overwrites of clusters the image owns) or
 * exclusive (allocating writes, copy-on-write, partial-block rewrites
 * under O_DIRECT). Exclusive conflicts with every overlapping request,
 * shared only with overlapping exclusive ones. A request waits on
 * q->req_cond until nothing it conflicts with overlaps it, and registers
 * in the same critical section (check-and-insert): a registered request
 * never waits, so there is no deadlock. Zero/discard and map_for_overwrite
 * change the mapping without dropping the lock: they wait like exclusive
 * requests and need no registration. Requests on other clusters never
 * wait for each other.
 *
 * When clusters are smaller than the O_DIRECT block (q->data_under_lock),
 * data writes share blocks with neighbouring clusters and metadata; they
 * are then done with q->lock held, as everything else.
 *
 * Metadata is written back, in order (crash consistency, as QEMU keeps
 * it): L2 tables and refcount blocks live in write-back caches (one
 * implementation, two instances) with a dirty flag per entry.
 *  - Refcounts before references: before any dirty L2 table is written,
 *    the dirty refcount blocks are written and the file is synced.
 *  - Data before the L2 entry that exposes a new cluster: the entry is set
 *    in the cache only after the data pwrite returned, and the sync above
 *    comes before the table is written.
 *  - Frees after the reference is gone: a cluster dropped from an L2 entry
 *    goes on q->deferred; its refcount is lowered only after the L2 tables
 *    were written back and synced. So no cluster is ever referenced twice
 *    on disk, and no cluster is handed out again while unlocked I/O may
 *    still use it (the request that dropped it excluded every overlapping
 *    request, and later ones cannot find it).
 *  - Refcount structure growth is synchronous: a new refcount block or
 *    table is written and synced before the table entry or header that
 *    points at it.
 *  - A new L2 table is a dirty table of the cache; its L1 entry is
 *    written back by the flush, after the L2 tables and a sync (so the L1
 *    on disk never points at a table that is not), and synced.
 * qcow2_flush() (the guest's flush, the copy job's flush points) and close
 * write everything back: refcount blocks, sync, L2 tables, sync, then the
 * deferred frees are applied. A crash at any instant leaks clusters at
 * worst, and every write acknowledged before a completed flush stays.
 *
 * The file grows ahead in allocated steps of max(1 MiB, file size / 16),
 * or at once by what a copy announces (fmt_reserve()) (q->file_end is the
 * physical size, q->file_size the end of what is allocated); close trims
 * the unused tail.
 */
#ifndef BC_FORMATS_QCOW2_H
#define BC_FORMATS_QCOW2_H

#include "fmt.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

/* On-disk header offsets (spec "Header"). */
#define QCOW2_HDR_V2_LEN  72u
#define QCOW2_HDR_V3_LEN  104u

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MIN_EXTL2_CLUSTER_BITS 14

/* QEMU's caps on table sizes (block/qcow2.h). */
#define QCOW2_MAX_L1_BYTES       (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS      65536u

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1full
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS       (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

/* Length of the bitmaps extension's data (spec "Bitmaps extension"). */
#define QCOW2_BITMAPS_EXT_LEN 24u

/* Header extension types. */
#define QCOW2_EXT_END          0x00000000u
#define QCOW2_EXT_BACKING_FMT  0xe2792acau
#define QCOW2_EXT_FEATURE_NAME 0x6803f857u
#define QCOW2_EXT_BITMAPS      0x23852875u
#define QCOW2_EXT_CRYPTO       0x0537be77u
#define QCOW2_EXT_DATA_FILE    0x44415441u

/* L1/L2 entry bits (spec "Cluster mapping"). */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED     0x7f000000000001ffull
#define QCOW2_L2E_STD_RESERVED 0x3f000000000001feull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

/* Header fields, host-endian, as read from the file (spec "Header"). */
struct qcow2_header {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible_features; /* v3; 0 for v2 */
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;        /* v2: 4 */
	uint32_t header_length;         /* v2: 72 */
	uint8_t compression_type;
};

/*
 * Parse and validate the header in @buf (the first cluster, or at least
 * the first 4 KiB / file size when shorter; @len bytes) of a file of
 * @file_size bytes. Every field is checked before use (spec and
 * docs/qcow2.md §3). @name is used in error messages.
 * Returns 0, -EUCLEAN (invalid) or -ENOTSUP (unsupported feature).
 */
int qcow2_parse_header(const char *name, const uint8_t *buf, size_t len,
		       uint64_t file_size, struct qcow2_header *hdr);

/* Kinds of a guest cluster (or subcluster run). */
enum qcow2_cluster_type {
	QCOW2_CLUSTER_UNALLOCATED = 0, /* read the backing */
	QCOW2_CLUSTER_ZERO_PLAIN,      /* reads zeros, no host cluster */
	QCOW2_CLUSTER_ZERO_ALLOC,      /* reads zeros, host cluster preallocated */
	QCOW2_CLUSTER_NORMAL,          /* data at host_off */
	QCOW2_CLUSTER_COMPRESSED,      /* compressed data at host byte offset */
};

/* A decoded L2 entry (both words for extended L2). */
struct qcow2_l2_entry {
	uint64_t raw;    /* first 64 bits */
	uint64_t bitmap; /* extended L2: bits 0-31 alloc, 32-63 zero; else 0 */
};

/* One cached metadata cluster (an L2 table or a refcount block). */
struct qcow2_table {
	uint64_t offset;    /* host offset of the cluster; 0 = slot free */
	uint8_t *data;      /* cluster_size bytes, big-endian as on disk */
	uint64_t last_used; /* LRU stamp */
	int refs;           /* pinned while > 0 (never across an unlock) */
	bool dirty;         /* changed since it was last written */
};

/*
 * A write-back cache of metadata clusters, least recently used out. The
 * L2 cache (is_l2) writes back the refcount cache and syncs before it
 * writes any of its own dirty tables.
 */
struct qcow2_cache {
	struct qcow2_table *slots;
	unsigned int n;
	uint64_t clock;
	bool is_l2;
	unsigned int ndirty;
};

/* A guest request in flight without q->lock (see the top comment). */
struct qcow2_req {
	uint64_t start, end; /* guest bytes, cluster-aligned */
	bool exclusive;
	bool mapped; /* by qcow2_io_map(): released when harvested */
	struct qcow2_req *next;
};

/* A host range whose refcount drops once the L2 tables are on disk. */
struct qcow2_range {
	uint64_t off, len;
};

/* Bitmap directory entry flags (spec "Bitmap directory"). */
#define QCOW2_BME_IN_USE     (1u << 0) /* being changed; inconsistent if found set */
#define QCOW2_BME_AUTO       (1u << 1) /* enabled: records every write */
#define QCOW2_BME_EXTRA_COMPATIBLE (1u << 2)
#define QCOW2_BME_FLAGS_KNOWN 0x7u
#define QCOW2_BME_TYPE_DIRTY 1u
/* Limits QEMU applies, so that every image we write it reads. */
#define QCOW2_BITMAPS_MAX          65535u
#define QCOW2_BITMAP_DIR_MAX       (64u << 20)
#define QCOW2_BITMAP_NAME_MAX      1023u
#define QCOW2_BITMAP_MIN_GRAN_BITS 9u
#define QCOW2_BITMAP_MAX_GRAN_BITS 31u
#define QCOW2_BITMAP_TABLE_MAX     (64u << 20) /* bytes */
/* Bitmap table entry: cluster offset, bit 0 = all ones when unallocated. */
#define QCOW2_BTE_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_BTE_ALL_ONES     1ull
#define QCOW2_BTE_RESERVED     0xff000000000001feull

/* One persistent dirty bitmap (spec "Bitmaps extension"). */
struct qcow2_bitmap {
	char *name;
	uint32_t flags;            /* QCOW2_BME_*, as on disk */
	uint32_t granularity_bits; /* bit i covers guest [i << g, (i+1) << g) */
	uint64_t table_off;
	uint32_t table_size;       /* entries, one per cluster of bits */
	uint8_t *extra;            /* extra data, kept as found */
	uint32_t extra_len;
	uint8_t *bits;             /* loaded bits (LSB first), NULL = on disk only */
	bool changed;              /* bits differ from what the table holds */
};

/*
 * The image's bitmaps. Loaded at open when the extension is present and
 * the autoclear bit says it is consistent; otherwise (a program that does
 * not know bitmaps wrote the image) they are ignored, as QEMU does.
 */
struct qcow2_bitmaps {
	bool present;       /* consistent extension with at least one bitmap */
	uint64_t ext_off;   /* where its 24 bytes live in cluster 0 */
	uint64_t dir_off;
	uint64_t dir_size;
	uint32_t nb;
	struct qcow2_bitmap *bm;
	bool tracking;      /* in_use set on disk by us: enabled bitmaps
			       record writes until qcow2_bitmaps_store_locked() */
};

#define QCOW2_CCACHE_SLOTS         2
/* Most L2 entries (or unallocated L1 entries) one mapping call visits. */
#define QCOW2_MAP_MAX_ENTRIES      32768
/* Bytes of metadata each cache may hold, and its slot bounds. */
#define QCOW2_CACHE_BYTES          (4u << 20)
#define QCOW2_CACHE_MIN_SLOTS      16
#define QCOW2_CACHE_MAX_SLOTS      256
/* Deferred frees that make a write write the metadata back. */
#define QCOW2_DEFERRED_MAX         4096

struct qcow2 {
	struct fmt_image *img;      /* back pointer; img->fd is the file */
	pthread_mutex_t lock;
	struct qcow2_header hdr;
	bool read_only;

	uint32_t cluster_bits;
	uint64_t cluster_size;
	uint32_t l2_bits;           /* log2 of entries per L2 table */
	uint32_t l2_entry_size;     /* 8, or 16 with extended L2 */
	bool extended_l2;
	uint32_t subcluster_bits;   /* log2 subcluster size (== cluster_bits without ext L2) */
	uint32_t csize_shift;       /* compressed descriptor: 62 - (cluster_bits - 8) */
	uint64_t csize_mask;

	uint64_t *l1;               /* host-endian copy of the L1 table */
	uint32_t l1_size;           /* entries in the L1 table */
	uint64_t l1_dirty_lo;       /* entries [lo, hi) not written back */
	uint64_t l1_dirty_hi;

	uint64_t *reftable;         /* host-endian refcount table */
	uint64_t reftable_entries;
	uint32_t refcount_order;
	uint32_t refcount_bits;
	uint64_t refcount_max;
	uint32_t refblock_bits;     /* log2 of refcount entries per block */

	struct qcow2_cache l2_cache;
	struct qcow2_cache rb_cache;

	struct qcow2_req *reqs;     /* in flight without the lock */
	pthread_cond_t req_cond;    /* signalled when a request ends */
	unsigned int req_waiters;
	bool data_under_lock;       /* clusters smaller than the O_DIRECT block */

	struct qcow2_range *deferred; /* frees waiting for the L2 write-back */
	size_t ndeferred, deferred_cap;

	uint64_t file_size;         /* end of the allocated clusters (at least) */
	uint64_t file_end;          /* physical size we grew the file to */
	uint64_t free_hint;         /* lowest cluster index that may be free */
	bool dirty_marked;          /* incompatible dirty bit set by us */
	bool autoclear_cleared;     /* unknown autoclear bits cleared before first write */
	bool write_ready;           /* qcow2_prepare_write_locked() has nothing left to do */

	struct qcow2_bitmaps bitmaps;

	char *feature_names;        /* feature table extension (info), may be NULL */
	uint32_t feature_names_len; /* bytes in feature_names (48-byte entries) */
	uint64_t ext_end;           /* end of the header extension area (past
				       the end marker, 8-aligned) */
	uint64_t l2_loads;          /* L2 tables read from the file (tests) */
	uint64_t syncs;             /* qcow2_sync_locked() calls (tests) */

	/*
	 * Recently decompressed clusters, so reads smaller than a cluster do
	 * not inflate it again for every piece. Own lock (cc_lock), taken
	 * without q->lock; entries are keyed by the L2 descriptor.
	 */
	pthread_mutex_t cc_lock;
	struct {
		uint64_t raw;       /* L2 entry; 0 = slot empty */
		uint8_t *data;      /* cluster_size bytes */
		uint64_t last_used;
	} ccache[QCOW2_CCACHE_SLOTS];
	uint64_t cc_clock;
	uint64_t cc_inflates;       /* clusters decompressed (tests) */
};

/*
 * Alignment of I/O on the file: the O_DIRECT logical block (4 KiB when
 * unknown), 1 for buffered I/O.
 */
static inline uint64_t qcow2_io_align(const struct qcow2 *q)
{
	if (q->img->request_align > 1)
		return q->img->request_align;
	if (q->img->flags & FMT_OPEN_DIRECT)
		return 4096;
	return 1;
}

/* --- qcow2-l2.c ------------------------------------------------------- */

/* Guest offset → L1 index / L2 index / offset in cluster. */
static inline uint64_t qcow2_l1_index(const struct qcow2 *q, uint64_t off)
{
	return off >> (q->cluster_bits + q->l2_bits);
}

static inline uint64_t qcow2_l2_index(const struct qcow2 *q, uint64_t off)
{
	return (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
}

/* Read and validate the L1 table at open (offset, size, reserved bits). */
int qcow2_l1_load(struct qcow2 *q);

/*
 * L1 entry @idx (host-endian value already in q->l1) changed: written by
 * qcow2_l1_writeback_locked(), which the flush calls once the L2 tables
 * are on disk.
 */
void qcow2_l1_mark_dirty_locked(struct qcow2 *q, uint64_t idx);
int qcow2_l1_writeback_locked(struct qcow2 *q);

/*
 * Get the L2 table at host offset @l2_off through the cache, pinned
 * (refs++). Validates that the offset lies inside the file and is aligned.
 * Release with qcow2_l2_put_locked() before q->lock is dropped.
 */
int qcow2_l2_get_locked(struct qcow2 *q, uint64_t l2_off,
			struct qcow2_table **out);
void qcow2_l2_put_locked(struct qcow2 *q, struct qcow2_table *t);

/* Drop a table from the cache (after it was freed or replaced). */
void qcow2_l2_evict_locked(struct qcow2 *q, uint64_t l2_off);

/* Entry @idx of a table, decoded from big-endian. */
struct qcow2_l2_entry qcow2_l2_entry_get(const struct qcow2 *q,
					 const struct qcow2_table *t,
					 uint64_t idx);
/*
 * Store entry @idx in the cached table and mark it dirty: it reaches the
 * file at the next write-back (flush, close, eviction).
 */
void qcow2_l2_entry_set(struct qcow2 *q, struct qcow2_table *t,
			uint64_t idx, struct qcow2_l2_entry e);

/*
 * Classify an L2 entry for the subcluster that contains guest offset
 * @off (validates reserved bits, alignment, alloc&zero conflicts and host
 * offsets against the file: -EUCLEAN with a message when invalid).
 * *host_off: host offset of the byte at @off for NORMAL/ZERO_ALLOC, the
 * compressed descriptor's host byte offset for COMPRESSED.
 */
int qcow2_l2_classify(struct qcow2 *q, struct qcow2_l2_entry e, uint64_t off,
		      enum qcow2_cluster_type *type, uint64_t *host_off);

/*
 * Map guest range [off, off+len): the type of the run starting at @off
 * and its length *run (> 0, <= len), coalescing contiguous clusters (and
 * subclusters) of the same type with contiguous host offsets.
 */
int qcow2_map_locked(struct qcow2 *q, uint64_t off, uint64_t len,
		     enum qcow2_cluster_type *type, uint64_t *host_off,
		     uint64_t *run);

/* --- qcow2-cache.c ---------------------------------------------------- */

/* Set up / free a cache of @n slots (buffers are allocated on first use). */
int qcow2_cache_init(struct qcow2_cache *c, unsigned int n, bool is_l2);
void qcow2_cache_destroy(struct qcow2_cache *c);

/* Slots for a cache of cluster_size entries (QCOW2_CACHE_BYTES, bounded). */
unsigned int qcow2_cache_slots(uint64_t cluster_size);

/*
 * The cluster at host offset @off, pinned. @fresh: a new cluster, zeroed
 * instead of read (and marked dirty). Evicting a dirty entry writes the
 * whole cache back first (with the ordering of the top comment).
 */
int qcow2_cache_get_locked(struct qcow2 *q, struct qcow2_cache *c,
			   uint64_t off, bool fresh, struct qcow2_table **out);
void qcow2_cache_put_locked(struct qcow2_cache *c, struct qcow2_table *t);
void qcow2_cache_mark_dirty_locked(struct qcow2_cache *c, struct qcow2_table *t);
/* Forget the entry at @off (its cluster was freed or replaced), dirty or not. */
void qcow2_cache_drop_locked(struct qcow2_cache *c, uint64_t off);
void qcow2_cache_drop_all_locked(struct qcow2_cache *c);

/*
 * Write every dirty entry of @c. For the L2 cache, the refcount cache is
 * written back and the file synced first. Returns 0 or -errno (entries
 * that could not be written stay dirty).
 */
int qcow2_cache_writeback_locked(struct qcow2 *q, struct qcow2_cache *c);

/*
 * Write back all metadata in order and apply the deferred frees:
 * refcount blocks, sync, L2 tables, sync, then (new tables) the L1
 * entries and a sync, frees. Returns 0 or -errno.
 */
int qcow2_flush_metadata_locked(struct qcow2 *q);

/* L1 entries changed and not yet written back. */
static inline bool qcow2_l1_dirty(const struct qcow2 *q)
{
	return q->l1_dirty_hi > q->l1_dirty_lo;
}

/* Sync the image file; records the error. */
int qcow2_sync_locked(struct qcow2 *q);

/*
 * Wait (dropping q->lock while waiting) until no request that conflicts
 * with an @exclusive one on guest range [start, end) is in flight.
 * Returns whether it waited (the caller must then look everything up
 * again).
 */
bool qcow2_req_wait_locked(struct qcow2 *q, uint64_t start, uint64_t end,
			   bool exclusive);
/* Whether a request would have to wait (nothing waited for). */
bool qcow2_req_conflicts_locked(struct qcow2 *q, uint64_t start, uint64_t end,
				bool exclusive);
void qcow2_req_add_locked(struct qcow2 *q, struct qcow2_req *r, uint64_t start,
			  uint64_t end, bool exclusive);
void qcow2_req_remove_locked(struct qcow2 *q, struct qcow2_req *r);

/*
 * Make the file at least @end bytes long, growing it ahead in large steps
 * (q->file_size becomes at least @end). Returns 0 or -errno.
 */
int qcow2_grow_file_locked(struct qcow2 *q, uint64_t end);
/* Cut the file back to q->file_size when it was grown ahead (close). */
int qcow2_trim_file_locked(struct qcow2 *q);
/* fmt_reserve(): grow the file once by what a copy is about to write. */
int qcow2_reserve(struct fmt_image *img, uint64_t bytes);

/* --- qcow2-compress.c ------------------------------------------------- */

/*
 * Read the compressed cluster whose L2 entry is @raw into @out
 * (cluster_size bytes). Validates the descriptor against the file size;
 * decompression must yield exactly one cluster.
 */
int qcow2_read_compressed(struct qcow2 *q, uint64_t raw, uint8_t *out);

/*
 * Copy bytes [in_off, in_off+n) of the decompressed cluster whose L2
 * entry is @raw into @buf, through the cache of decompressed clusters.
 * Called without q->lock. Returns 0 or -errno.
 */
int qcow2_compressed_pread(struct qcow2 *q, uint64_t raw, uint64_t in_off,
			   void *buf, size_t n);

/* Free the decompressed-cluster cache (close). */
void qcow2_ccache_free(struct qcow2 *q);

/* --- qcow2-refcount.c ------------------------------------------------- */

/* Read and validate the refcount table at open. */
int qcow2_refcount_load(struct qcow2 *q);

/* Refcount of the cluster with index @cluster (host offset >> cluster_bits). */
int qcow2_get_refcount_locked(struct qcow2 *q, uint64_t cluster, uint64_t *rc);

/*
 * Add @delta to the refcount of every cluster overlapping host range
 * [off, off+len) in the refcount cache (written back later, see the top
 * comment); allocates refcount blocks (and grows the table, both
 * synchronously) as needed. -EUCLEAN on underflow/overflow, and then
 * nothing changed.
 */
int qcow2_update_refcount_locked(struct qcow2 *q, uint64_t off, uint64_t len,
				 int64_t delta);

/*
 * Allocate @n contiguous clusters with refcount 1, raised in the refcount
 * cache; the file is grown to hold them. A caller that links them from
 * anything but a cached L2 table (a table written directly, the header)
 * first writes the refcount cache back and syncs
 * (qcow2_cache_writeback_locked(q, &q->rb_cache), qcow2_sync_locked()).
 * Returns the host offset, or -errno.
 */
int64_t qcow2_alloc_clusters_locked(struct qcow2 *q, uint64_t n);

/*
 * Release clusters now (refcount -1): for clusters no reference on disk
 * or in the caches points at (never linked, or unlinked and on disk).
 */
int qcow2_free_clusters_locked(struct qcow2 *q, uint64_t off, uint64_t len);

/*
 * Release clusters that a cached L2 entry (or L1 entry) stopped pointing
 * at: the refcount drops at the next metadata write-back, once the change
 * is on disk. Returns 0 or -ENOMEM.
 */
int qcow2_free_clusters_deferred_locked(struct qcow2 *q, uint64_t off,
					uint64_t len);
/* Apply the deferred frees (L2 tables written back and synced). */
int qcow2_apply_deferred_frees_locked(struct qcow2 *q);

/*
 * Rebuild all refcounts from the actual references (L1, L2, data,
 * header, tables, snapshots): for images opened read-write whose dirty
 * bit is set (lazy refcounts). Writes new refcount structures.
 */
int qcow2_rebuild_refcounts_locked(struct qcow2 *q);

/* Refcount entry helpers for any width 1..64 (unit-tested). */
uint64_t qcow2_refblock_get(const uint8_t *block, uint32_t refcount_order,
			    uint64_t idx);
void qcow2_refblock_set(uint8_t *block, uint32_t refcount_order, uint64_t idx,
			uint64_t value);

/* --- qcow2-write.c ---------------------------------------------------- */

int qcow2_pwrite(struct fmt_image *img, const void *buf, size_t n,
		 uint64_t off);
int qcow2_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len,
		       unsigned int flags);
int qcow2_discard(struct fmt_image *img, uint64_t off, uint64_t len);
int qcow2_flush(struct fmt_image *img);
int qcow2_set_backing(struct fmt_image *img, const char *name,
		      const char *fmt);
/* fmt_map_for_overwrite() for qcow2 (qcow2-write.c). */
/* fmt_io_map() and fmt_io_unmap() (qcow2-write.c). */
int qcow2_io_map(struct fmt_image *img, bool write, uint64_t off, uint64_t len,
		 struct fmt_io_map *map);
int qcow2_io_unmap(struct fmt_image *img, struct fmt_io_map *map, int result);
int qcow2_map_for_overwrite(struct fmt_image *img, uint64_t off, uint64_t len,
			    struct fmt_extent *ext);

/*
 * Called at open for a writable image: rebuild refcounts if the dirty bit
 * is set, clear unknown autoclear bits. And before the first write:
 * qcow2_prepare_write_locked() sets the dirty bit when lazy refcounts are
 * on (close clears it once everything is written back).
 */
int qcow2_open_rw(struct qcow2 *q);
int qcow2_prepare_write_locked(struct qcow2 *q);
/*
 * Called from close for a writable image: write all metadata back, trim
 * the file, sync, clear the dirty bit.
 */
int qcow2_close_rw(struct qcow2 *q);

/* --- qcow2-bitmap.c ---------------------------------------------------- */

struct qcow2_exts;

/*
 * Read and validate the bitmap directory the header extension points at
 * (every field and limit, as the header is checked): -EUCLEAN with a
 * message naming the bitmap and the field when it is malformed.
 */
int qcow2_bitmaps_load(struct qcow2 *q, const struct qcow2_exts *exts);
void qcow2_bitmaps_free(struct qcow2 *q);
/*
 * Before the first write: load the enabled bitmaps and mark them in use
 * on disk, so that a crash leaves them flagged inconsistent instead of
 * claiming a state they do not have.
 */
int qcow2_bitmaps_start_locked(struct qcow2 *q);
/* Record a guest write (any thread; lock-free). */
void qcow2_bitmaps_note_write(struct qcow2 *q, uint64_t off, uint64_t len);
/* At close: write the recorded bits and clear in_use. */
int qcow2_bitmaps_store_locked(struct qcow2 *q);
/* Driver callbacks (fmt.h). */
int qcow2_bitmap_list(struct fmt_image *img, struct fmt_bitmap_info **list,
		      size_t *n);
int qcow2_bitmap_change(struct fmt_image *img,
			const struct fmt_bitmap_change *c);
int qcow2_bitmap_read(struct fmt_image *img, const char *name, uint8_t **bits,
		      uint64_t *nbits, uint32_t *granularity_bits);

/*
 * Rewrite cluster 0 with one write (a crash leaves the old or the new
 * header): the fields a struct qcow2_header_change sets, every other
 * extension and the backing name kept.
 */
struct qcow2_header_change {
	bool set_backing;
	const char *backing_name;  /* NULL = no backing file */
	const char *backing_fmt;
	bool set_bitmaps;
	const uint8_t *bitmaps_ext; /* QCOW2_BITMAPS_EXT_LEN bytes; NULL = remove */
	bool set_autoclear;
	uint64_t autoclear;
};
int qcow2_rewrite_header_locked(struct qcow2 *q,
				const struct qcow2_header_change *c);

/* --- qcow2-create.c --------------------------------------------------- */

/* The driver's create: a new image written into the empty file @fd. */
int qcow2_create(int fd, const char *path, const struct fmt_create_opts *opts);

/* --- qcow2-check.c ---------------------------------------------------- */

int qcow2_check(struct fmt_image *img, struct fmt_check_report *rep);

/* --- qcow2.c (header) and qcow2-l2.c: additions ----------------------- */

/* Header extensions as found by qcow2_parse_header_ext(); owned strings. */
struct qcow2_exts {
	char *backing_name;      /* from backing_file_offset/size; NULL = none */
	char *backing_fmt;       /* backing format extension; NULL = none */
	uint8_t *feature_table;  /* raw 48-byte entries; NULL = none */
	uint32_t feature_table_len;
	uint64_t ext_end;        /* offset just past the end marker (or where
				    the walk stopped: end of cluster 0 or
				    the backing file name) */
	bool has_bitmaps;        /* bitmaps extension present */
	/* Its fields, as found (validated by qcow2_bitmaps_load()). */
	uint64_t bitmaps_ext_off;  /* offset of its data in cluster 0 */
	uint32_t bitmaps_nb;
	uint32_t bitmaps_reserved;
	uint64_t bitmaps_dir_size;
	uint64_t bitmaps_dir_off;
};

/*
 * qcow2_parse_header() that also hands back what the extension walk and
 * the backing name found (@exts may be NULL). On failure nothing is
 * allocated. Release with qcow2_exts_free().
 */
int qcow2_parse_header_ext(const char *name, const uint8_t *buf, size_t len,
			   uint64_t file_size, struct qcow2_header *hdr,
			   struct qcow2_exts *exts);
void qcow2_exts_free(struct qcow2_exts *exts);

/*
 * Record "<name>: <reason>" as ERR_IMAGE_CORRUPT and return -EUCLEAN,
 * for metadata found invalid.
 */
__attribute__((format(printf, 2, 3))) int
qcow2_corrupt(const char *name, const char *fmt, ...);

/* Mapping of a run of guest bytes, as qcow2_map_ext_locked() finds it. */
struct qcow2_mapping {
	enum qcow2_cluster_type type;
	uint64_t host_off; /* NORMAL/ZERO_ALLOC: host offset of the first byte;
			      COMPRESSED: descriptor's host byte offset */
	uint64_t run;      /* bytes, > 0 */
	uint64_t l2_raw;   /* COMPRESSED: the L2 entry (for qcow2_read_compressed) */
};

/*
 * qcow2_map_locked() with the L2 entry of a compressed run. Compressed
 * runs never extend past their cluster (each must be decompressed alone);
 * other runs coalesce across clusters and L2 tables, over at most
 * QCOW2_MAP_MAX_ENTRIES entries per call (callers loop for the rest).
 */
int qcow2_map_ext_locked(struct qcow2 *q, uint64_t off, uint64_t len,
			 struct qcow2_mapping *m);

/*
 * Read [off, off+n) of the image file into @buf: directly when offset,
 * length and buffer suit the O_DIRECT alignment (or there is none), else
 * through an aligned bounce buffer. Bytes at or past @known_end (the
 * file's end as the driver knew it, q->file_size read under q->lock) read
 * as zeros; a read that ends short before it means the file was truncated
 * under us: -EIO naming the file and offset (fmt_pread_file_within).
 * Records the error. Returns 0 or -errno.
 */
int qcow2_file_pread(struct qcow2 *q, void *buf, uint64_t n, uint64_t off,
		     uint64_t known_end);

/*
 * Compressed descriptor of @raw: host byte offset and the number of bytes
 * the descriptor covers (to the end of its last 512-byte sector).
 */
void qcow2_compressed_desc(const struct qcow2 *q, uint64_t raw,
			   uint64_t *host_off, uint64_t *nbytes);

/* --- additions by qcow2-refcount.c / qcow2-check.c (helper qwrite) ----- */

/* Buffer aligned for O_DIRECT (4 KiB); release with free(). NULL on ENOMEM. */
void *qcow2_alloc_buf(size_t n);

/* The image's name in messages. */
static inline const char *qcow2_name(const struct qcow2 *q)
{
	return q->img->filename;
}

/*
 * Record "<image>: cannot <what>" for a failed I/O (-errno @ret), unless
 * the failing call recorded its own, more precise error already.
 */
void qcow2_io_error(const struct qcow2 *q, int ret, const char *what);

/*
 * Write metadata bytes at @off; with O_DIRECT (request_align > 1) the
 * write is widened to whole logical blocks by read-modify-write.
 * Returns 0 or -errno.
 */
int qcow2_meta_pwrite(struct qcow2 *q, const void *buf, size_t n, uint64_t off);

/*
 * Replace the refcount structures by new ones holding @refs (refcount of
 * cluster i is refs[i], @nb clusters, 0 beyond), written past the end of
 * the file; the header is switched with one write. Returns 0 or -errno.
 */
int qcow2_write_refcounts_locked(struct qcow2 *q, uint32_t *refs, uint64_t nb);

/*
 * Count the references to every host cluster: header cluster(s), L1, L2
 * tables, data (compressed data: each host cluster spanned), preallocated
 * zero clusters, snapshot table and snapshot L1/L2/data, bitmap directory
 * and tables, and, when @with_refcount_structs, the refcount table and
 * blocks. *refs (malloc'd, caller frees) gets one saturating count per
 * cluster, *nb clusters (covering the file end and every reference).
 * Bad references (unaligned, beyond the end of the file) are counted in
 * rep->corruptions when @rep is not NULL; otherwise they fail with
 * -EUCLEAN. Returns 0 or -errno.
 */
int qcow2_collect_refs_locked(struct qcow2 *q, bool with_refcount_structs,
			      uint32_t **refs, uint64_t *nb,
			      struct fmt_check_report *rep);

#endif /* BC_FORMATS_QCOW2_H */
