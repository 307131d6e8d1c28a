/*
 * Block jobs (private to engine/job.c, mirror.c, pull.c).
 *
 * A job runs on its own thread. Requests from the API (cancel, finish,
 * pivot, set-speed) are posted under job->lock and wake the thread with
 * job->cond; callers that wait for the end sleep on job->done_cond.
 *
 * Life cycle of a COPY job: RUNNING (bulk phase) → ready (MIRRORING
 * event, sticky) → on pivot or abort: quiesce the guest, copy the
 * remainder, flush → COMPLETED (pivoted) or CANCELED; an error at any
 * point → FAILED with the source untouched and in use.
 * A PULL job: RUNNING → rewrite the top's backing pointer → COMPLETED.
 */
#ifndef BC_ENGINE_JOB_H
#define BC_ENGINE_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/copy-method.h"
#include "engine/dbm.h"
#include "engine/internal.h"
#include "engine/throttle.h"

enum job_request {
	JOB_REQ_NONE = 0,
	JOB_REQ_CANCEL, /* stop now; destination content undefined */
	JOB_REQ_FINISH, /* after MIRRORING: sync, flush, keep the source */
	JOB_REQ_PIVOT,  /* after MIRRORING: sync, flush, switch to the copy */
};

struct job {
	bc_disk *disk;                /* reference held for the job's life */
	int type;                     /* BC_BLOCK_JOB_TYPE_* */
	atomic_int refs;

	pthread_mutex_t lock;
	pthread_cond_t cond;          /* wakes the job thread */
	pthread_cond_t done_cond;     /* wakes callers waiting for the end */
	enum job_request req;
	enum job_request req_after_pivot; /* an abort that came during a pivot */
	bool ready;                   /* MIRRORING reached (sticky) */
	bool finished;                /* ended; disk->job is NULL */
	bool verify;                  /* the pivot request asks for verification */
	bool pivot_refused;           /* verification failed: pivot refused */
	bc_error refuse_err;          /* ...and why, for the pivot caller */
	bool detached;                /* no longer the disk's job: guest writes
					 are neither tracked nor mirrored */
	bool write_blocking;          /* guest writes reach the destination first */
	int end_ret;                  /* 0, or -errno of the failure */
	bc_error err;                 /* first error, code 0 when none */

	struct dbm *dirty;            /* granules to copy (job->lock) */
	struct dbm *inflight;         /* granules being copied or written by an
					 active guest write (job->lock) */
	pthread_cond_t inflight_cond; /* an in-flight range was released */
	struct thr thr;               /* bandwidth limit (job->lock) */
	uint64_t bandwidth;           /* bytes/s, 0 = unlimited */
	uint64_t cur;                 /* bytes done */
	uint64_t inflight_bytes;
	uint64_t end_fixed;           /* pull: total bytes; copy: unused */

	/* COPY */
	struct job_copy_opts opts;
	struct fmt_image *dest;       /* destination chain, owned until pivot */
	char *dest_path;
	bool dest_fresh;              /* created by us: reads zero everywhere */
	enum copy_method method;      /* data path, chosen at start */
	/* statistics (job->lock) */
	uint64_t t0_ns;               /* job start */
	uint64_t mirroring_ns;
	uint64_t mode_switch_ns;
	uint64_t stall_ns;            /* guest stall of the pivot or finish */
	uint64_t bytes_copied;
	uint64_t bytes_zeroed;
	uint64_t active_writes;
	bool dest_unflushed;          /* written since the last flush */

	/* PULL */
	int base_depth;               /* layer depth of base; chain length if none */
	char *base_name;              /* backing name to record, NULL = none */
	char *base_fmt;
};

/* Keep the first error: the calling thread's recorded one, or from @ret. */
void job_set_error(struct job *job, int ret);
/*
 * Later guest writes neither mark nor mirror (guests must be quiesced, or
 * it must be the end). Idempotent.
 */
void job_stop_tracking(struct job *job);
/* End the job: stop tracking, leave the disk, queue the event, wake
 * waiters, drop refs. */
void job_finish(struct job *job, int status);

/* Fill @st from the job (takes job->lock). */
void job_fill_stats(struct job *job, bc_block_job_stats *st);

/*
 * Active mirroring (write-blocking mode) from the guest write path:
 * mirror_active_begin() before writing the source waits for in-flight
 * copies overlapping the range and claims it; mirror_active_end() after
 * the source write writes the destination too (when the range was
 * claimed) and updates the dirty bitmap, or just marks it dirty.
 */
struct active_write {
	bool claimed;           /* granules held in flight */
	bool mirror;            /* the destination gets the write too */
	uint64_t g_off, g_end;  /* granule-aligned range held in flight */
};

enum active_kind { ACTIVE_DATA, ACTIVE_ZEROES, ACTIVE_DISCARD };

void mirror_active_begin(struct job *job, enum active_kind kind,
			 uint64_t off, uint64_t len, struct active_write *aw);
void mirror_active_end(struct job *job, enum active_kind kind,
		       const void *buf, uint64_t off, uint64_t len,
		       unsigned int zflags, int src_ret,
		       struct active_write *aw);

/* Mark what a COPY job must copy first (before its thread starts). */
int mirror_scan(struct job *job);

/* Thread bodies. */
void *mirror_main(void *arg);
void *pull_main(void *arg);

/* Monotonic clock in ns. */
uint64_t job_now_ns(void);

#endif /* BC_ENGINE_JOB_H */
