/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 driver: header parsing and validation, open/close, reads, block
 * status and info (spec: QEMU docs/interop/qcow2.txt). Writes, creation
 * and checking live in qcow2-write.c, qcow2-create.c and qcow2-check.c.
 *
 * Validation (docs/qcow2.md §3): every header field, offset and size is
 * checked before anything uses it, sums and products with overflow
 * checks, tables against the file size and against cluster 0. Invalid
 * metadata is -EUCLEAN (ERR_IMAGE_CORRUPT); a valid image using a
 * feature we do not implement is -ENOTSUP (ERR_UNSUPPORTED) naming the
 * feature, so nothing is ever misread. Checks run in this order: basic
 * header fields, the header extension walk (it yields the feature name
 * table that names unknown features), unsupported features, then the
 * tables, so an encrypted or otherwise unsupported image is reported as
 * such rather than as whatever else might be odd about it.
 *
 * Reads: the mapping of a run is looked up under q->lock (through the L2
 * cache) and the run is registered as a shared in-flight request (so no
 * cluster it reads is replaced or freed meanwhile), then the data is read
 * without the lock, one host pread per contiguous run.
 */
#include "qcow2.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Header field offsets (spec "Header"). */
enum {
	H_MAGIC = 0,
	H_VERSION = 4,
	H_BACKING_OFF = 8,
	H_BACKING_SIZE = 16,
	H_CLUSTER_BITS = 20,
	H_SIZE = 24,
	H_CRYPT = 32,
	H_L1_SIZE = 36,
	H_L1_OFF = 40,
	H_REFT_OFF = 48,
	H_REFT_CLUSTERS = 56,
	H_NB_SNAPSHOTS = 60,
	H_SNAPSHOTS_OFF = 64,
	H_INCOMPAT = 72,
	H_COMPAT = 80,
	H_AUTOCLEAR = 88,
	H_REFCOUNT_ORDER = 96,
	H_HEADER_LEN = 100,
	H_COMPRESSION = 104,
};

/* Smallest snapshot table entry (spec "Snapshots"): bounds the table. */
#define SNAPSHOT_ENTRY_MIN 40u
/* Feature name table entry (spec "Feature name table"). */
#define FEATURE_ENTRY_LEN 48u
#define FEATURE_NAME_LEN  46u

/* Bits of ext_seen for the known extension types (duplicates refused). */
enum {
	SEEN_BACKING_FMT = 1 << 0,
	SEEN_FEATURE_NAME = 1 << 1,
	SEEN_BITMAPS = 1 << 2,
	SEEN_CRYPTO = 1 << 3,
	SEEN_DATA_FILE = 1 << 4,
};

/* What the extension walk found, before it is handed out. */
struct ext_walk {
	unsigned int seen;
	const uint8_t *backing_fmt; /* points into the header buffer */
	uint32_t backing_fmt_len;
	const uint8_t *features;
	uint32_t features_len;
	const uint8_t *bitmaps;     /* the 24 bytes of the bitmaps extension */
	uint64_t bitmaps_off;       /* ...and their offset in cluster 0 */
	uint64_t end;
};

__attribute__((format(printf, 2, 3))) static int
unsupported(const char *name, const char *fmt, ...)
{
	char reason[768];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	bc_error_set(ERR_UNSUPPORTED, ENOTSUP, "%s: %s", name, reason);
	return -ENOTSUP;
}

/*
 * A table of @bytes at @off: cluster-aligned; when not empty also past
 * cluster 0 (the header) and inside the file.
 */
static bool table_ok(uint64_t off, uint64_t bytes, uint64_t cluster_size,
		     uint64_t file_size)
{
	uint64_t end;

	if (!bc_is_aligned(off, cluster_size))
		return false;
	if (!bytes)
		return true;
	if (off < cluster_size)
		return false;
	return !bc_add_overflow(off, bytes, &end) && end <= file_size;
}

/* Whether two non-empty byte ranges share a cluster. */
static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen,
			   uint64_t cluster_size)
{
	if (!alen || !blen)
		return false;
	return a < bc_align_up(b + blen, cluster_size) &&
	       b < bc_align_up(a + alen, cluster_size);
}

/*
 * Walk the header extensions from @start to @end (spec "Header
 * extensions"): each one's length must fit before @end, known types at
 * most once. Fewer than 8 bytes before @end end the walk (no extension
 * fits there; old v2 images store the backing name right after the header).
 */
static int walk_extensions(const char *name, const uint8_t *buf, uint64_t start,
			   uint64_t end, struct ext_walk *w)
{
	uint64_t off = start;

	memset(w, 0, sizeof(*w));
	while (end - off >= 8) {
		uint32_t type = bc_get_be32(buf + off);
		uint32_t len = bc_get_be32(buf + off + 4);
		unsigned int bit = 0;

		off += 8;
		if (type == QCOW2_EXT_END)
			break;
		if (len > end - off)
			return qcow2_corrupt(
				name,
				"Header extension too large (type 0x%08" PRIx32
				", length %" PRIu32 ")",
				type, len);
		switch (type) {
		case QCOW2_EXT_BACKING_FMT:
			bit = SEEN_BACKING_FMT;
			if (len > FMT_BACKING_NAME_MAX)
				return qcow2_corrupt(
					name, "Backing format name too long");
			if (memchr(buf + off, 0, len))
				return qcow2_corrupt(
					name, "Invalid backing format name");
			w->backing_fmt = buf + off;
			w->backing_fmt_len = len;
			break;
		case QCOW2_EXT_FEATURE_NAME:
			bit = SEEN_FEATURE_NAME;
			if (len % FEATURE_ENTRY_LEN)
				return qcow2_corrupt(
					name,
					"Invalid feature name table length %" PRIu32,
					len);
			w->features = buf + off;
			w->features_len = len;
			break;
		case QCOW2_EXT_BITMAPS:
			bit = SEEN_BITMAPS;
			if (len != QCOW2_BITMAPS_EXT_LEN)
				return qcow2_corrupt(
					name,
					"Invalid bitmaps extension length %" PRIu32,
					len);
			w->bitmaps = buf + off;
			w->bitmaps_off = off;
			break;
		case QCOW2_EXT_CRYPTO:
			bit = SEEN_CRYPTO;
			if (len != 16)
				return qcow2_corrupt(
					name,
					"Invalid encryption header extension length %" PRIu32,
					len);
			break;
		case QCOW2_EXT_DATA_FILE:
			bit = SEEN_DATA_FILE;
			break;
		default:
			/* Unknown extensions are ignored (spec). */
			break;
		}
		if (bit & w->seen)
			return qcow2_corrupt(
				name, "Duplicate header extension 0x%08" PRIx32,
				type);
		w->seen |= bit;
		/* len <= end - off and end <= 2 MiB: no overflow. */
		off += bc_align_up(len, 8);
		if (off > end)
			off = end;
	}
	w->end = off;
	return 0;
}

/* Append @s to @dst (of @size bytes) as printable text. */
static void append_printable(char *dst, size_t size, const uint8_t *s, size_t n)
{
	size_t len = strlen(dst), i;

	for (i = 0; i < n && s[i] && len + 1 < size; i++)
		dst[len++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
	dst[len] = '\0';
}

/* "unsupported qcow2 feature(s): <names>" for unknown incompatible bits. */
static int unknown_features(const char *name, uint64_t mask,
			    const struct ext_walk *w)
{
	char list[512] = "";
	uint32_t i;

	for (i = 0; i + FEATURE_ENTRY_LEN <= w->features_len;
	     i += FEATURE_ENTRY_LEN) {
		const uint8_t *e = w->features + i;

		if (e[0] != 0 || e[1] > 63 || !(mask & (1ull << e[1])))
			continue;
		if (list[0])
			append_printable(list, sizeof(list),
					 (const uint8_t *)", ", 2);
		append_printable(list, sizeof(list), e + 2, FEATURE_NAME_LEN);
		mask &= ~(1ull << e[1]);
	}
	if (mask) {
		size_t len = strlen(list);

		(void)snprintf(list + len, sizeof(list) - len,
			       "%sunknown incompatible feature bits 0x%" PRIx64,
			       len ? ", " : "", mask);
	}
	return unsupported(name, "unsupported qcow2 feature(s): %s", list);
}

/* Incompatible features and encryption we do not implement. */
static int check_features(const char *name, const struct qcow2_header *hdr,
			  const struct ext_walk *w)
{
	uint64_t unknown = hdr->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;

	if (unknown)
		return unknown_features(name, unknown, w);
	if ((hdr->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) ||
	    (w->seen & SEEN_DATA_FILE))
		return unsupported(name,
				   "external data files are not supported");
	if (hdr->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
		if (hdr->compression_type == 0)
			return qcow2_corrupt(
				name,
				"compression type feature bit set with zlib compression type");
		if (hdr->compression_type == 1)
			return unsupported(name,
					   "zstd compression is not supported");
		return unsupported(name, "unsupported compression type %u",
				   hdr->compression_type);
	}
	if (hdr->compression_type)
		return qcow2_corrupt(
			name,
			"compression type %u without the compression type feature bit",
			hdr->compression_type);
	switch (hdr->crypt_method) {
	case 0:
		break;
	case 1:
		return unsupported(name,
				   "AES-encrypted images are not supported");
	case 2:
		return unsupported(name,
				   "LUKS-encrypted images are not supported");
	default:
		return unsupported(name,
				   "unsupported encryption method %" PRIu32,
				   hdr->crypt_method);
	}
	if (w->seen & SEEN_CRYPTO)
		return unsupported(
			name,
			"encryption header extension present; encrypted images are not supported");
	return 0;
}

/* Refcount table, snapshot table and L1 table (spec "Header"). */
static int check_tables(const char *name, const struct qcow2_header *hdr,
			uint64_t file_size)
{
	uint64_t cs = 1ull << hdr->cluster_bits;
	uint32_t l2_bits =
		hdr->cluster_bits -
		((hdr->incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 4 : 3);
	uint32_t span_bits = hdr->cluster_bits + l2_bits;
	uint64_t reft_bytes, snap_bytes, l1_bytes, needed;

	if (hdr->refcount_order > 6)
		return qcow2_corrupt(
			name,
			"Reference count entry width too large; may not exceed 64 bits");

	if (!hdr->refcount_table_clusters)
		return qcow2_corrupt(
			name, "Image does not contain a reference count table");
	reft_bytes = (uint64_t)hdr->refcount_table_clusters
		     << hdr->cluster_bits;
	if (reft_bytes > QCOW2_MAX_REFTABLE_BYTES)
		return qcow2_corrupt(name, "Reference count table too large");
	if (!table_ok(hdr->refcount_table_offset, reft_bytes, cs, file_size))
		return qcow2_corrupt(name,
				     "Invalid reference count table offset");

	if (hdr->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return qcow2_corrupt(name, "Too many snapshots");
	snap_bytes = (uint64_t)hdr->nb_snapshots * SNAPSHOT_ENTRY_MIN;
	if (!table_ok(hdr->snapshots_offset, snap_bytes, cs, file_size))
		return qcow2_corrupt(name, "Invalid snapshot table offset");

	/* Entries needed for the virtual size, without overflow. */
	if (hdr->size > INT64_MAX)
		return qcow2_corrupt(name, "Image is too big");
	needed = (hdr->size >> span_bits) +
		 ((hdr->size & ((1ull << span_bits) - 1)) != 0);
	if (needed > QCOW2_MAX_L1_BYTES / 8)
		return qcow2_corrupt(name, "Image is too big");
	l1_bytes = (uint64_t)hdr->l1_size * 8;
	if (l1_bytes > QCOW2_MAX_L1_BYTES)
		return qcow2_corrupt(name, "Active L1 table too large");
	if (hdr->l1_size < needed)
		return qcow2_corrupt(name, "L1 table is too small");
	if (!table_ok(hdr->l1_table_offset, l1_bytes, cs, file_size))
		return qcow2_corrupt(name, "Invalid L1 table offset");

	if (ranges_overlap(hdr->l1_table_offset, l1_bytes,
			   hdr->refcount_table_offset, reft_bytes, cs))
		return qcow2_corrupt(
			name, "L1 table overlaps the reference count table");
	if (ranges_overlap(hdr->snapshots_offset, snap_bytes,
			   hdr->refcount_table_offset, reft_bytes, cs))
		return qcow2_corrupt(
			name,
			"Snapshot table overlaps the reference count table");
	if (ranges_overlap(hdr->snapshots_offset, snap_bytes,
			   hdr->l1_table_offset, l1_bytes, cs))
		return qcow2_corrupt(name,
				     "Snapshot table overlaps the L1 table");
	return 0;
}

static char *dup_bytes(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

void qcow2_exts_free(struct qcow2_exts *exts)
{
	if (!exts)
		return;
	free(exts->backing_name);
	free(exts->backing_fmt);
	free(exts->feature_table);
	memset(exts, 0, sizeof(*exts));
}

int qcow2_parse_header_ext(const char *name, const uint8_t *buf, size_t len,
			   uint64_t file_size, struct qcow2_header *hdr,
			   struct qcow2_exts *exts)
{
	uint64_t cs, ext_end;
	struct ext_walk w;
	int ret;

	memset(hdr, 0, sizeof(*hdr));
	if (exts)
		memset(exts, 0, sizeof(*exts));
	if (len > file_size)
		len = (size_t)file_size;
	if (len < 8)
		return qcow2_corrupt(name, "file too short for a qcow2 header");
	hdr->magic = bc_get_be32(buf + H_MAGIC);
	hdr->version = bc_get_be32(buf + H_VERSION);
	if (hdr->magic != QCOW2_MAGIC)
		return qcow2_corrupt(name, "not a qcow2 image (bad magic)");
	if (hdr->version != 2 && hdr->version != 3)
		return unsupported(name, "unsupported qcow2 version %" PRIu32,
				   hdr->version);
	if (len < (hdr->version == 2 ? QCOW2_HDR_V2_LEN : QCOW2_HDR_V3_LEN))
		return qcow2_corrupt(name, "file too short for a qcow2 header");

	hdr->backing_file_offset = bc_get_be64(buf + H_BACKING_OFF);
	hdr->backing_file_size = bc_get_be32(buf + H_BACKING_SIZE);
	hdr->cluster_bits = bc_get_be32(buf + H_CLUSTER_BITS);
	hdr->size = bc_get_be64(buf + H_SIZE);
	hdr->crypt_method = bc_get_be32(buf + H_CRYPT);
	hdr->l1_size = bc_get_be32(buf + H_L1_SIZE);
	hdr->l1_table_offset = bc_get_be64(buf + H_L1_OFF);
	hdr->refcount_table_offset = bc_get_be64(buf + H_REFT_OFF);
	hdr->refcount_table_clusters = bc_get_be32(buf + H_REFT_CLUSTERS);
	hdr->nb_snapshots = bc_get_be32(buf + H_NB_SNAPSHOTS);
	hdr->snapshots_offset = bc_get_be64(buf + H_SNAPSHOTS_OFF);
	if (hdr->version == 2) {
		hdr->refcount_order = 4;
		hdr->header_length = QCOW2_HDR_V2_LEN;
	} else {
		hdr->incompatible_features = bc_get_be64(buf + H_INCOMPAT);
		hdr->compatible_features = bc_get_be64(buf + H_COMPAT);
		hdr->autoclear_features = bc_get_be64(buf + H_AUTOCLEAR);
		hdr->refcount_order = bc_get_be32(buf + H_REFCOUNT_ORDER);
		hdr->header_length = bc_get_be32(buf + H_HEADER_LEN);
	}

	if (hdr->cluster_bits < QCOW2_MIN_CLUSTER_BITS)
		return qcow2_corrupt(name, "Invalid cluster size: 2^%" PRIu32,
				     hdr->cluster_bits);
	if (hdr->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return unsupported(name, "Unsupported cluster size: 2^%" PRIu32,
				   hdr->cluster_bits);
	cs = 1ull << hdr->cluster_bits;

	if (hdr->version == 3) {
		if (hdr->header_length < QCOW2_HDR_V3_LEN)
			return qcow2_corrupt(name, "qcow2 header too short");
		if (hdr->header_length % 8)
			return qcow2_corrupt(name,
					     "qcow2 header length %" PRIu32
					     " not a multiple of 8",
					     hdr->header_length);
		if (hdr->header_length > cs)
			return qcow2_corrupt(
				name, "qcow2 header exceeds cluster size");
		if (hdr->header_length > len)
			return qcow2_corrupt(
				name, "qcow2 header exceeds end of file");
		if (hdr->header_length > H_COMPRESSION)
			hdr->compression_type = buf[H_COMPRESSION];
	}

	/* The backing name lives in cluster 0 after header and extensions. */
	ext_end = cs;
	if (hdr->backing_file_offset) {
		if (hdr->backing_file_offset > cs ||
		    hdr->backing_file_offset < hdr->header_length)
			return qcow2_corrupt(name,
					     "Invalid backing file offset");
		ext_end = hdr->backing_file_offset;
	}
	ret = walk_extensions(name, buf, hdr->header_length,
			      BC_MIN(ext_end, (uint64_t)len), &w);
	if (ret < 0)
		return ret;

	ret = check_features(name, hdr, &w);
	if (ret < 0)
		return ret;
	if ((hdr->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
	    hdr->cluster_bits < QCOW2_MIN_EXTL2_CLUSTER_BITS)
		return qcow2_corrupt(
			name,
			"Extended L2 entries need a cluster size of at least 16 KiB");

	ret = check_tables(name, hdr, file_size);
	if (ret < 0)
		return ret;

	if (hdr->backing_file_offset && hdr->backing_file_size) {
		uint64_t off = hdr->backing_file_offset;
		uint32_t n = hdr->backing_file_size;

		if (n > FMT_BACKING_NAME_MAX || n > cs - off)
			return qcow2_corrupt(name,
					     "Backing file name too long");
		if (off + n > len)
			return qcow2_corrupt(
				name, "Backing file name beyond end of file");
		if (memchr(buf + off, 0, n))
			return qcow2_corrupt(name, "Invalid backing file name");
	}

	if (!exts)
		return 0;
	exts->ext_end = w.end;
	exts->has_bitmaps = w.seen & SEEN_BITMAPS;
	if (w.bitmaps) {
		exts->bitmaps_ext_off = w.bitmaps_off;
		exts->bitmaps_nb = bc_get_be32(w.bitmaps);
		exts->bitmaps_reserved = bc_get_be32(w.bitmaps + 4);
		exts->bitmaps_dir_size = bc_get_be64(w.bitmaps + 8);
		exts->bitmaps_dir_off = bc_get_be64(w.bitmaps + 16);
	}
	if (hdr->backing_file_offset && hdr->backing_file_size) {
		exts->backing_name = dup_bytes(buf + hdr->backing_file_offset,
					       hdr->backing_file_size);
		if (!exts->backing_name)
			goto err_nomem;
	}
	if (w.backing_fmt_len) {
		exts->backing_fmt = dup_bytes(w.backing_fmt, w.backing_fmt_len);
		if (!exts->backing_fmt)
			goto err_nomem;
	}
	if (w.features_len) {
		exts->feature_table = malloc(w.features_len);
		if (!exts->feature_table)
			goto err_nomem;
		memcpy(exts->feature_table, w.features, w.features_len);
		exts->feature_table_len = w.features_len;
	}
	return 0;

err_nomem:
	qcow2_exts_free(exts);
	return -ENOMEM;
}

int qcow2_parse_header(const char *name, const uint8_t *buf, size_t len,
		       uint64_t file_size, struct qcow2_header *hdr)
{
	return qcow2_parse_header_ext(name, buf, len, file_size, hdr, NULL);
}

/* --- Driver ------------------------------------------------------------ */

static int qcow2_probe(const uint8_t *buf, size_t len)
{
	/* Any version: an unsupported one must fail as qcow2, not read as raw. */
	if (len >= 4 && bc_get_be32(buf) == QCOW2_MAGIC)
		return 100;
	return 0;
}

static void sys_error(const char *name, int err, const char *what)
{
	char eb[128];

	bc_error_set_default(bc_errno_to_code(err), err, "%s: %s: %s", name,
			     what, strerror_r(err, eb, sizeof(eb)));
}

/*
 * Read cluster 0 (or the file, when shorter): the first 4 KiB tell the
 * cluster size. Returns the buffer (aligned for O_DIRECT) in *out.
 */
static int read_cluster0(struct fmt_image *img, uint64_t file_size,
			 uint8_t **out, size_t *len)
{
	size_t n = (size_t)BC_MIN(file_size, 4096u);
	uint32_t cb;
	void *p;
	int ret;

	if (posix_memalign(&p, 4096, 4096))
		return -ENOMEM;
	ret = fmt_pread_file_zfill(img->fd, p, 4096, 0);
	if (ret < 0)
		goto err_free;
	cb = n >= 24 ? bc_get_be32((uint8_t *)p + H_CLUSTER_BITS) : 0;
	if (cb > 12 && cb <= QCOW2_MAX_CLUSTER_BITS && file_size > 4096) {
		free(p);
		n = (size_t)BC_MIN(file_size, 1ull << cb);
		if (posix_memalign(&p, 4096, bc_align_up(n, 4096)))
			return -ENOMEM;
		ret = fmt_pread_file_zfill(img->fd, p, bc_align_up(n, 4096), 0);
		if (ret < 0)
			goto err_free;
	}
	*out = p;
	*len = n;
	return 0;

err_free:
	free(p);
	sys_error(img->filename, -ret, "cannot read the qcow2 header");
	return ret;
}

/* Everything open allocated in @q (close, and open's failure path). */
static void free_state(struct qcow2 *q)
{
	assert(!q->reqs);
	qcow2_cache_destroy(&q->l2_cache);
	qcow2_cache_destroy(&q->rb_cache);
	qcow2_ccache_free(q);
	qcow2_bitmaps_free(q);
	pthread_mutex_destroy(&q->cc_lock);
	pthread_cond_destroy(&q->req_cond);
	free(q->deferred);
	free(q->reftable);
	free(q->l1);
	free(q->feature_names);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static int qcow2_open(struct fmt_image *img)
{
	struct qcow2_exts exts;
	struct stat st;
	struct qcow2 *q;
	uint8_t *buf;
	size_t len;
	int ret;

	if (fstat(img->fd, &st) < 0) {
		ret = -errno;
		sys_error(img->filename, -ret, "cannot stat");
		return ret;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->cc_lock, NULL);
	pthread_cond_init(&q->req_cond, NULL);
	q->img = img;
	q->read_only = !(img->flags & FMT_OPEN_RDWR);
	q->file_size = (uint64_t)st.st_size;
	q->file_end = q->file_size;

	ret = read_cluster0(img, q->file_size, &buf, &len);
	if (ret < 0)
		goto err_free;
	ret = qcow2_parse_header_ext(img->filename, buf, len, q->file_size,
				     &q->hdr, &exts);
	free(buf);
	if (ret < 0)
		goto err_free;
	if ((q->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) &&
	    !q->read_only) {
		ret = qcow2_corrupt(
			img->filename,
			"image is marked corrupt; cannot be opened read/write");
		goto err_exts;
	}

	q->cluster_bits = q->hdr.cluster_bits;
	q->cluster_size = 1ull << q->cluster_bits;
	q->extended_l2 = q->hdr.incompatible_features & QCOW2_INCOMPAT_EXTL2;
	q->l2_entry_size = q->extended_l2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->extended_l2 ? 4 : 3);
	q->subcluster_bits = q->cluster_bits - (q->extended_l2 ? 5 : 0);
	q->csize_shift = 62 - (q->cluster_bits - 8);
	q->csize_mask = (1ull << (q->cluster_bits - 8)) - 1;
	q->l1_size = q->hdr.l1_size;
	q->refcount_order = q->hdr.refcount_order;
	q->refcount_bits = 1u << q->refcount_order;
	q->refcount_max = q->refcount_bits == 64
				  ? UINT64_MAX
				  : (1ull << q->refcount_bits) - 1;
	q->refblock_bits = q->cluster_bits + 3 - q->refcount_order;
	q->ext_end = exts.ext_end;
	q->feature_names = (char *)bc_steal_ptr(&exts.feature_table);
	q->feature_names_len = exts.feature_table_len;
	img->size = q->hdr.size;
	img->priv = q;
	q->data_under_lock = qcow2_io_align(q) > q->cluster_size;
	ret = qcow2_cache_init(&q->l2_cache, qcow2_cache_slots(q->cluster_size),
			       true);
	if (ret == 0)
		ret = qcow2_cache_init(&q->rb_cache,
				       qcow2_cache_slots(q->cluster_size), false);
	if (ret < 0)
		goto err_exts;

	ret = qcow2_l1_load(q);
	if (ret < 0)
		goto err_exts;
	/* Refcounts are not needed for reads but check() uses them. */
	ret = qcow2_refcount_load(q);
	if (ret < 0)
		goto err_exts;
	ret = qcow2_bitmaps_load(q, &exts);
	if (ret < 0 && (img->flags & FMT_OPEN_CHECK)) {
		/* check() reports what is wrong with them. */
		bc_error_reset();
		ret = 0;
	}
	if (ret < 0)
		goto err_exts;
	if (!q->read_only) {
		ret = qcow2_open_rw(q);
		if (ret < 0)
			goto err_exts;
	}

	img->backing_name = bc_steal_ptr(&exts.backing_name);
	img->backing_fmt = bc_steal_ptr(&exts.backing_fmt);
	qcow2_exts_free(&exts);
	return 0;

err_exts:
	qcow2_exts_free(&exts);
err_free:
	img->priv = NULL;
	free_state(q);
	return ret;
}

static void qcow2_close(struct fmt_image *img)
{
	struct qcow2 *q = img->priv;

	if (!q)
		return;
	if (!q->read_only)
		(void)qcow2_close_rw(q); /* records its own error */
	free_state(q);
	img->priv = NULL;
}

static int qcow2_pread(struct fmt_image *img, void *buf, size_t n, uint64_t off)
{
	struct qcow2 *q = img->priv;
	uint8_t *p = buf;
	uint64_t known_end;
	int ret = 0;

	while (n) {
		struct qcow2_mapping m;
		struct qcow2_req req;
		uint64_t rs, re;
		size_t run;

		pthread_mutex_lock(&q->lock);
		do {
			ret = qcow2_map_ext_locked(q, off, n, &m);
			if (ret < 0)
				break;
			rs = bc_align_down(off, q->cluster_size);
			re = bc_align_up(off + m.run, q->cluster_size);
		} while (qcow2_req_wait_locked(q, rs, re, false));
		known_end = q->file_size;
		if (ret == 0)
			qcow2_req_add_locked(q, &req, rs, re, false);
		pthread_mutex_unlock(&q->lock);
		if (ret < 0)
			break;
		run = (size_t)m.run;
		switch (m.type) {
		case QCOW2_CLUSTER_UNALLOCATED:
			ret = fmt_read_backing(img, p, run, off);
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
		case QCOW2_CLUSTER_ZERO_ALLOC:
			memset(p, 0, run);
			break;
		case QCOW2_CLUSTER_NORMAL:
			/*
			 * A file may end inside its last cluster: zeros past
			 * its known end; short before it is an error.
			 */
			ret = qcow2_file_pread(q, p, run, m.host_off,
					       known_end);
			break;
		case QCOW2_CLUSTER_COMPRESSED:
			ret = qcow2_compressed_pread(
				q, m.l2_raw, off & (q->cluster_size - 1), p,
				run);
			break;
		}
		pthread_mutex_lock(&q->lock);
		qcow2_req_remove_locked(q, &req);
		pthread_mutex_unlock(&q->lock);
		if (ret < 0)
			break;
		p += run;
		off += run;
		n -= run;
	}
	return ret;
}

static int qcow2_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
			      struct fmt_extent *ext)
{
	struct qcow2 *q = img->priv;
	unsigned int budget = QCOW2_MAP_MAX_ENTRIES;
	struct qcow2_mapping m;
	int ret;

	pthread_mutex_lock(&q->lock);
	ret = qcow2_map_ext_locked(q, off, len, &m);
	/*
	 * Compressed clusters map one by one; report their run whole, up to
	 * the same bound as one mapping call.
	 */
	while (ret == 0 && m.type == QCOW2_CLUSTER_COMPRESSED && m.run < len &&
	       --budget) {
		struct qcow2_mapping next;

		ret = qcow2_map_ext_locked(q, off + m.run, len - m.run, &next);
		if (ret < 0 || next.type != QCOW2_CLUSTER_COMPRESSED)
			break;
		m.run += next.run;
	}
	pthread_mutex_unlock(&q->lock);
	if (ret < 0)
		return ret;

	memset(ext, 0, sizeof(*ext));
	ext->len = m.run;
	ext->depth = 0;
	ext->host_off = -1;
	switch (m.type) {
	case QCOW2_CLUSTER_UNALLOCATED:
		ext->state = FMT_UNALLOC;
		break;
	case QCOW2_CLUSTER_ZERO_PLAIN:
		ext->state = FMT_ZERO;
		break;
	case QCOW2_CLUSTER_ZERO_ALLOC:
		ext->state = FMT_ZERO;
		ext->host_off = (int64_t)m.host_off;
		break;
	case QCOW2_CLUSTER_NORMAL:
		ext->state = FMT_DATA;
		ext->host_off = (int64_t)m.host_off;
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		ext->state = FMT_DATA;
		ext->compressed = true;
		break;
	}
	return 0;
}

static int qcow2_get_info(struct fmt_image *img, struct fmt_info *info)
{
	struct qcow2 *q = img->priv;
	struct stat st;

	if (fstat(img->fd, &st) < 0) {
		int err = errno;

		sys_error(img->filename, err, "cannot stat");
		return -err;
	}
	memset(info, 0, sizeof(*info));
	info->format = "qcow2";
	info->virtual_size = img->size;
	info->actual_size = (uint64_t)st.st_blocks * 512;
	info->cluster_size = (uint32_t)q->cluster_size;
	info->version = (int)q->hdr.version;
	info->refcount_bits = (int)q->refcount_bits;
	info->extended_l2 = q->extended_l2;
	pthread_mutex_lock(&q->lock);
	info->lazy_refcounts =
		q->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS;
	info->dirty = q->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY;
	info->corrupt = q->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT;
	pthread_mutex_unlock(&q->lock);
	info->compression_type = q->hdr.compression_type;
	return 0;
}

const struct fmt_driver fmt_qcow2_driver = {
	.name = "qcow2",
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.pread = qcow2_pread,
	.pwrite = qcow2_pwrite,
	.write_zeroes = qcow2_write_zeroes,
	.discard = qcow2_discard,
	.flush = qcow2_flush,
	.block_status = qcow2_block_status,
	.bitmap_list = qcow2_bitmap_list,
	.bitmap_change = qcow2_bitmap_change,
	.bitmap_read = qcow2_bitmap_read,
	.create = qcow2_create,
	.set_backing = qcow2_set_backing,
	.get_info = qcow2_get_info,
	.check = qcow2_check,
	.map_for_overwrite = qcow2_map_for_overwrite,
	.io_map = qcow2_io_map,
	.io_unmap = qcow2_io_unmap,
	.reserve = qcow2_reserve,
};
