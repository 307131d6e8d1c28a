/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * I/O backend common code: backend selection, request slots, argument
 * checks, completions made without the kernel, ASan poisoning.
 *
 * Slots: @depth request slots are allocated once by iob_init(); a free
 * stack hands them out in O(1), so the data path never allocates. The
 * backend tags each kernel request with its slot number, and iob_wait()
 * maps it back to the caller's user_data, unpoisons the buffer and frees
 * the slot. outstanding = slots in use, which bounds everything the
 * backend can have queued or in flight to @depth: the io_uring SQ/CQ and
 * the libaio event ring are sized from it and can never overflow.
 *
 * Completions made without the kernel (libaio fsync, submissions the
 * kernel refused, injected faults in test builds) wait in a FIFO of @depth entries and
 * are returned first by iob_wait().
 */
#include "iob.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

void iob_error(int neg_errno, const char *fmt, ...)
{
	char what[256], ebuf[128];
	const char *s;
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	s = strerror_r(-neg_errno, ebuf, sizeof(ebuf));
	bc_error_set(bc_errno_to_code(-neg_errno), -neg_errno, "%s: %s", what,
		     s);
}

int iob_init(struct iob *iob, const struct iob_ops *ops, unsigned depth)
{
	unsigned i;

	iob->ops = ops;
	iob->name = ops->name;
	iob->depth = depth;
	iob->reqs = calloc(depth, sizeof(*iob->reqs));
	iob->free_slots = calloc(depth, sizeof(*iob->free_slots));
	iob->synth = calloc(depth, sizeof(*iob->synth));
	if (!iob->reqs || !iob->free_slots || !iob->synth) {
		iob_fini(iob);
		iob_error(-ENOMEM, "I/O context of depth %u", depth);
		return -ENOMEM;
	}
	/* Stacked so that slot 0 is handed out first. */
	for (i = 0; i < depth; i++)
		iob->free_slots[i] = depth - 1 - i;
	iob->nfree = depth;
	return 0;
}

void iob_fini(struct iob *iob)
{
	free(iob->reqs);
	free(iob->free_slots);
	free(iob->synth);
	iob->reqs = NULL;
	iob->free_slots = NULL;
	iob->synth = NULL;
}

void iob_complete_now(struct iob *iob, unsigned slot, int64_t res)
{
	unsigned tail = iob->synth_head + iob->synth_count;

	/* At most depth slots exist, so the FIFO cannot overflow. */
	assert(iob->synth_count < iob->depth && slot < iob->depth);
	if (tail >= iob->depth)
		tail -= iob->depth;
	iob->synth[tail].user_data = slot;
	iob->synth[tail].res = res;
	iob->synth_count++;
}

/* Whether io_uring's failure means "not available here", worth a fallback. */
static bool uring_unavailable(int err)
{
	return err == -ENOSYS || err == -EPERM || err == -ENOMEM;
}

static __cold int new_default(unsigned depth, struct iob **out)
{
	char ebuf1[128], ebuf2[128];
	const char *s1, *s2;
	int ret, ret2;

	ret = iob_uring_new(depth, out);
	if (ret >= 0 || !uring_unavailable(ret))
		return ret;
	ret2 = iob_aio_new(depth, out);
	if (ret2 == -ENOTSUP)
		return ret; /* no libaio: io_uring's message stays */
	if (ret2 >= 0)
		return ret2;
	s1 = strerror_r(-ret, ebuf1, sizeof(ebuf1));
	s2 = strerror_r(-ret2, ebuf2, sizeof(ebuf2));
	bc_error_set(bc_errno_to_code(-ret2), -ret2,
		     "no I/O backend: io_uring: %s; libaio: %s", s1, s2);
	return ret2;
}

int iob_new(unsigned depth, unsigned flags, struct iob **out)
{
	struct iob *iob = NULL;
	const char *env;
	int ret;

	*out = NULL;
	if (flags) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "I/O context: unsupported flags 0x%x", flags);
		return -EINVAL;
	}
	if (!depth || depth > IOB_MAX_DEPTH) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "I/O context: depth %u out of range 1..%u", depth,
			     IOB_MAX_DEPTH);
		return -EINVAL;
	}
	/* Read at job start; the library itself never calls setenv. */
	env = getenv("BLOCKCOPY_IO"); /* NOLINT(concurrency-mt-unsafe) */
	if (!env || !*env) {
		ret = new_default(depth, &iob);
	} else if (!strcmp(env, "uring")) {
		ret = iob_uring_new(depth, &iob);
	} else if (!strcmp(env, "aio")) {
		ret = iob_aio_new(depth, &iob);
		if (ret == -ENOTSUP)
			bc_error_set(ERR_UNSUPPORTED, 0,
				     "BLOCKCOPY_IO=aio: built without libaio");
	} else {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"BLOCKCOPY_IO=%s: unknown I/O backend (expected uring or aio)",
			env);
		return -EINVAL;
	}
	if (ret < 0)
		return ret;
	*out = iob;
	return 0;
}

const char *iob_backend_name(struct iob *iob)
{
	return iob->name;
}

void iob_free(struct iob *iob)
{
	if (!iob)
		return;
	/* Freeing with requests in flight would let the kernel write freed memory. */
	assert(iob->outstanding == 0);
	iob->ops->destroy(iob);
}

unsigned iob_in_flight(struct iob *iob)
{
	return iob->outstanding;
}

static int prep(struct iob *iob, enum iob_op op, int fd, void *buf, size_t len,
		uint64_t off, uint64_t user_data)
{
	struct iob_req *req;
	unsigned slot;
	int ret;

	if (iob->outstanding == iob->depth)
		return -EBUSY;
	/* off <= INT64_MAX also keeps io_uring's "current position" (-1) out. */
	if (op != IOB_FSYNC &&
	    (!buf || !len || len > IOB_MAX_LEN || off > INT64_MAX))
		return -EINVAL;
	assert(iob->nfree > 0);
	slot = iob->free_slots[--iob->nfree];
	req = &iob->reqs[slot];
	req->user_data = user_data;
	req->buf = buf;
	req->len = len;
	ret = iob->ops->prep(iob, slot, op, fd, buf, len, off);
	if (ret < 0) {
		iob->nfree++;
		return ret;
	}
	iob_poison(buf, len);
	iob->outstanding++;
	iob->nprepared++;
	return 0;
}

int iob_prep_read(struct iob *iob, int fd, void *buf, size_t len, uint64_t off,
		  uint64_t user_data)
{
	return prep(iob, IOB_READ, fd, buf, len, off, user_data);
}

int iob_prep_write(struct iob *iob, int fd, const void *buf, size_t len,
		   uint64_t off, uint64_t user_data)
{
	/* The kernel interfaces take void *; a write only reads the buffer. */
	union {
		const void *c;
		void *m;
	} b = {.c = buf};

	return prep(iob, IOB_WRITE, fd, b.m, len, off, user_data);
}

int iob_prep_fsync(struct iob *iob, int fd, uint64_t user_data)
{
	return prep(iob, IOB_FSYNC, fd, NULL, 0, 0, user_data);
}

int iob_submit(struct iob *iob)
{
	int ret;

	if (!iob->nprepared)
		return 0;
	ret = iob->ops->submit(iob);
	if (ret < 0)
		return ret;
	iob->nprepared = 0;
	return 0;
}

/* Hands slot-tagged completions back to the caller and frees the slots. */
static void finish(struct iob *iob, struct iob_cqe *cqes, unsigned n)
{
	unsigned i, slot;
	struct iob_req *req;

	for (i = 0; i < n; i++) {
		slot = (unsigned)cqes[i].user_data;
		assert(cqes[i].user_data < iob->depth &&
		       iob->nfree < iob->depth && iob->outstanding > 0);
		req = &iob->reqs[slot];
		iob_unpoison(req->buf, req->len);
		cqes[i].user_data = req->user_data;
		iob->free_slots[iob->nfree++] = slot;
		iob->outstanding--;
	}
}

int iob_wait(struct iob *iob, unsigned min_complete, struct iob_cqe *cqes,
	     unsigned max, int timeout_ms)
{
	unsigned n = 0, in_kernel;
	int ret;

	if (min_complete > max || min_complete > iob->outstanding)
		return -EINVAL;
	if (iob->nprepared && !iob->ops->wait_submits) {
		ret = iob_submit(iob);
		if (ret < 0)
			return ret;
	}
	in_kernel = iob->outstanding - iob->synth_count;
	while (n < max && iob->synth_count) {
		cqes[n++] = iob->synth[iob->synth_head];
		if (++iob->synth_head == iob->depth)
			iob->synth_head = 0;
		iob->synth_count--;
	}
	if (n < max && in_kernel) {
		ret = iob->ops->wait(iob,
				     min_complete > n ? min_complete - n : 0,
				     cqes + n, max - n, timeout_ms);
		if (ret < 0 && !n)
			return ret;
		/* An error after some completions: return those, it recurs. */
		if (ret >= 0) {
			n += (unsigned)ret;
			if (iob->ops->wait_submits)
				iob->nprepared = 0;
		}
	}
	finish(iob, cqes, n);
	return (int)n;
}

int iob_register_buffers(struct iob *iob, const struct iovec *iov, unsigned n)
{
	if (!iov || !n)
		return -EINVAL;
	return iob->ops->register_buffers(iob, iov, n);
}
