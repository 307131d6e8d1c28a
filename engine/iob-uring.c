/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * io_uring backend (liburing).
 *
 * One ring per context, SQ of depth + 1 entries (liburing may take one
 * SQE for its own timeout on kernels without IORING_FEAT_EXT_ARG), CQ of
 * twice that: with at most depth requests outstanding, io_uring_get_sqe()
 * cannot fail and the CQ cannot overflow. Each SQE carries its slot
 * number as user_data. iob_wait() submits and waits in one
 * io_uring_enter (io_uring_submit_and_wait*), then reaps with
 * io_uring_for_each_cqe and a single io_uring_cq_advance.
 *
 * Registered buffers: a request whose buffer lies inside one uses
 * READ_FIXED/WRITE_FIXED (no per-request page pinning). The lookup is a
 * linear scan: the copy loop registers one arena or a few buffers.
 */
#include "iob.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <liburing.h>

#include "lib/common/util.h"

struct iob_uring {
	struct iob iob;
	struct io_uring ring;
	struct iovec *fixed; /* [nfixed] copy of the registered iovecs, owned */
	unsigned nfixed;
};

static struct iob_uring *to_uring(struct iob *iob)
{
	return iob_container_of(iob, struct iob_uring, iob);
}

/* Index of the registered buffer holding [buf, buf + len), or -1. */
static int fixed_index(const struct iob_uring *u, const void *buf, size_t len)
{
	uintptr_t p = (uintptr_t)buf, base;
	unsigned i;

	for (i = 0; i < u->nfixed; i++) {
		base = (uintptr_t)u->fixed[i].iov_base;
		if (p >= base && p - base <= u->fixed[i].iov_len &&
		    len <= u->fixed[i].iov_len - (p - base))
			return (int)i;
	}
	return -1;
}

static int uring_prep(struct iob *iob, unsigned slot, enum iob_op op, int fd,
		      void *buf, size_t len, uint64_t off)
{
	struct iob_uring *u = to_uring(iob);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	int idx = -1;

	/* The SQ holds more than depth entries; at most depth are in use. */
	assert(sqe);
	if (u->nfixed && op != IOB_FSYNC)
		idx = fixed_index(u, buf, len);
	/* len <= IOB_MAX_LEN was checked by iob.c. */
	switch (op) {
	case IOB_READ:
		if (idx >= 0)
			io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)len,
						 off, idx);
		else
			io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
		break;
	case IOB_WRITE:
		if (idx >= 0)
			io_uring_prep_write_fixed(sqe, fd, buf, (unsigned)len,
						  off, idx);
		else
			io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
		break;
	case IOB_FSYNC:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case IOB_ANY:
		/* A fault-injection filter; iob.c never queues it. */
		assert(op != IOB_ANY);
		break;
	}
	io_uring_sqe_set_data64(sqe, slot);
	return 0;
}

static int uring_submit(struct iob *iob)
{
	struct iob_uring *u = to_uring(iob);
	int ret;

	do {
		ret = io_uring_submit(&u->ring);
	} while (ret == -EINTR);
	if (ret < 0) {
		iob_error(ret, "io_uring_submit");
		return ret;
	}
	/*
	 * Fewer submitted than queued leaves the rest in the SQ: the next
	 * submit or wait hands them over.
	 */
	return 0;
}

static int uring_wait(struct iob *iob, unsigned min, struct iob_cqe *cqes,
		      unsigned max, int timeout_ms)
{
	struct iob_uring *u = to_uring(iob);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0, seen = 0;
	int ret = 0;

	if (min && timeout_ms >= 0) {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};

		/* An interrupted wait restarts with the full timeout. */
		do {
			ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe,
							       min, &ts, NULL);
		} while (ret == -EINTR);
		if (ret == -ETIME)
			ret = 0;
	} else if (min || io_uring_sq_ready(&u->ring)) {
		do {
			ret = io_uring_submit_and_wait(&u->ring, min);
		} while (ret == -EINTR);
	}
	if (ret < 0) {
		iob_error(ret, "io_uring_enter");
		return ret;
	}
	io_uring_for_each_cqe (&u->ring, head, cqe) {
		if (n == max)
			break;
		seen++;
		/* liburing's own timeout on kernels without EXT_ARG. */
		if (cqe->user_data == LIBURING_UDATA_TIMEOUT)
			continue;
		cqes[n].user_data = cqe->user_data;
		cqes[n].res = cqe->res;
		n++;
	}
	io_uring_cq_advance(&u->ring, seen);
	return (int)n;
}

static __cold int uring_register_buffers(struct iob *iob,
					 const struct iovec *iov, unsigned n)
{
	struct iob_uring *u = to_uring(iob);
	struct iovec *copy;
	int ret;

	if (u->nfixed)
		return -EBUSY;
	copy = calloc(n, sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, iov, n * sizeof(*copy));
	ret = io_uring_register_buffers(&u->ring, iov, n);
	if (ret < 0) {
		free(copy);
		iob_error(ret, "io_uring_register_buffers(%u buffers)", n);
		return ret;
	}
	u->fixed = copy;
	u->nfixed = n;
	return 0;
}

static void uring_destroy(struct iob *iob)
{
	struct iob_uring *u = to_uring(iob);

	io_uring_queue_exit(&u->ring);
	free(u->fixed);
	iob_fini(iob);
	free(u);
}

static const struct iob_ops uring_ops = {
	.name = "uring",
	.prep = uring_prep,
	.submit = uring_submit,
	.wait = uring_wait,
	.register_buffers = uring_register_buffers,
	.destroy = uring_destroy,
	.wait_submits = true,
};

int iob_uring_new(unsigned depth, struct iob **out)
{
	struct iob_uring *u = calloc(1, sizeof(*u));
	int ret;

	if (!u) {
		iob_error(-ENOMEM, "io_uring context");
		return -ENOMEM;
	}
	ret = iob_init(&u->iob, &uring_ops, depth);
	if (ret < 0)
		goto err_free;
	ret = io_uring_queue_init(depth + 1, &u->ring, 0);
	if (ret < 0) {
		iob_error(ret, "io_uring_queue_init(%u entries)", depth + 1);
		goto err_fini;
	}
	*out = &u->iob;
	return 0;

err_fini:
	iob_fini(&u->iob);
err_free:
	free(u);
	return ret;
}
