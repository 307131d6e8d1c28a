/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libaio backend: the fallback where io_uring is unavailable.
 *
 * One kernel AIO context of depth events; the iocb of a request is
 * iocbs[slot], so a completion's iocb pointer gives the slot back with a
 * subtraction. Reads and writes queue their iocb in prep order and
 * iob_submit() hands them over with one io_submit; a request the kernel
 * refuses there (io_submit reports its error and stops at it) completes
 * with that error and the rest are submitted, so callers see errors the
 * same way as with io_uring (bad fd: a -EBADF completion).
 *
 * fsync: performed synchronously with fdatasync() by iob_submit(), after
 * the batch's io_submit, then completed like any other request.
 * IOCB_CMD_FDSYNC is not supported on every kernel and file system, and
 * the copy loop flushes rarely (pivot, completion).
 *
 * Without O_DIRECT, io_submit performs the I/O before returning:
 * asynchronous only with O_DIRECT, a libaio property.
 */
#include "iob.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libaio.h>

#include "lib/common/util.h"

struct iob_aio {
	struct iob iob;
	io_context_t ctx;
	struct iocb *iocbs;   /* [depth], indexed by slot */
	struct iocb **queued; /* [depth] prepared reads/writes, prep order */
	unsigned nqueued;
	unsigned *fsyncs; /* [depth] slots of prepared fsyncs */
	unsigned nfsyncs;
	struct io_event *events; /* [depth] for io_getevents */
};

static struct iob_aio *to_aio(struct iob *iob)
{
	return iob_container_of(iob, struct iob_aio, iob);
}

static unsigned slot_of(const struct iob_aio *a, const struct iocb *cb)
{
	assert(cb >= a->iocbs && cb < a->iocbs + a->iob.depth);
	return (unsigned)(cb - a->iocbs);
}

static int aio_prep(struct iob *iob, unsigned slot, enum iob_op op, int fd,
		    void *buf, size_t len, uint64_t off)
{
	struct iob_aio *a = to_aio(iob);
	struct iocb *cb = &a->iocbs[slot];

	/* off <= INT64_MAX was checked by iob.c. */
	switch (op) {
	case IOB_READ:
		io_prep_pread(cb, fd, buf, len, (long long)off);
		a->queued[a->nqueued++] = cb;
		break;
	case IOB_WRITE:
		io_prep_pwrite(cb, fd, buf, len, (long long)off);
		a->queued[a->nqueued++] = cb;
		break;
	case IOB_FSYNC:
		memset(cb, 0, sizeof(*cb));
		cb->aio_fildes = fd;
		a->fsyncs[a->nfsyncs++] = slot;
		break;
	case IOB_ANY:
		/* A fault-injection filter; iob.c never queues it. */
		assert(op != IOB_ANY);
		break;
	}
	return 0;
}

static int aio_submit(struct iob *iob)
{
	struct iob_aio *a = to_aio(iob);
	unsigned done = 0, i, slot;
	int ret;

	while (done < a->nqueued) {
		ret = io_submit(a->ctx, (long)(a->nqueued - done),
				a->queued + done);
		if (ret == -EINTR)
			continue;
		if (ret <= 0) {
			/* Refused first iocb: its error becomes its completion. */
			iob_complete_now(iob, slot_of(a, a->queued[done]),
					 ret < 0 ? ret : -EAGAIN);
			done++;
		} else {
			done += (unsigned)ret;
		}
	}
	a->nqueued = 0;
	for (i = 0; i < a->nfsyncs; i++) {
		slot = a->fsyncs[i];
		ret = fdatasync(a->iocbs[slot].aio_fildes);
		iob_complete_now(iob, slot, ret < 0 ? -errno : 0);
	}
	a->nfsyncs = 0;
	return 0;
}

static int aio_wait(struct iob *iob, unsigned min, struct iob_cqe *cqes,
		    unsigned max, int timeout_ms)
{
	struct iob_aio *a = to_aio(iob);
	struct timespec ts = {0, 0}, *tsp = &ts;
	struct io_event *ev;
	int ret, i;

	if (min && timeout_ms < 0) {
		tsp = NULL;
	} else if (min) {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000;
	}
	if (max > iob->depth)
		max = iob->depth;
	/* An interrupted wait restarts with the full timeout. */
	do {
		ret = io_getevents(a->ctx, (long)min, (long)max, a->events,
				   tsp);
	} while (ret == -EINTR);
	if (ret < 0) {
		iob_error(ret, "io_getevents");
		return ret;
	}
	for (i = 0; i < ret; i++) {
		ev = &a->events[i];
		cqes[i].user_data = slot_of(a, ev->obj);
		/* The kernel stores a long: bytes or -errno. */
		cqes[i].res = (int64_t)(long)ev->res;
	}
	return ret;
}

static int aio_register_buffers(struct iob *iob, const struct iovec *iov,
				unsigned n)
{
	/* libaio has no fixed buffers: nothing to gain, nothing to do. */
	return 0;
}

static void aio_destroy(struct iob *iob)
{
	struct iob_aio *a = to_aio(iob);

	if (a->ctx)
		(void)io_destroy(a->ctx);
	free(a->iocbs);
	free(a->queued);
	free(a->fsyncs);
	free(a->events);
	iob_fini(iob);
	free(a);
}

static const struct iob_ops aio_ops = {
	.name = "aio",
	.prep = aio_prep,
	.submit = aio_submit,
	.wait = aio_wait,
	.register_buffers = aio_register_buffers,
	.destroy = aio_destroy,
	.wait_submits = false,
};

int iob_aio_new(unsigned depth, struct iob **out)
{
	struct iob_aio *a = calloc(1, sizeof(*a));
	int ret;

	if (!a) {
		iob_error(-ENOMEM, "libaio context");
		return -ENOMEM;
	}
	ret = iob_init(&a->iob, &aio_ops, depth);
	if (ret < 0) {
		free(a);
		return ret;
	}
	a->iocbs = calloc(depth, sizeof(*a->iocbs));
	/* An array of pointers. NOLINTNEXTLINE(bugprone-sizeof-expression) */
	a->queued = calloc(depth, sizeof(*a->queued));
	a->fsyncs = calloc(depth, sizeof(*a->fsyncs));
	a->events = calloc(depth, sizeof(*a->events));
	if (!a->iocbs || !a->queued || !a->fsyncs || !a->events) {
		iob_error(-ENOMEM, "libaio context of depth %u", depth);
		aio_destroy(&a->iob);
		return -ENOMEM;
	}
	ret = io_setup((int)depth, &a->ctx);
	if (ret < 0) {
		a->ctx = 0;
		iob_error(ret, "io_setup(%u)", depth);
		aio_destroy(&a->iob);
		return ret;
	}
	*out = &a->iob;
	return 0;
}

int iob_aio_probe(void)
{
	io_context_t ctx = 0;
	int ret;

	ret = io_setup(1, &ctx);
	if (ret < 0)
		return ret;
	(void)io_destroy(ctx);
	return 0;
}
