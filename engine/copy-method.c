/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The COPY job's data path: choice at job start, and the per-path work
 * the copy loop (engine/mirror.c) delegates here. See copy-method.h for
 * what each path does and why it is chosen.
 */
#include "engine/copy-method.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "engine/iob.h"
#include "engine/job.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

/* Slot buffers are aligned to this (engine/mirror.c BUF_ALIGN). */
#define DIRECT_MEM_ALIGN_MAX 4096u
/* Write-behind: start writeback of a contiguous run once it is this long. */
#define WB_START  (8ull << 20)
/* ...and wait for the oldest once more than this is under writeback. */
#define WB_WINDOW (64ull << 20)

const char *copy_method_name(enum copy_method m)
{
	switch (m) {
	case COPY_METHOD_DIRECT:
		return "direct";
	case COPY_METHOD_BUFFERED:
		return "buffered+write-behind";
	case COPY_METHOD_FILE_RANGE:
		return "copy_file_range";
	case COPY_METHOD_REFLINK:
		return "reflink";
	case COPY_METHOD_NBD:
		return "nbd";
	}
	return "unknown";
}

/* --- probes ------------------------------------------------------------ */

/* The filesystem's name for messages ("ext4"), from statfs(2). */
static const char *fs_name(int fd)
{
	static const struct {
		long magic;
		const char *name;
	} names[] = {
		{ EXT4_SUPER_MAGIC, "ext4" }, /* ext2/3 share the magic */
		{ XFS_SUPER_MAGIC, "xfs" },
		{ BTRFS_SUPER_MAGIC, "btrfs" },
		{ TMPFS_MAGIC, "tmpfs" },
		{ NFS_SUPER_MAGIC, "nfs" },
		{ OVERLAYFS_SUPER_MAGIC, "overlayfs" },
	};
	struct statfs sf;
	size_t i;

	if (fstatfs(fd, &sf) < 0)
		return "this filesystem";
	for (i = 0; i < BC_ARRAY_SIZE(names); i++) {
		if ((long)sf.f_type == names[i].magic)
			return names[i].name;
	}
	return "this filesystem";
}

/*
 * O_DIRECT alignment of @fd (offset and memory), 0 when the file cannot
 * do O_DIRECT I/O that our aligned buffers satisfy.
 */
static uint32_t direct_align(int fd)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN)) {
		/* Supported by the filesystem, but not for this file. */
		if (!stx.stx_dio_offset_align || !stx.stx_dio_mem_align ||
		    stx.stx_dio_mem_align > DIRECT_MEM_ALIGN_MAX)
			return 0;
		return BC_MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
	}
	/* No STATX_DIOALIGN: the open succeeded; 4 KiB covers every device. */
	return 4096;
}

/* Whether @path can be opened O_DIRECT with usable alignment. */
static bool can_direct(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = direct_align(fd) != 0;
	(void)close(fd);
	return ok;
}

/*
 * Whether the filesystem of @fd (open for writing) can share extents. A
 * clone of the file onto an overlapping range of itself is refused by
 * every filesystem that can clone (-EINVAL) and changes nothing; one
 * that cannot says -EOPNOTSUPP (or -ENOTTY, -EXDEV) first.
 */
static bool can_reflink(int fd)
{
	struct file_clone_range r = {
		.src_fd = fd,
		.src_offset = 0,
		.src_length = 4096,
		.dest_offset = 0,
	};

	if (ioctl(fd, FICLONERANGE, &r) == 0)
		return true; /* cannot happen: overlapping ranges */
	return errno != EOPNOTSUPP && errno != ENOTTY && errno != EXDEV &&
	       errno != ENOSYS;
}

/* --- choice ------------------------------------------------------------ */

/* Raw → raw with no backing: the only pair the kernel can copy for us. */
static bool raw_pair(struct job *job)
{
	struct fmt_image *src = job->disk->top;

	/* A raw source makes a raw destination, COPY_RAW or not. */
	return !strcmp(src->drv->name, "raw") && !src->backing;
}

/* Record a refusal (bc_error_set's arguments) and return -@err. */
#define REFUSE(err, ...) \
	(bc_error_set(bc_errno_to_code(err), (err), __VA_ARGS__), -(err))

/* Reflink asked for (auto or always): 1 when it is the path, 0 if not. */
static int choose_reflink(struct job *job, const char *dest, int dfd)
{
	struct fmt_image *src = job->disk->top;
	bool always = job->opts.reflink == JOB_REFLINK_ALWAYS;
	struct stat ss, ds;

	if (!raw_pair(job)) {
		if (always)
			return REFUSE(EINVAL,
				      "cannot reflink '%s' to '%s': reflink needs a raw source without backing file and a raw destination",
				      src->filename, dest);
		return 0;
	}
	if (fstat(src->fd, &ss) < 0 || fstat(dfd, &ds) < 0)
		return -errno;
	if (ss.st_dev != ds.st_dev) {
		if (always)
			return REFUSE(EXDEV,
				      "cannot reflink '%s' to '%s': not on the same filesystem",
				      src->filename, dest);
		return 0;
	}
	if (!can_reflink(dfd)) {
		if (always) {
			bc_error_set(ERR_UNSUPPORTED, EOPNOTSUPP,
				     "cannot reflink '%s' to '%s': %s cannot share extents between files (use --reflink=auto or never)",
				     src->filename, dest, fs_name(dfd));
			return -EOPNOTSUPP;
		}
		return 0;
	}
	return 1;
}

/* copy_file_range asked for: refused where it cannot or might reflink. */
static int check_file_range(struct job *job, const char *dest, int dfd)
{
	struct fmt_image *src = job->disk->top;
	struct stat ss, ds;

	if (!raw_pair(job))
		return REFUSE(EINVAL,
			      "cannot use copy_file_range from '%s' to '%s': it needs a raw source without backing file and a raw destination",
			      src->filename, dest);
	if (fstat(src->fd, &ss) < 0 || fstat(dfd, &ds) < 0)
		return -errno;
	if (ss.st_dev != ds.st_dev)
		return REFUSE(EXDEV,
			      "cannot use copy_file_range from '%s' to '%s': not on the same filesystem",
			      src->filename, dest);
	/* The kernel clones inside copy_file_range where it can. */
	if (job->opts.reflink == JOB_REFLINK_NEVER && can_reflink(dfd))
		return REFUSE(EINVAL,
			      "cannot use copy_file_range from '%s' to '%s' with reflink never: this filesystem would share extents",
			      src->filename, dest);
	return 0;
}

void copy_method_record(struct job *job, enum copy_method m)
{
	bc_disk *disk = job->disk;

	job->method = m;
	pthread_mutex_lock(&disk->lock);
	disk->copy_method = copy_method_name(m);
	pthread_mutex_unlock(&disk->lock);
}

int copy_method_choose(struct job *job, const char *dest,
		       enum copy_method *method, unsigned int *oflags)
{
	enum copy_method m = COPY_METHOD_BUFFERED;
	enum job_copy_path want = job->opts.path;
	char ebuf[128];
	int dfd, ret = 0;

	dfd = open(dest, O_RDWR | O_CLOEXEC);
	if (dfd < 0) {
		ret = errno;
		return REFUSE(ret, "cannot open destination '%s': %s", dest,
			      strerror_r(ret, ebuf, sizeof(ebuf)));
	}
	if (job->opts.reflink != JOB_REFLINK_NEVER) {
		ret = choose_reflink(job, dest, dfd);
		if (ret < 0)
			goto out_close;
		if (ret == 1) {
			m = COPY_METHOD_REFLINK;
			ret = 0;
			goto out_record;
		}
	}
	if (want == JOB_PATH_FILE_RANGE) {
		ret = check_file_range(job, dest, dfd);
		if (ret < 0)
			goto out_close;
		m = COPY_METHOD_FILE_RANGE;
	} else if (want == JOB_PATH_BUFFERED) {
		m = COPY_METHOD_BUFFERED;
	} else if (job->disk->flags & DISK_OPEN_DIRECT) {
		/* The caller's O_DIRECT disk: the destination image follows. */
		m = COPY_METHOD_DIRECT;
		*oflags |= FMT_OPEN_DIRECT;
	} else if (can_direct(dest)) {
		m = COPY_METHOD_DIRECT;
	} else if (want == JOB_PATH_DIRECT) {
		ret = REFUSE(EINVAL,
			     "destination '%s': %s does not support O_DIRECT",
			     dest, fs_name(dfd));
		goto out_close;
	}
out_record:
	*method = m;
	copy_method_record(job, m);
out_close:
	(void)close(dfd);
	return ret;
}

const char *job_copy_method(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	return disk->copy_method;
}

/* --- per-job state ------------------------------------------------------ */

/*
 * The job's own O_DIRECT descriptor for @img (@oflag O_RDONLY or O_RDWR),
 * reopened through /proc/self/fd (the same file whatever its name). A
 * buffered disk's guest writes that completed are in the page cache; an
 * O_DIRECT read writes those back before it reads, so the copy sees them,
 * and an O_DIRECT write drops the cached pages it overwrites, so buffered
 * readers of the destination see it. The ranges never overlap in flight
 * (the job's in-flight bitmap). -1 when O_DIRECT cannot be had.
 */
static int open_direct(const struct fmt_image *img, int oflag, uint32_t *align)
{
	char path[64];
	int fd;

	(void)snprintf(path, sizeof(path), "/proc/self/fd/%d", img->fd);
	fd = open(path, oflag | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return -1;
	*align = direct_align(fd);
	if (!*align) {
		(void)close(fd);
		return -1;
	}
	return fd;
}

int copy_path_open(struct copy_path *p, enum copy_method method,
		   struct fmt_image *src, struct fmt_image *dest)
{
	const struct fmt_image *l;
	unsigned int i;

	memset(p, 0, sizeof(*p));
	p->method = method;
	p->wb.fd = -1;
	p->write_fd = -1;
	if (method == COPY_METHOD_BUFFERED) {
		p->wb.fd = dest->fd;
		return 0;
	}
	if (method != COPY_METHOD_DIRECT)
		return 0;
	for (l = src; l; l = l->backing)
		p->nlayers++;
	p->read_fd = calloc(p->nlayers, sizeof(*p->read_fd));
	p->read_align = calloc(p->nlayers, sizeof(*p->read_align));
	if (!p->read_fd || !p->read_align) {
		/* calloc'd zeros are not descriptors to close. */
		p->nlayers = 0;
		copy_path_close(p);
		return -ENOMEM;
	}
	/*
	 * Read-only layers are read with O_DIRECT too. A layer the guest
	 * writes through the page cache is read through it: an O_DIRECT read
	 * of pages the guest keeps dirty forces their writeback first, which
	 * under a busy guest slowed the copy below the guest's rate (the
	 * demo's background mode stopped converging with libaio).
	 */
	for (i = 0, l = src; l; l = l->backing, i++) {
		p->read_fd[i] = -1;
		if (!(l->flags & (FMT_OPEN_DIRECT | FMT_OPEN_RDWR)))
			p->read_fd[i] = open_direct(l, O_RDONLY, &p->read_align[i]);
	}
	if (!(dest->flags & FMT_OPEN_DIRECT)) {
		p->write_fd = open_direct(dest, O_RDWR, &p->write_align);
		if (p->write_fd < 0) {
			int err = errno ? errno : EINVAL;
			char ebuf[128];

			bc_error_set(bc_errno_to_code(err), err,
				     "cannot open destination '%s' with O_DIRECT: %s",
				     dest->filename,
				     strerror_r(err, ebuf, sizeof(ebuf)));
			copy_path_close(p);
			return -err;
		}
	}
	return 0;
}

enum copy_method copy_method_pull(const struct fmt_image *top)
{
	return top->flags & FMT_OPEN_DIRECT ? COPY_METHOD_DIRECT
					    : COPY_METHOD_BUFFERED;
}

void copy_path_open_pull(struct copy_path *p, enum copy_method method,
			 struct fmt_image *top)
{
	memset(p, 0, sizeof(*p));
	p->method = method;
	p->write_fd = -1;
	p->wb.fd = method == COPY_METHOD_BUFFERED ? top->fd : -1;
}

void copy_path_close(struct copy_path *p)
{
	unsigned int i;

	for (i = 0; p->read_fd && i < p->nlayers; i++) {
		if (p->read_fd[i] >= 0)
			(void)close(p->read_fd[i]);
	}
	if (p->write_fd >= 0)
		(void)close(p->write_fd);
	p->write_fd = -1;
	free(p->read_fd);
	free(p->read_align);
	p->read_fd = NULL;
	p->read_align = NULL;
	p->nlayers = 0;
}

int copy_path_read_fd(const struct copy_path *p, const struct fmt_image *layer,
		      int depth, uint32_t *align)
{
	if (depth >= 0 && (unsigned int)depth < p->nlayers &&
	    p->read_fd[depth] >= 0) {
		*align = p->read_align[depth];
		return p->read_fd[depth];
	}
	*align = layer->request_align;
	return layer->fd;
}

int copy_path_write_fd(const struct copy_path *p, const struct fmt_image *dest,
		       uint32_t *align)
{
	if (p->write_fd >= 0) {
		*align = p->write_align;
		return p->write_fd;
	}
	*align = dest->request_align;
	return dest->fd;
}

/* --- kernel copies ------------------------------------------------------ */

static int offload_error(int err, const char *what, struct fmt_image *src,
			 struct fmt_image *dest, uint64_t off)
{
	char ebuf[128];

	bc_error_set(bc_errno_to_code(err), err,
		     "%s from '%s' to '%s' at offset %llu: %s", what,
		     src->filename, dest->filename, (unsigned long long)off,
		     strerror_r(err, ebuf, sizeof(ebuf)));
	return -err;
}

int copy_path_offload(struct copy_path *p, struct fmt_image *src,
		      struct fmt_image *dest, uint64_t off, uint64_t len)
{
	if (p->method == COPY_METHOD_REFLINK) {
		struct file_clone_range r = {
			.src_fd = src->fd,
			.src_offset = off,
			.src_length = len,
			.dest_offset = off,
		};

		if (ioctl(dest->fd, FICLONERANGE, &r) < 0)
			return offload_error(errno, "reflink", src, dest, off);
		return 0;
	}
	while (len) {
		loff_t in = (loff_t)off, out = (loff_t)off;
		ssize_t n = copy_file_range(src->fd, &in, dest->fd, &out,
					    (size_t)BC_MIN(len, (uint64_t)IOB_MAX_LEN),
					    0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return offload_error(errno, "copy_file_range", src, dest,
					     off);
		if (n == 0) {
			/* The source file ends early: it reads zeros there. */
			return fmt_write_zeroes(dest, off, len, 0);
		}
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* --- write-behind ------------------------------------------------------- */

/* Wait for the oldest range under writeback and drop it from the cache. */
static int retire_oldest(struct write_behind *wb)
{
	struct wb_range r = wb->ring[wb->head];
	char ebuf[128];

	wb->head = (wb->head + 1) % WB_RING;
	wb->count--;
	wb->ring_bytes -= r.len;
	if (sync_file_range(wb->fd, (off_t)r.off, (off_t)r.len,
			    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
		int err = errno;

		bc_error_set(bc_errno_to_code(err), err,
			     "writing back destination range at %llu: %s",
			     (unsigned long long)r.off,
			     strerror_r(err, ebuf, sizeof(ebuf)));
		return -err;
	}
	(void)posix_fadvise(wb->fd, (off_t)r.off, (off_t)r.len,
			    POSIX_FADV_DONTNEED);
	return 0;
}

/* Start writeback of wb->pending and queue it; waits when the window is full. */
static int start_pending(struct write_behind *wb)
{
	struct wb_range r = wb->pending;
	char ebuf[128];
	int ret;

	wb->pending.len = 0;
	if (sync_file_range(wb->fd, (off_t)r.off, (off_t)r.len,
			    SYNC_FILE_RANGE_WRITE) < 0) {
		int err = errno;

		bc_error_set(bc_errno_to_code(err), err,
			     "starting writeback of destination range at %llu: %s",
			     (unsigned long long)r.off,
			     strerror_r(err, ebuf, sizeof(ebuf)));
		return -err;
	}
	while (wb->count == WB_RING || wb->ring_bytes + r.len > WB_WINDOW) {
		if (!wb->count)
			break;
		ret = retire_oldest(wb);
		if (ret < 0)
			return ret;
	}
	wb->ring[(wb->head + wb->count) % WB_RING] = r;
	wb->count++;
	wb->ring_bytes += r.len;
	return 0;
}

int copy_path_written(struct copy_path *p, uint64_t off, uint64_t len)
{
	struct write_behind *wb = &p->wb;
	int ret;

	if (wb->fd < 0)
		return 0;
	if (wb->pending.len && wb->pending.off + wb->pending.len == off) {
		wb->pending.len += len;
	} else {
		if (wb->pending.len) {
			ret = start_pending(wb);
			if (ret < 0)
				return ret;
		}
		wb->pending.off = off;
		wb->pending.len = len;
	}
	if (wb->pending.len >= WB_START)
		return start_pending(wb);
	return 0;
}
