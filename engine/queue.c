/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asynchronous guest I/O queues (bc_queue_*).
 *
 * A queue holds up to @depth requests in preallocated slots, from queueing
 * until the owner reaps the completion. A slot goes through:
 *
 *   free → queued (owner, bc_queue_read...) → submitted → done → free (reap)
 *
 * At submission the queued requests enter the disk together (one
 * disk->lock, disk_guest_try_enter), so that a pivot's quiesce counts them
 * in disk->guest_inflight until they complete. Each then takes one of
 * three routes:
 *
 *  - direct: a read, write or flush of a raw top, or a read or write that
 *    a qcow2 top maps to one host range (data it holds; for a write an
 *    in-place overwrite of clusters it owns, or whole clusters given new
 *    ones, linked at the completion: fmt_io_map, which keeps the range
 *    registered until then); the buffer aligned when the
 *    disk is O_DIRECT, and for a write no job or a copy in background
 *    mode without a resume journal (its bits are set before the source
 *    changes, on the synchronous path; a flush then syncs it first). It goes to the queue's own io_uring from the caller's buffer.
 *    When the kernel completes it, whoever harvests the ring (the owner in
 *    bc_queue_reap, or a quiesce waiting for the disk to drain) marks a
 *    write dirty in the job, leaves the disk, then posts the completion.
 *    So a quiesce never waits for an owner that is not reaping (it may be
 *    the owner itself, calling bc_block_job_abort).
 *  - pool: everything else runs on the queue's worker threads (started on
 *    demand, up to QUEUE_MAX_WORKERS) through the synchronous code of
 *    disk.c, which already holds every job guarantee (write gate, write-
 *    blocking mirror, dirty tracking). Workers never wait for a quiesce
 *    to end: they only take requests that have entered.
 *  - parked: the disk was quiesced at submission. The parker thread
 *    enters for each request, waiting for the quiesce to end, then hands
 *    it to the pool. A pivot thus drains what came before it and holds
 *    what came during it; none is lost.
 *
 * Completion fd: an epoll fd watching the ring's fd (readable while the
 * kernel has completions not yet harvested) and an eventfd that is
 * non-zero exactly while the done FIFO is not empty (set and reset under
 * q->lock). So it is readable while completions wait, and only then.
 *
 * Locking: the owner alone touches the free and queued slot lists, the
 * submission side of the ring and @submitted. q->lock covers the rest: the
 * ring's completion side, the done/work/parked FIFOs and the threads. Lock
 * order (engine/internal.h): disk->queues_lock → q->lock → disk->lock →
 * job->lock. Workers and the parker hold no lock while they run a request.
 *
 * Cost per direct request: no allocation, one disk->lock per submitted
 * batch and one per completion, one io_uring_enter per submit.
 */
#include "engine/queue.h"

#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/internal.h"
#include "engine/iob.h"
#include "formats/fmt.h"
#include "lib/common/clock.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define QUEUE_MAX_WORKERS  16u
#define QUEUE_HARVEST      64u         /* CQEs taken per peek */
#define QUEUE_DIRECT_MAX   (1u << 30)  /* fits the CQE's int result */
#define QUEUE_RING_SLICE_MS 10         /* longest wait inside the ring */

struct qreq {
	void *tag;
	void *buf;              /* READ/WRITE: the caller's, used in place */
	uint64_t off, len;
	enum queue_op op;
	unsigned int zflags;    /* ZEROES: FMT_ZERO_* */
	struct guest_req view;  /* from entry until leave */
	bool direct;            /* routed to the ring at submission */
	bool mapped;            /* direct through the format: @map is held */
	struct fmt_io_map map;  /* ...where the kernel reads or writes */
	int64_t ret;            /* bytes or -errno */
	int err_code;           /* ERR_* when ret < 0 */
	char *err_msg;          /* malloc'd when ret < 0; freed at reuse */
};

/* FIFO of slot numbers; a slot is in at most one, so it never overflows. */
struct fifo {
	unsigned int *v;        /* [cap] */
	unsigned int head, count, cap;
};

struct bc_queue {
	bc_disk *disk;          /* reference held */
	unsigned int depth;
	struct qreq *reqs;      /* [depth] */
	int efd;                /* eventfd: done FIFO not empty */
	int epfd;               /* the completion fd: efd + the ring's fd */

	/* Owner thread only. */
	unsigned int *free_slots; /* [depth] stack */
	unsigned int nfree;
	unsigned int *queued;   /* [depth] queued, not submitted, in order */
	unsigned int nqueued;
	unsigned int submitted; /* submitted, completion not yet reaped */

	pthread_mutex_t lock;   /* everything below */
	struct fifo done;       /* completed, not reaped */
	bool efd_set;           /* efd holds 1 (done is not empty) */
	struct fifo work;       /* entered, for the workers */
	struct fifo parked;     /* not entered (quiesced), for the parker */
	bool has_ring;
	struct io_uring ring;   /* submission: owner; completion: q->lock */
	struct queue_aio *aio;  /* libaio instead of io_uring (O_DIRECT only) */
	unsigned int ring_inflight; /* direct requests in the kernel */
	unsigned int pool_busy; /* with the parker or the workers */
	pthread_cond_t work_cond;
	pthread_cond_t park_cond;
	pthread_t workers[QUEUE_MAX_WORKERS];
	unsigned int nworkers, idle;
	pthread_t parker;
	bool has_parker;
	bool stopping;
};

static int fifo_init(struct fifo *f, unsigned int cap)
{
	f->v = calloc(cap, sizeof(*f->v));
	f->cap = cap;
	return f->v ? 0 : -ENOMEM;
}

static void fifo_push(struct fifo *f, unsigned int x)
{
	assert(f->count < f->cap);
	f->v[(f->head + f->count++) % f->cap] = x;
}

static unsigned int fifo_pop(struct fifo *f)
{
	unsigned int x = f->v[f->head];

	assert(f->count);
	f->head = (f->head + 1) % f->cap;
	f->count--;
	return x;
}

/* --- completions ------------------------------------------------------- */

/* The eventfd follows the done FIFO: set while it holds completions. */
static void sync_efd_locked(struct bc_queue *q)
{
	uint64_t v = 1;

	if (q->done.count && !q->efd_set) {
		/* Cannot fail: the counter only ever holds 0 or 1. */
		(void)!write(q->efd, &v, sizeof(v));
		q->efd_set = true;
	} else if (!q->done.count && q->efd_set) {
		(void)!read(q->efd, &v, sizeof(v));
		q->efd_set = false;
	}
}

static int watch(struct bc_queue *q, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN };

	if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;

		bc_error_set(bc_errno_to_code(err), err,
			     "cannot set up the completion fd");
		return -err;
	}
	return 0;
}

/*
 * Make the request's completion visible to the owner. The owner's own
 * harvest (@owner) leaves the eventfd alone: it takes the completions
 * next, and sync_efd_locked() settles the fd afterwards.
 */
static void post_locked(struct bc_queue *q, unsigned int slot, bool owner)
{
	fifo_push(&q->done, slot);
	if (!owner)
		sync_efd_locked(q);
}

/* Record a failure from the calling thread's error, or from the errno. */
static void fail_req(struct qreq *r, int neg_errno, const struct error_record *e)
{
	char ebuf[128];

	r->ret = neg_errno;
	if (e && e->code) {
		r->err_code = e->code;
		r->err_msg = strdup(e->message);
		return;
	}
	r->err_code = bc_errno_to_code(-neg_errno);
	if (asprintf(&r->err_msg, "%s: %s failed at offset %llu: %s",
		     r->view.top->filename,
		     r->op == QUEUE_FLUSH  ? "flush"
		     : r->op == QUEUE_READ ? "read"
					   : "write",
		     (unsigned long long)r->off,
		     strerror_r(-neg_errno, ebuf, sizeof(ebuf))) < 0)
		r->err_msg = NULL; /* reported as "" */
}

/* Put back a thread's error record saved before doing a request's work. */
static void restore_error(const struct error_record *saved)
{
	if (saved->code)
		bc_error_set(saved->code, saved->sys_errno, "%s", saved->message);
	else
		bc_error_reset();
}

/*
 * The kernel moved fewer bytes than asked (rare: a signal, the end of a
 * device, a file truncated under us): do the rest with the formats'
 * helpers, so that the outcome is the synchronous call's (a read short of
 * the size at open fails, never reads zeros). Their error record lands in
 * the request; the calling thread's own record is kept (it may be a job
 * thread draining the disk). Returns the request's result.
 */
static int64_t finish_short(struct qreq *r, uint64_t done)
{
	const struct fmt_image *top = r->view.top;
	uint8_t *p = (uint8_t *)r->buf + done;
	struct error_record saved = *bc_error_get();
	int fd = r->mapped ? r->map.fd : top->fd;
	uint64_t pos = (r->mapped ? r->map.host_off : r->off) + done;
	uint64_t end = r->mapped ? r->map.known_end : top->size;
	int ret;

	bc_error_reset();
	if (r->op == QUEUE_READ)
		ret = fmt_pread_file_within(fd, p, (size_t)(r->len - done), pos,
					    end);
	else
		ret = fmt_pwrite_file(fd, p, (size_t)(r->len - done), pos);
	if (ret < 0)
		fail_req(r, ret, bc_error_get());
	restore_error(&saved);
	return ret < 0 ? ret : (int64_t)r->len;
}

/*
 * Release a range the format mapped (fmt_io_unmap links the new clusters
 * of an allocating write); a failure to link fails the request. Like
 * finish_short(), keeps the calling thread's own error record. Runs under
 * q->lock (harvest_locked completes each CQE under it), so linking's
 * metadata I/O (an L2 table evicted since the mapping, refcounts) holds
 * the queue's lock; the mapping itself is done before it (queue_submit).
 */
static void unmap_request(struct qreq *r)
{
	struct error_record saved = *bc_error_get();
	int ret;

	bc_error_reset();
	ret = fmt_io_unmap(r->view.top, &r->map, r->ret < 0 ? (int)r->ret : 0);
	r->mapped = false;
	if (ret < 0 && r->ret >= 0)
		fail_req(r, ret, bc_error_get());
	restore_error(&saved);
}

/* A direct request's kernel completion: note, leave, post. */
static void complete_direct_locked(struct bc_queue *q, unsigned int slot,
				   int64_t res, bool owner)
{
	struct qreq *r = &q->reqs[slot];
	int64_t ret = res;

	iob_unpoison(r->buf, (size_t)r->len); /* the buffer is ours again */
	if (res >= 0 && r->op != QUEUE_FLUSH && (uint64_t)res < r->len) {
		/* Records its own failure in the request. */
		if (finish_short(r, (uint64_t)res) >= 0)
			r->ret = (int64_t)r->len;
	} else if (ret < 0) {
		fail_req(r, (int)ret, NULL);
	} else {
		r->ret = r->op == QUEUE_FLUSH ? 0 : (int64_t)r->len;
	}
	if (r->mapped)
		unmap_request(r);
	/* Even a failed write may have changed part of the range. */
	if (r->op == QUEUE_WRITE)
		disk_guest_note_write(&r->view, r->off, r->len);
	disk_guest_leave(q->disk, &r->view);
	post_locked(q, slot, owner);
}

struct aio_harvest {
	struct bc_queue *q;
	bool owner;
};

static void complete_aio(void *opaque, unsigned int slot, int64_t res)
{
	struct aio_harvest *h = opaque;

	complete_direct_locked(h->q, slot, res, h->owner);
}

/* Complete what the kernel has; @owner: the queue's owner is harvesting. */
static void harvest_locked(struct bc_queue *q, bool owner)
{
	struct io_uring_cqe *cqes[QUEUE_HARVEST];
	unsigned int n, i;

	if (q->aio && q->ring_inflight) {
		struct aio_harvest h = { .q = q, .owner = owner };

		q->ring_inflight -= queue_aio_reap(q->aio, complete_aio, &h);
		return;
	}
	while (q->ring_inflight) {
		n = io_uring_peek_batch_cqe(&q->ring, cqes, QUEUE_HARVEST);
		if (!n)
			break;
		for (i = 0; i < n; i++)
			complete_direct_locked(q, (unsigned int)cqes[i]->user_data,
					       cqes[i]->res, owner);
		io_uring_cq_advance(&q->ring, n);
		q->ring_inflight -= n;
	}
}

void queue_harvest(bc_queue *q)
{
	if (!q->has_ring && !q->aio)
		return;
	BC_LOCK_GUARD(&q->lock);
	harvest_locked(q, false);
}

/* --- the pool and the parker --------------------------------------------- */

/* Run an entered request through the synchronous code, then leave. */
static void run_sync(struct bc_queue *q, struct qreq *r)
{
	bc_disk *disk = q->disk;
	int ret = 0;

	bc_error_reset();
	switch (r->op) {
	case QUEUE_READ:
		ret = disk_guest_read(&r->view, r->buf, (size_t)r->len, r->off);
		break;
	case QUEUE_WRITE:
		ret = disk_guest_pwrite(disk, &r->view, r->buf, r->off, r->len);
		break;
	case QUEUE_ZEROES:
		ret = disk_guest_write_zeroes(disk, &r->view, r->off, r->len,
					      r->zflags);
		break;
	case QUEUE_DISCARD:
		ret = disk_guest_discard(disk, &r->view, r->off, r->len);
		break;
	case QUEUE_FLUSH:
		ret = disk_guest_flush(&r->view);
		break;
	}
	if (ret < 0)
		fail_req(r, ret, bc_error_get());
	else
		r->ret = r->op == QUEUE_READ || r->op == QUEUE_WRITE
				 ? (int64_t)r->len
				 : 0;
	disk_guest_leave(disk, &r->view);
}

static void *worker_main(void *arg)
{
	struct bc_queue *q = arg;
	unsigned int slot;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->work.count && !q->stopping) {
			q->idle++;
			pthread_cond_wait(&q->work_cond, &q->lock);
			q->idle--;
		}
		if (!q->work.count)
			break; /* stopping, nothing left */
		slot = fifo_pop(&q->work);
		pthread_mutex_unlock(&q->lock);
		run_sync(q, &q->reqs[slot]);
		pthread_mutex_lock(&q->lock);
		q->pool_busy--;
		post_locked(q, slot, false);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/*
 * Give an entered request to the pool, starting a worker when all are
 * busy. Returns 0, or -errno when no worker exists and none can start
 * (the request is then not queued).
 */
static int push_work_locked(struct bc_queue *q, unsigned int slot)
{
	unsigned int max = BC_MIN(q->depth, QUEUE_MAX_WORKERS);

	if (q->work.count + 1 > q->idle && q->nworkers < max) {
		int err = pthread_create(&q->workers[q->nworkers], NULL,
					 worker_main, q);

		if (!err)
			q->nworkers++;
		else if (!q->nworkers)
			return -err;
	}
	fifo_push(&q->work, slot);
	pthread_cond_signal(&q->work_cond);
	return 0;
}

/* A request that could not be handed to any thread completes failed. */
static void fail_now_locked(struct bc_queue *q, unsigned int slot, int err)
{
	struct qreq *r = &q->reqs[slot];

	r->ret = err;
	r->err_code = ERR_NO_MEMORY;
	r->err_msg = strdup("cannot start a worker thread for the request");
	q->pool_busy--;
	post_locked(q, slot, false);
}

static void *parker_main(void *arg)
{
	struct bc_queue *q = arg;
	unsigned int slot;
	int ret;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->parked.count && !q->stopping)
			pthread_cond_wait(&q->park_cond, &q->lock);
		if (!q->parked.count)
			break;
		slot = fifo_pop(&q->parked);
		pthread_mutex_unlock(&q->lock);
		/* Waits for the quiesce (pivot, pull, snapshot) to end. */
		disk_guest_enter(q->disk, &q->reqs[slot].view);
		pthread_mutex_lock(&q->lock);
		ret = push_work_locked(q, slot);
		if (ret < 0) {
			disk_guest_leave(q->disk, &q->reqs[slot].view);
			fail_now_locked(q, slot, ret);
		}
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static int park_locked(struct bc_queue *q, unsigned int slot)
{
	if (!q->has_parker) {
		int err = pthread_create(&q->parker, NULL, parker_main, q);

		if (err)
			return -err;
		q->has_parker = true;
	}
	fifo_push(&q->parked, slot);
	pthread_cond_signal(&q->park_cond);
	return 0;
}

/* --- the owner's calls --------------------------------------------------- */

/*
 * The direct path's backend, from BLOCKCOPY_IO as for the copy loop:
 * "uring" (io_uring or fail), "aio" (libaio), unset (io_uring, else
 * libaio). Where the chosen one cannot be had the pool does everything,
 * except that "uring" fails. Returns 0 or -errno.
 */
static int setup_backend(struct bc_queue *q)
{
	const char *want = getenv("BLOCKCOPY_IO");
	struct io_uring_params p = { .flags = 0 };
	char ebuf[128];
	int ret;

	if (!want || !*want || strcmp(want, "uring") == 0) {
		ret = io_uring_queue_init_params(q->depth, &q->ring, &p);
		if (ret == 0) {
			q->has_ring = true;
			return watch(q, q->ring.ring_fd);
		}
		if (want && *want) {
			bc_error_set(ERR_UNSUPPORTED, -ret,
				     "cannot set up io_uring for an I/O queue: %s",
				     strerror_r(-ret, ebuf, sizeof(ebuf)));
			return -ENOTSUP;
		}
	} else if (strcmp(want, "aio") != 0) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "BLOCKCOPY_IO=%s: expected uring or aio", want);
		return -EINVAL;
	}
	if (queue_aio_new(q->depth, &q->aio) < 0)
		return 0;
	return watch(q, queue_aio_fd(q->aio));
}

static void destroy(struct bc_queue *q)
{
	unsigned int i;

	for (i = 0; i < q->depth && q->reqs; i++)
		free(q->reqs[i].err_msg);
	if (q->has_ring)
		io_uring_queue_exit(&q->ring);
	queue_aio_free(q->aio);
	if (q->efd >= 0)
		close(q->efd);
	if (q->epfd >= 0)
		close(q->epfd);
	pthread_cond_destroy(&q->park_cond);
	pthread_cond_destroy(&q->work_cond);
	pthread_mutex_destroy(&q->lock);
	free(q->done.v);
	free(q->work.v);
	free(q->parked.v);
	free(q->queued);
	free(q->free_slots);
	free(q->reqs);
	free(q);
}

int queue_new(bc_disk *disk, unsigned int depth, bc_queue **out)
{
	struct bc_queue *q;
	unsigned int i;
	int ret;

	ret = disk_guest_check(disk, false, 0, 0);
	if (ret < 0)
		return ret;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->disk = disk;
	q->depth = depth;
	q->efd = -1;
	q->epfd = -1;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work_cond, NULL);
	pthread_cond_init(&q->park_cond, NULL);
	q->reqs = calloc(depth, sizeof(*q->reqs));
	q->free_slots = calloc(depth, sizeof(*q->free_slots));
	q->queued = calloc(depth, sizeof(*q->queued));
	if (!q->reqs || !q->free_slots || !q->queued ||
	    fifo_init(&q->done, depth) || fifo_init(&q->work, depth) ||
	    fifo_init(&q->parked, depth)) {
		ret = -ENOMEM;
		goto err_destroy;
	}
	for (i = 0; i < depth; i++)
		q->free_slots[i] = depth - 1 - i;
	q->nfree = depth;
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (q->efd < 0 || q->epfd < 0) {
		ret = -errno;
		bc_error_set(bc_errno_to_code(-ret), -ret,
			     "cannot create the completion fd");
		goto err_destroy;
	}
	ret = watch(q, q->efd);
	if (ret < 0)
		goto err_destroy;
	ret = setup_backend(q);
	if (ret < 0)
		goto err_destroy;
	ret = disk_add_queue(disk, q);
	if (ret < 0)
		goto err_destroy;
	disk_ref(disk);
	*out = q;
	return 0;

err_destroy:
	destroy(q);
	return ret;
}

int queue_add(bc_queue *q, enum queue_op op, void *buf, uint64_t off,
	      uint64_t len, void *tag, unsigned int zflags)
{
	struct qreq *r;
	unsigned int slot;
	int ret;

	ret = disk_guest_check(q->disk, op != QUEUE_READ && op != QUEUE_FLUSH,
			       off, len);
	if (ret < 0)
		return ret;
	if (!q->nfree) {
		bc_error_set(ERR_OPERATION_INVALID, EAGAIN,
			     "I/O queue is full: %u requests outstanding (reap completions first)",
			     q->depth);
		return -EAGAIN;
	}
	slot = q->free_slots[--q->nfree];
	r = &q->reqs[slot];
	free(r->err_msg);
	*r = (struct qreq){
		.tag = tag, .buf = buf, .off = off, .len = len, .op = op,
		.zflags = (zflags & DISK_ZEROES_MAY_UNMAP) ? FMT_ZERO_MAY_UNMAP : 0,
	};
	q->queued[q->nqueued++] = slot;
	return 0;
}

/*
 * Whether the request can go to the kernel from the caller's buffer: a
 * raw top's own offsets, or a range its format mapped (then held, r->map,
 * until the completion).
 */
static bool goes_direct(const struct bc_queue *q, struct qreq *r)
{
	const struct guest_req *v = &r->view;
	uint64_t a = v->top->request_align;

	if (q->aio) {
		/* libaio is asynchronous for O_DIRECT only; no flush. */
		if (!(v->top->flags & FMT_OPEN_DIRECT) || r->op == QUEUE_FLUSH)
			return false;
	} else if (!q->has_ring) {
		return false;
	}
	switch (r->op) {
	case QUEUE_FLUSH:
		/* A format's flush writes its metadata back, and a copy's
		 * journal is synced first (disk_guest_flush): not direct. */
		return v->fast_read && v->top->drv == &fmt_raw_driver &&
		       !v->journal;
	case QUEUE_READ:
		if (!v->fast_read)
			return false;
		break;
	case QUEUE_WRITE:
		if (!v->fast_write)
			return false;
		break;
	default:
		return false;
	}
	/* Misaligned O_DIRECT requests are bounced by the synchronous code. */
	if (!r->len || r->len > QUEUE_DIRECT_MAX || !bc_is_aligned(r->off, a) ||
	    !bc_is_aligned(r->len, a) || !bc_is_aligned((uintptr_t)r->buf, a))
		return false;
	if (v->top->drv == &fmt_raw_driver)
		return true;
	/* Anything the format must do itself (allocation, copy-on-write,
	 * other layers, a conflicting request) goes to the pool. */
	{
		/* A refusal is not the caller's error: keep its record. */
		struct error_record saved = *bc_error_get();

		r->mapped = fmt_io_map(v->top, r->op == QUEUE_WRITE, r->off,
				       r->len, &r->map) == 0;
		restore_error(&saved);
	}
	return r->mapped;
}

static void prep_direct(struct bc_queue *q, unsigned int slot)
{
	struct qreq *r = &q->reqs[slot];
	int fd = r->mapped ? r->map.fd : r->view.top->fd;
	uint64_t off = r->mapped ? r->map.host_off : r->off;
	struct io_uring_sqe *sqe;

	/* The kernel's until the completion (ASan: any access is reported). */
	iob_poison(r->buf, (size_t)r->len);
	if (q->aio) {
		queue_aio_prep(q->aio, slot, r->op == QUEUE_WRITE, fd, r->buf,
			       (size_t)r->len, off);
		return;
	}
	sqe = io_uring_get_sqe(&q->ring);
	/* The ring has depth entries and at most depth requests exist. */
	assert(sqe);
	if (r->op == QUEUE_READ)
		io_uring_prep_read(sqe, fd, r->buf, (unsigned int)r->len, off);
	else if (r->op == QUEUE_WRITE)
		io_uring_prep_write(sqe, fd, r->buf, (unsigned int)r->len, off);
	else
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(sqe, slot);
}

static void submit_ring(struct bc_queue *q, unsigned int n)
{
	unsigned int slot;
	int err;

	while (q->aio && queue_aio_submit(q->aio, &slot, &err)) {
		/* Refused at submission: completes with the error. */
		BC_LOCK_GUARD(&q->lock);
		q->ring_inflight--;
		complete_direct_locked(q, slot, err, false);
	}
	while (!q->aio && n) {
		int ret = io_uring_submit(&q->ring);

		if (ret > 0) {
			n -= BC_MIN((unsigned int)ret, n);
			continue;
		}
		/* Transient (no memory for the kernel, completions to take). */
		assert(ret == 0 || ret == -EINTR || ret == -EAGAIN ||
		       ret == -EBUSY);
		queue_harvest(q);
		sched_yield();
	}
}

int queue_submit(bc_queue *q)
{
	unsigned int i, n = q->nqueued, ndirect = 0;
	struct guest_req view;
	bool entered;
	int ret;

	if (!n)
		return 0;
	entered = disk_guest_try_enter(q->disk, n, &view);
	/*
	 * Routes are chosen before q->lock: fmt_io_map may read metadata (a
	 * qcow2 L2 table the cache misses) or wait for the driver's lock,
	 * and q->lock must not wait for that (workers post under it, a
	 * quiesce harvests under it). The queued slots and the ring's
	 * submission side are the owner's: no lock needed for them.
	 */
	for (i = 0; i < n; i++) {
		unsigned int slot = q->queued[i];
		struct qreq *r = &q->reqs[slot];

		r->direct = false;
		if (!entered)
			continue;
		r->view = view;
		r->direct = goes_direct(q, r);
		if (r->direct) {
			prep_direct(q, slot);
			ndirect++;
		}
	}
	pthread_mutex_lock(&q->lock);
	for (i = 0; i < n; i++) {
		unsigned int slot = q->queued[i];
		struct qreq *r = &q->reqs[slot];

		if (!entered) {
			q->pool_busy++;
			ret = park_locked(q, slot);
			if (ret < 0)
				fail_now_locked(q, slot, ret);
			continue;
		}
		if (r->direct)
			continue;
		q->pool_busy++;
		ret = push_work_locked(q, slot);
		if (ret < 0) {
			disk_guest_leave(q->disk, &r->view);
			fail_now_locked(q, slot, ret);
		}
	}
	q->ring_inflight += ndirect;
	pthread_mutex_unlock(&q->lock);
	if (ndirect)
		submit_ring(q, ndirect);
	q->nqueued = 0;
	q->submitted += n;
	return (int)n;
}

int queue_completion_fd(bc_queue *q)
{
	return q->epfd;
}

/* Move up to @max done completions to @out; returns how many. */
static int take_done(struct bc_queue *q, struct queue_completion *out, int max)
{
	int n = 0;

	BC_LOCK_GUARD(&q->lock);
	harvest_locked(q, true);
	while (n < max && q->done.count) {
		unsigned int slot = fifo_pop(&q->done);
		struct qreq *r = &q->reqs[slot];

		if (out) {
			out[n].tag = r->tag;
			out[n].ret = r->ret;
			out[n].error_code = r->ret < 0 ? r->err_code : ERR_OK;
			out[n].error_message = r->ret < 0 && r->err_msg
						       ? r->err_msg
						       : "";
		}
		q->free_slots[q->nfree++] = slot;
		n++;
	}
	sync_efd_locked(q);
	return n;
}

/*
 * Sleep until a completion may be ready or @wait_ms (< 0: no limit)
 * passed. When only direct requests are outstanding, wait in the ring
 * itself: a wait in io_uring_enter wakes as the kernel completes, where a
 * poll of the ring's fd wakes late. Returns 0 or -errno.
 */
static int wait_completion(struct bc_queue *q, int wait_ms)
{
	struct pollfd pfd = { .fd = q->epfd, .events = POLLIN };
	bool ring_only;

	pthread_mutex_lock(&q->lock);
	ring_only = q->has_ring && q->ring_inflight && !q->pool_busy &&
		    !q->done.count;
	pthread_mutex_unlock(&q->lock);
	if (ring_only) {
		/*
		 * A quiesce may harvest the CQE this wait expects (then only
		 * the eventfd tells): wait in slices, the caller looks again.
		 */
		int slice = wait_ms < 0 || wait_ms > QUEUE_RING_SLICE_MS
				    ? QUEUE_RING_SLICE_MS
				    : wait_ms;
		struct __kernel_timespec ts = {
			.tv_sec = 0,
			.tv_nsec = (long long)slice * 1000000,
		};
		struct io_uring_cqe *cqe;
		int ret;

		/* Only a wake-up: whoever holds q->lock takes the CQE. */
		ret = io_uring_wait_cqe_timeout(&q->ring, &cqe, &ts);
		return ret == -ETIME || ret == -EINTR ? 0 : ret;
	}
	if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR)
		return -errno;
	return 0;
}

static int64_t now_ms(void)
{
	return (int64_t)(bc_now_ns() / 1000000);
}

int queue_reap(bc_queue *q, struct queue_completion *out, int min, int max,
	       int timeout_ms)
{
	int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	int n = 0;

	if ((unsigned int)min > q->submitted) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "cannot wait for %d completions: %u requests are submitted and not reaped",
			     min, q->submitted);
		return -EINVAL;
	}
	for (;;) {
		int wait_ms, ret;

		n += take_done(q, out ? out + n : NULL, max - n);
		if (n >= min || timeout_ms == 0)
			break;
		wait_ms = -1;
		if (timeout_ms > 0) {
			int64_t left = deadline - now_ms();

			if (left <= 0)
				break;
			wait_ms = (int)left;
		}
		ret = wait_completion(q, wait_ms);
		if (ret < 0) {
			bc_error_set(bc_errno_to_code(-ret), -ret,
				     "cannot wait for I/O completions");
			q->submitted -= (unsigned int)n;
			return ret;
		}
	}
	q->submitted -= (unsigned int)n;
	return n;
}

void queue_free(bc_queue *q)
{
	bc_disk *disk = q->disk;
	unsigned int i;

	/* Queued, never submitted: never entered, just dropped. */
	q->nqueued = 0;
	while (q->submitted) {
		int n = queue_reap(q, NULL, 1, (int)q->submitted, -1);

		assert(n > 0);
	}
	disk_remove_queue(disk, q);
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->work_cond);
	pthread_cond_broadcast(&q->park_cond);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->nworkers; i++)
		pthread_join(q->workers[i], NULL);
	if (q->has_parker)
		pthread_join(q->parker, NULL);
	destroy(q);
	disk_unref(disk);
}
