/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine internals shared by the engine sources (never included by lib/).
 *
 * Objects and locks, outermost first (a thread holding one may take the
 * ones below it, never the reverse):
 *
 *   disk->queues_lock  the list of asynchronous queues (quiesce harvests)
 *   q->lock      an asynchronous queue's completions (engine/queue.c)
 *   disk->lock   the disk's chain pointer, its job pointer, guest request
 *                accounting and the quiesce flag
 *   job->lock    the job's state, dirty and in-flight bitmaps, throttle,
 *                progress and first error
 *   eng->lock    the event queue and the callback list
 *
 * Guest writes: enter (wait while quiesced, count in flight, take a job
 * reference), write the source, mark the range dirty in the job's bitmap,
 * leave. A job starting drains the requests that entered before it
 * (disk_drain_untracked) before its allocation scan, so each write is
 * either marked dirty or seen by the scan. Marking after the source write and before the acknowledgement
 * means a copy that read older data is always followed by another copy of
 * the range; the in-flight bitmap keeps two copies of one granule from
 * overlapping, so a stale copy never lands after a newer one. With a
 * resume journal (engine/copy-journal.h, below job->lock as a leaf) a write
 * also sets its bits there before the source is written.
 *
 * Pivot: set quiesce (new guest requests wait), wait for the guest
 * requests in flight to drain, copy what is still dirty, flush the
 * destination, swap the chain, clear quiesce. The guest stall is the time
 * between setting and clearing quiesce.
 */
#ifndef BC_ENGINE_INTERNAL_H
#define BC_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "formats/fmt.h"

struct dirty_bitmap;
struct job;
struct bc_queue;
struct copy_journal;

struct engine_event {
	struct engine_event *next;
	bc_disk *disk; /* reference held until delivered */
	char *path;    /* the disk's path when the event was queued */
	int type;
	int status;
	struct error_record err;  /* FAILED: the job's error, set for the callbacks */
};

#define ENGINE_MAX_CALLBACKS 8

struct bc_engine {
	pthread_mutex_t lock;
	int efd;                        /* eventfd: readable while events queued */
	struct engine_event *head, *tail;
	struct {
		engine_event_cb cb;
		void *opaque;
	} cbs[ENGINE_MAX_CALLBACKS];
	int ncbs;
	int refs;                       /* 1 for the user + 1 per open disk */
};

struct bc_disk {
	bc_engine *eng;
	pthread_mutex_t lock;
	pthread_cond_t cond;            /* quiesce and drain */
	int refs;                       /* user + job + queued events */
	bool closed;                    /* bc_disk_close was called (atomic
					   access: queues read it unlocked) */
	unsigned int flags;             /* DISK_OPEN_* */
	struct fmt_image *top;          /* current chain; swapped at pivot */
	char *path;                     /* current top's path */
	char **old_paths;               /* earlier paths, kept until the disk is
					   freed: bc_disk_path() results stay valid */
	size_t n_old_paths;
	bool snapshotting;              /* a snapshot is being taken: no job may start */
	uint64_t size;
	unsigned int job_holds;         /* references held by a job (its thread):
					   bc_disk_close waits for them */
	unsigned int guest_inflight;    /* guest requests inside the disk */
	unsigned int untracked_inflight; /* ...of which entered with no job */
	bool quiesce;                   /* new guest requests wait */
	pthread_rwlock_t write_gate;    /* guest writes shared, pull chunks exclusive */
	struct job *job;                /* the disk's job, NULL when none */
	/* Asynchronous queues (engine/queue.c) open on the disk, so that a
	 * quiesce can collect their kernel completions. */
	pthread_mutex_t queues_lock;    /* above every other lock */
	struct bc_queue **queues;       /* [nqueues] (queues_lock) */
	size_t nqueues;
	bool has_last_stats;            /* a job has ended on this disk */
	struct job_stats last_stats;  /* ...and these were its statistics */
	const char *copy_method;        /* data path of the current or last copy
					   job (static string), NULL if none */
	struct copy_journal *journal;   /* resume journal of the copy job, or of
					   one that ended FAILED or canceled
					   (kept up to date until the disk
					   closes); a reference (disk->lock) */
};

/* Engine events and references. */
void engine_ref(bc_engine *eng);
void engine_unref(bc_engine *eng);
/*
 * Queue a job event. @err (FAILED only, else NULL) becomes the dispatching
 * thread's bc_error_get() while the callbacks run. Takes disk->lock and
 * eng->lock: call it holding neither.
 */
void engine_queue_event(bc_engine *eng, bc_disk *disk, int type, int status,
			const struct error_record *err);

void disk_ref(bc_disk *disk);
void disk_unref(bc_disk *disk);
/*
 * A job's reference: taken with disk->lock held (job_attach), dropped by
 * disk_unref_job(), which wakes a bc_disk_close() waiting for it.
 */
void disk_unref_job(bc_disk *disk);

/*
 * Make @path (malloc'd; ownership taken) the disk's path, keeping the old
 * string alive until the disk is freed. Caller holds disk->lock. Returns
 * 0 or -ENOMEM (then nothing changed and @path is freed).
 */
int disk_set_path_locked(bc_disk *disk, char *path);

/*
 * Make @top, the disk's top image (at open, snapshot and pivot), harvest
 * the disk's queues when a request waits for a range one of their direct
 * requests holds (fmt_image.io_map_kick): its owner may be the waiter.
 */
void disk_watch_top(bc_disk *disk, struct fmt_image *top);
/*
 * Quiesce the disk: new guest requests wait and the ones in flight drain.
 * Returns with disk->lock NOT held. disk_resume() lets guests go on.
 */
void disk_quiesce(bc_disk *disk);
void disk_resume(bc_disk *disk);

/*
 * Wait until every guest request that entered the disk before its job was
 * attached has left (requests entering now see the job and are tracked).
 * A job calls it once attached and before its allocation scan: a write
 * that entered earlier is not marked dirty by the job, so the scan must
 * see its result. New requests are not held. disk->lock NOT held.
 */
void disk_drain_untracked(bc_disk *disk);

/*
 * The guest data path in pieces, for asynchronous requests (queue.c) that
 * enter the disk on one thread, run on another and leave on a third.
 * Synchronous calls use the same pieces in one go.
 */

/* A guest request's view of the disk, taken at entry. */
struct guest_req {
	struct fmt_image *top; /* the chain it works on */
	struct job *job;       /* reference held until disk_guest_leave */
	struct copy_journal *journal; /* the disk's journal: guest writes set
					 its bits first; reference held
					 until disk_guest_leave */
	bool fast_read;        /* reads may go to the kernel directly: the
				  top is raw (flushes too), or its format
				  maps ranges for that (fmt_io_map) */
	bool fast_write;       /* ...and writes too: no job, or a copy job in
				  background mode (the write is then only
				  noted dirty, disk_guest_note_write) */
};

/*
 * Checks a request before it is queued: the disk is not closed, a write
 * is allowed (@write), [off, off+len) is inside the disk. Records the
 * error. Returns 0, -ESHUTDOWN (closed), -EROFS or -EINVAL.
 */
int disk_guest_check(bc_disk *disk, bool write, uint64_t off, uint64_t len);

/*
 * Enters the disk for @n requests sharing one view, without waiting:
 * false (nothing done) while the disk is quiesced. Each of the @n
 * requests must later call disk_guest_leave() with a copy of @req.
 */
bool disk_guest_try_enter(bc_disk *disk, unsigned int n,
			  struct guest_req *req);
/* Enters the disk for one request, waiting while it is quiesced (its
 * view has no fast route: it runs the synchronous code). */
void disk_guest_enter(bc_disk *disk, struct guest_req *req);
/* Leaves the disk: drops the job reference, wakes a waiting quiesce. */
void disk_guest_leave(bc_disk *disk, struct guest_req *req);

/* The bodies of the guest calls, for a request that has entered. */
int disk_guest_read(struct guest_req *req, void *buf, size_t n, uint64_t off);
int disk_guest_flush(struct guest_req *req);
int disk_guest_pwrite(bc_disk *disk, struct guest_req *req, const void *buf,
		      uint64_t off, uint64_t len);
/* @flags: FMT_ZERO_*. */
int disk_guest_write_zeroes(bc_disk *disk, struct guest_req *req,
			    uint64_t off, uint64_t len, unsigned int flags);
int disk_guest_discard(bc_disk *disk, struct guest_req *req, uint64_t off,
		       uint64_t len);
/*
 * A write that went to the top directly (fast_write) has completed:
 * the job marks it dirty. Before its completion is reported.
 */
void disk_guest_note_write(struct guest_req *req, uint64_t off, uint64_t len);

/* Registers/unregisters an asynchronous queue (disk_quiesce harvests it). */
int disk_add_queue(bc_disk *disk, struct bc_queue *q);
void disk_remove_queue(bc_disk *disk, struct bc_queue *q);

/* Job hooks called from the guest data path. */
void job_ref(struct job *job);
void job_unref(struct job *job);
void job_note_guest_write(struct job *job, uint64_t off, uint64_t len);

#endif /* BC_ENGINE_INTERNAL_H */
