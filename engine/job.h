/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block jobs (private to engine/job.c, mirror.c, pull.c).
 *
 * A job runs on its own thread. Requests from the API (abort, pivot,
 * resume, set-speed) change the job's state under job->lock and wake the
 * thread with job->cond; callers that wait for an outcome sleep on
 * job->done_cond. The state is one enum, changed only by
 * job_set_state_locked(), which asserts that the transition is in the
 * table below.
 *
 *   state       what the job does                      leaves for
 *   ----------  -------------------------------------  ----------------------
 *   CREATED     attached (guest writes tracked),       RUNNING (thread starts),
 *               destination opened, initial scan       CANCELING (aborted)
 *   RUNNING     COPY: bulk copy; PULL: pulling         READY (COPY: in sync),
 *                                                      PAUSED, CANCELING,
 *                                                      CONCLUDING
 *   READY       COPY: in sync once (MIRRORING queued); PAUSED, PIVOTING,
 *               mirrors guest writes                   FINISHING, CONCLUDING
 *   PAUSED      COPY, on-target-error=stop: stopped    RUNNING or READY
 *               on a destination error; guest writes   (resume, back where it
 *               are still tracked (PAUSED event)       was), CANCELING,
 *                                                      CONCLUDING (a source
 *                                                      error of a request
 *                                                      still in flight)
 *   PIVOTING    COPY after READY, pivot requested:     CONCLUDING (switched,
 *               quiesce, final sync, verify, switch    or failed), READY
 *                                                      (verification refused),
 *                                                      FINISHING (refused, and
 *                                                      an abort came meanwhile)
 *   FINISHING   COPY, abort after READY: quiesce,      CONCLUDING
 *               final sync, flush, keep the source
 *   CANCELING   abort before READY, of a PULL or of a  CONCLUDING
 *               PAUSED job: stop now
 *   CONCLUDING  outcome decided; guest writes no       CONCLUDED
 *               longer tracked nor mirrored; drain
 *   CONCLUDED   event queued, no longer the disk's     (final)
 *               job; waiters wake
 *
 * Any error that is not handled by the target-error policy records the
 * job's first error and leads to CONCLUDING with status FAILED. The
 * policy (COPY only, destination errors in RUNNING and READY; while
 * pivoting or finishing an error always fails the job; after a cancel a
 * destination error changes nothing): REPORT fails the job; STOP
 * re-dirties the range and enters PAUSED (destination errors of requests
 * still in flight while PAUSED change nothing more); IGNORE re-dirties
 * the range and retries it after a back-off, failing the job after
 * JOB_TARGET_RETRY_MAX rounds of destination errors without a success.
 *
 * The pivot protocol lives in mirror.c (pivot_or_finish): quiesce the
 * guest (new requests wait, in-flight ones drain), copy what is still
 * dirty, flush, verify when asked, swap the disk's chain, conclude, and
 * only then let the guest resume.
 *
 * Write-blocking mode (job->write_blocking) is a mode of RUNNING/READY,
 * not a state: guest writes reach the destination before they are
 * acknowledged.
 */
#ifndef BC_ENGINE_JOB_H
#define BC_ENGINE_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/copy-journal.h"
#include "engine/copy-method.h"
#include "engine/dirty-bitmap.h"
#include "engine/internal.h"
#include "engine/throttle.h"

enum job_state {
	JOB_CREATED,
	JOB_RUNNING,
	JOB_READY,
	JOB_PAUSED,
	JOB_PIVOTING,
	JOB_FINISHING,
	JOB_CANCELING,
	JOB_CONCLUDING,
	JOB_CONCLUDED,
};

/*
 * IGNORE policy: rounds of retries before the job fails. A round is the
 * destination errors of one back-off period; a successful destination
 * write starts the count again.
 */
#define JOB_TARGET_RETRY_MAX 8

struct job {
	bc_disk *disk;                /* reference held for the job's life */
	int type;                     /* JOB_TYPE_* */
	atomic_int refs;

	pthread_mutex_t lock;
	pthread_cond_t cond;          /* wakes the job thread */
	pthread_cond_t done_cond;     /* wakes callers waiting for an outcome */
	enum job_state state;         /* job_set_state_locked() only */
	enum job_state paused_from;   /* PAUSED: RUNNING or READY, for resume */
	bool pivot_verify;            /* PIVOTING: compare before switching */
	bool finish_after_pivot;      /* PIVOTING: an abort came; applies if
					 the pivot is refused */
	unsigned int pivot_refusals;  /* verification refusals so far */
	struct error_record refuse_err;          /* ...the last one's reason */
	bool write_blocking;          /* mode: guest writes reach the
					 destination first */
	enum job_target_policy on_target_error; /* COPY */
	unsigned int target_errors;   /* IGNORE: consecutive rounds of errors */
	uint64_t retry_at_ns;         /* IGNORE: no copy issued before this */
	struct error_record pause_err;           /* PAUSED: the error that paused it */
	int end_status;               /* CONCLUDED: enum job_event of the event */
	int end_ret;                  /* 0, or -errno of the failure */
	struct error_record err;                 /* first error, code 0 when none */

	struct dirty_bitmap *dirty;            /* COPY: granules to copy; PULL: granules
					 guest writes touched since the chunk began
					 (pull.c) (job->lock) */
	struct dirty_bitmap *inflight;         /* granules being copied or written by an
					 active guest write (job->lock) */
	pthread_cond_t inflight_cond; /* an in-flight range was released */
	struct throttle throttle;     /* bandwidth limit (job->lock) */
	uint64_t bandwidth;           /* bytes/s, 0 = unlimited */
	uint64_t cur;                 /* bytes done */
	uint64_t inflight_bytes;
	uint64_t end_fixed;           /* pull: total bytes; copy: unused */

	/* COPY */
	struct job_copy_opts opts;
	struct fmt_image *dest;       /* destination chain, owned until pivot */
	char *dest_path;
	bool dest_fresh;              /* created by us: reads zero everywhere */
	uint64_t scan_data;           /* data (not zero) bytes the allocation
					 scan marked: what a new destination
					 allocates (fmt_reserve) */
	uint8_t *scan_bits;           /* incremental copy: the bitmap's bits,
					 used by mirror_scan() then freed */
	uint64_t scan_nbits;
	uint32_t scan_gran_bits;
	enum copy_method method;      /* data path, chosen at start */
	struct copy_journal *journal; /* resume journal (engine/copy-journal.h),
					 NULL = none; a reference, set before
					 the thread starts */
	/* statistics (job->lock) */
	uint64_t t0_ns;               /* job start */
	uint64_t mirroring_ns;
	uint64_t mode_switch_ns;
	uint64_t stall_ns;            /* guest stall of the pivot or finish */
	uint64_t bytes_copied;
	uint64_t bytes_zeroed;
	uint64_t blocking_writes;     /* guest writes mirrored in write-blocking
					 mode (stats: active_writes) */
	bool dest_unflushed;          /* written since the last flush */

	/* PULL */
	int base_depth;               /* layer depth of base; chain length if none */
	char *base_name;              /* backing name to record, NULL = none */
	char *base_fmt;
};

/* The one place the state changes; asserts the transition is allowed. */
void job_set_state_locked(struct job *job, enum job_state to);
/* Whether guest writes are tracked (marked dirty): before CONCLUDING. */
bool job_is_tracking_locked(const struct job *job);

/* Keep the first error: the calling thread's recorded one, or from @ret. */
void job_set_error(struct job *job, int ret);
/*
 * A destination error @ret (recorded in the calling thread's error) on a
 * range the caller has re-dirtied: applies the target-error policy
 * (header comment). Returns true when the job goes on (paused, or to retry
 * the range), false when it fails (the error is then the job's).
 */
bool job_target_error(struct job *job, int ret);
/* A destination write succeeded: the IGNORE policy's count restarts. */
void job_target_ok_locked(struct job *job);
/*
 * Outcome decided: CONCLUDING, so later guest writes neither mark nor
 * mirror (guests must be quiesced, or it must be the end). Idempotent.
 */
void job_conclude(struct job *job);
/* End the job: conclude, leave the disk, queue the event, CONCLUDED, wake
 * waiters, drop refs. */
void job_finish(struct job *job, int status);

/*
 * The job is done with its journal. @remove (the copy is complete, or it
 * never started): the disk forgets it and the file is removed. Else the
 * disk keeps it, recording guest writes, for a later resume.
 */
void job_journal_detach(struct job *job, bool remove);

/* Fill @st from the job (takes job->lock). */
void job_fill_stats(struct job *job, struct job_stats *st);

/*
 * Every guest write of a disk with a COPY job, from the guest write path:
 * mirror_guest_write_begin() before writing the source, in write-blocking
 * mode, waits for in-flight copies overlapping the range and claims it;
 * mirror_guest_write_end() after the source write writes the destination
 * too (when the range was claimed) and updates the dirty bitmap, or just
 * marks the range dirty.
 */
struct write_claim {
	bool claimed;           /* granules held in flight */
	bool mirror;            /* the destination gets the write too */
	uint64_t g_off, g_end;  /* granule-aligned range held in flight */
};

enum guest_write_kind {
	GUEST_WRITE_DATA,
	GUEST_WRITE_ZEROES,
	GUEST_WRITE_DISCARD,
};

void mirror_guest_write_begin(struct job *job, enum guest_write_kind kind,
			      uint64_t off, uint64_t len,
			      struct write_claim *wc);
void mirror_guest_write_end(struct job *job, enum guest_write_kind kind,
			    const void *buf, uint64_t off, uint64_t len,
			    unsigned int zflags, int src_ret,
			    struct write_claim *wc);

/* Mark what a COPY job must copy first (before its thread starts). */
int mirror_scan(struct job *job);

/* Thread bodies. */
void *mirror_main(void *arg);
void *pull_main(void *arg);

/* Monotonic clock in ns. */
uint64_t job_now_ns(void);

#endif /* BC_ENGINE_JOB_H */
