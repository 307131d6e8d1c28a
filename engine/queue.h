/* SPDX-License-Identifier: LGPL-2.1-or-later */
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

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

/* The public opaque queue handle; the engine defines the struct (queue.c). */
typedef struct bc_queue bc_queue;

/*
 * One finished request, laid out as the public bc_completion (asserted in
 * lib/api-queue.c, which hands the caller's array to queue_reap()).
 */
struct queue_completion {
	void *tag;                 /* the caller's tag */
	int64_t ret;               /* bytes, 0, or -errno */
	int error_code;            /* ERR_*; ERR_OK when ret >= 0 */
	const char *error_message; /* "" when ret >= 0; valid until the next
				      call on the queue */
};

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
 * Queue one request. @buf: READ and WRITE only; @zflags:
 * DISK_ZEROES_MAY_UNMAP or 0, for ZEROES. Returns 0, -EAGAIN (queue full), or what disk_guest_check()
 * refuses.
 */
int queue_add(bc_queue *q, enum queue_op op, void *buf, uint64_t off,
	      uint64_t len, void *tag, unsigned int zflags);

/* Start every queued request; returns how many. */
int queue_submit(bc_queue *q);

int queue_completion_fd(bc_queue *q);

/* -EINVAL if @min exceeds the requests submitted and not reaped. */
int queue_reap(bc_queue *q, struct queue_completion *out, int min, int max,
	       int timeout_ms);

void queue_free(bc_queue *q);

/*
 * Complete what the kernel has finished for @q, from any thread (the
 * disk's quiesce calls it so that requests leave the disk even while
 * their owner does not reap). Caller holds disk->queues_lock.
 */
void queue_harvest(bc_queue *q);

/*
 * The libaio direct path (queue-aio.c), for O_DIRECT descriptors only.
 * Without libaio these are stubs and queues use io_uring or the pool.
 */
struct queue_aio;

#ifdef BC_HAVE_LIBAIO
/* A context for @depth requests. Returns 0 or -errno. */
int queue_aio_new(unsigned int depth, struct queue_aio **out);
void queue_aio_free(struct queue_aio *a);
/* The eventfd signalled at every completion (owned by @a). */
int queue_aio_fd(struct queue_aio *a);
/* Owner: prepare slot @slot's read or write. */
void queue_aio_prep(struct queue_aio *a, unsigned int slot, bool write, int fd,
		    void *buf, size_t len, uint64_t off);
/*
 * Owner: submit what is prepared. Returns 0 when everything went, or 1
 * with *@failed_slot and *@err (-errno) for one the kernel refused; the
 * rest stay prepared: call again.
 */
unsigned int queue_aio_submit(struct queue_aio *a, unsigned int *failed_slot,
			      int *err);
/*
 * Any thread, serialised by the caller: calls @complete for every
 * finished request without waiting. Returns how many.
 */
unsigned int queue_aio_reap(struct queue_aio *a,
			    void (*complete)(void *opaque, unsigned int slot,
					     int64_t res),
			    void *opaque);
#else
static inline int queue_aio_new(unsigned int depth, struct queue_aio **out)
{
	(void)depth;
	(void)out;
	return -ENOTSUP;
}

static inline void queue_aio_free(struct queue_aio *a)
{
	(void)a;
}

static inline int queue_aio_fd(struct queue_aio *a)
{
	(void)a;
	return -1;
}

static inline void queue_aio_prep(struct queue_aio *a, unsigned int slot,
				  bool write, int fd, void *buf, size_t len,
				  uint64_t off)
{
	(void)a, (void)slot, (void)write, (void)fd, (void)buf, (void)len,
		(void)off;
}

static inline unsigned int queue_aio_submit(struct queue_aio *a,
					    unsigned int *failed_slot, int *err)
{
	(void)a, (void)failed_slot, (void)err;
	return 0;
}

static inline unsigned int
queue_aio_reap(struct queue_aio *a,
	       void (*complete)(void *opaque, unsigned int slot, int64_t res),
	       void *opaque)
{
	(void)a, (void)complete, (void)opaque;
	return 0;
}
#endif

#endif /* BC_ENGINE_QUEUE_H */
