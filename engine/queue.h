/*
 * Asynchronous guest I/O queues (the engine side of bc_queue_*).
 *
 * lib/api-queue.c checks public arguments and flags, then calls these.
 * They return 0 (or a count) or -errno with the detail recorded by
 * bc_error_set() where it was detected. The contract of each call is the
 * public one, in lib/blockcopy.h.
 */
#ifndef BC_ENGINE_QUEUE_H
#define BC_ENGINE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/blockcopy.h"

enum queue_op {
	QUEUE_READ,
	QUEUE_WRITE,
	QUEUE_ZEROES,
	QUEUE_DISCARD,
	QUEUE_FLUSH,
};

/* Returns 0 and the queue in *@out, or -errno. */
int queue_new(bc_disk *disk, unsigned int depth, bc_queue **out);

/*
 * Queue one request. @buf: READ and WRITE only; @zflags: FMT_ZERO_* for
 * ZEROES. Returns 0, -EAGAIN (queue full), or what disk_guest_check()
 * refuses.
 */
int queue_add(bc_queue *q, enum queue_op op, void *buf, uint64_t off,
	      uint64_t len, void *tag, unsigned int zflags);

/* Start every queued request; returns how many. */
int queue_submit(bc_queue *q);

int queue_completion_fd(bc_queue *q);

/* -EINVAL if @min exceeds the requests submitted and not reaped. */
int queue_reap(bc_queue *q, bc_completion *out, int min, int max,
	       int timeout_ms);

void queue_free(bc_queue *q);

/*
 * Complete what the kernel has finished for @q, from any thread (the
 * disk's quiesce calls it so that requests leave the disk even while
 * their owner does not reap). Caller holds disk->queues_lock.
 */
void queue_harvest(bc_queue *q);

#endif /* BC_ENGINE_QUEUE_H */
