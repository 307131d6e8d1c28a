/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine object: event queue, eventfd and callback dispatch.
 *
 * Jobs queue events from their own threads; the embedder receives them on
 * its own thread with engine_dispatch() (after polling engine_event_fd()
 * if it likes). Callbacks run without any engine lock held, so they may
 * call any API, including a pivot from the MIRRORING event.
 */
#include "engine/internal.h"
#include "engine/iob.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

int engine_new(unsigned int flags, bc_engine **out)
{
	struct iob *probe;
	bc_engine *eng;
	int ret;

	if (flags) {
		bc_error_set(ERR_INVALID_ARG, 0, "unsupported flags 0x%x", flags);
		return -EINVAL;
	}
	/* Fail here, not at the first job, on a bad BLOCKCOPY_IO or no backend. */
	ret = iob_new(1, 0, &probe);
	if (ret < 0)
		return ret;
	iob_free(probe);
	eng = calloc(1, sizeof(*eng));
	if (!eng)
		return -ENOMEM;
	eng->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (eng->efd < 0) {
		int err = errno;

		free(eng);
		bc_error_set(ERR_INTERNAL, err, "cannot create eventfd");
		return -err;
	}
	pthread_mutex_init(&eng->lock, NULL);
	eng->refs = 1;
	*out = eng;
	return 0;
}

void engine_ref(bc_engine *eng)
{
	BC_LOCK_GUARD(&eng->lock);
	eng->refs++;
}

static void free_event(struct engine_event *ev)
{
	disk_unref(ev->disk);
	free(ev->path);
	free(ev);
}

void engine_unref(bc_engine *eng)
{
	int refs;

	pthread_mutex_lock(&eng->lock);
	refs = --eng->refs;
	pthread_mutex_unlock(&eng->lock);
	if (refs)
		return;
	/* A queued event holds a disk, which holds the engine. */
	assert(!eng->head);
	(void)close(eng->efd);
	pthread_mutex_destroy(&eng->lock);
	free(eng);
}

void engine_free(bc_engine *eng)
{
	struct engine_event *ev, *next;

	/* Undelivered events hold disk references: drop them now. */
	pthread_mutex_lock(&eng->lock);
	ev = eng->head;
	eng->head = eng->tail = NULL;
	eng->ncbs = 0;
	pthread_mutex_unlock(&eng->lock);
	for (; ev; ev = next) {
		next = ev->next;
		free_event(ev);
	}
	engine_unref(eng);
}

int engine_event_register(bc_engine *eng, engine_event_cb cb, void *opaque)
{
	int i;

	BC_LOCK_GUARD(&eng->lock);
	/* Ids are slot indexes: a deregistered slot is reused. */
	for (i = 0; i < eng->ncbs && eng->cbs[i].cb; i++)
		;
	if (i == ENGINE_MAX_CALLBACKS) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "too many event callbacks (at most %d)",
			     ENGINE_MAX_CALLBACKS);
		return -ENOSPC;
	}
	eng->cbs[i].cb = cb;
	eng->cbs[i].opaque = opaque;
	if (i == eng->ncbs)
		eng->ncbs++;
	return i;
}

int engine_event_deregister(bc_engine *eng, int id)
{
	BC_LOCK_GUARD(&eng->lock);
	if (id < 0 || id >= eng->ncbs || !eng->cbs[id].cb) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "no event callback with id %d", id);
		return -EINVAL;
	}
	eng->cbs[id].cb = NULL;
	eng->cbs[id].opaque = NULL;
	return 0;
}

int engine_event_fd(bc_engine *eng)
{
	return eng->efd;
}

void engine_queue_event(bc_engine *eng, bc_disk *disk, int type, int status,
			const struct error_record *err)
{
	struct engine_event *ev = calloc(1, sizeof(*ev));
	uint64_t one = 1;

	/* An event lost to ENOMEM is not recoverable; abort loudly. */
	if (!ev)
		abort();
	pthread_mutex_lock(&disk->lock);
	ev->path = strdup(disk->path);
	pthread_mutex_unlock(&disk->lock);
	if (!ev->path)
		abort();
	disk_ref(disk);
	ev->disk = disk;
	ev->type = type;
	ev->status = status;
	if (err)
		ev->err = *err;

	BC_LOCK_GUARD(&eng->lock);
	if (eng->tail)
		eng->tail->next = ev;
	else
		eng->head = ev;
	eng->tail = ev;
	/* The counter only wakes pollers; dispatch drains it. */
	if (write(eng->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		abort();
}

static struct engine_event *pop_event(bc_engine *eng)
{
	struct engine_event *ev;
	uint64_t cnt;

	BC_LOCK_GUARD(&eng->lock);
	ev = eng->head;
	if (ev) {
		eng->head = ev->next;
		if (!eng->head)
			eng->tail = NULL;
	}
	if (!eng->head)
		(void)!read(eng->efd, &cnt, sizeof(cnt));
	return ev;
}

int engine_dispatch(bc_engine *eng, int timeout_ms)
{
	struct engine_event *ev;
	int n = 0;

	ev = pop_event(eng);
	if (!ev && timeout_ms != 0) {
		struct pollfd pfd = { .fd = eng->efd, .events = POLLIN };
		int r;

		do {
			r = poll(&pfd, 1, timeout_ms);
		} while (r < 0 && errno == EINTR);
		if (r < 0) {
			int err = errno;

			bc_error_set(ERR_INTERNAL, err, "poll on event fd failed");
			return -err;
		}
		ev = pop_event(eng);
	}
	while (ev) {
		int i, ncbs;
		struct {
			engine_event_cb cb;
			void *opaque;
		} cbs[ENGINE_MAX_CALLBACKS];

		pthread_mutex_lock(&eng->lock);
		ncbs = eng->ncbs;
		memcpy(cbs, eng->cbs, sizeof(cbs[0]) * (size_t)ncbs);
		pthread_mutex_unlock(&eng->lock);
		for (i = 0; i < ncbs; i++) {
			if (!cbs[i].cb)
				continue; /* deregistered */
			if (ev->err.code)
				bc_error_set(ev->err.code, ev->err.sys_errno,
					     "%s", ev->err.message);
			else
				bc_error_reset();
			cbs[i].cb(eng, ev->disk, ev->path, ev->type, ev->status,
				  cbs[i].opaque);
		}
		free_event(ev);
		n++;
		ev = pop_event(eng);
	}
	return n;
}
