/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * How a COPY job moves its data: the engine's choice per source and
 * destination, made once when the job starts (copy_method_choose), and the
 * per-job state the copy loop consults (struct copy_path).
 *
 *   direct    the copy loop reads the source layers and writes the
 *             destination's data through its own O_DIRECT descriptors
 *             (reopened through /proc/self/fd), all through the I/O
 *             backend: no page-cache copy, no io_uring worker threads. The
 *             images themselves keep the disk's caching mode, so after the
 *             pivot the guest sees the destination as it saw the source;
 *             format metadata goes through the image's own descriptor and
 *             the final fsync covers both. The default wherever the
 *             destination's filesystem takes O_DIRECT (probed: open(2) with
 *             O_DIRECT, alignment from statx STATX_DIOALIGN). A disk
 *             opened DISK_OPEN_DIRECT opens the destination O_DIRECT too.
 *   buffered+write-behind
 *             the destination goes through the page cache (asked for, or
 *             where O_DIRECT is refused). Its writes are issued on the copy
 *             thread (io_uring would punt buffered writes to worker
 *             threads), each completed range is handed to writeback at once
 *             (sync_file_range WRITE), and once more than WB_WINDOW bytes
 *             are under writeback the oldest range is waited for and
 *             dropped from the cache (WAIT_BEFORE|WRITE|WAIT_AFTER, then
 *             POSIX_FADV_DONTNEED), as nbdcopy does: dirty pages stay
 *             bounded and the final flush has little left to do.
 *   copy_file_range
 *             raw → raw on one filesystem, only when asked: on ext4 the
 *             kernel copies through the page cache, which measured 2.5x
 *             slower than direct, with 6x its CPU time (README.md,
 *             Benchmarks).
 *   reflink   raw → raw, extents shared with FICLONERANGE, only when asked
 *             (reflink auto or always): a copy never silently shares its
 *             source's blocks. copy_file_range is not used for a copy
 *             that must not share: the kernel may reflink inside it.
 *
 * Whatever the path: the throttle is charged per chunk, cancellation is
 * seen between chunks, progress counts chunks, and the destination is
 * flushed (fsync) before the job reports success, as in engine/mirror.c.
 *
 * A PULL job (engine/pull.c, copy_path_open_pull) writes into the disk's
 * own top image, which the guest keeps reading: its data must reach the
 * file before the metadata that exposes it (a crash, or a guest read, must
 * never see a cluster mapped before its data is there), which only the
 * format driver's own write does. So the top is written through its
 * driver, and the backing read through theirs:
 *   direct    the disk is O_DIRECT: so are those reads and writes;
 *   buffered+write-behind
 *             otherwise: each range written into the top is handed to
 *             writeback at once and dropped from the cache past the
 *             window, as for a copy. The reads stay buffered: the pull
 *             reads one chunk at a time, and the kernel's readahead beat
 *             synchronous O_DIRECT reads 3x (bench/run pull).
 */
#ifndef BC_ENGINE_COPY_METHOD_H
#define BC_ENGINE_COPY_METHOD_H

#include <stdbool.h>
#include <stdint.h>

struct job;
struct fmt_image;

enum copy_method {
	COPY_METHOD_DIRECT = 0,
	COPY_METHOD_BUFFERED,
	COPY_METHOD_FILE_RANGE,
	COPY_METHOD_REFLINK,
	COPY_METHOD_NBD,       /* an NBD export: formats/nbd.c writes behind */
};

/* Ranges under writeback at once (the ring below). */
#define WB_RING 64u

struct wb_range {
	uint64_t off, len;
};

/* Write-behind state of a buffered destination. */
struct write_behind {
	int fd;                       /* -1: off */
	struct wb_range pending;      /* written, writeback not started yet */
	struct wb_range ring[WB_RING];/* writeback started, oldest first */
	unsigned int head, count;
	uint64_t ring_bytes;
};

/* What the copy loop needs of the chosen method. */
struct copy_path {
	enum copy_method method;
	unsigned int nlayers;
	int *read_fd;          /* [nlayers] the job's O_DIRECT fd, or -1 */
	uint32_t *read_align;  /* [nlayers] its alignment */
	int write_fd;          /* the job's O_DIRECT destination fd, or -1 */
	uint32_t write_align;
	struct write_behind wb;
};

/* "direct", "buffered+write-behind", "copy_file_range" or "reflink". */
const char *copy_method_name(enum copy_method m);

/*
 * Choose the data path of @job's copy to @dest (the file exists; the
 * format layer has not opened it yet) from job->opts and probes of both
 * files. Records the choice on the disk (job_copy_method), stores it in
 * *@method, and adds FMT_OPEN_DIRECT to *@oflags when the disk is
 * O_DIRECT (the destination image follows the disk's mode). Returns 0 or -errno with a message (a path asked
 * for that this pair cannot take, e.g. reflink always on ext4).
 */
int copy_method_choose(struct job *job, const char *dest,
		       enum copy_method *method, unsigned int *oflags);

/* Make @m @job's data path and the one job_copy_method() reports. */
void copy_method_record(struct job *job, enum copy_method m);

/*
 * Set up the per-job state for @method: O_DIRECT descriptors for the
 * layers of @src and for @dest (direct), write-behind on @dest
 * (buffered). Returns 0 or -errno with a message.
 */
int copy_path_open(struct copy_path *p, enum copy_method method,
		   struct fmt_image *src, struct fmt_image *dest);
void copy_path_close(struct copy_path *p);

/* The data path of a PULL job into @top (see above): DIRECT or BUFFERED. */
enum copy_method copy_method_pull(const struct fmt_image *top);

/*
 * Set up @p for a PULL job's @method (copy_method_pull) into @top:
 * write-behind on a buffered top. copy_path_close() releases it.
 */
void copy_path_open_pull(struct copy_path *p, enum copy_method method,
			 struct fmt_image *top);

/* Whether chunks are copied by the kernel (copy_file_range, reflink). */
static inline bool copy_path_offloads(const struct copy_path *p)
{
	return p->method == COPY_METHOD_FILE_RANGE ||
	       p->method == COPY_METHOD_REFLINK;
}

/* Whether destination writes are issued synchronously on the copy thread. */
static inline bool copy_path_sync_writes(const struct copy_path *p)
{
	return p->method == COPY_METHOD_BUFFERED;
}

/*
 * The descriptor to read layer @depth (@layer) with, and its alignment in
 * *@align: the job's own O_DIRECT one where it has one, else the layer's.
 */
int copy_path_read_fd(const struct copy_path *p, const struct fmt_image *layer,
		      int depth, uint32_t *align);

/*
 * The descriptor to write @dest's data with, and its alignment in *@align:
 * the job's own O_DIRECT one (direct), else the image's.
 */
int copy_path_write_fd(const struct copy_path *p, const struct fmt_image *dest,
		       uint32_t *align);

/*
 * Copy [@off, @off + @len) of raw @src to the same range of raw @dest in
 * the kernel (copy_file_range or FICLONERANGE). Returns 0 or -errno with
 * a message.
 */
int copy_path_offload(struct copy_path *p, struct fmt_image *src,
		      struct fmt_image *dest, uint64_t off, uint64_t len);

/*
 * @len bytes at @off of the destination file were written (completed):
 * write-behind takes it from here. No-op unless buffered. Returns 0 or
 * -errno (a writeback error surfaces here, before the final flush).
 */
int copy_path_written(struct copy_path *p, uint64_t off, uint64_t len);

#endif /* BC_ENGINE_COPY_METHOD_H */
