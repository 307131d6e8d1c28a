/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image formats behind one driver interface, and backing chains.
 *
 * A struct fmt_image is one opened image file (one layer). Opening an
 * image with fmt_open() also opens its backing chain (read-only) unless
 * FMT_OPEN_NO_BACKING is given; img->backing points at the next layer
 * down. Reads of a layer consult its backing for ranges the layer does not
 * allocate, and read zeros past the backing's end or where there is none.
 *
 * Errors: every function returns 0 (or a count) or -errno, and records
 * the human detail with bc_error_set() where it is detected. Messages
 * name the file first: "<path>: <reason>". Conventions for errno:
 *   -ENOENT     file missing                    (ERR_NO_SUCH_FILE)
 *   -EUCLEAN    corrupt or invalid metadata     (ERR_IMAGE_CORRUPT)
 *   -ENOTSUP    feature not supported           (ERR_UNSUPPORTED)
 *   -EINVAL     bad argument from our caller    (ERR_INVALID_ARG)
 *   -ELOOP      backing chain loops or too deep (ERR_IMAGE_CORRUPT)
 *   -EROFS      write to an image opened read-only
 *   -EIO, -ENOSPC, ...                          as the system said
 *
 * Thread safety: the data calls (pread, pwrite, write_zeroes, discard,
 * flush, block_status) may be called concurrently from many threads on
 * one image; drivers serialise their metadata internally. open, close,
 * set_backing and check are not concurrent with anything on that image.
 *
 * Probing rules (docs/design.md §9): a format given explicitly is
 * used as is; a backing image's format comes from the overlay's recorded
 * backing format; only when the overlay records none is the backing file
 * probed, and then img->probed is set so the caller can warn. A raw
 * image is never reinterpreted as anything else.
 */
#ifndef BC_FORMATS_FMT_H
#define BC_FORMATS_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/types.h>

/* Flags of fmt_open. */
#define FMT_OPEN_RDWR       (1u << 0) /* top image writable (backing never) */
#define FMT_OPEN_DIRECT     (1u << 1) /* O_DIRECT on every layer */
#define FMT_OPEN_NO_BACKING (1u << 2) /* open this layer only */
/*
 * Open to check: damage below the header (bad L1 entries) is left for
 * fmt_check() to count and report instead of failing the open. Reads that
 * reach damaged metadata still fail cleanly.
 */
#define FMT_OPEN_CHECK      (1u << 3)

/* Flags of fmt_write_zeroes. */
#define FMT_ZERO_MAY_UNMAP (1u << 0) /* may deallocate if it reads as zero */

/* Deepest backing chain fmt_open accepts. */
#define FMT_CHAIN_MAX_DEPTH 256

/* Longest backing file name a header may hold (qcow2 spec: 1023). */
#define FMT_BACKING_NAME_MAX 1023

enum fmt_state {
	FMT_UNALLOC = 0, /* this layer does not hold the range: ask the backing */
	FMT_DATA = 1,    /* this layer holds data for the range */
	FMT_ZERO = 2,    /* the range reads as zeros; the backing is not consulted */
};

struct fmt_extent {
	uint64_t len;        /* bytes from the queried offset, > 0 */
	enum fmt_state state;
	int depth;           /* chain depth that answered: 0 = the queried image */
	int64_t host_off;    /* for FMT_DATA (and allocated FMT_ZERO): offset in the
				answering layer's file such that guest [off, off+len)
				is host [host_off, host_off+len) contiguously; -1 when
				there is no such mapping (compressed, unallocated) */
	bool compressed;     /* FMT_DATA held in compressed clusters */
};

struct fmt_image;

/* A persistent dirty bitmap, as fmt_bitmap_list() reports it. */
struct fmt_bitmap_info {
	char *name;
	uint64_t granularity; /* bytes per bit */
	bool enabled;         /* records writes ("auto") */
	bool in_use;          /* found in use: inconsistent, only removable */
};

enum fmt_bitmap_verb {
	FMT_BITMAP_ADD,     /* new, empty; enabled unless .disabled */
	FMT_BITMAP_REMOVE,
	FMT_BITMAP_CLEAR,   /* every bit 0 */
	FMT_BITMAP_ENABLE,
	FMT_BITMAP_DISABLE,
	FMT_BITMAP_MERGE,   /* .name |= .src_name of .src (NULL = this image) */
};

struct fmt_bitmap_change {
	enum fmt_bitmap_verb verb;
	const char *name;
	uint64_t granularity;   /* ADD: bytes per bit, power of two; 0 = default */
	bool disabled;          /* ADD */
	struct fmt_image *src;  /* MERGE */
	const char *src_name;   /* MERGE */
};

enum fmt_prealloc {
	FMT_PREALLOC_OFF = 0,
	FMT_PREALLOC_METADATA,
	FMT_PREALLOC_FALLOC,
	FMT_PREALLOC_FULL,
};

struct fmt_create_opts {
	const char *format;       /* "qcow2" or "raw" */
	uint64_t size;            /* virtual size; 0 with a backing file = its size */
	uint32_t cluster_size;    /* qcow2: 0 = 64 KiB; power of two 512 B..2 MiB */
	int compat;               /* qcow2: 2 (0.10) or 3 (1.1); 0 = 3 */
	int refcount_bits;        /* qcow2: 1,2,4,...,64; 0 = 16 */
	bool extended_l2;         /* qcow2 v3, cluster_size >= 16 KiB */
	bool lazy_refcounts;      /* qcow2 v3 */
	enum fmt_prealloc prealloc;
	const char *backing_file; /* name stored in the header, may be relative */
	const char *backing_fmt;  /* recorded backing format, NULL = none */
};

struct fmt_info {
	const char *format;      /* driver name */
	uint64_t virtual_size;
	uint64_t actual_size;    /* bytes allocated on the host (st_blocks * 512) */
	uint32_t cluster_size;   /* 0 for raw */
	int version;             /* qcow2 2 or 3; 0 for raw */
	int refcount_bits;
	bool extended_l2;
	bool lazy_refcounts;
	bool dirty;              /* qcow2 incompatible bit 0 */
	bool corrupt;            /* qcow2 incompatible bit 1 */
	int compression_type;    /* 0 zlib */
};

struct fmt_check_report {
	uint64_t corruptions;    /* refcount too low / references to bad offsets */
	uint64_t leaks;          /* clusters with a refcount and no reference */
	uint64_t check_errors;   /* could not check (I/O errors while checking) */
	uint64_t allocated_clusters;
	uint64_t total_clusters; /* virtual size in clusters */
	uint64_t fragmented_clusters;
	uint64_t compressed_clusters;
	uint64_t image_end_offset;
	/*
	 * From fmt_check_noted() (NULL from fmt_check()): called once per
	 * finding with one line in qemu-img check's words, e.g.
	 * "ERROR cluster 5 refcount=0 reference=1".
	 */
	void (*note)(void *opaque, const char *line);
	void *note_opaque;
};

/*
 * A driver: a static const table of callbacks. Callbacks receive ranges
 * already checked against img->size by the fmt_* wrappers.
 */
/*
 * A guest range mapped to one host range, for I/O issued outside the
 * driver (fmt_io_map()). The driver keeps its registration of the range
 * in @reg until fmt_io_unmap().
 */
struct fmt_io_map {
	int fd;             /* the file to read or write */
	uint64_t host_off;  /* where the guest range starts in it */
	uint64_t known_end; /* reads: the file's end when mapped */
	uint64_t reg[8];    /* the driver's own, opaque here */
};

struct fmt_driver {
	const char *name;
	/* An export reached over a protocol (NBD), not a file: its data sits
	 * at its guest offsets, and there is no host offset (host_off -1). */
	bool protocol;
	/* Whether the first bytes of a file are this format (0 no, > 0 score). */
	int (*probe)(const uint8_t *buf, size_t len);
	/* img->fd, filename and flags are set; fill size, backing_name,
	 * backing_fmt and priv. */
	int (*open)(struct fmt_image *img);
	void (*close)(struct fmt_image *img);
	/* Guest view of this layer; unallocated ranges come from
	 * fmt_read_backing(). Returns 0 or -errno (never short). */
	int (*pread)(struct fmt_image *img, void *buf, size_t n, uint64_t off);
	int (*pwrite)(struct fmt_image *img, const void *buf, size_t n,
		      uint64_t off);
	int (*write_zeroes)(struct fmt_image *img, uint64_t off, uint64_t len,
			    unsigned int flags);
	/* Afterwards the range may read as zeros or as the backing's data
	 * (a hint, as a discard is); -ENOTSUP where the format cannot. */
	int (*discard)(struct fmt_image *img, uint64_t off, uint64_t len);
	int (*flush)(struct fmt_image *img);
	/* This layer only: state of the range starting at off. */
	int (*block_status)(struct fmt_image *img, uint64_t off, uint64_t len,
			    struct fmt_extent *ext);
	/* Write a new image into @fd, an empty file opened read-write that
	 * fmt_create() publishes as @path afterwards (@path is for messages;
	 * the driver neither syncs nor names the file). */
	int (*create)(int fd, const char *path,
		      const struct fmt_create_opts *opts);
	/* Rewrite the backing name/format atomically (a crash leaves the
	 * old or the new header); NULL name removes the backing file. */
	int (*set_backing)(struct fmt_image *img, const char *name,
			   const char *fmt);
	int (*get_info)(struct fmt_image *img, struct fmt_info *info);
	/* Check metadata consistency; NULL where the format has none. */
	int (*check)(struct fmt_image *img, struct fmt_check_report *rep);
	/* Persistent bitmaps; NULL where the format has none. */
	int (*bitmap_list)(struct fmt_image *img, struct fmt_bitmap_info **list,
			   size_t *n);
	int (*bitmap_change)(struct fmt_image *img,
			     const struct fmt_bitmap_change *c);
	int (*bitmap_read)(struct fmt_image *img, const char *name,
			   uint8_t **bits, uint64_t *nbits,
			   uint32_t *granularity_bits);
	/* See fmt_map_for_overwrite(); NULL where the format cannot. */
	int (*map_for_overwrite)(struct fmt_image *img, uint64_t off,
				 uint64_t len, struct fmt_extent *ext);
	/* See fmt_io_map(); NULL where every request needs the driver. */
	int (*io_map)(struct fmt_image *img, bool write, uint64_t off,
		      uint64_t len, struct fmt_io_map *map);
	int (*io_unmap)(struct fmt_image *img, struct fmt_io_map *map,
			int result);
	/* See fmt_pwrite_behind(); NULL: fmt_pwrite() is used. */
	int (*pwrite_behind)(struct fmt_image *img, const void *buf, size_t n,
			     uint64_t off);
	/* See fmt_reserve(); NULL where a file's space needs no planning. */
	int (*reserve)(struct fmt_image *img, uint64_t bytes);
};

#define FMT_IO_MAP_KICK_NS (200u * 1000) /* see fmt_image.io_map_kick */

struct fmt_image {
	const struct fmt_driver *drv;
	char *filename;            /* path as opened (absolute for backing files) */
	int fd;
	unsigned int flags;        /* FMT_OPEN_* this layer was opened with */
	uint64_t size;             /* virtual size, bytes */
	uint32_t request_align;    /* O_DIRECT alignment (logical block), else 1 */
	char *backing_name;        /* as recorded in the header; NULL = none */
	char *backing_fmt;         /* as recorded; NULL = not recorded */
	struct fmt_image *backing; /* owned; NULL when none or not opened */
	bool probed;               /* format was probed, not declared */
	void *priv;                /* driver state */
	/*
	 * Called by a request of this image that must wait for a range
	 * fmt_io_map() registered, with no lock of the format held: the
	 * completion that releases the range may sit unharvested in a ring
	 * owned by the waiting thread itself (a synchronous call over its own
	 * unreaped asynchronous write). The waiter calls it again each
	 * FMT_IO_MAP_KICK_NS until the range is free. NULL: the waiter sleeps.
	 */
	void (*io_map_kick)(void *opaque);
	void *io_map_kick_opaque;
};

extern const struct fmt_driver fmt_raw_driver;
extern const struct fmt_driver fmt_qcow2_driver;
/*
 * An NBD export (formats/nbd.c, through libnbd; without libnbd a stub
 * whose open fails with -ENOTSUP). Not found by fmt_driver_find(): only
 * fmt_open() of an NBD URI uses it. The image has img->fd == -1.
 */
extern const struct fmt_driver fmt_nbd_driver;

/*
 * Whether @name is an NBD URI (nbd://, nbds://, nbd+unix://,
 * nbds+unix://, nbd+vsock://, nbds+vsock://): fmt_open() opens such a
 * top image through fmt_nbd_driver. Backing names never reach it: they
 * are refused as protocols before.
 */
bool fmt_is_nbd_uri(const char *name);

/* Driver by name ("raw", "qcow2"); NULL if unknown. */
const struct fmt_driver *fmt_driver_find(const char *name);

/*
 * Open the image at @path with @format ("raw", "qcow2" or NULL to probe)
 * and, unless FMT_OPEN_NO_BACKING, its backing chain read-only, relative
 * backing names resolved against the overlay's directory. Refuses loops,
 * chains deeper than FMT_CHAIN_MAX_DEPTH, protocol prefixes ("json:",
 * "nbd:", ...) in backing names. On success *out owns the whole chain.
 * A top-level @path that is an NBD URI (fmt_is_nbd_uri) opens the export
 * with fmt_nbd_driver: @format must be NULL or "raw" (the server presents
 * guest data), and there is no chain below it.
 * Returns 0 or -errno.
 */
int fmt_open(const char *path, const char *format, unsigned int flags,
	     struct fmt_image **out);

/* Close an image and the chain below it. NULL is a no-op. */
void fmt_close(struct fmt_image *img);

/* Range-checked wrappers over the driver. Return 0 or -errno. */
int fmt_pread(struct fmt_image *img, void *buf, size_t n, uint64_t off);
int fmt_pwrite(struct fmt_image *img, const void *buf, size_t n, uint64_t off);
/*
 * A write that may still be in flight when this returns (@buf is copied
 * first, so the caller may reuse it): for a copy's destination, whose
 * writer flushes before relying on it. Its failure is returned by a later
 * call on @img (fmt_flush() always waits for every such write); no later
 * call on @img that touches the same bytes overtakes it (others may).
 * Drivers without it (files: the copy loop
 * maps them and uses the I/O backend) write synchronously. Returns 0 or
 * -errno.
 */
int fmt_pwrite_behind(struct fmt_image *img, const void *buf, size_t n,
		      uint64_t off);
int fmt_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len,
		     unsigned int flags);
/*
 * A hint: about @bytes of guest data not yet allocated in @img are about
 * to be written (a copy into a new destination). A format that allocates
 * as it goes (qcow2) sets the file's space aside now, in one step, rather
 * than growing it while the writes run; what is left unused is given back
 * at close. Nothing changes in what the image reads. Returns 0 or -errno
 * (the hint not taken: later writes allocate as before).
 */
int fmt_reserve(struct fmt_image *img, uint64_t bytes);
int fmt_discard(struct fmt_image *img, uint64_t off, uint64_t len);
int fmt_flush(struct fmt_image *img);
int fmt_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
		     struct fmt_extent *ext);

/*
 * Block status across the chain below @img: walks down through
 * unallocated layers; ext->depth is the layer that answered (0 = @img).
 * A range that no layer allocates is FMT_UNALLOC with depth = the bottom
 * layer's depth, as `qemu-img map` reports it ("present": false).
 */
int fmt_chain_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
			   struct fmt_extent *ext);

/*
 * Read guest range [off, off+n) of @img's backing: from img->backing where
 * it reaches, zeros past its end or where @img has no backing. For
 * drivers' unallocated reads and copy-on-write.
 */
int fmt_read_backing(struct fmt_image *img, void *buf, size_t n, uint64_t off);

/*
 * Create an image. A relative backing name is resolved against the
 * directory of @path to read the backing's size when opts->size is 0.
 * Refuses an existing file (-EEXIST). Crash-atomic: the image is written
 * and synced under no name (or a hidden temporary one) and then given
 * @path in one step that never replaces a file (formats/fmt-newfile.h),
 * so @path is absent or a complete image, and nothing is left on failure.
 * Returns 0 or -errno.
 */
int fmt_create(const char *path, const struct fmt_create_opts *opts);

/*
 * Prepare [off, off+ext->len) (a prefix of [off, off+len), whole clusters)
 * to be overwritten in place: allocate and map it so that the guest range
 * is host [ext->host_off, +ext->len) of img->fd, and return that mapping;
 * the caller then writes every byte of it directly (e.g. with io_uring).
 * For images nobody reads until the caller is done and has flushed (a
 * copy's destination): metadata points at the clusters before their data
 * is written. -ENOTSUP when the range cannot be mapped so (not whole
 * clusters, or the format has no such path): use fmt_pwrite().
 */
/*
 * Map the guest range [off, off+len) of @img for one read (@write false)
 * or one write issued outside the driver (an asynchronous guest request
 * sent to the kernel from the caller's buffer): only where the format
 * needs nothing but that I/O and, for a write, metadata it can set
 * afterwards — data this layer holds, contiguous on the host; for a write
 * clusters it owns (overwritten in place) or whole clusters (given new
 * host clusters, linked at fmt_io_unmap()). On success the range stays
 * registered with the driver (requests that would change its mapping, or
 * read it while it is being allocated, wait) until fmt_io_unmap(), which
 * the caller must call once the I/O completed. Never waits for another
 * request (it may read metadata, under the driver's lock). Returns 0,
 * -ENOTSUP (the request needs the driver: use fmt_pread()/fmt_pwrite()),
 * -EAGAIN (a conflicting request is in flight: use the driver, which
 * waits) or another -errno (then the driver path reports it again; this
 * call may have recorded it too).
 */
int fmt_io_map(struct fmt_image *img, bool write, uint64_t off, uint64_t len,
	       struct fmt_io_map *map);
/*
 * The I/O of a mapped range completed with @result (0 or -errno): release
 * the registration and, for a write into new clusters that succeeded,
 * link them (a failed one frees them; if linking fails part way, the
 * clusters already linked stay, the others are freed). Returns @result,
 * or -errno (recorded) when linking failed: the write is then lost, as a
 * failed write may be.
 */
int fmt_io_unmap(struct fmt_image *img, struct fmt_io_map *map, int result);

int fmt_map_for_overwrite(struct fmt_image *img, uint64_t off, uint64_t len,
			  struct fmt_extent *ext);

int fmt_set_backing(struct fmt_image *img, const char *name, const char *fmt);
int fmt_get_info(struct fmt_image *img, struct fmt_info *info);
/* -ENOTSUP when the format has no metadata to check. */
int fmt_check(struct fmt_image *img, struct fmt_check_report *rep);
/* fmt_check(), calling @note with each finding (fmt_check_report.note). */
int fmt_check_noted(struct fmt_image *img, struct fmt_check_report *rep,
		    void (*note)(void *opaque, const char *line), void *opaque);

/*
 * Persistent dirty bitmaps (qcow2). -ENOTSUP with a message naming the
 * file where the format has none. fmt_bitmap_list: *list (free with
 * fmt_bitmap_list_free) gets *n entries in directory order.
 * fmt_bitmap_change: one verb on an image opened read-write and not in
 * use by guest I/O. fmt_bitmap_read: the bits of one bitmap, malloc'd,
 * bit i (least significant first in each byte) covering guest bytes
 * [i << *granularity_bits, (i + 1) << *granularity_bits).
 */
int fmt_bitmap_list(struct fmt_image *img, struct fmt_bitmap_info **list,
		    size_t *n);
void fmt_bitmap_list_free(struct fmt_bitmap_info *list, size_t n);
int fmt_bitmap_change(struct fmt_image *img, const struct fmt_bitmap_change *c);
int fmt_bitmap_read(struct fmt_image *img, const char *name, uint8_t **bits,
		    uint64_t *nbits, uint32_t *granularity_bits);

/*
 * The path a backing name refers to: absolute names as they are, relative
 * ones against the directory of @overlay_path. Returns a malloc'd string
 * or NULL (ENOMEM).
 */
char *fmt_resolve_backing(const char *overlay_path, const char *name);

/* Driver name for the format of an open file's first bytes ("qcow2" or "raw"). */
const char *fmt_probe_buf(const uint8_t *buf, size_t len);

/* Full pread/pwrite on a descriptor: 0, or -errno; short reads past EOF
 * are zero-filled by fmt_pread_file_zfill only. */
int fmt_pread_file(int fd, void *buf, size_t n, uint64_t off);
int fmt_pread_file_zfill(int fd, void *buf, size_t n, uint64_t off);
/*
 * Data read of a file whose size the format knows (@known_end: the size at
 * open, or the end it extended the file to itself): bytes at or past
 * @known_end read as zeros (a file may legitimately end inside its last
 * cluster or I/O block); a read that comes back short before @known_end
 * means the file shrank under us and fails with -EIO naming the file and
 * the offset, never zeros.
 */
int fmt_pread_file_within(int fd, void *buf, size_t n, uint64_t off,
			  uint64_t known_end);
/*
 * fmt_pread_file_within() for an O_DIRECT @fd whatever the alignment of
 * @buf, @n and @off: read through an aligned bounce buffer (the format
 * layer's one), @align being the file's O_DIRECT alignment (power of two).
 */
int fmt_pread_file_within_bounced(int fd, void *buf, size_t n, uint64_t off,
				  uint64_t known_end, uint32_t align);
/*
 * Whether the regular file behind @fd now ends before @known_end (it was
 * truncated under us): then records "<file>: read failed at offset <N>:
 * the file ends at ..." and returns -EIO; else 0.
 */
int fmt_file_shrunk(int fd, uint64_t off, uint64_t known_end);
int fmt_pwrite_file(int fd, const void *buf, size_t n, uint64_t off);
/* fmt_pwrite_file() to a file that has no name yet (a new image being
 * written, formats/fmt-newfile.h): errors name it @name. */
int fmt_pwrite_file_as(int fd, const char *name, const void *buf, size_t n,
		       uint64_t off);
/*
 * Write the gather list @iov (@cnt entries; an entry with a NULL base
 * writes that many zeros) at @off of an O_DIRECT @fd whatever the
 * alignment: whole blocks of @align bytes (a power of two) through the
 * format layer's bounce buffer, the other bytes of a partly written edge
 * block read back first (zeros past the end of the file). Two such
 * writes sharing a block must not run at once: the caller serialises
 * them. Returns 0 or -errno (recorded).
 */
int fmt_pwritev_file_bounced(int fd, const struct iovec *iov, int cnt,
			     uint64_t off, uint32_t align);

#endif /* BC_FORMATS_FMT_H */
