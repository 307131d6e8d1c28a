/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libaio direct path of the asynchronous queues (BLOCKCOPY_IO=aio, or
 * no io_uring): what queue.c does with its io_uring, with a kernel AIO
 * context.
 *
 * The iocb of slot s is iocbs[s]; a completion's iocb pointer gives the
 * slot back. Every iocb signals one eventfd, which queue.c adds to the
 * completion fd: an AIO context has no fd of its own to poll. Only for
 * O_DIRECT descriptors (queue.c checks): without O_DIRECT, io_submit
 * performs the I/O before returning, and submission must not block.
 *
 * Threads: queue_aio_prep/submit run on the queue's owner; queue_aio_reap
 * under q->lock from any thread (io_getevents is thread-safe).
 */
#include "engine/queue.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libaio.h>

#include "lib/common/error.h"

struct queue_aio {
	io_context_t ctx;
	unsigned int depth;
	int efd;                 /* signalled at every completion */
	struct iocb *iocbs;      /* [depth], by slot */
	struct iocb **queued;    /* [depth] prepared, not submitted */
	unsigned int nqueued;
	struct io_event *events; /* [depth] */
};

void queue_aio_free(struct queue_aio *a)
{
	if (!a)
		return;
	if (a->ctx)
		io_destroy(a->ctx);
	if (a->efd >= 0)
		close(a->efd);
	free(a->iocbs);
	free(a->queued);
	free(a->events);
	free(a);
}

int queue_aio_new(unsigned int depth, struct queue_aio **out)
{
	struct queue_aio *a = calloc(1, sizeof(*a));
	int ret;

	if (!a)
		return -ENOMEM;
	a->depth = depth;
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	a->iocbs = calloc(depth, sizeof(*a->iocbs));
	a->queued = calloc(depth, sizeof(*a->queued));
	a->events = calloc(depth, sizeof(*a->events));
	if (a->efd < 0 || !a->iocbs || !a->queued || !a->events) {
		ret = a->efd < 0 ? -errno : -ENOMEM;
		goto err_free;
	}
	ret = io_setup((int)depth, &a->ctx);
	if (ret < 0) {
		a->ctx = 0;
		goto err_free;
	}
	*out = a;
	return 0;

err_free:
	queue_aio_free(a);
	return ret;
}

int queue_aio_fd(struct queue_aio *a)
{
	return a->efd;
}

void queue_aio_prep(struct queue_aio *a, unsigned int slot, bool write, int fd,
		    void *buf, size_t len, uint64_t off)
{
	struct iocb *cb = &a->iocbs[slot];

	assert(slot < a->depth && a->nqueued < a->depth);
	if (write)
		io_prep_pwrite(cb, fd, buf, len, (long long)off);
	else
		io_prep_pread(cb, fd, buf, len, (long long)off);
	io_set_eventfd(cb, a->efd);
	a->queued[a->nqueued++] = cb;
}

unsigned int queue_aio_submit(struct queue_aio *a, unsigned int *failed_slot,
			      int *err)
{
	unsigned int done = 0;

	while (done < a->nqueued) {
		int n = io_submit(a->ctx, (long)(a->nqueued - done),
				  a->queued + done);

		if (n > 0) {
			done += (unsigned int)n;
			continue;
		}
		if (n == -EAGAIN || n == -EINTR || n == 0)
			continue; /* kernel short of resources: try again */
		/* The kernel refused the first one: report it, go on. */
		*failed_slot = (unsigned int)(a->queued[done] - a->iocbs);
		*err = n;
		memmove(a->queued, a->queued + done + 1,
			(a->nqueued - done - 1) * sizeof(*a->queued));
		a->nqueued -= done + 1;
		return 1;
	}
	a->nqueued = 0;
	return 0;
}

unsigned int queue_aio_reap(struct queue_aio *a,
			    void (*complete)(void *opaque, unsigned int slot,
					     int64_t res),
			    void *opaque)
{
	struct timespec zero = { 0, 0 };
	unsigned int total = 0;
	uint64_t v;

	/* Reset first: a completion from now on signals it again. */
	(void)!read(a->efd, &v, sizeof(v));
	for (;;) {
		int n = io_getevents(a->ctx, 0, (long)a->depth, a->events, &zero);
		int i;

		if (n <= 0)
			break;
		for (i = 0; i < n; i++)
			complete(opaque,
				 (unsigned int)(a->events[i].obj - a->iocbs),
				 (int64_t)a->events[i].res);
		total += (unsigned int)n;
	}
	return total;
}
