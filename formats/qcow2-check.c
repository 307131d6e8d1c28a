/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check: the refcount every host cluster should have,
 * computed from every reference in the image, against the refcount
 * stored (spec "Host cluster management"; the findings follow
 * `qemu-img check`: stored < references is a corruption, stored >
 * references a leak, COPIED flags must match refcount == 1).
 *
 * The reference walk (qcow2_collect_refs_locked) is shared with the
 * refcount rebuild done when an image with the dirty bit is opened
 * read-write. It reads metadata straight from the file, not through the
 * caches, and decodes entries itself so that a bad entry is counted, not
 * fatal. Memory: one uint32_t per host cluster.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/*
 * Findings qemu-img check reports after the refcount comparison (the
 * OFLAG_COPIED ones): kept here until then, so the lines come in its
 * order.
 */
struct late_notes {
	char **line;
	size_t n, cap;
};

struct refs {
	struct qcow2 *q;
	uint32_t *cnt;
	uint64_t nb; /* clusters in cnt */
	struct fmt_check_report *rep;
	struct late_notes *late; /* NULL: note at once */
};

/* One finding for the caller (fmt_check_report.note), one line. */
__attribute__((format(printf, 2, 3))) static void
note(const struct fmt_check_report *rep, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	if (!rep || !rep->note)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	rep->note(rep->note_opaque, line);
}

/* A finding reported after the refcount comparison (see late_notes). */
__attribute__((format(printf, 2, 3))) static void
note_late(struct refs *r, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (r->late) {
		struct late_notes *l = r->late;

		if (l->n == l->cap) {
			size_t cap = l->cap ? l->cap * 2 : 16;
			char **n = reallocarray(l->line, cap, sizeof(*n));

			if (!n)
				goto now; /* out of order rather than lost */
			l->line = n;
			l->cap = cap;
		}
		l->line[l->n] = strdup(line);
		if (l->line[l->n]) {
			l->n++;
			return;
		}
	}
now:
	note(r->rep, "%s", line);
}

/*
 * A bad reference: counted and noted (@fmt, qemu-img check's words)
 * when checking, fatal when rebuilding.
 */
__attribute__((format(printf, 4, 5))) static int
bad_ref(struct refs *r, const char *what, uint64_t off, const char *fmt, ...)
{
	if (r->rep) {
		char line[256];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		r->rep->corruptions++;
		note(r->rep, "%s", line);
		return 0;
	}
	bc_error_set(ERR_IMAGE_CORRUPT, 0,
		     "%s: %s at offset 0x%llx is invalid", r->q->img->filename,
		     what, (unsigned long long)off);
	return -EUCLEAN;
}

/* One reference to every cluster overlapping [off, off+len). */
static int add_ref(struct refs *r, uint64_t off, uint64_t len)
{
	struct qcow2 *q = r->q;
	uint64_t first, last, c;

	if (!len)
		return 0;
	if (off >= (1ull << 56) || len > (1ull << 56) - off)
		return bad_ref(r, "reference", off,
			       "ERROR: invalid reference: offset 0x%llx size 0x%llx",
			       (unsigned long long)off, (unsigned long long)len);
	/* As qemu-img check: a cluster or more past the end is an error. */
	if (off + len > q->file_size &&
	    off + len - q->file_size >= q->cluster_size)
		return bad_ref(r, "reference past the end of the file", off,
			       "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%llx size 0x%llx",
			       (unsigned long long)off, (unsigned long long)len);
	first = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	if (last >= r->nb) {
		uint64_t nnb = BC_MAX(last + 1, r->nb * 2);
		uint32_t *n;

		n = reallocarray(r->cnt, nnb, sizeof(*n));
		if (!n)
			return -ENOMEM;
		memset(n + r->nb, 0, (nnb - r->nb) * sizeof(*n));
		r->cnt = n;
		r->nb = nnb;
	}
	for (c = first; c <= last; c++)
		if (r->cnt[c] != UINT32_MAX)
			r->cnt[c]++;
	return 0;
}

static int read_meta(struct refs *r, void *buf, size_t n, uint64_t off)
{
	int ret = fmt_pread_file_zfill(r->q->img->fd, buf, n, off);

	if (ret < 0) {
		if (r->rep) {
			r->rep->check_errors++;
			char eb[64];

			note(r->rep, "ERROR reading metadata at offset 0x%llx (%zu bytes): %s",
			     (unsigned long long)off, n,
			     strerror_r(-ret, eb, sizeof(eb)));
			return 1; /* skip this structure */
		}
		bc_error_set(bc_errno_to_code(-ret), -ret,
			     "%s: cannot read metadata at 0x%llx",
			     r->q->img->filename, (unsigned long long)off);
	}
	return ret;
}

static int stored_rc(struct qcow2 *q, uint64_t off, uint64_t *rc)
{
	return qcow2_get_refcount_locked(q, off >> q->cluster_bits, rc);
}

/*
 * Count the clusters one L2 table references. @active: the table belongs
 * to the active L1 (fragmentation statistics and COPIED checks).
 */
static int walk_l2(struct refs *r, uint64_t l2_off, bool active)
{
	struct qcow2 *q = r->q;
	uint64_t entries = q->cluster_size / q->l2_entry_size, i, next = 0;
	uint8_t *t = malloc(q->cluster_size);
	int ret;

	if (!t)
		return -ENOMEM;
	ret = read_meta(r, t, q->cluster_size, l2_off);
	if (ret) {
		free(t);
		return ret < 0 ? ret : 0;
	}
	for (i = 0; i < entries; i++) {
		uint64_t e = bc_get_be64(t + i * q->l2_entry_size);
		uint64_t bm =
			q->extended_l2
				? bc_get_be64(t + i * q->l2_entry_size + 8)
				: 0;
		uint64_t host, rc;

		if (e & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff = e & ((1ull << q->csize_shift) - 1);
			uint64_t nsec =
				((e >> q->csize_shift) & q->csize_mask) + 1;

			if (e & QCOW2_OFLAG_COPIED) {
				ret = bad_ref(r,
					      "compressed cluster with COPIED",
					      coff,
					      "ERROR: coffset=0x%llx: Compressed cluster has the COPIED flag set",
					      (unsigned long long)coff);
				if (ret < 0)
					break;
			}
			ret = add_ref(r, coff & ~511ull, nsec * 512);
			if (ret < 0)
				break;
			if (active && r->rep) {
				r->rep->allocated_clusters++;
				r->rep->compressed_clusters++;
				r->rep->fragmented_clusters++;
			}
			continue;
		}
		if (e & (QCOW2_L2E_STD_RESERVED |
			 (q->extended_l2 ? QCOW2_OFLAG_ZERO : 0))) {
			/* As qemu-img check: an error, and the entry is not used. */
			ret = bad_ref(r, "L2 entry with reserved bits set",
				      l2_off + i * q->l2_entry_size,
				      "ERROR found l2 entry with reserved bits set: %016llx",
				      (unsigned long long)e);
			if (ret < 0)
				break;
			continue;
		}
		host = e & QCOW2_L2E_OFFSET_MASK;
		if (!host)
			continue; /* unallocated or zero without a cluster */
		if (q->extended_l2 && ((bm >> 32) & bm)) {
			ret = bad_ref(r, "subcluster bitmap", l2_off + i * 16,
				      "ERROR offset=%llx: Allocated cluster has corrupted subcluster allocation bitmap",
				      (unsigned long long)host);
			if (ret < 0)
				break;
		}
		if (!bc_is_aligned(host, q->cluster_size)) {
			/* Counted all the same, as qemu-img check does. */
			ret = bad_ref(r, "unaligned data cluster", host,
				      "ERROR offset=%llx: Data cluster is not properly aligned; L2 entry corrupted.",
				      (unsigned long long)host);
			if (ret < 0)
				break;
		}
		if (active && r->rep) {
			r->rep->allocated_clusters++;
			if (next && host != next)
				r->rep->fragmented_clusters++;
			next = host + q->cluster_size;
		}
		ret = add_ref(r, host, q->cluster_size);
		if (ret < 0)
			break;
		if (active && r->rep) {
			/* COPIED must say whether the refcount is exactly 1. */
			ret = stored_rc(q, host, &rc);
			if (ret < 0) {
				r->rep->check_errors++;
				ret = 0;
			} else if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
				r->rep->corruptions++;
				note_late(r, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
				     (unsigned long long)e, (unsigned long long)rc);
			}
		}
	}
	free(t);
	return ret < 0 ? ret : 0;
}

/* Count an L1 table of @n entries at @off and everything below it. */
static int walk_l1(struct refs *r, uint64_t off, uint64_t n, bool active)
{
	struct qcow2 *q = r->q;
	uint8_t *l1;
	uint64_t i, rc;
	int ret;

	if (!n)
		return 0;
	if (!bc_is_aligned(off, q->cluster_size))
		return bad_ref(r, "L1 table", off,
			       "ERROR: L1 table offset 0x%llx is not cluster aligned",
			       (unsigned long long)off);
	ret = add_ref(r, off, n * 8);
	if (ret < 0)
		return ret;
	l1 = malloc(n * 8);
	if (!l1)
		return -ENOMEM;
	ret = read_meta(r, l1, n * 8, off);
	if (ret) {
		free(l1);
		return ret < 0 ? ret : 0;
	}
	for (i = 0; i < n; i++) {
		uint64_t e = bc_get_be64(l1 + i * 8);
		uint64_t l2 = e & QCOW2_L1E_OFFSET_MASK;

		if (e & QCOW2_L1E_RESERVED) {
			ret = bad_ref(r, "L1 entry with reserved bits set",
				      off + i * 8,
				      "ERROR found L1 entry with reserved bits set: %016llx",
				      (unsigned long long)e);
			if (ret < 0)
				break;
			continue;
		}
		if (!l2)
			continue;
		if (!bc_is_aligned(l2, q->cluster_size)) {
			ret = bad_ref(r, "L2 table", l2,
				      "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted",
				      (unsigned long long)l2);
			if (ret < 0)
				break;
			continue;
		}
		ret = add_ref(r, l2, q->cluster_size);
		if (ret < 0)
			break;
		if (r->rep && active) {
			ret = stored_rc(q, l2, &rc);
			if (ret < 0) {
				r->rep->check_errors++;
			} else if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
				r->rep->corruptions++;
				note_late(r, "ERROR OFLAG_COPIED L2 cluster: l1_index=%llu l1_entry=%llx refcount=%llu",
				     (unsigned long long)i, (unsigned long long)e,
				     (unsigned long long)rc);
			}
		}
		if (r->rep && l2 >= q->file_size) {
			/* Nothing to read: the reference itself is the error. */
			continue;
		}
		ret = walk_l2(r, l2, active);
		if (ret < 0)
			break;
	}
	free(l1);
	return ret < 0 ? ret : 0;
}

/* Snapshot table: the table itself and each snapshot's L1 tree. */
static int walk_snapshots(struct refs *r)
{
	struct qcow2 *q = r->q;
	uint64_t off = q->hdr.snapshots_offset, pos = 0, i;
	uint8_t h[40];
	int ret;

	if (!q->hdr.nb_snapshots)
		return 0;
	if (!bc_is_aligned(off, q->cluster_size) || off >= q->file_size)
		return bad_ref(r, "snapshot table", off,
			       "ERROR: snapshot table at offset 0x%llx is invalid",
			       (unsigned long long)off);
	for (i = 0; i < q->hdr.nb_snapshots; i++) {
		uint64_t l1_off, extra, id, name, len;
		uint32_t l1_size;

		ret = read_meta(r, h, sizeof(h), off + pos);
		if (ret)
			return ret < 0 ? ret : 0;
		l1_off = bc_get_be64(h);
		l1_size = bc_get_be32(h + 8);
		id = bc_get_be16(h + 12);
		name = bc_get_be16(h + 14);
		extra = bc_get_be32(h + 36);
		len = bc_align_up(40 + extra + id + name, 8);
		if ((uint64_t)l1_size * 8 > QCOW2_MAX_L1_BYTES)
			return bad_ref(r, "snapshot L1 table", l1_off,
				       "ERROR: snapshot L1 table at offset 0x%llx is too large",
				       (unsigned long long)l1_off);
		ret = walk_l1(r, l1_off, l1_size, false);
		if (ret < 0)
			return ret;
		pos += len;
		if (pos > (64ull << 20))
			return bad_ref(r, "snapshot table", off,
			       "ERROR: snapshot table at offset 0x%llx is invalid",
			       (unsigned long long)off);
	}
	return add_ref(r, off, pos);
}

/* Bitmap directory and tables (spec "Bitmaps extension"). */
static int walk_bitmaps(struct refs *r)
{
	struct qcow2 *q = r->q;
	uint64_t hlen = q->hdr.header_length, pos, dir_off = 0, dir_size = 0;
	uint32_t nb = 0;
	uint8_t *c0;
	int ret;

	if (q->hdr.version < 3 ||
	    !(q->hdr.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	c0 = malloc(q->cluster_size);
	if (!c0)
		return -ENOMEM;
	ret = read_meta(r, c0, q->cluster_size, 0);
	if (ret) {
		free(c0);
		return ret < 0 ? ret : 0;
	}
	for (pos = hlen; pos + 8 <= q->cluster_size;) {
		uint32_t type = bc_get_be32(c0 + pos);
		uint32_t len = bc_get_be32(c0 + pos + 4);

		if (type == QCOW2_EXT_END || len > q->cluster_size - pos - 8)
			break;
		if (type == QCOW2_EXT_BITMAPS && len >= 24) {
			nb = bc_get_be32(c0 + pos + 8);
			dir_size = bc_get_be64(c0 + pos + 16);
			dir_off = bc_get_be64(c0 + pos + 24);
		}
		pos += 8 + bc_align_up(len, 8);
	}
	free(c0);
	if (!nb)
		return 0;
	if (!bc_is_aligned(dir_off, q->cluster_size) ||
	    dir_size > (64ull << 20))
		return bad_ref(r, "bitmap directory", dir_off,
			       "ERROR: bitmap directory at offset 0x%llx is invalid",
			       (unsigned long long)dir_off);
	ret = add_ref(r, dir_off, dir_size);
	if (ret < 0)
		return ret;
	{
		uint8_t *dir = malloc(dir_size ? dir_size : 1);
		uint64_t p = 0, k;

		if (!dir)
			return -ENOMEM;
		ret = read_meta(r, dir, dir_size, dir_off);
		if (ret) {
			free(dir);
			return ret < 0 ? ret : 0;
		}
		for (k = 0; k < nb && p + 24 <= dir_size; k++) {
			uint64_t toff = bc_get_be64(dir + p);
			uint32_t tsize = bc_get_be32(dir + p + 8);
			uint16_t nlen = bc_get_be16(dir + p + 18);
			uint32_t xlen = bc_get_be32(dir + p + 20);
			uint8_t *tab;
			uint64_t j;

			p += bc_align_up(24ull + xlen + nlen, 8);
			if (!tsize)
				continue;
			if (!bc_is_aligned(toff, q->cluster_size) ||
			    (uint64_t)tsize * 8 > (64ull << 20)) {
				ret = bad_ref(r, "bitmap table", toff,
					      "ERROR: bitmap table at offset 0x%llx is invalid",
					      (unsigned long long)toff);
				if (ret < 0)
					break;
				continue;
			}
			ret = add_ref(r, toff, (uint64_t)tsize * 8);
			if (ret < 0)
				break;
			tab = malloc((uint64_t)tsize * 8);
			if (!tab) {
				ret = -ENOMEM;
				break;
			}
			ret = read_meta(r, tab, (uint64_t)tsize * 8, toff);
			for (j = 0; ret == 0 && j < tsize; j++) {
				uint64_t d = bc_get_be64(tab + j * 8) &
					     QCOW2_L2E_OFFSET_MASK;

				if (d)
					ret = add_ref(r, d, q->cluster_size);
			}
			free(tab);
			if (ret < 0)
				break;
			ret = 0;
		}
		free(dir);
	}
	return ret < 0 ? ret : 0;
}

static int collect_refs(struct qcow2 *q, bool with_refcount_structs,
			uint32_t **refs, uint64_t *nb,
			struct fmt_check_report *rep, struct late_notes *late)
{
	struct refs r = {.q = q, .rep = rep, .late = late};
	struct stat st;
	uint64_t i;
	int ret;

	if (fstat(q->img->fd, &st) < 0)
		return -errno;
	/* A file grown by someone else (not ahead by us) counts whole. */
	if ((uint64_t)st.st_size > q->file_end)
		q->file_size = BC_MAX(q->file_size, (uint64_t)st.st_size);
	r.nb = (q->file_size + q->cluster_size - 1) >> q->cluster_bits;
	r.cnt = calloc(r.nb ? r.nb : 1, sizeof(*r.cnt));
	if (!r.cnt)
		return -ENOMEM;
	/* Header, extensions and backing name live in cluster 0. */
	ret = add_ref(&r, 0, q->cluster_size);
	if (ret == 0)
		ret = walk_l1(&r, q->hdr.l1_table_offset, q->hdr.l1_size, true);
	if (ret == 0)
		ret = walk_snapshots(&r);
	if (ret == 0)
		ret = walk_bitmaps(&r);
	if (ret == 0 && with_refcount_structs) {
		ret = add_ref(&r, q->hdr.refcount_table_offset,
			      (uint64_t)q->hdr.refcount_table_clusters
				      << q->cluster_bits);
		for (i = 0; ret == 0 && i < q->reftable_entries; i++) {
			if (!q->reftable[i])
				continue;
			ret = add_ref(&r, q->reftable[i], q->cluster_size);
		}
	}
	if (ret < 0) {
		free(r.cnt);
		return ret;
	}
	*refs = r.cnt;
	*nb = r.nb;
	return 0;
}

int qcow2_collect_refs_locked(struct qcow2 *q, bool with_refcount_structs,
			      uint32_t **refs, uint64_t *nb,
			      struct fmt_check_report *rep)
{
	return collect_refs(q, with_refcount_structs, refs, nb, rep, NULL);
}

/* Reports the late findings in order, and frees them. */
static void flush_late(struct fmt_check_report *rep, struct late_notes *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		note(rep, "%s", l->line[i]);
		free(l->line[i]);
	}
	free(l->line);
}

int qcow2_check(struct fmt_image *img, struct fmt_check_report *rep)
{
	struct qcow2 *q = img->priv;
	uint32_t *refs = NULL;
	uint64_t nb = 0, c, end, highest = 0;
	struct late_notes late = { 0 };
	bool any = false;
	int ret;

	/* fmt_check() zeroed the counts. */
	BC_LOCK_GUARD(&q->lock);
	/* The walk reads the tables from the file: write the caches back. */
	if (!q->read_only) {
		ret = qcow2_flush_metadata_locked(q);
		if (ret < 0)
			return ret;
	}
	ret = collect_refs(q, true, &refs, &nb, rep, &late);
	if (ret < 0) {
		flush_late(rep, &late);
		return ret;
	}
	end = BC_MAX(nb,
		     (q->file_size + q->cluster_size - 1) >> q->cluster_bits);
	for (c = 0; c < end; c++) {
		uint64_t want = c < nb ? refs[c] : 0, rc;

		ret = qcow2_get_refcount_locked(q, c, &rc);
		if (ret < 0) {
			rep->check_errors++;
			note(rep, "ERROR cannot get refcount of cluster %llu",
			     (unsigned long long)c);
			continue;
		}
		if (rc || want) {
			highest = c;
			any = true;
		}
		if (rc < want) {
			rep->corruptions++;
			note(rep, "ERROR cluster %llu refcount=%llu reference=%llu",
			     (unsigned long long)c, (unsigned long long)rc,
			     (unsigned long long)want);
		} else if (rc > want) {
			rep->leaks++;
			note(rep, "Leaked cluster %llu refcount=%llu reference=%llu",
			     (unsigned long long)c, (unsigned long long)rc,
			     (unsigned long long)want);
		}
	}
	free(refs);
	flush_late(rep, &late);
	rep->total_clusters =
		(img->size + q->cluster_size - 1) >> q->cluster_bits;
	rep->image_end_offset = any ? (highest + 1) << q->cluster_bits : 0;
	return 0;
}
