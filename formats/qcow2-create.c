/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 image creation (spec "Header", "Header extensions").
 *
 * Layout, as qemu-img lays it out: cluster 0 holds the header, the
 * header extensions (backing format, feature name table when it fits)
 * and the backing file name; then the refcount table, the refcount
 * blocks covering every metadata cluster, and the L1 table. Without
 * preallocation no L2 table and no data cluster exists yet; with it, every
 * L2 table and data cluster follows the L1 table. Every cluster written
 * gets refcount 1.
 *
 * The driver writes into a new file fmt_create() hands it and publishes
 * afterwards (formats/fmt-newfile.h): the image takes its name only once
 * complete and synced, so a crash never leaves a qcow2 without its header.
 */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

#define QCOW2_V3_HDR_WRITTEN 112u /* 104 + compression type + padding */

struct feature_name {
	uint8_t type;
	uint8_t bit;
	const char *name;
};

/* The feature name table qemu-img writes (spec "Feature name table"). */
static const struct feature_name feature_names[] = {
	{0, 0, "dirty bit"},
	{0, 1, "corrupt bit"},
	{0, 2, "external data file"},
	{0, 3, "compression type"},
	{0, 4, "extended L2 entries"},
	{1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},
	{2, 1, "raw external data"},
};

static size_t ext_size(size_t len)
{
	return 8 + bc_align_up(len, 8);
}

static int check_opts(const char *path, const struct fmt_create_opts *o,
		      uint32_t *cluster_bits, uint32_t *refcount_order)
{
	uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
	int rb = o->refcount_bits ? o->refcount_bits : 16;
	int compat = o->compat ? o->compat : 3;

	if (!bc_is_pow2(cs) || cs < 512 || cs > (2u << 20)) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: cluster size must be a power of two between 512 and 2097152 bytes",
			path);
		return -EINVAL;
	}
	if (compat != 2 && compat != 3) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: invalid compatibility level %d", path,
			     compat);
		return -EINVAL;
	}
	if (rb < 1 || rb > 64 || !bc_is_pow2((uint64_t)rb)) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: refcount width must be a power of two up to 64 bits",
			path);
		return -EINVAL;
	}
	if (compat == 2 && rb != 16) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: different refcount widths than 16 bits require compatibility level 1.1 or above",
			path);
		return -EINVAL;
	}
	if (compat == 2 && o->lazy_refcounts) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: lazy refcounts only supported with compatibility level 1.1 and above",
			path);
		return -EINVAL;
	}
	if (o->extended_l2 && compat == 2) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: extended L2 entries are only supported with compatibility level 1.1 and above",
			path);
		return -EINVAL;
	}
	if (o->extended_l2 && cs < (1u << QCOW2_MIN_EXTL2_CLUSTER_BITS)) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
			path);
		return -EINVAL;
	}
	if (o->size % 512) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: image size must be a multiple of 512 bytes",
			     path);
		return -EINVAL;
	}
	if (o->backing_fmt && !o->backing_file) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: backing format given without a backing file",
			     path);
		return -EINVAL;
	}
	*cluster_bits = (uint32_t)__builtin_ctz(cs);
	*refcount_order = (uint32_t)__builtin_ctz((unsigned int)rb);
	return 0;
}

/*
 * Build cluster 0 into @c0 (cluster_size bytes, zeroed): header,
 * extensions, backing name. Table offsets are filled in by the caller.
 */
static int build_header(const char *path, const struct fmt_create_opts *o,
			uint32_t cluster_bits, uint32_t refcount_order,
			uint8_t *c0)
{
	uint64_t cs = 1ull << cluster_bits;
	int compat = o->compat ? o->compat : 3;
	size_t hlen = compat == 2 ? QCOW2_HDR_V2_LEN : QCOW2_V3_HDR_WRITTEN;
	size_t fmt_len = o->backing_fmt ? strlen(o->backing_fmt) : 0;
	size_t name_len = o->backing_file ? strlen(o->backing_file) : 0;
	size_t ftab = BC_ARRAY_SIZE(feature_names) * 48, pos, need, i;
	bool with_ftab;

	need = hlen + (fmt_len ? ext_size(fmt_len) : 0) + 8 + name_len;
	if (need > cs) {
		bc_error_set(
			ERR_INVALID_ARG, EINVAL,
			"%s: backing file name does not fit in the header cluster",
			path);
		return -EINVAL;
	}
	with_ftab = compat >= 3 && need + ext_size(ftab) <= cs;

	bc_put_be32(c0, QCOW2_MAGIC);
	bc_put_be32(c0 + 4, (uint32_t)compat);
	bc_put_be32(c0 + 20, cluster_bits);
	bc_put_be64(c0 + 24, o->size);
	if (compat >= 3) {
		bc_put_be64(c0 + 72, o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
		bc_put_be64(c0 + 80, o->lazy_refcounts
					     ? QCOW2_COMPAT_LAZY_REFCOUNTS
					     : 0);
		bc_put_be64(c0 + 88, 0);
		bc_put_be32(c0 + 96, refcount_order);
		bc_put_be32(c0 + 100, (uint32_t)hlen);
		c0[104] = 0; /* compression type zlib */
	}
	pos = hlen;
	if (fmt_len) {
		bc_put_be32(c0 + pos, QCOW2_EXT_BACKING_FMT);
		bc_put_be32(c0 + pos + 4, (uint32_t)fmt_len);
		memcpy(c0 + pos + 8, o->backing_fmt, fmt_len);
		pos += ext_size(fmt_len);
	}
	if (with_ftab) {
		bc_put_be32(c0 + pos, QCOW2_EXT_FEATURE_NAME);
		bc_put_be32(c0 + pos + 4, (uint32_t)ftab);
		for (i = 0; i < BC_ARRAY_SIZE(feature_names); i++) {
			uint8_t *e = c0 + pos + 8 + i * 48;

			e[0] = feature_names[i].type;
			e[1] = feature_names[i].bit;
			memcpy(e + 2, feature_names[i].name,
			       strlen(feature_names[i].name));
		}
		pos += ext_size(ftab);
	}
	pos += 8; /* end of extensions: already zero */
	if (name_len) {
		memcpy(c0 + pos, o->backing_file, name_len);
		bc_put_be64(c0 + 8, pos);
		bc_put_be32(c0 + 16, (uint32_t)name_len);
	}
	return 0;
}

/*
 * Preallocation: L2 tables right after the L1 table, then one data
 * cluster per guest cluster, all mapped (COPIED; every subcluster
 * allocated with extended L2). Data reads zeros: the file is sparse
 * (metadata), fallocated (falloc) or written with zeros (full).
 */
static int write_prealloc(int fd, const char *path,
			  const struct fmt_create_opts *o,
			  uint32_t cluster_bits, uint64_t l1_off,
			  uint64_t l1_size, uint64_t l2_off, uint64_t data_off,
			  uint64_t nd)
{
	uint64_t cs = 1ull << cluster_bits, esz = o->extended_l2 ? 16 : 8;
	uint64_t per_l2 = cs / esz, i, j, d = 0;
	uint8_t *buf = calloc(1, cs);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	/* L1 entries, one cluster of the table at a time. */
	for (i = 0; i < l1_size && ret == 0; i += cs / 8) {
		uint64_t n = BC_MIN(cs / 8, l1_size - i);

		memset(buf, 0, cs);
		for (j = 0; j < n; j++)
			bc_put_be64(buf + j * 8,
				    (l2_off + ((i + j) << cluster_bits)) |
					    QCOW2_OFLAG_COPIED);
		ret = fmt_pwrite_file_as(fd, path, buf, n * 8, l1_off + i * 8);
	}
	for (i = 0; i < l1_size && ret == 0; i++) {
		memset(buf, 0, cs);
		for (j = 0; j < per_l2 && d < nd; j++, d++) {
			bc_put_be64(buf + j * esz,
				    (data_off + (d << cluster_bits)) |
					    QCOW2_OFLAG_COPIED);
			if (o->extended_l2)
				bc_put_be64(buf + j * esz + 8, 0xffffffffull);
		}
		ret = fmt_pwrite_file_as(fd, path, buf, cs,
					 l2_off + (i << cluster_bits));
	}
	free(buf);
	if (ret < 0 || o->prealloc == FMT_PREALLOC_METADATA)
		return ret;
	if (fallocate(fd, 0, (off_t)data_off, (off_t)(nd << cluster_bits)) <
	    0) {
		if (o->prealloc == FMT_PREALLOC_FALLOC)
			return -errno;
	}
	if (o->prealloc == FMT_PREALLOC_FULL) {
		uint64_t chunk = 1u << 20, pos = 0, total = nd << cluster_bits;
		uint8_t *z = calloc(1, chunk);

		if (!z)
			return -ENOMEM;
		while (pos < total && ret == 0) {
			uint64_t n = BC_MIN(chunk, total - pos);

			ret = fmt_pwrite_file_as(fd, path, z, n,
						 data_off + pos);
			pos += n;
		}
		free(z);
	}
	return ret;
}

static int write_image(int fd, const char *path,
		       const struct fmt_create_opts *o, uint32_t cluster_bits,
		       uint32_t refcount_order)
{
	uint64_t cs = 1ull << cluster_bits;
	uint32_t l2_bits = cluster_bits - (o->extended_l2 ? 4 : 3);
	uint64_t epb = 1ull << (cluster_bits + 3 - refcount_order);
	uint64_t l1_size, l1_clusters, nb = 1, nt = 1, total, i, span;
	uint64_t rt_off, rb_off, l1_off, nl2 = 0, nd = 0;
	uint8_t *c0 = NULL, *meta = NULL;
	int ret;

	/* Guest bytes one L1 entry maps. */
	span = 1ull << (cluster_bits + l2_bits);
	l1_size = o->size / span + (o->size % span ? 1 : 0);
	if (l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		bc_error_set(ERR_INVALID_ARG, EFBIG,
			     "%s: image size too large for this cluster size",
			     path);
		return -EFBIG;
	}
	/* An empty image has no L1 table at all (offset 0), as in QEMU. */
	l1_clusters = (l1_size * 8 + cs - 1) >> cluster_bits;
	if (o->prealloc != FMT_PREALLOC_OFF) {
		nl2 = l1_size;
		nd = (o->size + cs - 1) >> cluster_bits;
	}
	for (;;) {
		uint64_t nb2, nt2;

		total = 1 + nt + nb + l1_clusters + nl2 + nd;
		nb2 = (total + epb - 1) / epb;
		nt2 = (nb2 * 8 + cs - 1) >> cluster_bits;
		if (nb2 == nb && nt2 == nt)
			break;
		nb = nb2;
		nt = nt2;
	}
	if ((nt << cluster_bits) > QCOW2_MAX_REFTABLE_BYTES ||
	    total > (1ull << (56 - cluster_bits))) {
		bc_error_set(ERR_INVALID_ARG, EFBIG,
			     "%s: image size too large for this cluster size",
			     path);
		return -EFBIG;
	}
	rt_off = cs;
	rb_off = rt_off + (nt << cluster_bits);
	l1_off = rb_off + (nb << cluster_bits);

	c0 = calloc(1, cs);
	meta = calloc(1, cs);
	if (!c0 || !meta) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = build_header(path, o, cluster_bits, refcount_order, c0);
	if (ret < 0)
		goto out_free;
	bc_put_be32(c0 + 36, (uint32_t)l1_size);
	bc_put_be64(c0 + 40, l1_size ? l1_off : 0);
	bc_put_be64(c0 + 48, rt_off);
	bc_put_be32(c0 + 56, (uint32_t)nt);
	/*
	 * Size first: whatever is not written stays sparse zeros. Without
	 * preallocation the file ends with the L1 table, as qemu-img's does.
	 */
	if (ftruncate(fd, (off_t)(o->prealloc == FMT_PREALLOC_OFF && l1_size
					  ? l1_off + l1_size * 8
					  : total << cluster_bits)) < 0) {
		ret = -errno;
		goto out_free;
	}
	/* The refcount table, a cluster at a time. */
	for (i = 0; i < nb && ret == 0; i += cs / 8) {
		uint64_t n = BC_MIN(cs / 8, nb - i), j;

		memset(meta, 0, cs);
		for (j = 0; j < n; j++)
			bc_put_be64(meta + j * 8,
				    rb_off + ((i + j) << cluster_bits));
		ret = fmt_pwrite_file_as(fd, path, meta, cs, rt_off + i * 8);
	}
	/* Refcount blocks: 1 for each of the first @total clusters. */
	for (i = 0; i < nb && ret == 0; i++) {
		uint64_t first = i * epb, n = BC_MIN(epb, total - first), j;

		memset(meta, 0, cs);
		for (j = 0; j < n; j++)
			qcow2_refblock_set(meta, refcount_order, j, 1);
		ret = fmt_pwrite_file_as(fd, path, meta, cs,
					 rb_off + (i << cluster_bits));
	}
	if (ret == 0 && o->prealloc != FMT_PREALLOC_OFF)
		ret = write_prealloc(
			fd, path, o, cluster_bits, l1_off, l1_size,
			l1_off + (l1_clusters << cluster_bits),
			l1_off + ((l1_clusters + nl2) << cluster_bits), nd);
	if (ret < 0)
		goto out_free;
	/* The caller syncs the file before it takes its name. */
	ret = fmt_pwrite_file_as(fd, path, c0, cs, 0);
out_free:
	free(c0);
	free(meta);
	return ret;
}

int qcow2_create(int fd, const char *path, const struct fmt_create_opts *opts)
{
	uint32_t cluster_bits, refcount_order;
	int ret;

	ret = check_opts(path, opts, &cluster_bits, &refcount_order);
	if (ret < 0)
		return ret;
	ret = write_image(fd, path, opts, cluster_bits, refcount_order);
	if (ret < 0)
		bc_error_set_default(bc_errno_to_code(-ret), -ret,
				     "%s: cannot write the new image", path);
	return ret;
}
