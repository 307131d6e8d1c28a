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
/* libvirt's name for write-blocking mode: guest writes reach the
 * destination before they are acknowledged (BC_BLOCK_JOB_MODE_WRITE_BLOCKING). */
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

#ifdef __cplusplus
}
#endif

#endif /* BC_LIB_BLOCKCOPY_H */
