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

#include "lib/blockcopy.h"

/* --- engine.c: the engine object and its event queue ------------------ */

int engine_new(unsigned int flags, bc_engine **out);
void engine_free(bc_engine *eng);
int engine_event_register(bc_engine *eng, bc_block_job_cb cb, void *opaque);
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
int disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
		      unsigned int flags);
int disk_discard(bc_disk *disk, uint64_t off, uint64_t len);
int disk_flush(bc_disk *disk);
/*
 * Block status of the guest view at @off (at most @len bytes): the run's
 * length and BC_DISK_EXTENT_* bits in *@status; -errno on error.
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
int job_get_info(bc_disk *disk, bc_block_job_info *info, bool bytes);
int job_set_speed(bc_disk *disk, uint64_t bandwidth);
/* A PAUSED job continues from its bitmap; -EINVAL if not paused. */
int job_resume(bc_disk *disk);
/*
 * 1 and fills @state (BC_BLOCK_JOB_STATE_*) and @err (the error that
 * paused the job, code 0 otherwise; may be NULL) while a job exists, 0
 * when none.
 */
int job_get_state(bc_disk *disk, int *state, bc_error *err);
/* 1 and fills @st (current job or the last ended one), 0 if none ever. */
int job_get_stats(bc_disk *disk, bc_block_job_stats *st);
/* Name of the data path of the disk's copy job, or of its last one; NULL if none. */
const char *job_copy_method(bc_disk *disk);

#endif /* BC_ENGINE_ENGINE_H */
