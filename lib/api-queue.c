/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Public wrappers: asynchronous guest I/O queues (BC_1.1). The contract of
 * each call is in lib/blockcopy.h; the work is in engine/queue.c.
 */
#include "lib/blockcopy.h"

#include <stddef.h>

#include "engine/queue.h"
#include "lib/api-internal.h"

/* queue_reap() fills the caller's bc_completion array as struct queue_completion. */
_Static_assert(sizeof(struct queue_completion) == sizeof(bc_completion),
	       "completion size");
_Static_assert(offsetof(struct queue_completion, tag) == offsetof(bc_completion, tag) &&
		       offsetof(struct queue_completion, ret) == offsetof(bc_completion, ret) &&
		       offsetof(struct queue_completion, error_code) ==
			       offsetof(bc_completion, error_code) &&
		       offsetof(struct queue_completion, error_message) ==
			       offsetof(bc_completion, error_message),
	       "completion layout");

bc_queue *bc_queue_new(bc_disk *disk, unsigned int depth, unsigned int flags)
{
	bc_queue *q;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return NULL;
	if (depth < 1 || depth > BC_QUEUE_MAX_DEPTH) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "queue depth %u is out of range (1..%u)", depth,
			     BC_QUEUE_MAX_DEPTH);
		return NULL;
	}
	ret = queue_new(disk, depth, &q);
	if (ret < 0) {
		bc_fail_errno(ret);
		return NULL;
	}
	return q;
}

/* The prologue every request call shares, then queue_add(). */
static int add(bc_queue *q, enum queue_op op, void *buf, bool need_buf,
	       uint64_t off, uint64_t len, void *tag, unsigned int zflags,
	       unsigned int flags, unsigned int mask, const char *func)
{
	int ret;

	bc_error_reset();
	if (api_null(q, "queue", func) ||
	    (need_buf && len && api_null(buf, "buf", func)) ||
	    api_bad_flags(flags, mask, func))
		return -1;
	ret = queue_add(q, op, buf, off, len, tag, zflags);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_queue_read(bc_queue *q, void *buf, size_t n, uint64_t off, void *tag,
		  unsigned int flags)
{
	return add(q, QUEUE_READ, buf, true, off, n, tag, 0, flags, 0,
		   __func__);
}

int bc_queue_write(bc_queue *q, const void *buf, size_t n, uint64_t off,
		   void *tag, unsigned int flags)
{
	/* The queue never writes to @buf; the cast only shares the slot. */
	return add(q, QUEUE_WRITE, (void *)(uintptr_t)buf, true, off, n, tag, 0, flags, 0,
		   __func__);
}

int bc_queue_write_zeroes(bc_queue *q, uint64_t off, uint64_t len, void *tag,
			  unsigned int flags)
{
	return add(q, QUEUE_ZEROES, NULL, false, off, len, tag,
		   flags & BC_DISK_ZEROES_MAY_UNMAP, flags,
		   BC_DISK_ZEROES_MAY_UNMAP, __func__);
}

int bc_queue_discard(bc_queue *q, uint64_t off, uint64_t len, void *tag,
		     unsigned int flags)
{
	return add(q, QUEUE_DISCARD, NULL, false, off, len, tag, 0, flags, 0,
		   __func__);
}

int bc_queue_flush(bc_queue *q, void *tag, unsigned int flags)
{
	return add(q, QUEUE_FLUSH, NULL, false, 0, 0, tag, 0, flags, 0,
		   __func__);
}

int bc_queue_submit(bc_queue *q, unsigned int flags)
{
	bc_error_reset();
	if (api_null(q, "queue", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	return queue_submit(q);
}

int bc_queue_completion_fd(bc_queue *q)
{
	bc_error_reset();
	if (api_null(q, "queue", __func__))
		return -1;
	return queue_completion_fd(q);
}

int bc_queue_reap(bc_queue *q, bc_completion *out, int min, int max,
		  int timeout_ms, unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(q, "queue", __func__) ||
	    (max > 0 && api_null(out, "out", __func__)) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	if (min < 0 || max < min) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "invalid completion counts: min %d, max %d (need 0 <= min <= max)",
			     min, max);
		return -1;
	}
	/* The engine fills the caller's array: the same layout (asserted above). */
	ret = queue_reap(q, (struct queue_completion *)(void *)out, min, max,
			 timeout_ms);
	return ret < 0 ? bc_fail_errno(ret) : ret;
}

void bc_queue_free(bc_queue *q)
{
	if (q)
		queue_free(q);
}
