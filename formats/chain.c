/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening images with their backing chains, and block status across a
 * chain.
 *
 * fmt_open() opens the top layer, then walks down iteratively (chains
 * may be FMT_CHAIN_MAX_DEPTH deep; no recursion): each backing name is
 * checked for protocol prefixes, resolved against its overlay's
 * directory, opened read-only, identified by (st_dev, st_ino) against
 * every layer above it to refuse loops, and given the format the overlay
 * records. Only where the overlay records no backing format is the file
 * probed (img->probed). The chain is owned by the top image; fmt_close()
 * frees it top to bottom.
 */
#include "fmt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmt-priv.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

/*
 * QEMU's protocol drivers (protocol_name of block/ *.c in 7.2, plus the
 * URI forms nbd+tcp etc. and retired ones that old images may name).
 */
static const char *const protocols[] = {
	"json", "file", "host_device", "host_cdrom", "nbd", "nbd+tcp",
	"nbd+unix", "http", "https", "ftp", "ftps", "tftp", "ssh", "iscsi",
	"iser", "rbd", "gluster", "gluster+tcp", "gluster+unix",
	"gluster+rdma", "sheepdog", "sheepdog+tcp", "sheepdog+unix", "vvfat",
	"fat", "nfs", "null-co", "null-aio", "blkdebug", "blkverify",
	"blklogwrites", "vxhs", "nvme", "nvme-io_uring", "vdi", "libnfs",
};

bool fmt_backing_is_protocol(const char *name)
{
	const char *colon = strchr(name, ':');
	size_t i, plen;

	if (!colon)
		return false;
	plen = (size_t)(colon - name);
	/* "dir/x:y" and "./nbd:x" are file names. */
	if (memchr(name, '/', plen))
		return false;
	for (i = 0; i < BC_ARRAY_SIZE(protocols); i++) {
		if (strlen(protocols[i]) == plen &&
		    !strncasecmp(name, protocols[i], plen))
			return true;
	}
	return false;
}

/*
 * Record "<path>: <strerror>" for the top, "<prefix>'<path>': <strerror>"
 * for a backing layer. Returns -err.
 */
static __cold int layer_error(int err, const char *prefix, const char *path)
{
	char ebuf[128];

	if (*prefix)
		bc_error_set(bc_errno_to_code(err), err, "%s'%s': %s", prefix,
			     path, strerror_r(err, ebuf, sizeof(ebuf)));
	else
		bc_error_set(bc_errno_to_code(err), err, "%s: %s", path,
			     strerror_r(err, ebuf, sizeof(ebuf)));
	return -err;
}

/*
 * O_DIRECT alignment of an open file: the logical block size of a block
 * device; STATX_DIOALIGN where the file system reports it; else probe
 * with a 512-byte read at offset 0 (EINVAL means 4096).
 */
static uint32_t direct_align(int fd, const struct stat *st)
{
	struct statx stx;
	void *buf;
	ssize_t r;
	int ssz;

	if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0 &&
		    bc_is_pow2((uint64_t)ssz))
			return (uint32_t)ssz;
		return 4096;
	}
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align &&
	    bc_is_pow2(stx.stx_dio_offset_align))
		return BC_MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
	if (posix_memalign(&buf, 4096, 4096))
		return 4096;
	do {
		r = pread(fd, buf, 512, 0);
	} while (r < 0 && errno == EINTR);
	free(buf);
	return r < 0 ? 4096 : 512;
}

/*
 * Open one layer. @path is what open(2) gets; @err_prefix ("" for the
 * top, "<overlay>: could not open backing file " for backing layers)
 * starts every message about the file itself. @store is the name kept
 * in img->filename (ownership taken, also on failure). @fmt NULL = probe.
 * The layer's (st_dev, st_ino) is returned in *st for loop detection.
 */
static int open_layer(const char *path, const char *err_prefix, char *store,
		      const struct fmt_driver *drv, unsigned int flags,
		      struct stat *st, struct fmt_image **out)
{
	BC_AUTOFREE char *name = store;
	BC_AUTOCLOSE int fd = -1;
	struct fmt_image *img;
	int oflags, ret;

	oflags = O_CLOEXEC | ((flags & FMT_OPEN_RDWR) ? O_RDWR : O_RDONLY);
	if (flags & FMT_OPEN_DIRECT)
		oflags |= O_DIRECT;
	/* Refuse fifos and sockets before open(2) could block on them. */
	if (stat(path, st) == 0 && !S_ISREG(st->st_mode) &&
	    !S_ISBLK(st->st_mode) && !S_ISDIR(st->st_mode)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s'%s': not a regular file or block device",
			     err_prefix, path);
		return -EINVAL;
	}
	fd = open(path, oflags);
	if (fd < 0) {
		ret = errno;
		if (ret == EISDIR)
			goto is_dir;
		return layer_error(ret, err_prefix, path);
	}
	if (fstat(fd, st) < 0)
		return layer_error(errno, err_prefix, path);
	if (S_ISDIR(st->st_mode))
		goto is_dir;
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s'%s': not a regular file or block device",
			     err_prefix, path);
		return -EINVAL;
	}

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->request_align = (flags & FMT_OPEN_DIRECT) ? direct_align(fd, st) : 1;
	if (!drv) {
		uint8_t *buf;
		const char *fmt;

		/* Aligned for O_DIRECT; 4 KiB covers every magic we know. */
		if (posix_memalign((void **)&buf, 4096, 4096)) {
			free(img);
			return -ENOMEM;
		}
		ret = fmt_pread_file_zfill(fd, buf, 4096, 0);
		fmt = fmt_probe_buf(buf, 4096);
		free(buf);
		if (ret < 0) {
			free(img);
			return ret;
		}
		drv = fmt_driver_find(fmt);
		img->probed = true;
	}
	img->drv = drv;
	img->fd = bc_steal_fd(&fd);
	img->flags = flags;
	img->filename = bc_steal_ptr(&name);
	ret = drv->open(img);
	if (ret < 0) {
		/* A driver failing open records its own message. */
		(void)close(img->fd);
		free(img->backing_name);
		free(img->backing_fmt);
		free(img->filename);
		free(img);
		return ret;
	}
	*out = img;
	return 0;

is_dir:
	if (*err_prefix)
		bc_error_set(ERR_INVALID_ARG, EISDIR,
			     "%s'%s': is a directory", err_prefix, path);
	else
		bc_error_set(ERR_INVALID_ARG, EISDIR, "%s: is a directory",
			     path);
	return -EISDIR;
}

/* Free one layer (not the chain below it). */
static void close_layer(struct fmt_image *img)
{
	if (img->drv && img->drv->close)
		img->drv->close(img);
	if (img->fd >= 0)
		(void)close(img->fd);
	free(img->filename);
	free(img->backing_name);
	free(img->backing_fmt);
	free(img);
}

void fmt_close(struct fmt_image *img)
{
	while (img) {
		struct fmt_image *next = img->backing;

		close_layer(img);
		img = next;
	}
}

struct file_id {
	dev_t dev;
	ino_t ino;
};

/* Open the backing of @ov (at @depth) and hang it below @ov. */
static int open_backing(struct fmt_image *ov, int depth, unsigned int flags,
			struct file_id *ids)
{
	const struct fmt_driver *drv = NULL;
	BC_AUTOFREE char *resolved = NULL;
	BC_AUTOFREE char *prefix = NULL;
	char *real;
	struct stat st;
	int i, ret;

	if (fmt_backing_is_protocol(ov->backing_name)) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: backing file '%s' uses a protocol, not supported",
			     ov->filename, ov->backing_name);
		return -ENOTSUP;
	}
	if (depth + 1 > FMT_CHAIN_MAX_DEPTH) {
		bc_error_set(ERR_IMAGE_CORRUPT, ELOOP,
			     "%s: backing chain deeper than %d", ov->filename,
			     FMT_CHAIN_MAX_DEPTH);
		return -ELOOP;
	}
	if (ov->backing_fmt) {
		drv = fmt_driver_find(ov->backing_fmt);
		if (!drv) {
			bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
				     "%s: backing format '%s' not supported",
				     ov->filename, ov->backing_fmt);
			return -ENOTSUP;
		}
	}
	resolved = fmt_resolve_backing(ov->filename, ov->backing_name);
	if (!resolved)
		return -ENOMEM;
	if (asprintf(&prefix, "%s: could not open backing file ",
		     ov->filename) < 0) {
		prefix = NULL;
		return -ENOMEM;
	}
	real = realpath(resolved, NULL);
	if (!real)
		return layer_error(errno, prefix, resolved);
	/* Loops are checked before a driver parses the file. */
	if (stat(real, &st) == 0) {
		for (i = 0; i <= depth; i++) {
			if (ids[i].dev == st.st_dev && ids[i].ino == st.st_ino) {
				bc_error_set(ERR_IMAGE_CORRUPT, ELOOP,
					     "%s: backing chain loops back to '%s'",
					     ov->filename, real);
				free(real);
				return -ELOOP;
			}
		}
	}
	ret = open_layer(real, prefix, real, drv,
			 flags & FMT_OPEN_DIRECT, &st, &ov->backing);
	if (ret < 0)
		return ret;
	/* Recheck on the opened file: the path may have changed. */
	for (i = 0; i <= depth; i++) {
		if (ids[i].dev == st.st_dev && ids[i].ino == st.st_ino) {
			bc_error_set(ERR_IMAGE_CORRUPT, ELOOP,
				     "%s: backing chain loops back to '%s'",
				     ov->filename, ov->backing->filename);
			return -ELOOP;
		}
	}
	ids[depth + 1].dev = st.st_dev;
	ids[depth + 1].ino = st.st_ino;
	return 0;
}

/* The top image is an NBD export: one layer, through fmt_nbd_driver. */
static int open_nbd(const char *uri, const char *format, unsigned int flags,
		    struct fmt_image **out)
{
	struct fmt_image *img;
	int ret;

	if (format && strcmp(format, "raw")) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: format '%s' over NBD is not supported: the server exports guest data (raw)",
			     uri, format);
		return -ENOTSUP;
	}
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->filename = strdup(uri);
	if (!img->filename) {
		free(img);
		return -ENOMEM;
	}
	img->drv = &fmt_nbd_driver;
	img->fd = -1;
	img->flags = flags & ~FMT_OPEN_DIRECT;
	img->request_align = 1;
	ret = img->drv->open(img);
	if (ret < 0) {
		free(img->filename);
		free(img);
		return ret;
	}
	*out = img;
	return 0;
}

int fmt_open(const char *path, const char *format, unsigned int flags,
	     struct fmt_image **out)
{
	const struct fmt_driver *drv = NULL;
	BC_AUTOFREE struct file_id *ids = NULL;
	struct fmt_image *top, *cur;
	struct stat st;
	char *name;
	int depth, ret;

	if (flags & ~(FMT_OPEN_RDWR | FMT_OPEN_DIRECT | FMT_OPEN_NO_BACKING |
		      FMT_OPEN_CHECK)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "unsupported open flags 0x%x", flags);
		return -EINVAL;
	}
	if (format) {
		drv = fmt_driver_find(format);
		if (!drv) {
			bc_error_set(ERR_INVALID_ARG, EINVAL,
				     "unknown format '%s'", format);
			return -EINVAL;
		}
	}
	if (fmt_is_nbd_uri(path))
		return open_nbd(path, format, flags, out);
	name = strdup(path);
	if (!name)
		return -ENOMEM;
	/* The top has no overlay: "<path>: reason", without quotes. */
	ret = open_layer(path, "", name, drv, flags, &st, &top);
	if (ret < 0)
		return ret;
	if (flags & FMT_OPEN_NO_BACKING) {
		*out = top;
		return 0;
	}
	ids = calloc(FMT_CHAIN_MAX_DEPTH + 1, sizeof(*ids));
	if (!ids) {
		fmt_close(top);
		return -ENOMEM;
	}
	ids[0].dev = st.st_dev;
	ids[0].ino = st.st_ino;
	for (cur = top, depth = 0; cur->backing_name; cur = cur->backing, depth++) {
		ret = open_backing(cur, depth, flags, ids);
		if (ret < 0) {
			fmt_close(top);
			return ret;
		}
	}
	*out = top;
	return 0;
}

int fmt_chain_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
			   struct fmt_extent *ext)
{
	struct fmt_image *cur = img;
	int depth = 0, ret;

	for (;;) {
		ret = fmt_block_status(cur, off, len, ext);
		if (ret < 0)
			return ret;
		ext->depth = depth;
		len = ext->len;
		if (ext->state != FMT_UNALLOC || !cur->backing)
			return 0;
		/*
		 * Past the backing's end the range reads zeros, and qemu-img
		 * map reports it as not present at this layer's depth.
		 */
		if (off >= cur->backing->size)
			return 0;
		len = BC_MIN(len, cur->backing->size - off);
		cur = cur->backing;
		depth++;
	}
}
