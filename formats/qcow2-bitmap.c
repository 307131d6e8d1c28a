/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps (QEMU docs/interop/qcow2.txt, "Bitmaps
 * extension"): the directory, its validation, keeping enabled bitmaps up
 * to date while the image is written, and the changes `blockcopy bitmap`
 * makes (add, remove, clear, enable, disable, merge).
 *
 * On disk: a header extension gives the directory's offset, size and
 * entry count; autoclear bit 0 says the extension is consistent (a program
 * that does not maintain bitmaps clears it, and every bitmap is then void).
 * Each directory entry names a bitmap table: one 64-bit entry per cluster
 * of bits, the cluster's offset, or 0 with bit 0 saying all ones or all
 * zeros. Bit i of the bitmap (least significant bit first in each byte)
 * covers guest bytes [i << granularity_bits, (i + 1) << granularity_bits).
 *
 * While the image is open read-write, enabled ("auto") bitmaps are held
 * in memory and every write sets their bits; the first write marks them
 * in_use on disk, so a crash leaves them flagged inconsistent rather than
 * claiming a state they do not have. Close writes the bits out and clears
 * in_use. Bitmaps found in_use at open are inconsistent: they are kept as
 * they are, reported, and can only be removed.
 *
 * Every change is copy-on-write: new tables, data clusters and directory
 * are written to newly allocated clusters, the refcount cache written back
 * and the file synced, then the header switches to the new directory in
 * one write, and only then are the old clusters freed (deferred frees,
 * applied at the next metadata flush). A crash leaks clusters at worst.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

#define DIR_ENTRY_FIXED 24u

static uint64_t nb_bits(const struct qcow2 *q, uint32_t gran_bits)
{
	return bc_div_round_up(q->hdr.size, 1ull << gran_bits);
}

/* Table entries a bitmap of this granularity needs (spec). */
static uint64_t table_entries(const struct qcow2 *q, uint32_t gran_bits)
{
	return bc_div_round_up(nb_bits(q, gran_bits), q->cluster_size * 8);
}

/* Bytes of the in-memory bits: whole clusters, as the table maps them. */
static uint64_t bits_bytes(const struct qcow2 *q, const struct qcow2_bitmap *b)
{
	return (uint64_t)b->table_size * q->cluster_size;
}

static uint64_t dir_entry_len(const struct qcow2_bitmap *b)
{
	return bc_align_up(DIR_ENTRY_FIXED + (uint64_t)b->extra_len +
				   strlen(b->name),
			   8);
}

static void free_bitmap(struct qcow2_bitmap *b)
{
	free(b->name);
	free(b->extra);
	free(b->bits);
	memset(b, 0, sizeof(*b));
}

void qcow2_bitmaps_free(struct qcow2 *q)
{
	uint32_t i;

	for (i = 0; i < q->bitmaps.nb; i++)
		free_bitmap(&q->bitmaps.bm[i]);
	free(q->bitmaps.bm);
	memset(&q->bitmaps, 0, sizeof(q->bitmaps));
}

static struct qcow2_bitmap *find(struct qcow2 *q, const char *name)
{
	uint32_t i;

	for (i = 0; i < q->bitmaps.nb; i++)
		if (strcmp(q->bitmaps.bm[i].name, name) == 0)
			return &q->bitmaps.bm[i];
	return NULL;
}

/* --- loading and validation ------------------------------------------- */

/* Validate one directory entry at @e (@avail bytes left in the directory). */
static int parse_entry(struct qcow2 *q, const uint8_t *e, uint64_t avail,
		       struct qcow2_bitmap *b, uint64_t *len)
{
	uint64_t tbytes, end;
	uint32_t xlen;
	uint16_t nlen;
	uint8_t type;

	if (avail < DIR_ENTRY_FIXED)
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmap directory: entry truncated");
	b->table_off = bc_get_be64(e);
	b->table_size = bc_get_be32(e + 8);
	b->flags = bc_get_be32(e + 12);
	type = e[16];
	b->granularity_bits = e[17];
	nlen = bc_get_be16(e + 18);
	xlen = bc_get_be32(e + 20);
	*len = bc_align_up(DIR_ENTRY_FIXED + (uint64_t)xlen + nlen, 8);
	if (*len > avail)
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmap directory: entry exceeds the directory");
	if (nlen == 0 || nlen > QCOW2_BITMAP_NAME_MAX ||
	    memchr(e + DIR_ENTRY_FIXED + xlen, 0, nlen))
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmap directory: bad bitmap name");
	b->name = malloc(nlen + 1u);
	if (!b->name)
		return -ENOMEM;
	memcpy(b->name, e + DIR_ENTRY_FIXED + xlen, nlen);
	b->name[nlen] = '\0';
	if (b->flags & ~QCOW2_BME_FLAGS_KNOWN)
		return qcow2_corrupt(qcow2_name(q),
				     "bitmap '%s': reserved flags 0x%x set",
				     b->name, b->flags & ~QCOW2_BME_FLAGS_KNOWN);
	if (type != QCOW2_BME_TYPE_DIRTY)
		return qcow2_corrupt(qcow2_name(q),
				     "bitmap '%s': unknown type %u", b->name,
				     type);
	if (b->granularity_bits < QCOW2_BITMAP_MIN_GRAN_BITS ||
	    b->granularity_bits > QCOW2_BITMAP_MAX_GRAN_BITS)
		return qcow2_corrupt(qcow2_name(q),
				     "bitmap '%s': granularity 2^%u out of range",
				     b->name, b->granularity_bits);
	if (b->table_size != table_entries(q, b->granularity_bits))
		return qcow2_corrupt(qcow2_name(q),
				     "bitmap '%s': table has %u entries, the image size needs %llu",
				     b->name, b->table_size,
				     (unsigned long long)table_entries(
					     q, b->granularity_bits));
	tbytes = (uint64_t)b->table_size * 8;
	if (tbytes > QCOW2_BITMAP_TABLE_MAX ||
	    !bc_is_aligned(b->table_off, q->cluster_size) ||
	    (tbytes && (b->table_off < q->cluster_size ||
			bc_add_overflow(b->table_off, tbytes, &end) ||
			end > q->file_size)))
		return qcow2_corrupt(qcow2_name(q),
				     "bitmap '%s': invalid table offset 0x%llx",
				     b->name,
				     (unsigned long long)b->table_off);
	if (xlen) {
		if (!(b->flags & QCOW2_BME_EXTRA_COMPATIBLE) && !q->read_only) {
			bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
				     "%s: bitmap '%s' has extra data blockcopy does not know; cannot be opened read/write",
				     qcow2_name(q), b->name);
			return -ENOTSUP;
		}
		b->extra = malloc(xlen);
		if (!b->extra)
			return -ENOMEM;
		memcpy(b->extra, e + DIR_ENTRY_FIXED, xlen);
		b->extra_len = xlen;
	}
	return 0;
}

int qcow2_bitmaps_load(struct qcow2 *q, const struct qcow2_exts *exts)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	uint64_t end, pos = 0;
	uint8_t *dir;
	uint32_t i;
	int ret;

	memset(bs, 0, sizeof(*bs));
	bs->ext_off = exts->has_bitmaps ? exts->bitmaps_ext_off : 0;
	if (!exts->has_bitmaps || q->hdr.version < 3 ||
	    !(q->hdr.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
		return 0; /* none, or void: ignored as QEMU does */
	if (exts->bitmaps_reserved)
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmaps extension: reserved field not zero");
	if (exts->bitmaps_nb == 0 || exts->bitmaps_nb > QCOW2_BITMAPS_MAX)
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmaps extension: %u bitmaps",
				     exts->bitmaps_nb);
	if (exts->bitmaps_dir_size < DIR_ENTRY_FIXED ||
	    exts->bitmaps_dir_size > QCOW2_BITMAP_DIR_MAX ||
	    !bc_is_aligned(exts->bitmaps_dir_off, q->cluster_size) ||
	    exts->bitmaps_dir_off < q->cluster_size ||
	    bc_add_overflow(exts->bitmaps_dir_off, exts->bitmaps_dir_size,
			    &end) ||
	    end > q->file_size)
		return qcow2_corrupt(qcow2_name(q),
				     "Invalid bitmaps extension: directory at 0x%llx, %llu bytes",
				     (unsigned long long)exts->bitmaps_dir_off,
				     (unsigned long long)exts->bitmaps_dir_size);
	dir = malloc(exts->bitmaps_dir_size);
	bs->bm = calloc(exts->bitmaps_nb, sizeof(*bs->bm));
	if (!dir || !bs->bm) {
		free(dir);
		free(bs->bm);
		bs->bm = NULL;
		return -ENOMEM;
	}
	ret = qcow2_file_pread(q, dir, exts->bitmaps_dir_size,
			       exts->bitmaps_dir_off, q->file_size);
	for (i = 0; ret == 0 && i < exts->bitmaps_nb; i++) {
		uint64_t len = 0;

		bs->nb = i + 1; /* so that qcow2_bitmaps_free() sees it */
		ret = parse_entry(q, dir + pos, exts->bitmaps_dir_size - pos,
				  &bs->bm[i], &len);
		if (ret == 0 && find(q, bs->bm[i].name) != &bs->bm[i])
			ret = qcow2_corrupt(qcow2_name(q),
					    "Invalid bitmap directory: duplicate bitmap '%s'",
					    bs->bm[i].name);
		pos += len;
	}
	if (ret == 0 && pos != exts->bitmaps_dir_size)
		ret = qcow2_corrupt(qcow2_name(q),
				    "Invalid bitmap directory: %llu bytes, entries take %llu",
				    (unsigned long long)exts->bitmaps_dir_size,
				    (unsigned long long)pos);
	free(dir);
	if (ret < 0) {
		qcow2_bitmaps_free(q);
		return ret;
	}
	bs->present = true;
	bs->dir_off = exts->bitmaps_dir_off;
	bs->dir_size = exts->bitmaps_dir_size;
	return 0;
}

/* Read a bitmap's bits from its table into b->bits. */
static int read_bits(struct qcow2 *q, struct qcow2_bitmap *b)
{
	uint64_t cs = q->cluster_size, tbytes = (uint64_t)b->table_size * 8;
	uint64_t nbits = nb_bits(q, b->granularity_bits), j, end;
	uint8_t *table = NULL, *bits;
	int ret = 0;

	bits = calloc(1, bits_bytes(q, b) ? bits_bytes(q, b) : 1);
	if (tbytes)
		table = malloc(tbytes);
	if (!bits || (tbytes && !table)) {
		free(bits);
		free(table);
		return -ENOMEM;
	}
	if (tbytes)
		ret = qcow2_file_pread(q, table, tbytes, b->table_off,
				       q->file_size);
	for (j = 0; ret == 0 && j < b->table_size; j++) {
		uint64_t e = bc_get_be64(table + j * 8);
		uint64_t off = e & QCOW2_BTE_OFFSET_MASK;

		if ((e & QCOW2_BTE_RESERVED) || !bc_is_aligned(off, cs) ||
		    (off && (off < cs || bc_add_overflow(off, cs, &end) ||
			     end > q->file_size)) ||
		    (off && (e & QCOW2_BTE_ALL_ONES))) {
			ret = qcow2_corrupt(qcow2_name(q),
					    "bitmap '%s': invalid table entry %llu (0x%016llx)",
					    b->name, (unsigned long long)j,
					    (unsigned long long)e);
			break;
		}
		if (off)
			ret = qcow2_file_pread(q, bits + j * cs, cs, off,
					       q->file_size);
		else if (e & QCOW2_BTE_ALL_ONES)
			memset(bits + j * cs, 0xff, cs);
	}
	free(table);
	if (ret < 0) {
		free(bits);
		return ret;
	}
	/* Bits past the disk's end are not part of the bitmap. */
	for (j = nbits; j < bits_bytes(q, b) * 8 && j % 8; j++)
		bits[j / 8] &= (uint8_t)~(1u << (j % 8));
	if (bits_bytes(q, b) > bc_div_round_up(nbits, 8))
		memset(bits + bc_div_round_up(nbits, 8), 0,
		       bits_bytes(q, b) - bc_div_round_up(nbits, 8));
	free(b->bits);
	b->bits = bits;
	return 0;
}

/* --- writing ------------------------------------------------------------ */

/* Serialise the directory of @bm[0..nb) into a new buffer of *size bytes. */
static uint8_t *build_dir(const struct qcow2_bitmap *bm, uint32_t nb,
			  uint64_t *size)
{
	uint64_t total = 0, pos = 0;
	uint8_t *dir;
	uint32_t i;

	for (i = 0; i < nb; i++)
		total += dir_entry_len(&bm[i]);
	dir = calloc(1, total ? total : 1);
	if (!dir)
		return NULL;
	for (i = 0; i < nb; i++) {
		const struct qcow2_bitmap *b = &bm[i];
		size_t nlen = strlen(b->name);

		bc_put_be64(dir + pos, b->table_off);
		bc_put_be32(dir + pos + 8, b->table_size);
		bc_put_be32(dir + pos + 12, b->flags);
		dir[pos + 16] = QCOW2_BME_TYPE_DIRTY;
		dir[pos + 17] = (uint8_t)b->granularity_bits;
		bc_put_be16(dir + pos + 18, (uint16_t)nlen);
		bc_put_be32(dir + pos + 20, b->extra_len);
		if (b->extra_len)
			memcpy(dir + pos + DIR_ENTRY_FIXED, b->extra,
			       b->extra_len);
		memcpy(dir + pos + DIR_ENTRY_FIXED + b->extra_len, b->name,
		       nlen);
		pos += dir_entry_len(b);
	}
	*size = total;
	return dir;
}

/* Write @n bytes into newly allocated clusters; *off gets where. */
static int write_new(struct qcow2 *q, const void *buf, uint64_t n,
		     uint64_t *off)
{
	uint64_t cs = q->cluster_size, len = bc_align_up(n, cs);
	uint8_t *b;
	int64_t at;
	int ret;

	b = qcow2_alloc_buf(len);
	if (!b)
		return -ENOMEM;
	memset(b, 0, len);
	memcpy(b, buf, n);
	at = qcow2_alloc_clusters_locked(q, len / cs);
	if (at < 0) {
		free(b);
		return (int)at;
	}
	ret = fmt_pwrite_file(q->img->fd, b, len, (uint64_t)at);
	free(b);
	if (ret < 0) {
		qcow2_io_error(q, ret, "write bitmap data");
		(void)qcow2_free_clusters_locked(q, (uint64_t)at, len);
		return ret;
	}
	*off = (uint64_t)at;
	return 0;
}

/* Write b->bits as a new table (all-zero clusters take no space). */
static int write_bits(struct qcow2 *q, struct qcow2_bitmap *b)
{
	uint64_t cs = q->cluster_size, j, off;
	uint8_t *table;
	int ret = 0;

	if (!b->table_size) {
		b->table_off = 0;
		return 0;
	}
	table = calloc(b->table_size, 8);
	if (!table)
		return -ENOMEM;
	for (j = 0; ret == 0 && j < b->table_size; j++) {
		if (bc_is_zero(b->bits + j * cs, cs))
			continue;
		ret = write_new(q, b->bits + j * cs, cs, &off);
		if (ret == 0)
			bc_put_be64(table + j * 8, off);
	}
	if (ret == 0)
		ret = write_new(q, table, (uint64_t)b->table_size * 8, &off);
	if (ret == 0)
		b->table_off = off;
	/* On failure the clusters written so far are leaked: harmless. */
	free(table);
	return ret;
}

/* Free a table that nothing points at any more, with its data clusters. */
static void free_table(struct qcow2 *q, uint64_t table_off, uint32_t size)
{
	uint64_t tbytes = (uint64_t)size * 8, j;
	uint8_t *table;

	if (!table_off || !size)
		return;
	table = malloc(tbytes);
	if (table &&
	    qcow2_file_pread(q, table, tbytes, table_off, q->file_size) == 0) {
		for (j = 0; j < size; j++) {
			uint64_t off = bc_get_be64(table + j * 8) &
				       QCOW2_BTE_OFFSET_MASK;

			if (off)
				(void)qcow2_free_clusters_locked(
					q, off, q->cluster_size);
		}
	}
	free(table);
	(void)qcow2_free_clusters_locked(q, table_off,
					 bc_align_up(tbytes, q->cluster_size));
}

/*
 * Make the on-disk bitmaps what q->bitmaps.bm[0..nb) says: tables of the
 * bitmaps marked changed are written anew, then the directory, then the
 * header switches; then the clusters of @old[0..nold) (the tables as they
 * were before) that no bitmap uses any more are freed, with the old
 * directory.
 */
struct old_table {
	uint64_t off;
	uint32_t size;
};

static int commit_locked(struct qcow2 *q, const struct old_table *old,
			 uint32_t nold)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	uint8_t ext[QCOW2_BITMAPS_EXT_LEN];
	struct qcow2_header_change hc = { .set_bitmaps = true,
					  .set_autoclear = true };
	uint64_t dir_size = 0, dir_off = 0, old_dir_off = bs->dir_off;
	uint64_t old_dir_size = bs->dir_size;
	uint8_t *dir;
	uint32_t i, k;
	int ret;

	for (i = 0; i < bs->nb; i++) {
		if (!bs->bm[i].changed)
			continue;
		ret = write_bits(q, &bs->bm[i]);
		if (ret < 0)
			return ret;
	}
	if (bs->nb) {
		dir = build_dir(bs->bm, bs->nb, &dir_size);
		if (!dir)
			return -ENOMEM;
		ret = write_new(q, dir, dir_size, &dir_off);
		free(dir);
		if (ret < 0)
			return ret;
		bc_put_be32(ext, bs->nb);
		bc_put_be32(ext + 4, 0);
		bc_put_be64(ext + 8, dir_size);
		bc_put_be64(ext + 16, dir_off);
		hc.bitmaps_ext = ext;
		hc.autoclear = q->hdr.autoclear_features |
			       QCOW2_AUTOCLEAR_BITMAPS;
	} else {
		hc.bitmaps_ext = NULL; /* the spec wants no extension then */
		hc.autoclear = q->hdr.autoclear_features &
			       ~QCOW2_AUTOCLEAR_BITMAPS;
	}
	/*
	 * Refcounts of everything new (raised in the write-back refcount
	 * cache) and the data must be on disk before the header points at
	 * them.
	 */
	ret = qcow2_cache_writeback_locked(q, &q->rb_cache);
	if (ret == 0)
		ret = qcow2_sync_locked(q);
	if (ret < 0)
		return ret;
	ret = qcow2_rewrite_header_locked(q, &hc);
	if (ret < 0)
		return ret;
	for (i = 0; i < bs->nb; i++)
		bs->bm[i].changed = false;
	bs->present = bs->nb > 0;
	bs->dir_off = dir_off;
	bs->dir_size = dir_size;
	for (k = 0; k < nold; k++) {
		bool used = false;

		for (i = 0; i < bs->nb; i++)
			used |= bs->bm[i].table_off == old[k].off;
		if (!used)
			free_table(q, old[k].off, old[k].size);
	}
	if (old_dir_off)
		(void)qcow2_free_clusters_locked(
			q, old_dir_off, bc_align_up(old_dir_size, q->cluster_size));
	return 0;
}

static struct old_table *snapshot_tables(struct qcow2 *q)
{
	struct old_table *old;
	uint32_t i;

	old = calloc(q->bitmaps.nb ? q->bitmaps.nb : 1, sizeof(*old));
	if (!old)
		return NULL;
	for (i = 0; i < q->bitmaps.nb; i++) {
		old[i].off = q->bitmaps.bm[i].table_off;
		old[i].size = q->bitmaps.bm[i].table_size;
	}
	return old;
}

/* --- tracking guest writes ------------------------------------------ */

/* Rewrite the directory where it is (flags only change: same size). */
static int rewrite_dir_in_place(struct qcow2 *q)
{
	uint64_t size;
	uint8_t *dir;
	int ret;

	dir = build_dir(q->bitmaps.bm, q->bitmaps.nb, &size);
	if (!dir)
		return -ENOMEM;
	if (size != q->bitmaps.dir_size) {
		free(dir);
		return qcow2_corrupt(qcow2_name(q), "bitmap directory changed size");
	}
	ret = qcow2_meta_pwrite(q, dir, size, q->bitmaps.dir_off);
	free(dir);
	if (ret == 0 && fdatasync(q->img->fd) < 0)
		ret = -errno;
	if (ret < 0)
		qcow2_io_error(q, ret, "mark bitmaps in use");
	return ret;
}

static bool is_tracked(const struct qcow2_bitmap *b)
{
	return b->bits && (b->flags & QCOW2_BME_AUTO) &&
	       (b->flags & QCOW2_BME_IN_USE);
}

int qcow2_bitmaps_start_locked(struct qcow2 *q)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	bool any = false;
	uint32_t i;
	int ret;

	if (!bs->present || bs->tracking)
		return 0;
	for (i = 0; i < bs->nb; i++) {
		struct qcow2_bitmap *b = &bs->bm[i];

		if (!(b->flags & QCOW2_BME_AUTO) ||
		    (b->flags & QCOW2_BME_IN_USE))
			continue; /* disabled, or already inconsistent */
		ret = read_bits(q, b);
		if (ret < 0)
			return ret;
		b->flags |= QCOW2_BME_IN_USE;
		any = true;
	}
	if (!any)
		return 0;
	ret = rewrite_dir_in_place(q);
	if (ret < 0) {
		for (i = 0; i < bs->nb; i++) {
			if (bs->bm[i].bits) {
				bs->bm[i].flags &= ~QCOW2_BME_IN_USE;
				free(bs->bm[i].bits);
				bs->bm[i].bits = NULL;
			}
		}
		return ret;
	}
	bs->tracking = true;
	return 0;
}

static void set_bits(uint8_t *bits, uint64_t first, uint64_t last)
{
	uint64_t i = first;

	for (; i <= last && i % 8; i++)
		__atomic_fetch_or(&bits[i / 8], (uint8_t)(1u << (i % 8)),
				  __ATOMIC_RELAXED);
	for (; i + 7 <= last; i += 8)
		__atomic_store_n(&bits[i / 8], (uint8_t)0xff, __ATOMIC_RELAXED);
	for (; i <= last; i++)
		__atomic_fetch_or(&bits[i / 8], (uint8_t)(1u << (i % 8)),
				  __ATOMIC_RELAXED);
}

void qcow2_bitmaps_note_write(struct qcow2 *q, uint64_t off, uint64_t len)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	uint32_t i;

	if (!bs->tracking || !len)
		return;
	for (i = 0; i < bs->nb; i++) {
		struct qcow2_bitmap *b = &bs->bm[i];

		if (!is_tracked(b))
			continue;
		set_bits(b->bits, off >> b->granularity_bits,
			 (off + len - 1) >> b->granularity_bits);
	}
}

int qcow2_bitmaps_store_locked(struct qcow2 *q)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	struct old_table *old;
	uint32_t i;
	int ret;

	if (!bs->tracking)
		return 0;
	old = snapshot_tables(q);
	if (!old)
		return -ENOMEM;
	for (i = 0; i < bs->nb; i++) {
		struct qcow2_bitmap *b = &bs->bm[i];

		if (!is_tracked(b))
			continue;
		b->flags &= ~QCOW2_BME_IN_USE;
		b->changed = true;
	}
	ret = commit_locked(q, old, bs->nb);
	free(old);
	if (ret < 0)
		return ret; /* still in use on disk: inconsistent, as it must be */
	bs->tracking = false;
	q->write_ready = false; /* a later write starts tracking again */
	for (i = 0; i < bs->nb; i++) {
		free(bs->bm[i].bits);
		bs->bm[i].bits = NULL;
	}
	return 0;
}

/* --- listing, reading and changing (the tool's `bitmap` verbs) ----------- */

int qcow2_bitmap_list(struct fmt_image *img, struct fmt_bitmap_info **list,
		      size_t *n)
{
	struct qcow2 *q = img->priv;
	struct fmt_bitmap_info *l;
	uint32_t i;

	BC_LOCK_GUARD(&q->lock);
	*list = NULL;
	*n = 0;
	if (!q->bitmaps.nb)
		return 0;
	l = calloc(q->bitmaps.nb, sizeof(*l));
	if (!l)
		return -ENOMEM;
	for (i = 0; i < q->bitmaps.nb; i++) {
		const struct qcow2_bitmap *b = &q->bitmaps.bm[i];

		l[i].name = strdup(b->name);
		if (!l[i].name) {
			fmt_bitmap_list_free(l, i);
			return -ENOMEM;
		}
		l[i].granularity = 1ull << b->granularity_bits;
		l[i].enabled = b->flags & QCOW2_BME_AUTO;
		/* In use by us (tracking) is not inconsistent. */
		l[i].in_use = (b->flags & QCOW2_BME_IN_USE) && !is_tracked(b);
	}
	*list = l;
	*n = q->bitmaps.nb;
	return 0;
}

static int not_found(struct qcow2 *q, const char *name)
{
	bc_error_set(ERR_INVALID_ARG, ENOENT, "%s: bitmap '%s' not found",
		     qcow2_name(q), name);
	return -ENOENT;
}

static int inconsistent(struct qcow2 *q, const struct qcow2_bitmap *b)
{
	bc_error_set(ERR_IMAGE_CORRUPT, EUCLEAN,
		     "%s: bitmap '%s' is inconsistent (in use when last saved); it can only be removed",
		     qcow2_name(q), b->name);
	return -EUCLEAN;
}

int qcow2_bitmap_read(struct fmt_image *img, const char *name, uint8_t **bits,
		      uint64_t *nbits, uint32_t *granularity_bits)
{
	struct qcow2 *q = img->priv;
	struct qcow2_bitmap *b;
	uint64_t bytes;
	int ret;

	BC_LOCK_GUARD(&q->lock);
	b = find(q, name);
	if (!b)
		return not_found(q, name);
	if ((b->flags & QCOW2_BME_IN_USE) && !is_tracked(b))
		return inconsistent(q, b);
	bytes = bc_div_round_up(nb_bits(q, b->granularity_bits), 8);
	*bits = malloc(bytes ? bytes : 1);
	if (!*bits)
		return -ENOMEM;
	if (b->bits) {
		uint64_t i;

		for (i = 0; i < bytes; i++)
			(*bits)[i] = __atomic_load_n(&b->bits[i],
						     __ATOMIC_RELAXED);
	} else {
		ret = read_bits(q, b);
		if (ret < 0) {
			free(*bits);
			*bits = NULL;
			return ret;
		}
		memcpy(*bits, b->bits, bytes);
		free(b->bits);
		b->bits = NULL;
	}
	*nbits = nb_bits(q, b->granularity_bits);
	*granularity_bits = b->granularity_bits;
	return 0;
}

/* dst |= src where the two may have different granularities. */
static void merge_bits(uint8_t *dst, uint32_t dgran, const uint8_t *src,
		       uint64_t snbits, uint32_t sgran)
{
	uint64_t i;

	for (i = 0; i < snbits; i++) {
		uint64_t first, last;

		if (!(src[i / 8] & (1u << (i % 8))))
			continue;
		first = (i << sgran) >> dgran;
		last = (((i + 1) << sgran) - 1) >> dgran;
		set_bits(dst, first, last);
	}
}

static int check_granularity(struct qcow2 *q, const char *name, uint64_t g,
			     uint32_t *bits)
{
	if (g == 0)
		g = BC_MIN(BC_MAX(q->cluster_size, 4096u), 65536u);
	if (!bc_is_pow2(g) || g < (1ull << QCOW2_BITMAP_MIN_GRAN_BITS) ||
	    g > (1ull << QCOW2_BITMAP_MAX_GRAN_BITS)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: bitmap '%s': granularity must be a power of two from 512 bytes to 2 GiB",
			     qcow2_name(q), name);
		return -EINVAL;
	}
	*bits = (uint32_t)__builtin_ctzll(g);
	return 0;
}

static int add_locked(struct qcow2 *q, const struct fmt_bitmap_change *c)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	struct qcow2_bitmap nb = { 0 }, *grown;
	uint32_t gran;
	int ret;

	if (q->hdr.version < 3) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: persistent bitmaps need a qcow2 version 3 image (compat 1.1)",
			     qcow2_name(q));
		return -ENOTSUP;
	}
	if (!c->name[0] || strlen(c->name) > QCOW2_BITMAP_NAME_MAX) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: bitmap name must be 1 to %u bytes", qcow2_name(q),
			     QCOW2_BITMAP_NAME_MAX);
		return -EINVAL;
	}
	if (find(q, c->name)) {
		bc_error_set(ERR_EXISTS, EEXIST,
			     "%s: bitmap '%s' already exists", qcow2_name(q),
			     c->name);
		return -EEXIST;
	}
	if (bs->nb >= QCOW2_BITMAPS_MAX) {
		bc_error_set(ERR_INVALID_ARG, ENOSPC,
			     "%s: an image holds at most %u bitmaps", qcow2_name(q),
			     QCOW2_BITMAPS_MAX);
		return -ENOSPC;
	}
	ret = check_granularity(q, c->name, c->granularity, &gran);
	if (ret < 0)
		return ret;
	nb.granularity_bits = gran;
	nb.table_size = (uint32_t)table_entries(q, gran);
	if ((uint64_t)nb.table_size * 8 > QCOW2_BITMAP_TABLE_MAX) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: bitmap '%s': granularity too small for the disk size",
			     qcow2_name(q), c->name);
		return -EINVAL;
	}
	nb.flags = c->disabled ? 0 : QCOW2_BME_AUTO;
	nb.name = strdup(c->name);
	nb.bits = calloc(1, bits_bytes(q, &nb) ? bits_bytes(q, &nb) : 1);
	grown = reallocarray(bs->bm, bs->nb + 1u, sizeof(*bs->bm));
	if (!nb.name || !nb.bits || !grown) {
		if (grown)
			bs->bm = grown;
		free_bitmap(&nb);
		return -ENOMEM;
	}
	nb.changed = true;
	bs->bm = grown;
	bs->bm[bs->nb++] = nb;
	return 0;
}

static int change_locked(struct qcow2 *q, const struct fmt_bitmap_change *c)
{
	struct qcow2_bitmaps *bs = &q->bitmaps;
	struct qcow2_bitmap *b;
	uint8_t *src = NULL;
	uint64_t snbits;
	uint32_t sgran;
	int ret;

	if (c->verb == FMT_BITMAP_ADD)
		return add_locked(q, c);
	b = find(q, c->name);
	if (!b)
		return not_found(q, c->name);
	if (c->verb == FMT_BITMAP_REMOVE) {
		uint32_t i = (uint32_t)(b - bs->bm);

		free_bitmap(b);
		memmove(b, b + 1, (bs->nb - i - 1) * sizeof(*b));
		bs->nb--;
		return 0;
	}
	if (b->flags & QCOW2_BME_IN_USE)
		return inconsistent(q, b);
	switch (c->verb) {
	case FMT_BITMAP_ENABLE:
		b->flags |= QCOW2_BME_AUTO;
		return 0;
	case FMT_BITMAP_DISABLE:
		b->flags &= ~QCOW2_BME_AUTO;
		return 0;
	case FMT_BITMAP_CLEAR:
		free(b->bits);
		b->bits = calloc(1, bits_bytes(q, b) ? bits_bytes(q, b) : 1);
		if (!b->bits)
			return -ENOMEM;
		b->changed = true;
		return 0;
	case FMT_BITMAP_MERGE:
		break;
	default:
		bc_error_set(ERR_INVALID_ARG, EINVAL, "unknown bitmap verb");
		return -EINVAL;
	}
	/* The source is read without our lock when it is another image. */
	if (c->src && c->src != q->img) {
		pthread_mutex_unlock(&q->lock);
		ret = fmt_bitmap_read(c->src, c->src_name, &src, &snbits,
				      &sgran);
		pthread_mutex_lock(&q->lock);
		b = find(q, c->name);
		if (ret == 0 && !b)
			ret = not_found(q, c->name);
	} else {
		struct qcow2_bitmap *s = find(q, c->src_name);

		if (!s)
			return not_found(q, c->src_name);
		if (s->flags & QCOW2_BME_IN_USE)
			return inconsistent(q, s);
		ret = read_bits(q, s);
		if (ret == 0) {
			src = bc_steal_ptr(&s->bits);
			snbits = nb_bits(q, s->granularity_bits);
			sgran = s->granularity_bits;
		}
	}
	if (ret == 0 && !b->bits)
		ret = read_bits(q, b);
	if (ret == 0) {
		merge_bits(b->bits, b->granularity_bits, src,
			   BC_MIN(snbits, (q->hdr.size + (1ull << sgran) - 1) >> sgran),
			   sgran);
		b->changed = true;
	}
	free(src);
	return ret;
}

int qcow2_bitmap_change(struct fmt_image *img,
			const struct fmt_bitmap_change *c)
{
	struct qcow2 *q = img->priv;
	struct old_table *old;
	uint32_t nold;
	int ret;

	BC_LOCK_GUARD(&q->lock);
	if (q->bitmaps.tracking) {
		bc_error_set(ERR_OPERATION_INVALID, EBUSY,
			     "%s: bitmaps cannot be changed while the image is being written",
			     qcow2_name(q));
		return -EBUSY;
	}
	old = snapshot_tables(q);
	if (!old)
		return -ENOMEM;
	nold = q->bitmaps.nb;
	ret = change_locked(q, c);
	if (ret == 0)
		ret = commit_locked(q, old, nold);
	free(old);
	/* A bitmap enabled now must start tracking at the next write. */
	q->write_ready = false;
	return ret;
}
