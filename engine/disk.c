/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disks and the guest data path.
 *
 * A disk is an open backing chain plus at most one job. Guest requests
 * may come from many threads at once; each enters the disk (waiting while
 * a pivot or pull finish has it quiesced), works on the chain it saw at
 * entry, and leaves. The chain pointer only changes while no guest
 * request is inside, so a request never sees a chain being swapped.
 */
#include "engine/internal.h"
#include "engine/copy-journal.h"
#include "engine/job.h"
#include "engine/queue.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/common/clock.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

int disk_open(bc_engine *eng, const char *path, const char *format,
	      unsigned int flags, bc_disk **out)
{
	unsigned int fflags = 0;
	pthread_rwlockattr_t attr;
	bc_disk *disk;
	int ret;

	if (!(flags & DISK_OPEN_READONLY))
		fflags |= FMT_OPEN_RDWR;
	if (flags & DISK_OPEN_DIRECT)
		fflags |= FMT_OPEN_DIRECT;

	disk = calloc(1, sizeof(*disk));
	if (!disk)
		return -ENOMEM;
	disk->path = strdup(path);
	if (!disk->path) {
		free(disk);
		return -ENOMEM;
	}
	ret = fmt_open(path, format, fflags, &disk->top);
	if (ret < 0) {
		free(disk->path);
		free(disk);
		return ret;
	}
	disk->size = disk->top->size;
	disk_watch_top(disk, disk->top);
	disk->flags = flags;
	disk->refs = 1;
	disk->eng = eng;
	pthread_mutex_init(&disk->lock, NULL);
	pthread_mutex_init(&disk->queues_lock, NULL);
	pthread_cond_init(&disk->cond, NULL);
	/* Writer preference: a pull chunk must not starve behind guests. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr,
				      PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&disk->write_gate, &attr);
	pthread_rwlockattr_destroy(&attr);
	engine_ref(eng);
	*out = disk;
	return 0;
}

void disk_ref(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	disk->refs++;
}

static void disk_free(bc_disk *disk);

void disk_unref(bc_disk *disk)
{
	int refs;

	pthread_mutex_lock(&disk->lock);
	refs = --disk->refs;
	pthread_mutex_unlock(&disk->lock);
	if (!refs)
		disk_free(disk);
}

void disk_unref_job(bc_disk *disk)
{
	int refs;

	/* One critical section: a closer woken here is not the last holder. */
	pthread_mutex_lock(&disk->lock);
	refs = --disk->refs;
	disk->job_holds--;
	pthread_cond_broadcast(&disk->cond);
	pthread_mutex_unlock(&disk->lock);
	if (!refs)
		disk_free(disk);
}

static void disk_free(bc_disk *disk)
{
	bc_engine *eng = disk->eng;

	fmt_close(disk->top);
	copy_journal_unref(disk->journal); /* the file stays: see job.c */
	free(disk->path);
	while (disk->n_old_paths)
		free(disk->old_paths[--disk->n_old_paths]);
	free(disk->old_paths);
	pthread_rwlock_destroy(&disk->write_gate);
	pthread_cond_destroy(&disk->cond);
	assert(!disk->nqueues); /* each queue holds a reference */
	free(disk->queues);
	pthread_mutex_destroy(&disk->queues_lock);
	pthread_mutex_destroy(&disk->lock);
	free(disk);
	engine_unref(eng);
}

int disk_set_path_locked(bc_disk *disk, char *path)
{
	char **n = reallocarray(disk->old_paths, disk->n_old_paths + 1,
				sizeof(*n));

	if (!n) {
		free(path);
		return -ENOMEM;
	}
	disk->old_paths = n;
	disk->old_paths[disk->n_old_paths++] = disk->path;
	disk->path = path;
	return 0;
}

int disk_close(bc_disk *disk)
{
	pthread_mutex_lock(&disk->lock);
	if (__atomic_load_n(&disk->closed, __ATOMIC_ACQUIRE)) {
		/* Only detectable while another reference keeps it alive. */
		pthread_mutex_unlock(&disk->lock);
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' is already closed", disk->path);
		return -EINVAL;
	}
	if (disk->job) {
		pthread_mutex_unlock(&disk->lock);
		bc_error_set(ERR_BLOCK_COPY_ACTIVE, 0,
			     "block copy still active: disk '%s' has an active block job",
			     disk->path);
		return -EBUSY;
	}
	/* Open queues keep the disk alive; they refuse new requests now. */
	__atomic_store_n(&disk->closed, true, __ATOMIC_RELEASE);
	/*
	 * A job that has ended may still be on its way out holding the disk:
	 * wait, so that the images are closed (flushed, their header and
	 * bitmaps written back) when this returns, unless the caller still
	 * holds undelivered events of the disk (or an open bc_queue).
	 */
	while (disk->job_holds)
		pthread_cond_wait(&disk->cond, &disk->lock);
	pthread_mutex_unlock(&disk->lock);
	disk_unref(disk);
	return 0;
}

int64_t disk_size(bc_disk *disk)
{
	return (int64_t)disk->size;
}

const char *disk_path(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	return disk->path;
}

int disk_add_queue(bc_disk *disk, struct bc_queue *q)
{
	struct bc_queue **n;

	BC_LOCK_GUARD(&disk->queues_lock);
	n = reallocarray(disk->queues, disk->nqueues + 1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	disk->queues = n;
	disk->queues[disk->nqueues++] = q;
	return 0;
}

void disk_remove_queue(bc_disk *disk, struct bc_queue *q)
{
	size_t i;

	BC_LOCK_GUARD(&disk->queues_lock);
	for (i = 0; i < disk->nqueues; i++) {
		if (disk->queues[i] == q) {
			disk->queues[i] = disk->queues[--disk->nqueues];
			return;
		}
	}
	assert(false); /* every queue registers itself on its disk */
}

/*
 * Collect the kernel completions of every queue on the disk, so that
 * requests whose owner is not reaping (it may be the thread waiting for
 * this very quiesce) still leave the disk. Returns the number of queues.
 */
static size_t harvest_queues(bc_disk *disk)
{
	size_t i;

	BC_LOCK_GUARD(&disk->queues_lock);
	for (i = 0; i < disk->nqueues; i++)
		queue_harvest(disk->queues[i]);
	return disk->nqueues;
}

/* fmt_image.io_map_kick of the disk's top: see disk_watch_top(). */
static void kick_queues(void *opaque)
{
	(void)harvest_queues(opaque);
}

void disk_watch_top(bc_disk *disk, struct fmt_image *top)
{
	top->io_map_kick = kick_queues;
	top->io_map_kick_opaque = disk;
}

/*
 * Wait, with disk->lock held, until *@count is 0. Requests that complete
 * in the kernel are collected meanwhile (harvest_queues), since their
 * owner may be the thread waiting here.
 */
static void wait_guests_locked(bc_disk *disk, const unsigned int *count)
{
	while (*count) {
		struct timespec ts;
		size_t nq;

		pthread_mutex_unlock(&disk->lock);
		nq = harvest_queues(disk);
		pthread_mutex_lock(&disk->lock);
		if (!*count)
			break;
		if (!nq) {
			pthread_cond_wait(&disk->cond, &disk->lock);
			continue;
		}
		/* Kernel completions do not signal disk->cond: look again soon. */
		ts = bc_cond_deadline(200 * 1000);
		pthread_cond_timedwait(&disk->cond, &disk->lock, &ts);
	}
}

void disk_quiesce(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	disk->quiesce = true;
	wait_guests_locked(disk, &disk->guest_inflight);
}

void disk_drain_untracked(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	wait_guests_locked(disk, &disk->untracked_inflight);
}

void disk_resume(bc_disk *disk)
{
	BC_LOCK_GUARD(&disk->lock);
	disk->quiesce = false;
	pthread_cond_broadcast(&disk->cond);
}

/*
 * Fills @req from the disk; caller holds disk->lock. Takes @n job refs.
 * The fast_* routes only for @fast (asynchronous submissions): the
 * synchronous calls do not pay for the job->lock it may take.
 */
static void take_view_locked(bc_disk *disk, unsigned int n, bool fast,
			     struct guest_req *req)
{
	struct job *job = disk->job;
	unsigned int i;

	req->top = disk->top;
	req->job = job;
	req->fast_read = fast && (disk->top->drv == &fmt_raw_driver ||
				  disk->top->drv->io_map);
	req->fast_write = req->fast_read;
	req->journal = disk->journal;
	if (req->journal) {
		/* Its bits are set before the write: no direct route. */
		req->fast_write = false;
		for (i = 0; i < n; i++)
			copy_journal_ref(req->journal);
	}
	if (!job) {
		disk->untracked_inflight += n;
		return;
	}
	for (i = 0; i < n; i++)
		job_ref(job);
	if (req->fast_write) {
		/*
		 * Only a background copy is happy with "dirty after the
		 * write", which is all a direct write can give it (a pull
		 * writes the top under its gate, which is not taken here).
		 */
		BC_LOCK_GUARD(&job->lock);
		req->fast_write = job->type == JOB_TYPE_COPY &&
				  !job->write_blocking;
	}
}

bool disk_guest_try_enter(bc_disk *disk, unsigned int n, struct guest_req *req)
{
	BC_LOCK_GUARD(&disk->lock);
	if (disk->quiesce)
		return false;
	disk->guest_inflight += n;
	take_view_locked(disk, n, true, req);
	return true;
}

void disk_guest_enter(bc_disk *disk, struct guest_req *req)
{
	BC_LOCK_GUARD(&disk->lock);
	while (disk->quiesce)
		pthread_cond_wait(&disk->cond, &disk->lock);
	disk->guest_inflight++;
	take_view_locked(disk, 1, false, req);
}

void disk_guest_leave(bc_disk *disk, struct guest_req *req)
{
	bool untracked = !req->job;

	if (req->job)
		job_unref(req->job);
	copy_journal_unref(req->journal);
	BC_LOCK_GUARD(&disk->lock);
	if (untracked && --disk->untracked_inflight == 0)
		pthread_cond_broadcast(&disk->cond);
	if (--disk->guest_inflight == 0 && disk->quiesce)
		pthread_cond_broadcast(&disk->cond);
}

void disk_guest_note_write(struct guest_req *req, uint64_t off, uint64_t len)
{
	if (req->job && len)
		job_note_guest_write(req->job, off, len);
}

static int check_range(bc_disk *disk, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (bc_add_overflow(off, len, &end) || end > disk->size) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "request at offset %llu length %llu is beyond the end of disk '%s' (%llu bytes)",
			     (unsigned long long)off, (unsigned long long)len,
			     disk->path, (unsigned long long)disk->size);
		return -EINVAL;
	}
	return 0;
}

static int check_writable(bc_disk *disk)
{
	if (disk->flags & DISK_OPEN_READONLY) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' is read-only", disk->path);
		return -EROFS;
	}
	return 0;
}

int disk_guest_check(bc_disk *disk, bool write, uint64_t off, uint64_t len)
{
	int ret;

	if (__atomic_load_n(&disk->closed, __ATOMIC_ACQUIRE)) {
		bc_error_set(ERR_OPERATION_INVALID, 0, "disk '%s' is closed",
			     disk_path(disk));
		return -ESHUTDOWN;
	}
	if (write) {
		ret = check_writable(disk);
		if (ret < 0)
			return ret;
	}
	return check_range(disk, off, len);
}

int disk_guest_read(struct guest_req *req, void *buf, size_t n, uint64_t off)
{
	return fmt_pread(req->top, buf, n, off);
}

ssize_t disk_pread(bc_disk *disk, void *buf, size_t n, uint64_t off)
{
	struct guest_req req;
	int ret;

	ret = check_range(disk, off, n);
	if (ret < 0)
		return ret;
	disk_guest_enter(disk, &req);
	ret = disk_guest_read(&req, buf, n, off);
	disk_guest_leave(disk, &req);
	return ret < 0 ? ret : (ssize_t)n;
}

/*
 * The common shape of the three writing calls, for a request that has
 * entered: the gate keeps a pull chunk and a guest write from
 * interleaving; the job sees the write before the source is written (to
 * order it against copies in write-blocking mode) and after (to mirror
 * it or mark it dirty) — always before the guest hears about it.
 */
static int guest_write(bc_disk *disk, struct guest_req *req,
		       enum guest_write_kind kind, const void *buf, uint64_t off,
		       uint64_t len, unsigned int flags)
{
	struct write_claim aw = { .claimed = false };
	unsigned int jtoken = 0;
	int ret;

	pthread_rwlock_rdlock(&disk->write_gate);
	/* The journal hears of the write before the source changes. */
	if (req->journal)
		jtoken = copy_journal_write_begin(req->journal, off, len);
	if (req->job && len)
		mirror_guest_write_begin(req->job, kind, off, len, &aw);
	switch (kind) {
	case GUEST_WRITE_DATA:
		ret = fmt_pwrite(req->top, buf, (size_t)len, off);
		break;
	case GUEST_WRITE_ZEROES:
		ret = fmt_write_zeroes(req->top, off, len, flags);
		break;
	case GUEST_WRITE_DISCARD:
		ret = fmt_discard(req->top, off, len);
		/* A discard is a hint: where the format cannot, nothing happened. */
		if (ret == -ENOTSUP) {
			bc_error_reset();
			ret = 0;
		}
		break;
	}
	/* Even a failed write may have changed part of the range. */
	if (req->job && len)
		mirror_guest_write_end(req->job, kind, buf, off, len, flags, ret, &aw);
	if (req->journal)
		copy_journal_write_end(req->journal, jtoken);
	pthread_rwlock_unlock(&disk->write_gate);
	return ret;
}

int disk_guest_pwrite(bc_disk *disk, struct guest_req *req, const void *buf,
		      uint64_t off, uint64_t len)
{
	return guest_write(disk, req, GUEST_WRITE_DATA, buf, off, len, 0);
}

int disk_guest_write_zeroes(bc_disk *disk, struct guest_req *req,
			    uint64_t off, uint64_t len, unsigned int flags)
{
	return guest_write(disk, req, GUEST_WRITE_ZEROES, NULL, off, len, flags);
}

int disk_guest_discard(bc_disk *disk, struct guest_req *req, uint64_t off,
		       uint64_t len)
{
	return guest_write(disk, req, GUEST_WRITE_DISCARD, NULL, off, len, 0);
}

/* A synchronous write: check, enter, write, leave. */
static int sync_write(bc_disk *disk, enum guest_write_kind kind, const void *buf,
		      uint64_t off, uint64_t len, unsigned int flags)
{
	struct guest_req req;
	int ret;

	ret = check_writable(disk);
	if (ret < 0)
		return ret;
	ret = check_range(disk, off, len);
	if (ret < 0)
		return ret;
	disk_guest_enter(disk, &req);
	ret = guest_write(disk, &req, kind, buf, off, len, flags);
	disk_guest_leave(disk, &req);
	return ret;
}

ssize_t disk_pwrite(bc_disk *disk, const void *buf, size_t n, uint64_t off)
{
	int ret = sync_write(disk, GUEST_WRITE_DATA, buf, off, n, 0);

	return ret < 0 ? ret : (ssize_t)n;
}

int disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
		      unsigned int flags)
{
	return sync_write(disk, GUEST_WRITE_ZEROES, NULL, off, len,
			  (flags & DISK_ZEROES_MAY_UNMAP) ? FMT_ZERO_MAY_UNMAP : 0);
}

int disk_discard(bc_disk *disk, uint64_t off, uint64_t len)
{
	return sync_write(disk, GUEST_WRITE_DISCARD, NULL, off, len, 0);
}

int disk_guest_flush(struct guest_req *req)
{
	/*
	 * The journal's bits first: once the source's writes are durable,
	 * a power loss must not lose the record that they are still to copy.
	 */
	if (req->journal) {
		int ret = copy_journal_sync(req->journal);

		if (ret < 0)
			return ret;
	}
	return fmt_flush(req->top);
}

/* --- block status of the guest view (issue 11) --- */
int64_t disk_block_status(bc_disk *disk, uint64_t off, uint64_t len,
			  unsigned int *status)
{
	struct fmt_extent ext;
	struct guest_req req;
	int ret;

	ret = check_range(disk, off, len);
	if (ret < 0)
		return ret;
	disk_guest_enter(disk, &req);
	ret = fmt_chain_block_status(req.top, off, len, &ext);
	disk_guest_leave(disk, &req);
	if (ret < 0)
		return ret;
	switch (ext.state) {
	case FMT_DATA:
		*status = 0;
		break;
	case FMT_ZERO:
		*status = DISK_EXTENT_ZERO;
		break;
	case FMT_UNALLOC:
		*status = DISK_EXTENT_ZERO | DISK_EXTENT_HOLE;
		break;
	}
	return (int64_t)ext.len;
}
/* --- end block status --- */

int disk_flush(bc_disk *disk)
{
	struct guest_req req;
	int ret;

	disk_guest_enter(disk, &req);
	ret = disk_guest_flush(&req);
	disk_guest_leave(disk, &req);
	return ret;
}

int disk_snapshot_create(bc_disk *disk, const char *overlay)
{
	struct fmt_create_opts opts = { .format = "qcow2" };
	struct fmt_image *img;
	char *abs_top, *new_path;
	int ret;

	ret = check_writable(disk);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&disk->lock);
	if (disk->job || disk->snapshotting) {
		pthread_mutex_unlock(&disk->lock);
		bc_error_set(ERR_BLOCK_COPY_ACTIVE, 0,
			     "block copy still active: disk '%s' has an active block job",
			     disk->path);
		return -EBUSY;
	}
	/* No job may start until the overlay is in place (job_attach checks). */
	disk->snapshotting = true;
	pthread_mutex_unlock(&disk->lock);

	disk_quiesce(disk);
	abs_top = realpath(disk->top->filename, NULL);
	new_path = strdup(overlay);
	if (!abs_top || !new_path) {
		ret = -ENOMEM;
		goto out_resume;
	}
	opts.size = disk->size;
	opts.backing_file = abs_top;
	opts.backing_fmt = disk->top->drv->name;
	ret = fmt_flush(disk->top);
	if (ret < 0)
		goto out_resume;
	ret = fmt_create(overlay, &opts);
	if (ret < 0)
		goto out_resume;
	ret = fmt_open(overlay, "qcow2", FMT_OPEN_RDWR | FMT_OPEN_NO_BACKING |
		       ((disk->flags & DISK_OPEN_DIRECT) ? FMT_OPEN_DIRECT : 0),
		       &img);
	if (ret < 0) {
		(void)unlink(overlay);
		goto out_resume;
	}
	/* The open chain becomes the overlay's backing as it is. */
	pthread_mutex_lock(&disk->lock);
	ret = disk_set_path_locked(disk, bc_steal_ptr(&new_path));
	if (ret == 0) {
		img->backing = disk->top;
		disk->top = img;
		disk_watch_top(disk, img);
	}
	pthread_mutex_unlock(&disk->lock);
	if (ret < 0) {
		fmt_close(img);
		(void)unlink(overlay);
	}
out_resume:
	pthread_mutex_lock(&disk->lock);
	disk->snapshotting = false;
	pthread_mutex_unlock(&disk->lock);
	disk_resume(disk);
	free(abs_top);
	free(new_path);
	return ret;
}
