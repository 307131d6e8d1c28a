/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Driver-independent half of the format layer: driver lookup and
 * probing, the range-checked wrappers every caller goes through, backing
 * reads, image creation, and whole-buffer file I/O helpers.
 *
 * The wrappers check ranges against img->size (with overflow checks)
 * and writability once, so drivers receive only valid requests. They hold
 * no lock: the drivers serialise their own metadata (fmt.h).
 */
#include "fmt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmt-newfile.h"
#include "fmt-priv.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define QCOW2_PROBE_MAGIC "QFI\xfb"

const struct fmt_driver *fmt_driver_find(const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, "raw"))
		return &fmt_raw_driver;
	if (!strcmp(name, "qcow2"))
		return &fmt_qcow2_driver;
	return NULL;
}

bool fmt_is_nbd_uri(const char *name)
{
	static const char *const schemes[] = {
		"nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
		"nbd+vsock://", "nbds+vsock://",
	};
	size_t i;

	for (i = 0; i < BC_ARRAY_SIZE(schemes); i++) {
		if (!strncmp(name, schemes[i], strlen(schemes[i])))
			return true;
	}
	return false;
}

const char *fmt_probe_buf(const uint8_t *buf, size_t len)
{
	/*
	 * Only the magic, as QEMU's qcow2_probe: a raw image whose guest
	 * wrote these bytes is indistinguishable, which is why backing
	 * formats are recorded and a declared raw layer is never probed.
	 */
	if (len >= 4 && !memcmp(buf, QCOW2_PROBE_MAGIC, 4))
		return "qcow2";
	return "raw";
}

/* A name for @fd in messages: its path from /proc, else "fd N". */
static void fd_name(int fd, char *out, size_t size)
{
	char link[64];
	ssize_t r;

	(void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	r = readlink(link, out, size - 1);
	if (r <= 0) {
		(void)snprintf(out, size, "fd %d", fd);
		return;
	}
	out[r] = '\0';
}

/*
 * Whether a short transfer ended at the end of the file (or device):
 * short reads of regular files happen only there, and under O_DIRECT
 * retrying at the unaligned remainder would fail with EINVAL instead.
 */
static bool at_eof(int fd, uint64_t pos)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return false;
	if (S_ISBLK(st.st_mode))
		return true;
	return pos >= (uint64_t)st.st_size;
}

static __cold void record_named_io_error(const char *name, const char *what,
					 int err, uint64_t off)
{
	char ebuf[128];

	bc_error_set(bc_errno_to_code(err), err, "%s: %s failed at offset %llu: %s",
		     name, what, (unsigned long long)off,
		     strerror_r(err, ebuf, sizeof(ebuf)));
}

static __cold int record_io_error(int fd, const char *what, int err,
				  uint64_t off)
{
	char name[PATH_MAX];

	fd_name(fd, name, sizeof(name));
	record_named_io_error(name, what, err, off);
	return -err;
}

/*
 * Alignment that satisfies O_DIRECT for every logical block size we meet,
 * when the caller does not know the file's own; the largest bounce buffer.
 */
#define DIRECT_BOUNCE_ALIGN 4096u
#define DIRECT_BOUNCE_MAX   (1024u * 1024u)

static bool is_direct(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl >= 0 && (fl & O_DIRECT);
}

/*
 * The one bounce buffer of the format layer: an unaligned read from an
 * O_DIRECT descriptor, through a buffer aligned to @align (a power of
 * two), at most DIRECT_BOUNCE_MAX bytes at a time. Returns bytes read
 * (short only at EOF) or -errno; *@err_off is where an error happened.
 */
static ssize_t pread_bounced(int fd, uint8_t *buf, size_t n, uint64_t off,
			     uint32_t align, uint64_t *err_off)
{
	size_t bsize = (size_t)BC_MAX(align, DIRECT_BOUNCE_MAX);
	size_t got = 0;
	uint8_t *b;

	if (posix_memalign((void **)&b, align, bsize))
		return -ENOMEM;
	while (got < n) {
		uint64_t pos = off + got;
		uint64_t start = bc_align_down(pos, align);
		size_t head = (size_t)(pos - start);
		size_t span = (size_t)BC_MIN(bc_align_up(head + n - got, align),
					     (uint64_t)bsize);
		ssize_t r = pread(fd, b, span, (off_t)start);
		size_t take;

		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			*err_off = pos;
			free(b);
			return r;
		}
		if ((size_t)r <= head)
			break;
		take = BC_MIN((size_t)r - head, n - got);
		memcpy(buf + got, b + head, take);
		got += take;
		if ((size_t)r < span)
			break;
	}
	free(b);
	return (ssize_t)got;
}

/*
 * Reads until n bytes or EOF; *done = bytes read. An O_DIRECT descriptor
 * refusing an unaligned request (EINVAL) is read through a bounce buffer,
 * so metadata readers need not align every small read.
 */
static int read_upto(int fd, void *buf, size_t n, uint64_t off, size_t *done)
{
	uint8_t *p = buf;
	size_t got = 0;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));

		if (r < 0 && errno == EINVAL && is_direct(fd)) {
			uint64_t err_off = off + got;

			r = pread_bounced(fd, p + got, n - got, off + got,
					  DIRECT_BOUNCE_ALIGN, &err_off);
			if (r < 0) {
				*done = got;
				return record_io_error(fd, "read", (int)-r,
						       err_off);
			}
			got += (size_t)r;
			break;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			*done = got;
			return record_io_error(fd, "read", errno, off + got);
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got < n && at_eof(fd, off + got))
			break;
	}
	*done = got;
	return 0;
}

/*
 * Exact read: end of file before @n bytes is -EIO with a message naming
 * the file (via /proc/self/fd) and the offset, for callers that need
 * every byte (metadata). Callers for which bytes past the end read as
 * zeros use fmt_pread_file_zfill. Errors from pread are recorded the same
 * way; callers with a more specific message may replace it.
 */
int fmt_pread_file(int fd, void *buf, size_t n, uint64_t off)
{
	size_t done;
	int ret;

	ret = read_upto(fd, buf, n, off, &done);
	if (ret < 0)
		return ret;
	if (done < n) {
		char name[PATH_MAX];

		fd_name(fd, name, sizeof(name));
		bc_error_set(ERR_IO, EIO,
			     "%s: unexpected end of file reading %zu bytes at offset %llu",
			     name, n, (unsigned long long)off);
		return -EIO;
	}
	return 0;
}

int fmt_pread_file_zfill(int fd, void *buf, size_t n, uint64_t off)
{
	/* Known to end at 0: whatever does not come back reads as zeros. */
	return fmt_pread_file_within(fd, buf, n, off, 0);
}

int fmt_file_shrunk(int fd, uint64_t off, uint64_t known_end)
{
	char name[PATH_MAX];
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size >= known_end)
		return 0;
	fd_name(fd, name, sizeof(name));
	bc_error_set(ERR_IO, EIO,
		     "%s: read failed at offset %llu: the file ends at %llu, short of its known size %llu (truncated while open?)",
		     name, (unsigned long long)BC_MAX(off, (uint64_t)st.st_size),
		     (unsigned long long)st.st_size,
		     (unsigned long long)known_end);
	return -EIO;
}

/* fmt_pread_file_within after @done bytes came: the shrink check, the zeros. */
static int end_within(int fd, void *buf, size_t n, uint64_t off, size_t done,
		      uint64_t known_end)
{
	if (done < n && off + done < known_end) {
		int ret = fmt_file_shrunk(fd, off + done, known_end);

		if (ret < 0)
			return ret;
	}
	memset((uint8_t *)buf + done, 0, n - done);
	return 0;
}

int fmt_pread_file_within(int fd, void *buf, size_t n, uint64_t off,
			  uint64_t known_end)
{
	size_t done;
	int ret;

	ret = read_upto(fd, buf, n, off, &done);
	if (ret < 0)
		return ret;
	return end_within(fd, buf, n, off, done, known_end);
}

int fmt_pread_file_within_bounced(int fd, void *buf, size_t n, uint64_t off,
				  uint64_t known_end, uint32_t align)
{
	uint64_t err_off = off;
	ssize_t r;

	assert(bc_is_pow2(align));
	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	r = pread_bounced(fd, buf, n, off, align, &err_off);
	if (r < 0)
		return record_io_error(fd, "read", (int)-r, err_off);
	return end_within(fd, buf, n, off, (size_t)r, known_end);
}

/* Copy @len bytes of the gather list from its byte @pos on (NULL: zeros). */
static void iov_copy_out(const struct iovec *iov, int cnt, uint64_t pos,
			 uint8_t *dst, size_t len)
{
	int i;

	for (i = 0; i < cnt && len; i++) {
		size_t take;

		if (pos >= iov[i].iov_len) {
			pos -= iov[i].iov_len;
			continue;
		}
		take = (size_t)BC_MIN(iov[i].iov_len - pos, (uint64_t)len);
		if (iov[i].iov_base)
			memcpy(dst, (const uint8_t *)iov[i].iov_base + pos, take);
		else
			memset(dst, 0, take);
		dst += take;
		len -= take;
		pos = 0;
	}
}

int fmt_pwritev_file_bounced(int fd, const struct iovec *iov, int cnt,
			     uint64_t off, uint32_t align)
{
	size_t bsize = (size_t)BC_MAX(align, DIRECT_BOUNCE_MAX);
	uint64_t total = 0, done = 0;
	uint8_t *b;
	int i, ret = 0;

	assert(bc_is_pow2(align));
	for (i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	if (off > (uint64_t)INT64_MAX || total > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	if (posix_memalign((void **)&b, align, bsize))
		return -ENOMEM;
	while (done < total && ret == 0) {
		uint64_t pos = off + done, start = bc_align_down(pos, align);
		size_t head = (size_t)(pos - start);
		size_t span = (size_t)BC_MIN(bc_align_up(head + (total - done), align),
					     (uint64_t)bsize);
		size_t take = (size_t)BC_MIN(span - head, total - done);

		/* Edge blocks written in part keep their other bytes. */
		if (head)
			ret = fmt_pread_file_zfill(fd, b, align, start);
		if (ret == 0 && head + take < span && (span > align || !head))
			ret = fmt_pread_file_zfill(fd, b + span - align, align,
						   start + span - align);
		if (ret < 0)
			break;
		iov_copy_out(iov, cnt, done, b + head, take);
		ret = fmt_pwrite_file(fd, b, span, start);
		done += take;
	}
	free(b);
	return ret;
}

int fmt_pwrite_file(int fd, const void *buf, size_t n, uint64_t off)
{
	return fmt_pwrite_file_as(fd, NULL, buf, n, off);
}

int fmt_pwrite_file_as(int fd, const char *name, const void *buf, size_t n,
		       uint64_t off)
{
	const uint8_t *p = buf;
	size_t done = 0;
	int err;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	while (done < n) {
		ssize_t r = pwrite(fd, p + done, n - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? errno : ENOSPC;
			if (!name)
				return record_io_error(fd, "write", err,
						       off + done);
			record_named_io_error(name, "write", err, off + done);
			return -err;
		}
		done += (size_t)r;
	}
	return 0;
}

/* Checks [off, off+len) against the image; records the error. */
static int check_range(const struct fmt_image *img, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (bc_add_overflow(off, len, &end) || end > img->size) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: range %llu+%llu is outside the image (size %llu)",
			     img->filename, (unsigned long long)off,
			     (unsigned long long)len,
			     (unsigned long long)img->size);
		return -EINVAL;
	}
	return 0;
}

static int check_writable(const struct fmt_image *img)
{
	if (!(img->flags & FMT_OPEN_RDWR)) {
		bc_error_set(ERR_OPERATION_INVALID, EROFS,
			     "%s: image is read-only", img->filename);
		return -EROFS;
	}
	return 0;
}

int fmt_pread(struct fmt_image *img, void *buf, size_t n, uint64_t off)
{
	int ret = check_range(img, off, n);

	if (ret < 0)
		return ret;
	if (!n)
		return 0;
	return img->drv->pread(img, buf, n, off);
}

/* A write of [off, off+len) may go ahead: the image is writable, the range inside it. */
static int check_write(struct fmt_image *img, uint64_t off, uint64_t len)
{
	int ret = check_writable(img);

	return ret < 0 ? ret : check_range(img, off, len);
}

int fmt_pwrite(struct fmt_image *img, const void *buf, size_t n, uint64_t off)
{
	int ret = check_write(img, off, n);

	if (ret < 0)
		return ret;
	if (!n)
		return 0;
	return img->drv->pwrite(img, buf, n, off);
}

int fmt_pwrite_behind(struct fmt_image *img, const void *buf, size_t n,
		      uint64_t off)
{
	int ret;

	if (!img->drv->pwrite_behind)
		return fmt_pwrite(img, buf, n, off);
	ret = check_write(img, off, n);
	if (ret < 0 || !n)
		return ret;
	return img->drv->pwrite_behind(img, buf, n, off);
}

int fmt_reserve(struct fmt_image *img, uint64_t bytes)
{
	if (!(img->flags & FMT_OPEN_RDWR) || !img->drv->reserve || !bytes)
		return 0;
	return img->drv->reserve(img, bytes);
}

int fmt_write_zeroes(struct fmt_image *img, uint64_t off, uint64_t len,
		     unsigned int flags)
{
	int ret;

	if (flags & ~FMT_ZERO_MAY_UNMAP) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: unsupported write-zeroes flags 0x%x",
			     img->filename, flags);
		return -EINVAL;
	}
	ret = check_write(img, off, len);
	if (ret < 0)
		return ret;
	if (!len)
		return 0;
	return img->drv->write_zeroes(img, off, len, flags);
}

int fmt_discard(struct fmt_image *img, uint64_t off, uint64_t len)
{
	int ret = check_write(img, off, len);

	if (ret < 0)
		return ret;
	if (!len)
		return 0;
	return img->drv->discard(img, off, len);
}

int fmt_flush(struct fmt_image *img)
{
	/* Nothing to make durable in an image we never wrote. */
	if (!(img->flags & FMT_OPEN_RDWR))
		return 0;
	return img->drv->flush(img);
}

int fmt_block_status(struct fmt_image *img, uint64_t off, uint64_t len,
		     struct fmt_extent *ext)
{
	int ret = check_range(img, off, len);

	if (ret < 0)
		return ret;
	if (!len) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: block status of an empty range", img->filename);
		return -EINVAL;
	}
	memset(ext, 0, sizeof(*ext));
	ext->host_off = -1;
	ret = img->drv->block_status(img, off, len, ext);
	if (ret < 0)
		return ret;
	/* A driver answering nothing or too much would hang or skip callers. */
	assert(ext->len > 0 && ext->len <= len);
	return 0;
}

int fmt_io_map(struct fmt_image *img, bool write, uint64_t off, uint64_t len,
	       struct fmt_io_map *map)
{
	uint64_t end;

	if (!img->drv->io_map || !len || bc_add_overflow(off, len, &end) ||
	    end > img->size || (write && !(img->flags & FMT_OPEN_RDWR)))
		return -ENOTSUP;
	return img->drv->io_map(img, write, off, len, map);
}

int fmt_io_unmap(struct fmt_image *img, struct fmt_io_map *map, int result)
{
	return img->drv->io_unmap(img, map, result);
}

int fmt_map_for_overwrite(struct fmt_image *img, uint64_t off, uint64_t len,
			  struct fmt_extent *ext)
{
	int ret = check_write(img, off, len);

	if (ret < 0)
		return ret;
	if (!len || !img->drv->map_for_overwrite)
		return -ENOTSUP;
	memset(ext, 0, sizeof(*ext));
	ext->host_off = -1;
	ret = img->drv->map_for_overwrite(img, off, len, ext);
	if (ret < 0)
		return ret;
	assert(ext->len > 0 && ext->len <= len && ext->host_off >= 0);
	return 0;
}

int fmt_read_backing(struct fmt_image *img, void *buf, size_t n, uint64_t off)
{
	struct fmt_image *b = img->backing;
	size_t m = 0;
	int ret;

	if (b && off < b->size) {
		m = (size_t)BC_MIN((uint64_t)n, b->size - off);
		ret = fmt_pread(b, buf, m, off);
		if (ret < 0)
			return ret;
	}
	memset((uint8_t *)buf + m, 0, n - m);
	return 0;
}

char *fmt_resolve_backing(const char *overlay_path, const char *name)
{
	const char *slash;
	size_t dirlen;
	char *out;

	if (name[0] == '/' || !(slash = strrchr(overlay_path, '/')))
		return strdup(name);
	/* Keep the overlay's directory including its slash. */
	dirlen = (size_t)(slash - overlay_path) + 1;
	out = malloc(dirlen + strlen(name) + 1);
	if (!out)
		return NULL;
	memcpy(out, overlay_path, dirlen);
	strcpy(out + dirlen, name);
	return out;
}

/* The driver writes the image into a new file that then takes @path. */
static int create_published(const struct fmt_driver *drv, const char *path,
			    const struct fmt_create_opts *o)
{
	struct fmt_newfile nf;
	int ret;

	ret = fmt_newfile_open(path, false, &nf);
	if (ret < 0)
		return ret;
	ret = drv->create(nf.fd, path, o);
	if (ret < 0) {
		fmt_newfile_abandon(&nf);
		return ret;
	}
	return fmt_newfile_publish(&nf);
}

int fmt_create(const char *path, const struct fmt_create_opts *opts)
{
	struct fmt_create_opts o = *opts;
	const struct fmt_driver *drv;
	struct stat st;

	drv = fmt_driver_find(opts->format);
	if (!drv) {
		bc_error_set(ERR_INVALID_ARG, EINVAL, "unknown format '%s'",
			     opts->format ? opts->format : "(null)");
		return -EINVAL;
	}
	if (lstat(path, &st) == 0) {
		bc_error_set(ERR_EXISTS, EEXIST, "%s: file exists", path);
		return -EEXIST;
	}
	if (opts->backing_fmt && !fmt_driver_find(opts->backing_fmt)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "unknown format '%s'", opts->backing_fmt);
		return -EINVAL;
	}
	if (opts->backing_file) {
		if (strlen(opts->backing_file) > FMT_BACKING_NAME_MAX) {
			bc_error_set(ERR_INVALID_ARG, EINVAL,
				     "%s: backing file name longer than %d bytes",
				     path, FMT_BACKING_NAME_MAX);
			return -EINVAL;
		}
		if (fmt_backing_is_protocol(opts->backing_file)) {
			bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
				     "%s: backing file '%s' uses a protocol, not supported",
				     path, opts->backing_file);
			return -ENOTSUP;
		}
	}
	if (!o.size && opts->backing_file) {
		BC_AUTOFREE char *bpath = NULL;
		struct fmt_image *b;
		int ret;

		bpath = fmt_resolve_backing(path, opts->backing_file);
		if (!bpath)
			return -ENOMEM;
		/* As qemu-img create: the backing alone, for its size. */
		ret = fmt_open(bpath, opts->backing_fmt, FMT_OPEN_NO_BACKING, &b);
		if (ret < 0)
			return ret;
		o.size = b->size;
		fmt_close(b);
	}
	return create_published(drv, path, &o);
}

int fmt_set_backing(struct fmt_image *img, const char *name, const char *fmt)
{
	char *nn = NULL, *nf = NULL;
	int ret;

	ret = check_writable(img);
	if (ret < 0)
		return ret;
	if (fmt && !fmt_driver_find(fmt)) {
		bc_error_set(ERR_INVALID_ARG, EINVAL, "unknown format '%s'",
			     fmt);
		return -EINVAL;
	}
	if (name && strlen(name) > FMT_BACKING_NAME_MAX) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "%s: backing file name longer than %d bytes",
			     img->filename, FMT_BACKING_NAME_MAX);
		return -EINVAL;
	}
	if (name && fmt_backing_is_protocol(name)) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: backing file '%s' uses a protocol, not supported",
			     img->filename, name);
		return -ENOTSUP;
	}
	if (!img->drv->set_backing) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: %s images have no backing file",
			     img->filename, img->drv->name);
		return -ENOTSUP;
	}
	if ((name && !(nn = strdup(name))) || (fmt && !(nf = strdup(fmt)))) {
		free(nn);
		return -ENOMEM;
	}
	ret = img->drv->set_backing(img, name, fmt);
	if (ret < 0) {
		free(nn);
		free(nf);
		return ret;
	}
	/*
	 * Keep the recorded names in step with the header (whether or not
	 * the driver updated them); img->backing stays as opened.
	 */
	free(img->backing_name);
	free(img->backing_fmt);
	img->backing_name = nn;
	img->backing_fmt = nf;
	return 0;
}

int fmt_get_info(struct fmt_image *img, struct fmt_info *info)
{
	memset(info, 0, sizeof(*info));
	return img->drv->get_info(img, info);
}

int fmt_check(struct fmt_image *img, struct fmt_check_report *rep)
{
	return fmt_check_noted(img, rep, NULL, NULL);
}

int fmt_check_noted(struct fmt_image *img, struct fmt_check_report *rep,
		    void (*note)(void *opaque, const char *line), void *opaque)
{
	*rep = (struct fmt_check_report){ .note = note, .note_opaque = opaque };
	if (!img->drv->check) {
		bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
			     "%s: format '%s' does not support checks",
			     img->filename, img->drv->name);
		return -ENOTSUP;
	}
	return img->drv->check(img, rep);
}

static int no_bitmaps(struct fmt_image *img)
{
	bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
		     "%s: format '%s' does not support persistent bitmaps",
		     img->filename, img->drv->name);
	return -ENOTSUP;
}

int fmt_bitmap_list(struct fmt_image *img, struct fmt_bitmap_info **list,
		    size_t *n)
{
	*list = NULL;
	*n = 0;
	if (!img->drv->bitmap_list)
		return no_bitmaps(img);
	return img->drv->bitmap_list(img, list, n);
}

void fmt_bitmap_list_free(struct fmt_bitmap_info *list, size_t n)
{
	size_t i;

	for (i = 0; list && i < n; i++)
		free(list[i].name);
	free(list);
}

int fmt_bitmap_change(struct fmt_image *img, const struct fmt_bitmap_change *c)
{
	if (!img->drv->bitmap_change)
		return no_bitmaps(img);
	if (!(img->flags & FMT_OPEN_RDWR)) {
		bc_error_set(ERR_INVALID_ARG, EROFS,
			     "%s: image opened read-only", img->filename);
		return -EROFS;
	}
	return img->drv->bitmap_change(img, c);
}

int fmt_bitmap_read(struct fmt_image *img, const char *name, uint8_t **bits,
		    uint64_t *nbits, uint32_t *granularity_bits)
{
	*bits = NULL;
	if (!img->drv->bitmap_read)
		return no_bitmaps(img);
	return img->drv->bitmap_read(img, name, bits, nbits, granularity_bits);
}
