/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * raw: the guest view is the file (or block device) itself.
 *
 * Sparse-aware: block status comes from lseek(SEEK_DATA/SEEK_HOLE), zero
 * writes and discards from fallocate. Holes are reported as FMT_ZERO
 * with host_off = off, as `qemu-img map` shows them (present, zero,
 * offset), because the file still maps them.
 *
 * O_DIRECT: requests whose offset, length or buffer are not aligned to
 * img->request_align go through an aligned bounce buffer. An unaligned
 * write is a read-modify-write of the blocks at its edges; such writes are
 * serialised by raw->rmw_lock so two of them sharing a block cannot undo
 * each other (aligned requests never take the lock). A read-modify-write
 * of the file's last partial block writes a whole block, so the file is
 * cut back to its size afterwards.
 *
 * The driver keeps no metadata: every entry point is thread-safe with
 * pread/pwrite/fallocate semantics (overlapping writes are the caller's
 * business, as for a disk).
 */
#include "fmt.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Largest bounce buffer and zero-write chunk. */
#define RAW_CHUNK (1024u * 1024u)

struct raw {
	pthread_mutex_t rmw_lock; /* serialises unaligned O_DIRECT writes */
	bool is_blkdev;
};

static __cold int raw_errno(const struct fmt_image *img, const char *what,
			    int err)
{
	char ebuf[128];

	bc_error_set(bc_errno_to_code(err), err, "%s: %s: %s", img->filename,
		     what, strerror_r(err, ebuf, sizeof(ebuf)));
	return -err;
}

static int raw_probe(const uint8_t *buf, size_t len)
{
	/* Anything is a raw image: the lowest score, the fallback. */
	return 1;
}

static int raw_open(struct fmt_image *img)
{
	struct raw *raw;
	struct stat st;
	uint64_t size;
	int ret;

	if (fstat(img->fd, &st) < 0)
		return raw_errno(img, "stat", errno);
	raw = calloc(1, sizeof(*raw));
	if (!raw)
		return -ENOMEM;
	raw->is_blkdev = S_ISBLK(st.st_mode);
	if (raw->is_blkdev) {
		if (ioctl(img->fd, BLKGETSIZE64, &size) < 0) {
			ret = raw_errno(img, "BLKGETSIZE64", errno);
			free(raw);
			return ret;
		}
	} else {
		size = (uint64_t)st.st_size;
	}
	ret = pthread_mutex_init(&raw->rmw_lock, NULL);
	if (ret) {
		free(raw);
		return -ret;
	}
	img->size = size;
	img->priv = raw;
	return 0;
}

static void raw_close(struct fmt_image *img)
{
	struct raw *raw = img->priv;

	if (!raw)
		return;
	pthread_mutex_destroy(&raw->rmw_lock);
	free(raw);
	img->priv = NULL;
}

static bool is_aligned_req(const struct fmt_image *img, const void *buf,
			   size_t n, uint64_t off)
{
	uint64_t a = img->request_align;

	return a <= 1 || (bc_is_aligned(off, a) && bc_is_aligned(n, a) &&
			  bc_is_aligned((uintptr_t)buf, a));
}

static void *bounce_alloc(const struct fmt_image *img, size_t n)
{
	void *p;

	if (posix_memalign(&p, BC_MAX(img->request_align, 512u), n))
		return NULL;
	return p;
}

static int raw_pread(struct fmt_image *img, void *buf, size_t n, uint64_t off)
{
	if (!is_aligned_req(img, buf, n, off))
		return fmt_pread_file_within_bounced(img->fd, buf, n, off,
						     img->size,
						     BC_MAX(img->request_align, 512u));
	/*
	 * The file was img->size bytes at open: a short read inside that
	 * means it was truncated under us, an error, never zeros.
	 */
	return fmt_pread_file_within(img->fd, buf, n, off, img->size);
}

/* Cut the file back to the image size after a whole-block write. */
static int restore_size(struct fmt_image *img, const struct raw *raw)
{
	struct stat st;

	if (raw->is_blkdev)
		return 0;
	if (fstat(img->fd, &st) < 0)
		return raw_errno(img, "stat", errno);
	if ((uint64_t)st.st_size > img->size &&
	    ftruncate(img->fd, (off_t)img->size) < 0)
		return raw_errno(img, "truncate", errno);
	return 0;
}

/*
 * Unaligned O_DIRECT write: read-modify-write of whole blocks
 * (fmt_pwritev_file_bounced), serialised so that two writes sharing a
 * block cannot undo each other. @buf NULL writes zeros.
 */
static int write_bounced(struct fmt_image *img, const uint8_t *buf, size_t n,
			 uint64_t off)
{
	struct raw *raw = img->priv;
	uint64_t a = img->request_align;
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = n };
	int ret, r;

	BC_LOCK_GUARD(&raw->rmw_lock);
	ret = fmt_pwritev_file_bounced(img->fd, &iov, 1, off, (uint32_t)a);
	/* The last block may reach past the image's end: cut it back. */
	if (bc_align_up(off + n, a) > img->size) {
		r = restore_size(img, raw);
		if (!ret)
			ret = r;
	}
	return ret;
}

static int raw_pwrite(struct fmt_image *img, const void *buf, size_t n,
		      uint64_t off)
{
	if (!is_aligned_req(img, buf, n, off))
		return write_bounced(img, buf, n, off);
	return fmt_pwrite_file(img->fd, buf, n, off);
}

/* Write explicit zeros, when the file system cannot allocate them. */
static int write_zero_data(struct fmt_image *img, uint64_t off, uint64_t len)
{
	uint64_t a = BC_MAX(img->request_align, 1u);
	uint8_t *zero;
	int ret = 0;

	/* Aligned edges go straight to disk; ragged ones are bounced. */
	if (a > 1 && (!bc_is_aligned(off, a) || !bc_is_aligned(len, a)))
		return write_bounced(img, NULL, (size_t)len, off);
	zero = bounce_alloc(img, RAW_CHUNK);
	if (!zero)
		return -ENOMEM;
	memset(zero, 0, RAW_CHUNK);
	while (len) {
		size_t n = (size_t)BC_MIN(len, (uint64_t)RAW_CHUNK);

		ret = fmt_pwrite_file(img->fd, zero, n, off);
		if (ret < 0)
			break;
		off += n;
		len -= n;
	}
	free(zero);
	return ret;
}

/* Whether fallocate's error means "this mode is not available here". */
static bool falloc_unsupported(int err)
{
	return err == EOPNOTSUPP || err == ENOTSUP || err == ENOSYS ||
	       err == EINVAL || err == ENODEV;
}

static int raw_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len,
			    unsigned int flags)
{
	if (flags & FMT_ZERO_MAY_UNMAP) {
		if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
		if (!falloc_unsupported(errno))
			return raw_errno(img, "punch hole", errno);
	}
	if (fallocate(img->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	if (!falloc_unsupported(errno))
		return raw_errno(img, "zero range", errno);
	if (len > SIZE_MAX)
		return -EINVAL;
	return write_zero_data(img, off, len);
}

static int raw_discard(struct fmt_image *img, uint64_t off, uint64_t len)
{
	if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	/* A discard is a hint: where the file system cannot, nothing changes. */
	if (falloc_unsupported(errno))
		return 0;
	return raw_errno(img, "discard", errno);
}

static int raw_flush(struct fmt_image *img)
{
	if (fdatasync(img->fd) < 0)
		return raw_errno(img, "flush", errno);
	return 0;
}

static int raw_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
			    struct fmt_extent *ext)
{
	off_t data, hole;

	ext->depth = 0;
	ext->compressed = false;
	ext->host_off = (int64_t)off;
	data = lseek(img->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) {
			/*
			 * No data from off to the end of the file: zeros, if
			 * the file still has the size it had at open. A file
			 * truncated under us must fail the reader, never
			 * read as zeros.
			 */
			int ret = fmt_file_shrunk(img->fd, off, img->size);

			if (ret < 0)
				return ret;
			ext->state = FMT_ZERO;
			ext->len = len;
			return 0;
		}
		/* No SEEK_DATA here (block device, old fs): all data. */
		ext->state = FMT_DATA;
		ext->len = len;
		return 0;
	}
	if ((uint64_t)data > off) {
		ext->state = FMT_ZERO;
		ext->len = BC_MIN(len, (uint64_t)data - off);
		return 0;
	}
	hole = lseek(img->fd, (off_t)off, SEEK_HOLE);
	ext->state = FMT_DATA;
	if (hole < 0 || (uint64_t)hole <= off)
		ext->len = len; /* changed under us: data is the safe answer */
	else
		ext->len = BC_MIN(len, (uint64_t)hole - off);
	return 0;
}

/* Size the empty file @fd (a new image fmt_create() publishes later) and
 * preallocate as asked. */
static int raw_create(int fd, const char *path,
		      const struct fmt_create_opts *opts)
{
	char ebuf[128];
	int ret;

	if (opts->backing_file) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: raw images have no backing file", path);
		return -ENOTSUP;
	}
	if (opts->size > (uint64_t)INT64_MAX) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: image size %llu too large", path,
			     (unsigned long long)opts->size);
		return -EINVAL;
	}
	if (ftruncate(fd, (off_t)opts->size) < 0) {
		ret = errno;
		bc_error_set(bc_errno_to_code(ret), ret, "%s: truncate: %s",
			     path, strerror_r(ret, ebuf, sizeof(ebuf)));
		return -ret;
	}
	switch (opts->prealloc) {
	case FMT_PREALLOC_OFF:
	case FMT_PREALLOC_METADATA:
		/* raw has no metadata: nothing to preallocate. */
		break;
	case FMT_PREALLOC_FALLOC:
		if (!opts->size)
			break;
		ret = posix_fallocate(fd, 0, (off_t)opts->size);
		if (ret) {
			bc_error_set(bc_errno_to_code(ret), ret,
				     "%s: preallocation: %s", path,
				     strerror_r(ret, ebuf, sizeof(ebuf)));
			return -ret;
		}
		break;
	case FMT_PREALLOC_FULL: {
		uint8_t *zero = calloc(1, RAW_CHUNK);
		uint64_t off = 0;

		if (!zero)
			return -ENOMEM;
		ret = 0;
		while (off < opts->size) {
			size_t n = (size_t)BC_MIN(opts->size - off,
						  (uint64_t)RAW_CHUNK);

			ret = fmt_pwrite_file_as(fd, path, zero, n, off);
			if (ret < 0)
				break;
			off += n;
		}
		free(zero);
		if (ret < 0)
			return ret;
		break;
	}
	}
	return 0;
}

static int raw_set_backing(struct fmt_image *img, const char *name,
			   const char *fmt)
{
	bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
		     "%s: raw images have no backing file", img->filename);
	return -ENOTSUP;
}

static int raw_get_info(struct fmt_image *img, struct fmt_info *info)
{
	struct stat st;

	if (fstat(img->fd, &st) < 0)
		return raw_errno(img, "stat", errno);
	memset(info, 0, sizeof(*info));
	info->format = "raw";
	info->virtual_size = img->size;
	info->actual_size = (uint64_t)st.st_blocks * 512u;
	return 0;
}

/* A raw file maps guest offsets to themselves. */
static int raw_map_for_overwrite(struct fmt_image *img, uint64_t off,
				 uint64_t len, struct fmt_extent *ext)
{
	(void)img;
	ext->len = len;
	ext->state = FMT_DATA;
	ext->host_off = (int64_t)off;
	return 0;
}

const struct fmt_driver fmt_raw_driver = {
	.name = "raw",
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.pread = raw_pread,
	.pwrite = raw_pwrite,
	.write_zeroes = raw_write_zeroes,
	.discard = raw_discard,
	.flush = raw_flush,
	.block_status = raw_block_status,
	.create = raw_create,
	.set_backing = raw_set_backing,
	.get_info = raw_get_info,
	.check = NULL,
	.map_for_overwrite = raw_map_for_overwrite,
};
