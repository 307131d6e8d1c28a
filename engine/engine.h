/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine's interface to lib/: engines, disks, the guest data path and
 * block jobs. lib/api-*.c validates public arguments and flag rules, then
 * calls these; they return 0 (or a count) or -errno with the detail
 * recorded by bc_error_set() where it was detected.
 */
#ifndef BC_ENGINE_ENGINE_H
#define BC_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/common/error.h"

/*
 * The engine's own names for what lib/blockcopy.h publishes: lib/api-*.c
 * maps between the two and asserts that every constant equals its public
 * twin, so that no layer below lib/ includes the public header.
 *
 * The handles are the public opaque types: the engine defines the structs
 * (engine/internal.h), the public header only names them.
 */
typedef struct bc_engine bc_engine;
typedef struct bc_disk bc_disk;

/* disk_open() flags: BC_DISK_READONLY, BC_DISK_DIRECT. */
#define DISK_OPEN_READONLY (1u << 0)
#define DISK_OPEN_DIRECT   (1u << 1)

/* disk_write_zeroes() and queue_add() flag: BC_DISK_ZEROES_MAY_UNMAP. */
#define DISK_ZEROES_MAY_UNMAP (1u << 0)

/* disk_block_status() bits: BC_DISK_EXTENT_*. */
#define DISK_EXTENT_ZERO (1u << 0) /* the run reads as zeros */
#define DISK_EXTENT_HOLE (1u << 1) /* no layer of the chain allocates it */

/* Job types: BC_BLOCK_JOB_TYPE_*. */
enum job_type {
	JOB_TYPE_UNKNOWN = 0,
	JOB_TYPE_PULL = 1,
	JOB_TYPE_COPY = 2,
};

/* Job events, the status of an event callback: BC_BLOCK_JOB_COMPLETED... */
enum job_event {
	JOB_EVENT_COMPLETED = 0,
	JOB_EVENT_FAILED = 1,
	JOB_EVENT_CANCELED = 2,
	JOB_EVENT_MIRRORING = 3,
	JOB_EVENT_PAUSED = 4,
};

/*
 * The job's state as job_get_state() reports it (BC_BLOCK_JOB_STATE_*):
 * a coarser view of enum job_state (engine/job.h).
 */
enum job_reported_state {
	JOB_STATE_RUNNING = 0, /* copying (before MIRRORING) or pulling */
	JOB_STATE_READY = 1,   /* mirroring: MIRRORING was reached */
	JOB_STATE_PAUSED = 2,  /* stopped on a destination error */
	JOB_STATE_ENDING = 3,  /* pivoting, finishing or canceling */
};

/* Copy modes: BC_BLOCK_JOB_MODE_*. */
enum job_mode {
	JOB_MODE_BACKGROUND = 0,
	JOB_MODE_WRITE_BLOCKING = 1,
};

/* An event callback, as bc_block_job_cb: @type enum job_type, @status enum job_event. */
typedef void (*engine_event_cb)(bc_engine *eng, bc_disk *disk,
				const char *disk_path, int type, int status,
				void *opaque);

/* What job_get_info() fills; lib/ copies it into a bc_block_job_info. */
struct job_info {
	int type;                /* enum job_type */
	unsigned long bandwidth; /* MiB/s, or bytes/s when asked in bytes */
	uint64_t cur;            /* bytes done */
	uint64_t end;            /* bytes to do */
};

/* What job_get_stats() fills; lib/ copies it into a bc_block_job_stats. */
struct job_stats {
	int active;              /* 1: the running job; 0: the last ended job */
	int type;                /* enum job_type */
	int mode;                /* enum job_mode (now, or at the end) */
	int auto_converge;       /* AUTO_CONVERGE was requested */
	int ready;               /* MIRRORING was reached */
	int status;              /* final enum job_event; -1 while active */
	uint64_t cur;            /* as struct job_info */
	uint64_t end;
	uint64_t dirty_bytes;    /* not yet in sync */
	uint64_t bytes_copied;   /* data the copy loop wrote to the destination */
	uint64_t bytes_zeroed;   /* ranges it wrote as zeroes */
	uint64_t active_writes;  /* guest writes mirrored before acknowledgement */
	uint64_t mirroring_ns;   /* start → MIRRORING */
	uint64_t mode_switch_ns; /* start → switch to write-blocking (auto-converge) */
	uint64_t pivot_stall_ns; /* guest requests held by the pivot or finish */
	uint64_t elapsed_ns;     /* start → now, or → end */
};

/* --- engine.c: the engine object and its event queue ------------------ */

int engine_new(unsigned int flags, bc_engine **out);
void engine_free(bc_engine *eng);
int engine_event_register(bc_engine *eng, engine_event_cb cb, void *opaque);
int engine_event_deregister(bc_engine *eng, int id);
int engine_event_fd(bc_engine *eng);
/* Deliver queued events on the caller's thread; returns how many. */
int engine_dispatch(bc_engine *eng, int timeout_ms);

/* --- disk.c: disks and the guest data path --------------------------- */

int disk_open(bc_engine *eng, const char *path, const char *format,
	      unsigned int flags, bc_disk **out);
/* -EBUSY (BLOCK_COPY_ACTIVE) while a copy job is active. */
int disk_close(bc_disk *disk);
int64_t disk_size(bc_disk *disk);
const char *disk_path(bc_disk *disk);
ssize_t disk_pread(bc_disk *disk, void *buf, size_t n, uint64_t off);
ssize_t disk_pwrite(bc_disk *disk, const void *buf, size_t n, uint64_t off);
/* @flags: DISK_ZEROES_MAY_UNMAP or 0. */
int disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
		      unsigned int flags);
int disk_discard(bc_disk *disk, uint64_t off, uint64_t len);
int disk_flush(bc_disk *disk);
/*
 * Block status of the guest view at @off (at most @len bytes): the run's
 * length and DISK_EXTENT_* bits in *@status; -errno on error.
 */
int64_t disk_block_status(bc_disk *disk, uint64_t off, uint64_t len,
			  unsigned int *status);
int disk_snapshot_create(bc_disk *disk, const char *overlay);

/* --- job.c: block jobs ------------------------------------------------ */

/* The copy's data path the caller asks for (engine/copy-method.c). */
enum job_copy_path {
	JOB_PATH_AUTO = 0,    /* the engine chooses per source/destination pair */
	JOB_PATH_DIRECT,      /* O_DIRECT destination, refused where unsupported */
	JOB_PATH_BUFFERED,    /* page cache with write-behind */
	JOB_PATH_FILE_RANGE,  /* copy_file_range: raw → raw on one filesystem */
};

/* Whether data may be shared with the source instead of copied (cp's --reflink). */
enum job_reflink {
	JOB_REFLINK_NEVER = 0,
	JOB_REFLINK_AUTO,     /* where the filesystem can, else copy */
	JOB_REFLINK_ALWAYS,   /* refused where it cannot */
};

/* What a COPY job does on a destination error (engine/job.h). */
enum job_target_policy {
	JOB_TARGET_REPORT = 0, /* fail the job (default) */
	JOB_TARGET_STOP,       /* pause; resume continues from the bitmap */
	JOB_TARGET_IGNORE,     /* re-dirty, retry, bounded */
};

struct job_copy_opts {
	uint64_t bandwidth;   /* bytes/s, 0 = unlimited */
	uint32_t granularity; /* bytes, validated by lib */
	uint64_t buf_size;    /* bytes in flight, validated by lib */
	bool shallow;
	bool reuse_ext;
	bool dest_raw;        /* COPY_RAW: raw destination whatever the source */
	bool write_blocking;  /* SYNCHRONOUS_WRITES: write-blocking mode */
	bool auto_converge;
	enum job_copy_path path;
	enum job_reflink reflink;
	enum job_target_policy on_target_error;
	/*
	 * Copy only what this persistent bitmap of the source's top image
	 * records (an incremental copy), NULL = everything. Read while
	 * job_start_copy() runs; not kept.
	 */
	const char *bitmap;
	/*
	 * RESUME (issue 12): continue the copy that the destination's journal
	 * records (engine/copy-journal.h) instead of scanning; implies
	 * reuse_ext, takes the granularity and the raw destination from the
	 * journal.
	 */
	bool resume;
};

int job_start_copy(bc_disk *disk, const char *dest,
		   const struct job_copy_opts *opts);
/* base NULL = pull everything; relative keeps base's relative name. */
int job_start_pull(bc_disk *disk, const char *base, uint64_t bandwidth,
		   bool relative);
/* verify (with pivot): compare source and destination before switching. */
int job_abort(bc_disk *disk, bool async, bool pivot, bool verify);
/* 1 and fills @info while a job exists, 0 when none. */
int job_get_info(bc_disk *disk, struct job_info *info, bool bytes);
int job_set_speed(bc_disk *disk, uint64_t bandwidth);
/* A PAUSED job continues from its bitmap; -EINVAL if not paused. */
int job_resume(bc_disk *disk);
/*
 * 1 and fills @state (enum job_reported_state) and @err (the error that
 * paused the job, code 0 otherwise; may be NULL) while a job exists, 0
 * when none.
 */
int job_get_state(bc_disk *disk, int *state, struct error_record *err);
/* 1 and fills @st (current job or the last ended one), 0 if none ever. */
int job_get_stats(bc_disk *disk, struct job_stats *st);
/* Name of the data path of the disk's copy job, or of its last one; NULL if none. */
const char *job_copy_method(bc_disk *disk);

#endif /* BC_ENGINE_ENGINE_H */
