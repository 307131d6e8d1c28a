/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy — block-copy and block-pull engine with libvirt's semantics.
 *
 * This is the only installed header. Names, values and semantics follow
 * libvirt's block-job API (virDomainBlockRebase, virDomainBlockJobAbort,
 * virDomainGetBlockJobInfo, virDomainBlockJobSetSpeed, virDomainBlockCopy)
 * with the bc_ / BC_ prefix. Each call has a man page (blockcopy(3) lists
 * them); the rules the tests enforce are numbered in docs/rules.md.
 *
 * Errors: every call that fails returns -1 (or NULL) and records a
 * thread-local error, read with bc_last_error(): a BC_ERR_* code, the errno
 * behind it (or 0) and a one-line message. Every call except
 * bc_last_error() and bc_engine_free() clears the record on entry, so read
 * it right after the failing call, on the same thread.
 *
 * Threads: every call may be made from any thread. The guest data path
 * (bc_disk_pread/pwrite/write_zeroes/discard/flush) may run on many threads
 * at once on one disk. Each block job runs on a thread of its own, which
 * the library starts and ends; job events are queued by it and delivered
 * to the callbacks only by bc_engine_dispatch(), on the thread that calls
 * it, with no library lock held.
 *
 * Objects: a bc_engine owns the event queue and callbacks; a bc_disk is
 * one open backing chain (the guest's disk) with at most one job. Pointers
 * stay valid until bc_disk_close() / bc_engine_free().
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

/*
 * Error codes recorded in bc_error.code. The errno behind a code, when
 * there is one, is in bc_error.sys_errno: NO_SUCH_FILE (ENOENT), EXISTS
 * (EEXIST), IO (EIO and other system errors), NO_SPACE (ENOSPC, EDQUOT).
 */
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

/*
 * The calling thread's last error; never NULL (code 0 when none). The
 * record is the thread's own: a job's failure, which happens on the job's
 * thread, reaches the embedder through the FAILED event (see
 * bc_engine_dispatch()) and, for a pivot, through bc_block_job_abort().
 */
BC_API const bc_error *bc_last_error(void);

/*
 * Flags of bc_disk_open. READONLY: the top image is opened read-only
 * (guest writes, pulls and snapshots are refused; a copy may still read
 * it). DIRECT: O_DIRECT on every layer and on a copy's destination.
 */
#define BC_DISK_READONLY (1u << 0)
#define BC_DISK_DIRECT   (1u << 1)

/* Flags of bc_disk_write_zeroes: the range may be deallocated. */
#define BC_DISK_ZEROES_MAY_UNMAP (1u << 0)

/* virDomainBlockPullFlags. */
#define BC_BLOCK_PULL_BANDWIDTH_BYTES (1u << 6)

/*
 * virDomainBlockRebaseFlags, libvirt's released values. SHALLOW,
 * REUSE_EXT and COPY_RAW only with COPY; RELATIVE only without it (pull);
 * COPY_DEV is not supported (refused as an unknown flag).
 */
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
 * blockcopy extension: with PIVOT, compare source and destination under
 * the pivot's quiesce and refuse the pivot (the job goes on mirroring) if
 * they differ. The guest waits while both sides are read.
 */
#define BC_BLOCK_JOB_ABORT_VERIFY (1u << 16)

#define BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES (1u << 0)
#define BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES  (1u << 0)

/*
 * virDomainBlockCopyFlags. TRANSIENT_JOB is accepted and changes nothing
 * (blockcopy never persists a job). SYNCHRONOUS_WRITES is write-blocking
 * mode: a guest write reaches the destination before it is acknowledged.
 * AUTO_CONVERGE (blockcopy extension): start in background mode, switch to
 * write-blocking when the dirty data stops shrinking; not with
 * SYNCHRONOUS_WRITES.
 */
#define BC_BLOCK_COPY_SHALLOW             (1u << 0)
#define BC_BLOCK_COPY_REUSE_EXT           (1u << 1)
#define BC_BLOCK_COPY_TRANSIENT_JOB       (1u << 2)
#define BC_BLOCK_COPY_SYNCHRONOUS_WRITES  (1u << 3)
#define BC_BLOCK_COPY_AUTO_CONVERGE       (1u << 16)
/*
 * blockcopy: the copy's data path. Without these the engine chooses per
 * source and destination (O_DIRECT where the destination's filesystem
 * takes it, else the page cache with write-behind) and
 * bc_block_job_copy_method() says what it chose. At most one of DIRECT,
 * BUFFERED and FILE_RANGE; REFLINK and REFLINK_ALWAYS exclude each other.
 */
#define BC_BLOCK_COPY_DIRECT          (1u << 24) /* O_DIRECT destination; refused where unsupported */
#define BC_BLOCK_COPY_BUFFERED        (1u << 25) /* page cache, with write-behind */
#define BC_BLOCK_COPY_FILE_RANGE      (1u << 26) /* copy_file_range: raw → raw, one filesystem */
#define BC_BLOCK_COPY_REFLINK         (1u << 27) /* share extents where possible (cp --reflink=auto) */
#define BC_BLOCK_COPY_REFLINK_ALWAYS  (1u << 28) /* share extents or fail (cp --reflink=always) */

/* virDomainBlockJobType. */
enum {
	BC_BLOCK_JOB_TYPE_UNKNOWN = 0,
	BC_BLOCK_JOB_TYPE_PULL = 1,
	BC_BLOCK_JOB_TYPE_COPY = 2,
};

/*
 * virConnectDomainEventBlockJobStatus: the status argument of a job event.
 * A COPY job queues MIRRORING once (source and destination in sync; the
 * job goes on) and then exactly one of COMPLETED (pivoted), CANCELED or
 * FAILED; FAILED may also come before MIRRORING. With
 * BC_BLOCK_COPY_ON_TARGET_ERROR_STOP it may also queue BC_BLOCK_JOB_PAUSED
 * (below), once per pause. A PULL job queues one of COMPLETED, CANCELED
 * or FAILED.
 */
enum {
	BC_BLOCK_JOB_COMPLETED = 0,
	BC_BLOCK_JOB_FAILED = 1,
	BC_BLOCK_JOB_CANCELED = 2,
	BC_BLOCK_JOB_MIRRORING = 3,
};

/* Filled by bc_get_block_job_info(). */
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
	uint64_t active_writes;  /* guest writes mirrored before acknowledgement
				    (write-blocking mode) */
	uint64_t mirroring_ns;   /* start → MIRRORING */
	uint64_t mode_switch_ns; /* start → switch to write-blocking (auto-converge) */
	uint64_t pivot_stall_ns; /* guest requests held by the pivot or finish */
	uint64_t elapsed_ns;     /* start → now, or → end */
} bc_block_job_stats;

/* Parameters of bc_block_copy(); a NULL pointer means all defaults. */
typedef struct bc_block_copy_params {
	unsigned long long bandwidth; /* bytes/s, 0 = unlimited */
	unsigned int granularity;     /* bytes, power of two 4 KiB..64 MiB; 0 = 64 KiB */
	unsigned long long buf_size;  /* bytes in flight; 0 = 16 MiB */
} bc_block_copy_params;

/*
 * A job event callback, called by bc_engine_dispatch() on the thread that
 * calls it, with no library lock held: it may call any function of this
 * API, including bc_block_job_abort() (e.g. a pivot from MIRRORING) and
 * bc_disk_close() (e.g. at COMPLETED). @disk is the job's disk: valid for
 * the call even when the embedder already closed it (a queued event keeps
 * it alive; closing it again fails). @disk_path is the disk's path when
 * the event was queued (after a pivot, the destination's), valid for the
 * call only. @type is BC_BLOCK_JOB_TYPE_*, @status BC_BLOCK_JOB_* (the
 * event). For FAILED, bc_last_error() returns the job's first error while
 * the callback runs (code, errno, message), for PAUSED the error that
 * paused the job; for other events its code is 0. @opaque is the pointer
 * given to bc_engine_event_register().
 */
typedef void (*bc_block_job_cb)(bc_engine *engine, bc_disk *disk,
				const char *disk_path, int type, int status,
				void *opaque);

/*
 * A new engine: the event queue and callbacks that disks and their jobs
 * report to. @flags must be 0. Checks that the I/O backend can be set up
 * (io_uring, or libaio with BLOCKCOPY_IO=aio in the environment) and
 * starts no thread. Returns the engine, or NULL: BC_ERR_INVALID_ARG
 * (unknown flags, unknown BLOCKCOPY_IO), BC_ERR_UNSUPPORTED
 * (BLOCKCOPY_IO=aio in a build without libaio), the system's error when no
 * backend can be set up ("no I/O backend: ..."), BC_ERR_NO_MEMORY,
 * BC_ERR_INTERNAL.
 */
BC_API bc_engine *bc_engine_new(unsigned int flags);
/*
 * Release the engine: events not dispatched yet are dropped, callbacks
 * forgotten. Close every disk first (the engine's memory lives on until
 * the last disk opened on it is freed). NULL is a no-op. Does not touch
 * bc_last_error().
 */
BC_API void bc_engine_free(bc_engine *engine);
/*
 * Register @cb to be called with @opaque for every job event of every
 * disk of @engine (at most 8 callbacks; each event goes to all of them in
 * the order of their ids). Returns the callback's id (>= 0; a freed id is
 * reused), or -1: BC_ERR_INVALID_ARG (NULL engine or cb),
 * BC_ERR_OPERATION_INVALID ("too many event callbacks (at most 8)").
 */
BC_API int bc_engine_event_register(bc_engine *engine, bc_block_job_cb cb,
				    void *opaque);
/*
 * Remove a callback by the id bc_engine_event_register() returned; it is
 * not called for events dispatched after this returns. Returns 0, or -1
 * with BC_ERR_INVALID_ARG ("no event callback with id N").
 */
BC_API int bc_engine_event_deregister(bc_engine *engine, int callback_id);
/*
 * A file descriptor that is readable (POLLIN) exactly while events are
 * queued, for the embedder's own poll loop: poll it, then call
 * bc_engine_dispatch(engine, 0). Owned by the engine: do not read or close
 * it. Returns the fd, or -1 with BC_ERR_INVALID_ARG for a NULL engine.
 */
BC_API int bc_engine_event_fd(bc_engine *engine);
/*
 * Deliver the queued job events to the registered callbacks, on the
 * calling thread, in the order the jobs queued them. When none is queued,
 * first wait up to @timeout_ms for one (0: do not wait; negative: wait
 * without limit). Callbacks run with no library lock held (see
 * bc_block_job_cb). Returns the number of events delivered (0 when the
 * wait timed out), or -1 with BC_ERR_INTERNAL when polling the event fd
 * failed. After it returns, bc_last_error() holds whatever the last
 * callback left there unless it returned -1. Events are delivered only
 * here: an embedder that never calls it never sees an event (jobs still
 * run and end).
 */
BC_API int bc_engine_dispatch(bc_engine *engine, int timeout_ms);

/*
 * Open the backing chain whose top image is @path as a guest disk. @path
 * may also be an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://,
 * nbd+vsock://, nbds+vsock://) in a build with libnbd: the export's guest
 * data, one layer, @format NULL or "raw" (else BC_ERR_UNSUPPORTED).
 * @format is "qcow2", "raw" or NULL; NULL probes the top image by its
 * magic (a raw image whose guest wrote a qcow2 header would be misread:
 * give the format whenever it is known). Backing images always take the
 * format their overlay records; only where an old overlay records none is
 * the backing file probed. Backing images are opened read-only. @flags:
 * BC_DISK_READONLY, BC_DISK_DIRECT. Returns the disk, or NULL:
 * BC_ERR_INVALID_ARG (NULL engine or path, unknown flags, "unknown disk
 * format 'F' (expected raw or qcow2)"), BC_ERR_NO_SUCH_FILE (an image of
 * the chain is missing), BC_ERR_IMAGE_CORRUPT (invalid metadata, a chain
 * that loops or is too deep), BC_ERR_UNSUPPORTED (a feature blockcopy
 * does not implement, e.g. encryption), BC_ERR_IO, BC_ERR_NO_MEMORY. The
 * message names the file.
 */
BC_API bc_disk *bc_disk_open(bc_engine *engine, const char *path,
			     const char *format, unsigned int flags);
/*
 * Close the disk. Refused while it has a job, copy or pull (-1,
 * BC_ERR_BLOCK_COPY_ACTIVE, "block copy still active: disk 'P' has an
 * active block job"): end the job first. The images are closed (flushed,
 * headers and bitmaps written back) when this returns, unless events
 * still queued for the disk or open bc_queue queues hold it: it then
 * lives until the last is delivered or freed (the queues refuse new
 * requests), and a second close of it fails with
 * BC_ERR_OPERATION_INVALID ("disk 'P' is already closed"). Returns 0 or
 * -1.
 */
BC_API int bc_disk_close(bc_disk *disk);
/* The guest-visible size in bytes; -1 (BC_ERR_INVALID_ARG) for NULL. */
BC_API int64_t bc_disk_size(bc_disk *disk);
/*
 * The path of the disk's current top image, as given to bc_disk_open(),
 * bc_block_copy() (after a pivot) or bc_snapshot_create(). The string
 * stays valid until the disk is freed, even after the path changes.
 * NULL (BC_ERR_INVALID_ARG) for a NULL disk.
 */
BC_API const char *bc_disk_path(bc_disk *disk);
/*
 * Guest read: @n bytes at @off into @buf (any alignment, also with
 * BC_DISK_DIRECT). Thread-safe; waits while a pivot, the end of a pull or
 * a snapshot has the disk quiesced. Returns @n, or -1: BC_ERR_INVALID_ARG
 * (NULL arguments; "request at offset O length L is beyond the end of
 * disk 'P' (S bytes)"), BC_ERR_IO, BC_ERR_IMAGE_CORRUPT (metadata found
 * invalid on the way).
 */
BC_API ssize_t bc_disk_pread(bc_disk *disk, void *buf, size_t n, uint64_t off);
/*
 * Guest write: @n bytes from @buf at @off. Thread-safe, like
 * bc_disk_pread(). While a COPY job runs, the write is tracked before
 * this returns: marked dirty (background mode), or also written to the
 * destination (write-blocking mode) — a failure there fails the job
 * (FAILED event), not this call. Returns @n, or -1: as bc_disk_pread(),
 * plus BC_ERR_OPERATION_INVALID ("disk 'P' is read-only"),
 * BC_ERR_NO_SPACE.
 */
BC_API ssize_t bc_disk_pwrite(bc_disk *disk, const void *buf, size_t n,
			      uint64_t off);
/*
 * Guest write of @len zero bytes at @off, tracked by a job like
 * bc_disk_pwrite(). @flags: BC_DISK_ZEROES_MAY_UNMAP lets the format
 * deallocate the range where it then still reads as zeros. Returns 0, or
 * -1 with the errors of bc_disk_pwrite() (and BC_ERR_INVALID_ARG for
 * unknown flags).
 */
BC_API int bc_disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
				unsigned int flags);
/*
 * Guest discard of [@off, @off + @len): a hint. What the range reads
 * afterwards depends on the format (zeros, or the old data where the
 * format cannot discard it, e.g. a qcow2 v2 image with a backing file);
 * a job copies whatever it reads. @flags must be 0. Returns 0, or -1 with
 * the errors of bc_disk_pwrite().
 */
BC_API int bc_disk_discard(bc_disk *disk, uint64_t off, uint64_t len,
			   unsigned int flags);
/*
 * Flush the guest's writes to stable storage (the current top image; a
 * copy's destination is flushed by its job, and always before a pivot).
 * Returns 0, or -1 (BC_ERR_IO, BC_ERR_NO_SPACE).
 */
BC_API int bc_disk_flush(bc_disk *disk);

/*
 * libvirt's virDomainBlockRebase: start a PULL job, or with
 * BC_BLOCK_REBASE_COPY a COPY job. Returns 0 once the job runs (from then
 * on bc_get_block_job_info() returns 1), or -1.
 *
 * Without COPY (pull): @base is NULL (pull the whole chain into the top,
 * which ends with no backing file) or the path of an image further down
 * the disk's chain (data above it is pulled; it becomes the top's backing
 * file, by absolute path, or with BC_BLOCK_REBASE_RELATIVE by the
 * relative name the chain used). Events: COMPLETED, CANCELED or FAILED.
 *
 * With COPY: @base is the DESTINATION path (libvirt's naming), as
 * bc_block_copy(disk, base, {bandwidth}, flags) with SHALLOW / REUSE_EXT
 * mapped over, plus BC_BLOCK_REBASE_COPY_RAW for a raw destination.
 *
 * @bandwidth: MiB/s, or bytes/s with BC_BLOCK_REBASE_BANDWIDTH_BYTES;
 * 0 = unlimited. Errors (bc_last_error()): BC_ERR_INVALID_ARG ("base is
 * required when starting a copy", "shallow only permitted when requesting
 * a copy", "reuse_ext only permitted when requesting a copy", "copy_raw
 * only permitted when requesting a copy", "relative backing during copy
 * is not supported", "unsupported flags (0xN) in function
 * bc_block_rebase", a base that is the top or not in the chain),
 * BC_ERR_NO_SUCH_FILE (base missing), BC_ERR_OPERATION_INVALID ("disk 'P'
 * already has an active block job", "disk 'P' is read-only" for a pull),
 * and those of bc_block_copy() with COPY.
 */
BC_API int bc_block_rebase(bc_disk *disk, const char *base,
			   unsigned long bandwidth, unsigned int flags);
/*
 * libvirt's virDomainBlockPull: bc_block_rebase(disk, NULL, bandwidth,
 * 0), the whole chain pulled into the top. @flags:
 * BC_BLOCK_PULL_BANDWIDTH_BYTES. Returns 0 or -1.
 */
BC_API int bc_block_pull(bc_disk *disk, unsigned long bandwidth,
			 unsigned int flags);
/*
 * libvirt's virDomainBlockCopy: start a COPY job of the disk's chain to
 * @dest, then mirror guest writes until bc_block_job_abort() ends it.
 *
 * The destination: without BC_BLOCK_COPY_REUSE_EXT it is created, in the
 * format of the source's top image (qcow2 keeps its cluster size); an
 * existing non-empty file is refused (BC_ERR_EXISTS, "destination file
 * 'D' already exists; use REUSE_EXT to write into it") and not touched.
 * With REUSE_EXT it must exist (BC_ERR_NO_SUCH_FILE) with the source's
 * size and keeps its metadata. Without BC_BLOCK_COPY_SHALLOW the whole
 * chain is copied and a created destination has no backing file; with it
 * only the top's data is copied and the destination is backed by the
 * source top's backing file. A destination that is an image of the
 * disk's own chain is refused (BC_ERR_INVALID_ARG). @dest may be an NBD
 * URI (see bc_disk_open()): the export must exist and REUSE_EXT be given
 * ("destination 'D' is an NBD export: it must exist, use REUSE_EXT"); its
 * metadata is its server's. A source that is an NBD export is copied to a
 * raw destination. If this call fails, a destination it created is
 * removed; once it returned 0, a job that ends CANCELED or FAILED leaves
 * the destination in place (removing it is the caller's choice).
 *
 * @params: NULL for defaults; bandwidth in bytes/s (0 = unlimited),
 * granularity (power of two 4096..67108864, 0 = 64 KiB), buf_size (bytes
 * in flight, granularity..1 GiB, 0 = 16 MiB). @flags: SHALLOW, REUSE_EXT,
 * TRANSIENT_JOB, SYNCHRONOUS_WRITES, AUTO_CONVERGE, a data path (DIRECT,
 * BUFFERED, FILE_RANGE, REFLINK, REFLINK_ALWAYS above; default: the engine
 * chooses, bc_block_job_copy_method() says what), and one of
 * ON_TARGET_ERROR_STOP / ON_TARGET_ERROR_IGNORE (below; default: a
 * destination error fails the job).
 *
 * Returns 0 once the job runs (bc_get_block_job_info() returns 1), or -1:
 * BC_ERR_INVALID_ARG (NULL disk or dest, unknown flags, "granularity must
 * be a power of two between 4096 and 67108864", "buf-size must be
 * between the granularity and 1073741824 bytes", "synchronous writes and
 * auto-converge are mutually exclusive", "on-target-error stop and ignore
 * are mutually exclusive", size mismatch with REUSE_EXT),
 * BC_ERR_OPERATION_INVALID (a job already runs, or a snapshot is being
 * taken), BC_ERR_EXISTS, BC_ERR_NO_SUCH_FILE, BC_ERR_IO, BC_ERR_NO_SPACE.
 *
 * Events: MIRRORING when source and destination are first in sync (the
 * job goes on mirroring), then COMPLETED (pivoted), CANCELED or FAILED;
 * PAUSED with ON_TARGET_ERROR_STOP.
 */
BC_API int bc_block_copy(bc_disk *disk, const char *dest,
			 const bc_block_copy_params *params,
			 unsigned int flags);
/*
 * libvirt's virDomainBlockJobAbort: end the disk's job.
 *
 * @flags 0: a PULL job, a COPY job before MIRRORING, or a PAUSED job, is
 * canceled (a copy's destination content is then undefined); a COPY job after
 * MIRRORING is finished: the guest is briefly held, what is still dirty
 * is copied and the destination flushed, so it equals the source at that
 * moment. The disk stays on the source. Waits until the job has ended;
 * its CANCELED event (or FAILED, if it failed meanwhile) is queued when
 * this returns 0.
 *
 * BC_BLOCK_JOB_ABORT_ASYNC: the same, but returns 0 at once; the event
 * follows. A pivot asked after it is refused ("block job on disk 'P' is
 * already ending", BC_ERR_OPERATION_INVALID).
 *
 * BC_BLOCK_JOB_ABORT_PIVOT (COPY job after MIRRORING): switch the disk to
 * the destination. Synchronous: returns 0 once the switch is done — every
 * write acknowledged before it is in the destination, flushed, every
 * later one goes only there, bc_disk_path() names the destination — and
 * the COMPLETED event has been queued; it is still delivered by the next
 * bc_engine_dispatch(). Before MIRRORING: -1, BC_ERR_BLOCK_COPY_ACTIVE
 * ("block copy still active: disk 'P' not ready for pivot yet"), and the
 * job goes on. A PAUSED job is not pivoted (BC_ERR_OPERATION_INVALID,
 * "block job on disk 'P' is paused after an error: resume or abort it").
 * If the job fails during the pivot: -1 with the job's error,
 * the disk stays on the source, FAILED follows. May be called from a
 * MIRRORING callback.
 *
 * BC_BLOCK_JOB_ABORT_VERIFY (blockcopy extension, with PIVOT only): the
 * pivot compares source and destination first; on a difference it
 * returns -1 with BC_ERR_IO ("verification failed: 'S' and 'D' differ at
 * offset N; pivot refused, mirroring goes on") and the job goes on.
 *
 * Other errors: BC_ERR_INVALID_ARG ("async and pivot flags are mutually
 * exclusive", "verify only permitted with pivot", unknown flags),
 * BC_ERR_OPERATION_INVALID ("disk 'P' does not have an active block job",
 * "pivot of disk 'P' requires an active copy block job").
 */
BC_API int bc_block_job_abort(bc_disk *disk, unsigned int flags);
/*
 * libvirt's virDomainGetBlockJobInfo. Returns 1 and fills @info while the
 * disk has a job (from the start call's return until the job ends, just
 * before its final event is queued), 0 with @info zeroed when it has none,
 * -1 on bad arguments (BC_ERR_INVALID_ARG). @info->cur and ->end are
 * bytes: for a COPY, end = cur + what is still dirty or in flight, so it
 * grows with guest writes and cur == end does not by itself mean
 * MIRRORING (wait for the event); for a PULL, end is the disk size.
 * @info->bandwidth is MiB/s rounded up (a limit below 1 MiB/s reads 1, not
 * 0 = unlimited), or bytes/s with BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES.
 */
BC_API int bc_get_block_job_info(bc_disk *disk, bc_block_job_info *info,
				 unsigned int flags);
/*
 * blockcopy extension: statistics of the disk's job, or of its last ended
 * job (then active is 0 and status its final event). Returns 1 and fills
 * @stats, 0 (@stats zeroed) when the disk never had a job, -1 on bad
 * arguments (BC_ERR_INVALID_ARG; @flags must be 0).
 */
BC_API int bc_get_block_job_stats(bc_disk *disk, bc_block_job_stats *stats,
				  unsigned int flags);
/*
 * The data path of the disk's copy or pull job, or of its last one:
 * "direct", "buffered+write-behind", "copy_file_range" or "reflink" (a
 * static string); NULL (no error recorded) when the disk never had one.
 */
BC_API const char *bc_block_job_copy_method(bc_disk *disk);
/*
 * libvirt's virDomainBlockJobSetSpeed: change the running job's bandwidth
 * limit, at once (a job waiting out the old limit wakes up). @bandwidth is
 * MiB/s, or bytes/s with BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES; 0 =
 * unlimited. The limit applies to the copy loop, after MIRRORING too, but
 * never to guest writes nor to the final sync of a pivot or abort.
 * Returns 0, or -1: BC_ERR_OPERATION_INVALID ("disk 'P' does not have an
 * active block job"), BC_ERR_INVALID_ARG.
 */
BC_API int bc_block_job_set_speed(bc_disk *disk, unsigned long bandwidth,
				  unsigned int flags);
/*
 * External snapshot: create @overlay, a new qcow2 image backed by the
 * disk's current top (by absolute path, format recorded), and make it the
 * disk's top; guest writes then go to it. The top is flushed first and
 * guest requests wait while the chain changes. @flags must be 0. Returns
 * 0, or -1: BC_ERR_BLOCK_COPY_ACTIVE while the disk has a job ("block copy
 * still active: disk 'P' has an active block job"), BC_ERR_EXISTS (the
 * overlay exists), BC_ERR_OPERATION_INVALID (read-only disk), BC_ERR_IO,
 * BC_ERR_NO_SPACE; nothing changes on failure.
 */
BC_API int bc_snapshot_create(bc_disk *disk, const char *overlay,
			      unsigned int flags);

/*
 * --- blockcopy 1.1: target-error policy (extension, like QEMU's
 * on-target-error) -------------------------------------------------------
 *
 * Flags of bc_block_copy choosing what a COPY job does when writing or
 * flushing the destination fails while it copies or mirrors. Neither:
 * report, the job fails (FAILED event), as in 1.0.
 *
 * ON_TARGET_ERROR_STOP: the failed range is marked dirty again and the
 *   job pauses: a PAUSED event is queued (bc_last_error() in its callback
 *   says which file, offset and why), bc_get_block_job_state() reports
 *   BC_BLOCK_JOB_STATE_PAUSED with that error, bc_get_block_job_info()
 *   still reports the job (cur < end). Guest writes go on and are
 *   tracked. bc_block_job_resume() continues from the dirty bitmap: only
 *   what was never written successfully is copied again. An abort
 *   without flags cancels a paused job (CANCELED); a pivot is refused.
 * ON_TARGET_ERROR_IGNORE: the failed range is marked dirty again and
 *   retried after a back-off (10 ms, doubling, at most 1 s; the errors of
 *   one back-off period are one round); when the 9th round in a row fails
 *   (about 2.3 s of retries, no successful destination write in between)
 *   the job fails as with report.
 * Source errors, and any error while pivoting or finishing (guests held),
 * always fail the job.
 */
#define BC_BLOCK_COPY_ON_TARGET_ERROR_STOP   (1u << 17)
#define BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE (1u << 18)

/*
 * --- blockcopy 1.1: resumable copies (extension, issue 12) -------------
 *
 * A COPY job to a regular file DST keeps a journal, "DST.bcjournal", next
 * to it: which granules may still differ between source and destination.
 * It is created (durably) before the first byte is copied; a guest write
 * sets its bits before the source is written; every second (or 128 MiB)
 * the job flushes the destination and the source and clears the bits of
 * what is then copied. The journal is removed when the copy is complete (COMPLETED, or
 * an abort after MIRRORING); it stays when the job ends FAILED, is
 * canceled before MIRRORING, or its process dies. While the disk stays
 * open after such an end, guest writes keep setting its bits; once the
 * disk is closed, nothing must write the source until it is resumed.
 *
 * BC_BLOCK_COPY_RESUME (bc_block_copy, bc_block_copy_bitmap): continue
 * the copy the journal of @dest records instead of starting over. It
 * implies REUSE_EXT; the granularity and the destination format (raw for
 * a COPY_RAW copy) come from the journal, params->granularity must be 0
 * or the same. The journal must be for this source (top image path,
 * device and inode), this destination, the same virtual size and the same
 * SHALLOW flag; only what it marks is copied, then the job mirrors as
 * usual. A resumed copy ends byte-identical to an uninterrupted one.
 * Errors: BC_ERR_NO_SUCH_FILE "no journal 'J' to resume from";
 * BC_ERR_INVALID_ARG "journal 'J' <field> ..." naming the first field that
 * does not match (source, destination, virtual size, shallow/full,
 * granularity) or what is wrong with the file ("journal 'J': header
 * checksum mismatch", ...), "resume and a bitmap are mutually exclusive:
 * the journal says what is left to copy", "cannot resume a copy to 'D':
 * only a regular file destination has a journal".
 *
 * Without RESUME, a journal beside an existing destination (REUSE_EXT)
 * is refused: BC_ERR_EXISTS "journal 'J' exists: a copy to 'D' was
 * interrupted; resume it with RESUME or remove the journal". Beside a
 * destination that is missing or empty, it is stale and replaced.
 * A pull (bc_block_rebase) needs no journal: run again, it copies only
 * what the top does not hold yet.
 */
#define BC_BLOCK_COPY_RESUME (1u << 19)

/* Event status (extension): the job paused on a destination error. */
enum {
	BC_BLOCK_JOB_PAUSED = 4,
};

/* States reported by bc_get_block_job_state. */
enum {
	BC_BLOCK_JOB_STATE_RUNNING = 0, /* copying (before MIRRORING) or pulling */
	BC_BLOCK_JOB_STATE_READY = 1,   /* mirroring: MIRRORING was reached */
	BC_BLOCK_JOB_STATE_PAUSED = 2,  /* stopped on a destination error */
	BC_BLOCK_JOB_STATE_ENDING = 3,  /* pivoting, finishing or canceling */
};

/*
 * The state of the disk's job. Returns 1 and fills *@state while a job
 * exists, 0 when none, -1 on error. @error may be NULL; else it receives
 * the error that paused the job (code 0 unless PAUSED). @flags must be 0.
 */
BC_API int bc_get_block_job_state(bc_disk *disk, int *state, bc_error *error,
				  unsigned int flags);
/*
 * Resume a job paused by ON_TARGET_ERROR_STOP: it goes back to copying
 * (or mirroring, if it was) from its dirty bitmap. Returns 0, or -1 with
 * BC_ERR_OPERATION_INVALID when the disk has no job or it is not paused.
 * @flags must be 0.
 */
BC_API int bc_block_job_resume(bc_disk *disk, unsigned int flags);

/* --- BC_1.1: block status of the guest view (NBD serving, issue 11) --- */
/* Bits of bc_disk_block_status()'s *status. */
#define BC_DISK_EXTENT_ZERO (1u << 0) /* the run reads as zeros */
#define BC_DISK_EXTENT_HOLE (1u << 1) /* no layer of the chain allocates it */
/*
 * The run of the disk's guest view that starts at @off and is at most
 * @len bytes long (@len > 0) with one state: returns its length (> 0)
 * and sets *@status to BC_DISK_EXTENT_* bits (0 = data). What an NBD
 * server reports as base:allocation. @flags must be 0. -1 on error.
 */
BC_API int64_t bc_disk_block_status(bc_disk *disk, uint64_t off, uint64_t len,
				    unsigned int *status, unsigned int flags);
/* --- end BC_1.1 block status --- */

/*
 * --- blockcopy 1.1: incremental copy (extension) ----------------------
 *
 * bc_block_copy() that copies only the ranges the persistent dirty bitmap
 * @bitmap of the disk's top image records (qcow2 "bitmaps" extension:
 * made with `blockcopy bitmap --add` or `qemu-img bitmap --add`, enabled,
 * recording every write since), then mirrors like any COPY job: guest
 * writes made once the call has started are the job's own. With
 * BC_BLOCK_COPY_REUSE_EXT into the image that holds the previous copy,
 * this is an incremental backup: the destination ends equal to the
 * source. A fresh destination holds only the recorded ranges. With
 * SHALLOW, only what the top image holds within them. Flags, params,
 * events and errors as bc_block_copy(), and: BC_ERR_INVALID_ARG "...:
 * bitmap 'NAME' not found", BC_ERR_IMAGE_CORRUPT when the bitmap is
 * inconsistent (its writer died), BC_ERR_UNSUPPORTED for a raw top. The
 * bitmap itself is left as it is (clear it with `blockcopy bitmap
 * --clear` after a successful offline copy to start the next increment).
 */
BC_API int bc_block_copy_bitmap(bc_disk *disk, const char *dest,
				const char *bitmap,
				const bc_block_copy_params *params,
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
 * also for BLOCKCOPY_IO other than "uring" or "aio"; BC_ERR_OPERATION_INVALID
 * on a closed disk; BC_ERR_NO_MEMORY; BC_ERR_UNSUPPORTED when
 * BLOCKCOPY_IO=uring and io_uring is unusable).
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
