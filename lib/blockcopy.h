/*
 * blockcopy — block-copy and block-pull engine with libvirt's semantics.
 *
 * This is the only installed header. Names, values and semantics follow
 * libvirt's block-job API (virDomainBlockRebase, virDomainBlockJobAbort,
 * virDomainGetBlockJobInfo, virDomainBlockJobSetSpeed, virDomainBlockCopy)
 * with the bc_ / BC_ prefix.
 *
 * Every call that fails returns -1 (or NULL) and records a thread-local
 * error, read with bc_last_error().
 */
#ifndef BC_LIB_BLOCKCOPY_H
#define BC_LIB_BLOCKCOPY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define BC_API __attribute__((visibility("default")))
#else
#define BC_API
#endif

typedef struct bc_engine bc_engine;
typedef struct bc_disk bc_disk;

/* Error codes recorded in bc_error.code. */
enum {
	BC_ERR_OK = 0,
	BC_ERR_INTERNAL = 1,
	BC_ERR_NO_MEMORY = 2,
	BC_ERR_INVALID_ARG = 3,
	BC_ERR_OPERATION_INVALID = 4,
	BC_ERR_BLOCK_COPY_ACTIVE = 5,
	BC_ERR_NO_SUCH_FILE = 6,
	BC_ERR_EXISTS = 7,
	BC_ERR_IO = 8,
	BC_ERR_NO_SPACE = 9,
	BC_ERR_IMAGE_CORRUPT = 10,
	BC_ERR_UNSUPPORTED = 11,
};

#define BC_ERROR_MESSAGE_MAX 1024

typedef struct bc_error {
	int code;      /* BC_ERR_* */
	int sys_errno; /* errno behind the failure, 0 if none */
	char message[BC_ERROR_MESSAGE_MAX];
} bc_error;

/* The calling thread's last error; never NULL (code 0 when none). */
BC_API const bc_error *bc_last_error(void);

/* Flags of bc_disk_open. */
#define BC_DISK_READONLY (1u << 0)
#define BC_DISK_DIRECT   (1u << 1)

/* Flags of bc_disk_write_zeroes. */
#define BC_DISK_ZEROES_MAY_UNMAP (1u << 0)

/* virDomainBlockPullFlags. */
#define BC_BLOCK_PULL_BANDWIDTH_BYTES (1u << 6)

/* virDomainBlockRebaseFlags, libvirt's released values. */
#define BC_BLOCK_REBASE_SHALLOW         (1u << 0)
#define BC_BLOCK_REBASE_REUSE_EXT       (1u << 1)
#define BC_BLOCK_REBASE_COPY_RAW        (1u << 2)
#define BC_BLOCK_REBASE_COPY            (1u << 3)
#define BC_BLOCK_REBASE_RELATIVE        (1u << 4)
#define BC_BLOCK_REBASE_COPY_DEV        (1u << 5)
#define BC_BLOCK_REBASE_BANDWIDTH_BYTES (1u << 6)

/* virDomainBlockJobAbortFlags. */
#define BC_BLOCK_JOB_ABORT_ASYNC (1u << 0)
#define BC_BLOCK_JOB_ABORT_PIVOT (1u << 1)
/*
 * blockcopy: with PIVOT, compare source and destination under the pivot's
 * quiesce and refuse the pivot (the job goes on mirroring) if they differ.
 */
#define BC_BLOCK_JOB_ABORT_VERIFY (1u << 16)

#define BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES (1u << 0)
#define BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES  (1u << 0)

/* virDomainBlockCopyFlags. */
#define BC_BLOCK_COPY_SHALLOW             (1u << 0)
#define BC_BLOCK_COPY_REUSE_EXT           (1u << 1)
#define BC_BLOCK_COPY_TRANSIENT_JOB       (1u << 2)
#define BC_BLOCK_COPY_SYNCHRONOUS_WRITES  (1u << 3)
#define BC_BLOCK_COPY_AUTO_CONVERGE       (1u << 16)

/* virDomainBlockJobType. */
enum {
	BC_BLOCK_JOB_TYPE_UNKNOWN = 0,
	BC_BLOCK_JOB_TYPE_PULL = 1,
	BC_BLOCK_JOB_TYPE_COPY = 2,
};

/* virConnectDomainEventBlockJobStatus. */
enum {
	BC_BLOCK_JOB_COMPLETED = 0,
	BC_BLOCK_JOB_FAILED = 1,
	BC_BLOCK_JOB_CANCELED = 2,
	BC_BLOCK_JOB_MIRRORING = 3,
};

typedef struct bc_block_job_info {
	int type;                /* BC_BLOCK_JOB_TYPE_* */
	unsigned long bandwidth; /* MiB/s, or bytes/s with _INFO_BANDWIDTH_BYTES */
	uint64_t cur;            /* bytes done */
	uint64_t end;            /* bytes to do; cur == end is not MIRRORING */
} bc_block_job_info;

/* Copy modes (bc_block_job_stats.mode). */
enum {
	BC_BLOCK_JOB_MODE_BACKGROUND = 0,     /* guest writes dirty, copied later */
	BC_BLOCK_JOB_MODE_WRITE_BLOCKING = 1, /* guest writes reach both first */
};

/*
 * blockcopy's job statistics, beyond libvirt's job info. Times are from
 * the job's start, in ns; 0 = has not happened.
 */
typedef struct bc_block_job_stats {
	int active;              /* 1: the running job; 0: the last ended job */
	int type;                /* BC_BLOCK_JOB_TYPE_* */
	int mode;                /* BC_BLOCK_JOB_MODE_* (now, or at the end) */
	int auto_converge;       /* AUTO_CONVERGE was requested */
	int ready;               /* MIRRORING was reached */
	int status;              /* final event status; -1 while active */
	uint64_t cur;            /* as bc_block_job_info */
	uint64_t end;
	uint64_t dirty_bytes;    /* not yet in sync */
	uint64_t bytes_copied;   /* data the copy loop wrote to the destination */
	uint64_t bytes_zeroed;   /* ranges it wrote as zeroes */
	uint64_t active_writes;  /* guest writes mirrored before acknowledgement */
	uint64_t mirroring_ns;   /* start → MIRRORING */
	uint64_t mode_switch_ns; /* start → switch to write-blocking (auto-converge) */
	uint64_t pivot_stall_ns; /* guest requests held by the pivot or finish */
	uint64_t elapsed_ns;     /* start → now, or → end */
} bc_block_job_stats;

typedef struct bc_block_copy_params {
	unsigned long long bandwidth; /* bytes/s, 0 = unlimited */
	unsigned int granularity;     /* bytes, power of two 4 KiB..64 MiB; 0 = 64 KiB */
	unsigned long long buf_size;  /* bytes in flight; 0 = 16 MiB */
} bc_block_copy_params;

typedef void (*bc_block_job_cb)(bc_engine *engine, bc_disk *disk,
				const char *disk_path, int type, int status,
				void *opaque);

BC_API bc_engine *bc_engine_new(unsigned int flags);
BC_API void bc_engine_free(bc_engine *engine);
BC_API int bc_engine_event_register(bc_engine *engine, bc_block_job_cb cb,
				    void *opaque);
/* Remove a callback by the id bc_engine_event_register() returned. */
BC_API int bc_engine_event_deregister(bc_engine *engine, int callback_id);
BC_API int bc_engine_event_fd(bc_engine *engine);
BC_API int bc_engine_dispatch(bc_engine *engine, int timeout_ms);

BC_API bc_disk *bc_disk_open(bc_engine *engine, const char *path,
			     const char *format, unsigned int flags);
BC_API int bc_disk_close(bc_disk *disk);
BC_API int64_t bc_disk_size(bc_disk *disk);
BC_API const char *bc_disk_path(bc_disk *disk);
BC_API ssize_t bc_disk_pread(bc_disk *disk, void *buf, size_t n, uint64_t off);
BC_API ssize_t bc_disk_pwrite(bc_disk *disk, const void *buf, size_t n,
			      uint64_t off);
BC_API int bc_disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
				unsigned int flags);
BC_API int bc_disk_discard(bc_disk *disk, uint64_t off, uint64_t len,
			   unsigned int flags);
BC_API int bc_disk_flush(bc_disk *disk);

BC_API int bc_block_rebase(bc_disk *disk, const char *base,
			   unsigned long bandwidth, unsigned int flags);
BC_API int bc_block_pull(bc_disk *disk, unsigned long bandwidth,
			 unsigned int flags);
BC_API int bc_block_copy(bc_disk *disk, const char *dest,
			 const bc_block_copy_params *params,
			 unsigned int flags);
BC_API int bc_block_job_abort(bc_disk *disk, unsigned int flags);
BC_API int bc_get_block_job_info(bc_disk *disk, bc_block_job_info *info,
				 unsigned int flags);
/*
 * Statistics of the disk's job, or of its last ended job. Returns 1 and
 * fills @stats, 0 when the disk never had a job, -1 on error.
 */
BC_API int bc_get_block_job_stats(bc_disk *disk, bc_block_job_stats *stats,
				  unsigned int flags);
BC_API int bc_block_job_set_speed(bc_disk *disk, unsigned long bandwidth,
				  unsigned int flags);
BC_API int bc_snapshot_create(bc_disk *disk, const char *overlay,
			      unsigned int flags);

/*
 * ---- Asynchronous guest I/O (BC_1.1) ----------------------------------
 *
 * A bc_queue submits guest requests without blocking and reports their
 * completions later, so that one thread can keep many requests in flight
 * (libblkio's blkioq and io_uring's SQ/CQ split are the model):
 *
 *   bc_queue_read/write/write_zeroes/discard/flush   queue a request
 *   bc_queue_submit                                  start what is queued
 *   bc_queue_completion_fd                           poll it (readable while
 *                                                    completions wait)
 *   bc_queue_reap                                    collect completions
 *
 * Every request carries the caller's @tag, returned in its completion.
 * Requests in flight are unordered, as with the kernel's interfaces: a
 * flush covers the writes whose completion was reaped before the flush
 * was queued. Buffers are used in place: from queueing until its
 * completion is reaped, a request's buffer belongs to the queue.
 *
 * Threads: a queue belongs to one thread at a time. Calls on one queue
 * must not overlap (use one queue per thread); queues of one disk run in
 * parallel. bc_queue_completion_fd() may be polled from any thread.
 *
 * Depth: a queue holds up to @depth requests (1..4096) from queueing
 * until their completion is reaped. A request beyond that fails at once
 * with BC_ERR_OPERATION_INVALID (sys_errno EAGAIN): reap, then retry. No
 * call blocks except bc_queue_reap (up to its timeout) and bc_queue_free
 * (until the requests in flight are done).
 *
 * Guarantees: an asynchronous request is a guest request like those of
 * bc_disk_pread/pwrite: a copy job tracks every write before its
 * completion is reported, write-blocking mode (SYNCHRONOUS_WRITES)
 * reports a write only once the source and the destination hold it, a
 * pivot or pull waits for the requests in flight and holds the ones
 * submitted while it runs (they complete afterwards, on the new chain).
 *
 * Data path: on a raw image, reads, writes and flushes go to the kernel
 * from the caller's buffers without a copy (io_uring; with
 * BLOCKCOPY_IO=aio or without io_uring, libaio for reads and writes of a
 * BC_DISK_DIRECT disk); writes do so too while a copy job runs in
 * background mode. Everything else (qcow2, write-zeroes, discard,
 * write-blocking mode, a pull) runs on the queue's worker threads (up to
 * 16, started on demand) through the same code as the synchronous calls.
 * With BC_DISK_DIRECT, a buffer, offset or length that is not aligned to
 * the disk's logical block size is accepted and bounced (copied) on a
 * worker thread, as the synchronous calls do.
 */
typedef struct bc_queue bc_queue;

/* One finished request, as bc_queue_reap() returns it. */
typedef struct bc_completion {
	void *tag;                 /* the caller's tag */
	int64_t ret;               /* bytes (read, write), 0 (write-zeroes,
				      discard, flush), or -errno */
	int error_code;            /* BC_ERR_*; BC_ERR_OK when ret >= 0 */
	const char *error_message; /* "" when ret >= 0; valid until the next
				      call on the queue */
} bc_completion;

/* Largest depth bc_queue_new() accepts. */
#define BC_QUEUE_MAX_DEPTH 4096u

/*
 * Creates a queue on @disk for up to @depth requests (1..4096). @flags
 * must be 0. The queue keeps the disk alive: bc_disk_close() succeeds
 * while queues are open, after which they refuse new requests
 * (BC_ERR_OPERATION_INVALID "disk '...' is closed") and the disk is
 * freed with its last queue. Returns NULL on error (BC_ERR_INVALID_ARG,
 * BC_ERR_OPERATION_INVALID on a closed disk, BC_ERR_NO_MEMORY,
 * BC_ERR_UNSUPPORTED when BLOCKCOPY_IO=uring and io_uring is unusable).
 */
BC_API bc_queue *bc_queue_new(bc_disk *disk, unsigned int depth,
			      unsigned int flags);

/*
 * Queue a read of @n bytes at @off into @buf. Nothing happens until
 * bc_queue_submit(). @flags must be 0. Returns 0, or -1: bad arguments
 * or a range past the end of the disk (BC_ERR_INVALID_ARG), a full queue
 * or a closed disk (BC_ERR_OPERATION_INVALID).
 */
BC_API int bc_queue_read(bc_queue *q, void *buf, size_t n, uint64_t off,
			 void *tag, unsigned int flags);
/* Queue a write; as bc_queue_read, and a read-only disk is refused
 * (BC_ERR_OPERATION_INVALID). */
BC_API int bc_queue_write(bc_queue *q, const void *buf, size_t n,
			  uint64_t off, void *tag, unsigned int flags);
/* Queue a write of zeroes; @flags: BC_DISK_ZEROES_MAY_UNMAP. As
 * bc_queue_write. */
BC_API int bc_queue_write_zeroes(bc_queue *q, uint64_t off, uint64_t len,
				 void *tag, unsigned int flags);
/* Queue a discard (a hint, as bc_disk_discard); @flags must be 0. */
BC_API int bc_queue_discard(bc_queue *q, uint64_t off, uint64_t len,
			    void *tag, unsigned int flags);
/* Queue a flush of the disk; @flags must be 0. */
BC_API int bc_queue_flush(bc_queue *q, void *tag, unsigned int flags);

/*
 * Starts every queued request; never blocks. @flags must be 0. Returns
 * how many were started (0 when none was queued) or -1. A request that
 * fails after queueing (an I/O error) reports it in its completion.
 */
BC_API int bc_queue_submit(bc_queue *q, unsigned int flags);

/*
 * A file descriptor that is readable (POLLIN) while completions wait to
 * be reaped. It belongs to the queue: do not read or close it. Returns
 * the fd or -1 (@q NULL).
 */
BC_API int bc_queue_completion_fd(bc_queue *q);

/*
 * Collects completions into @out: waits until at least @min are
 * available or @timeout_ms passed (< 0: no limit, 0: never wait), then
 * returns up to @max of them (0 <= @min <= @max). @min must not exceed
 * the requests submitted and not yet reaped (else BC_ERR_INVALID_ARG:
 * waiting could never end). @flags must be 0. Returns the number written
 * to @out (fewer than @min after a timeout) or -1.
 */
BC_API int bc_queue_reap(bc_queue *q, bc_completion *out, int min, int max,
			 int timeout_ms, unsigned int flags);

/*
 * Waits for the requests in flight to finish, drops their completions
 * and the requests queued but not submitted, and frees the queue. NULL
 * is a no-op. Using @q afterwards is undefined, as with free().
 */
BC_API void bc_queue_free(bc_queue *q);

#ifdef __cplusplus
}
#endif

#endif /* BC_LIB_BLOCKCOPY_H */
