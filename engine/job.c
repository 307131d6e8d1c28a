/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block job life cycle shared by COPY and PULL: start, abort, info,
 * set-speed, first-error bookkeeping and the end of a job.
 */
#include "engine/job.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/common/clock.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define DEFAULT_GRANULARITY (64u * 1024)

uint64_t job_now_ns(void)
{
	return bc_now_ns();
}

void job_ref(struct job *job)
{
	atomic_fetch_add(&job->refs, 1);
}

void job_unref(struct job *job)
{
	if (atomic_fetch_sub(&job->refs, 1) != 1)
		return;
	dirty_bitmap_free(job->dirty);
	dirty_bitmap_free(job->inflight);
	copy_journal_unref(job->journal);
	fmt_close(job->dest);
	free(job->scan_bits);
	free(job->dest_path);
	free(job->base_name);
	free(job->base_fmt);
	pthread_cond_destroy(&job->cond);
	pthread_cond_destroy(&job->done_cond);
	pthread_cond_destroy(&job->inflight_cond);
	pthread_mutex_destroy(&job->lock);
	free(job);
}

/* allowed[from][to]: the transitions of the table in job.h. */
static const bool allowed[JOB_CONCLUDED + 1][JOB_CONCLUDED + 1] = {
	[JOB_CREATED] = { [JOB_RUNNING] = true, [JOB_CANCELING] = true },
	[JOB_RUNNING] = { [JOB_READY] = true, [JOB_PAUSED] = true,
			  [JOB_CANCELING] = true, [JOB_CONCLUDING] = true },
	[JOB_READY] = { [JOB_PAUSED] = true, [JOB_PIVOTING] = true,
			[JOB_FINISHING] = true, [JOB_CONCLUDING] = true },
	[JOB_PAUSED] = { [JOB_RUNNING] = true, [JOB_READY] = true,
			 [JOB_CANCELING] = true, [JOB_CONCLUDING] = true },
	[JOB_PIVOTING] = { [JOB_READY] = true, [JOB_FINISHING] = true,
			   [JOB_CONCLUDING] = true },
	[JOB_FINISHING] = { [JOB_CONCLUDING] = true },
	[JOB_CANCELING] = { [JOB_CONCLUDING] = true },
	[JOB_CONCLUDING] = { [JOB_CONCLUDED] = true },
};

void job_set_state_locked(struct job *job, enum job_state to)
{
	assert(allowed[job->state][to]);
	job->state = to;
	/* The job thread and every waiter re-check what they wait for. */
	pthread_cond_broadcast(&job->cond);
	pthread_cond_broadcast(&job->done_cond);
}

bool job_is_tracking_locked(const struct job *job)
{
	return job->state < JOB_CONCLUDING;
}

void job_note_guest_write(struct job *job, uint64_t off, uint64_t len)
{
	BC_LOCK_GUARD(&job->lock);
	if (job->dirty && job_is_tracking_locked(job)) {
		dirty_bitmap_set(job->dirty, off, len);
		pthread_cond_signal(&job->cond);
	}
}

void job_set_error(struct job *job, int ret)
{
	const struct error_record *e = bc_error_get();

	BC_LOCK_GUARD(&job->lock);
	if (job->err.code)
		return;
	if (e->code) {
		job->err = *e;
	} else {
		char buf[128];

		job->err.code = bc_errno_to_code(-ret);
		job->err.sys_errno = -ret;
		snprintf(job->err.message, sizeof(job->err.message), "%s",
			 strerror_r(-ret, buf, sizeof(buf)));
	}
	if (!job->end_ret)
		job->end_ret = ret < 0 ? ret : -EIO;
}

/* IGNORE back-off before the nth consecutive round: 10 ms doubling, 1 s at most. */
static uint64_t retry_backoff_ns(unsigned int n)
{
	return BC_MIN(10000000ull << BC_MIN(n - 1, 7u), 1000000000ull);
}

bool job_target_error(struct job *job, int ret)
{
	bool queue_paused = false, goes_on = false;
	struct error_record e;

	if (!bc_error_is_set())
		(void)bc_fail_errno(ret); /* a message from the errno */
	e = *bc_error_get();
	pthread_mutex_lock(&job->lock);
	if (job->err.code) {
		/* Already failing: the first error stays. */
	} else if (job->state == JOB_CANCELING) {
		/*
		 * Canceled: the destination is left as it is, so a request
		 * still in flight that fails no longer matters (the job ends
		 * CANCELED, not FAILED: the user asked for the end).
		 */
		goes_on = true;
	} else if (job->state != JOB_RUNNING && job->state != JOB_READY &&
		   job->state != JOB_PAUSED) {
		/* Ending: errors fail the job whatever the policy. */
	} else if (job->opts.on_target_error == JOB_TARGET_STOP) {
		if (job->state != JOB_PAUSED) {
			job->paused_from = job->state;
			job->pause_err = e;
			job_set_state_locked(job, JOB_PAUSED);
			queue_paused = true;
		}
		goes_on = true;
	} else if (job->opts.on_target_error == JOB_TARGET_IGNORE) {
		uint64_t now = job_now_ns();

		/*
		 * One round of retries per back-off: the other requests of
		 * the failed wave, completing meanwhile, count with it.
		 */
		if (now >= job->retry_at_ns) {
			job->target_errors++;
			job->retry_at_ns = now + retry_backoff_ns(job->target_errors);
		}
		goes_on = job->target_errors <= JOB_TARGET_RETRY_MAX;
	}
	pthread_mutex_unlock(&job->lock);
	if (!goes_on) {
		job_set_error(job, ret);
		return false;
	}
	bc_error_reset();
	if (queue_paused)
		engine_queue_event(job->disk->eng, job->disk, job->type,
				   JOB_EVENT_PAUSED, &e);
	return true;
}

void job_target_ok_locked(struct job *job)
{
	job->target_errors = 0;
}

static struct job *job_alloc(bc_disk *disk, int type)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job)
		return NULL;
	job->disk = disk;
	job->type = type;
	atomic_init(&job->refs, 1);
	pthread_mutex_init(&job->lock, NULL);
	pthread_cond_init(&job->cond, NULL);
	pthread_cond_init(&job->done_cond, NULL);
	pthread_cond_init(&job->inflight_cond, NULL);
	job->t0_ns = job_now_ns();
	return job;
}

/*
 * Attach @job to the disk: from here guest writes are tracked in its
 * bitmap. Takes a disk reference. -EALREADY when the disk has a job.
 */
static int job_attach(struct job *job)
{
	bc_disk *disk = job->disk;

	BC_LOCK_GUARD(&disk->lock);
	if (disk->job) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' already has an active block job",
			     disk->path);
		return -EALREADY;
	}
	if (disk->snapshotting) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' is taking a snapshot", disk->path);
		return -EALREADY;
	}
	disk->job = job;
	disk->refs++;
	disk->job_holds++;
	return 0;
}

static void job_detach(struct job *job)
{
	bc_disk *disk = job->disk;

	pthread_mutex_lock(&disk->lock);
	if (disk->job == job)
		disk->job = NULL;
	pthread_mutex_unlock(&disk->lock);
	disk_unref_job(disk);
}

/* Start the attached job's thread (CREATED → RUNNING); detaches it on failure. */
static int job_start_thread(struct job *job, void *(*body)(void *))
{
	pthread_attr_t attr;
	pthread_t tid;
	int ret;

	pthread_mutex_lock(&job->lock);
	if (job->state == JOB_CREATED) /* else aborted meanwhile: CANCELING */
		job_set_state_locked(job, JOB_RUNNING);
	pthread_mutex_unlock(&job->lock);
	job_ref(job); /* the thread's */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&tid, &attr, body, job);
	pthread_attr_destroy(&attr);
	if (ret) {
		job_detach(job);
		job_unref(job);
		bc_error_set(ERR_INTERNAL, ret, "cannot start the job thread");
		return -ret;
	}
	return 0;
}

void job_conclude(struct job *job)
{
	BC_LOCK_GUARD(&job->lock);
	if (job->state != JOB_CONCLUDING)
		job_set_state_locked(job, JOB_CONCLUDING);
}

void job_finish(struct job *job, int status)
{
	bc_disk *disk = job->disk;
	struct job_stats st;

	job_conclude(job);
	job_fill_stats(job, &st);
	st.active = 0;
	st.status = status;
	pthread_mutex_lock(&disk->lock);
	if (disk->job == job)
		disk->job = NULL;
	disk->last_stats = st;
	disk->has_last_stats = true;
	pthread_mutex_unlock(&disk->lock);

	/* Queued before waiters wake: a synchronous abort returns after it. */
	engine_queue_event(disk->eng, disk, job->type, status,
			   status == JOB_EVENT_FAILED ? &job->err : NULL);
	pthread_mutex_lock(&job->lock);
	job->end_status = status;
	job_set_state_locked(job, JOB_CONCLUDED);
	pthread_mutex_unlock(&job->lock);

	job_unref(job); /* the thread's */
	disk_unref_job(disk);
}

/* --- COPY ------------------------------------------------------------- */

/*
 * Make or open the destination (docs/rules.md R12-R15): same format as the
 * source top (raw with COPY_RAW); full copy without backing, shallow copy
 * backed by the source top's backing file (absolute, format recorded).
 */
/* The destination must be as large as the source; closes it if not. */
static int check_dest_size(struct job *job, const char *dest)
{
	if (job->dest->size == job->disk->top->size)
		return 0;
	bc_error_set(ERR_INVALID_ARG, 0,
		     "destination '%s' size %llu differs from source size %llu",
		     dest, (unsigned long long)job->dest->size,
		     (unsigned long long)job->disk->top->size);
	fmt_close(job->dest);
	job->dest = NULL;
	return -EINVAL;
}

/* --- NBD destination (issue 11) --- */
/*
 * A remote destination is never created here: the export must exist
 * (REUSE_EXT) and its metadata, backing file included, is its server's.
 * It is written as the guest data it presents.
 */
static int open_nbd_destination(struct job *job, const char *dest)
{
	int ret;

	if (!job->opts.reuse_ext) {
		bc_error_set(ERR_INVALID_ARG, EINVAL,
			     "destination '%s' is an NBD export: it must exist, use REUSE_EXT",
			     dest);
		return -EINVAL;
	}
	ret = fmt_open(dest, NULL, FMT_OPEN_RDWR, &job->dest);
	if (ret < 0)
		return ret;
	return check_dest_size(job, dest);
}
/* --- end NBD destination --- */

static int open_destination(struct job *job, const char *dest)
{
	struct fmt_image *src = job->disk->top;
	/* A source without a creatable format (an NBD export) copies to raw. */
	bool raw = job->opts.dest_raw || !src->drv->create;
	const char *fmt = raw ? "raw" : src->drv->name;
	unsigned int oflags = FMT_OPEN_RDWR;
	struct stat st;
	int ret;

	if (fmt_is_nbd_uri(dest)) {
		/* The export's own write-behind (formats/nbd.c) is the data path. */
		copy_method_record(job, COPY_METHOD_NBD);
		return open_nbd_destination(job, dest);
	}

	if (stat(dest, &st) == 0) {
		struct fmt_image *l;

		/* Two writers with separate allocators on one file: refuse. */
		for (l = src; l; l = l->backing) {
			struct stat ls;

			if (fstat(l->fd, &ls) == 0 && ls.st_dev == st.st_dev &&
			    ls.st_ino == st.st_ino) {
				bc_error_set(ERR_INVALID_ARG, 0,
					     "destination '%s' is part of the backing chain of '%s'",
					     dest, job->disk->path);
				return -EINVAL;
			}
		}
		if (!job->opts.reuse_ext && S_ISREG(st.st_mode) && st.st_size > 0) {
			bc_error_set(ERR_EXISTS, EEXIST,
				     "destination file '%s' already exists; use REUSE_EXT to write into it",
				     dest);
			return -EEXIST;
		}
		if (!job->opts.reuse_ext && S_ISREG(st.st_mode) &&
		    unlink(dest) < 0) {
			int err = errno;

			bc_error_set(bc_errno_to_code(err), err,
				     "cannot replace empty destination '%s'", dest);
			return -err;
		}
	} else if (job->opts.reuse_ext) {
		int err = errno;

		bc_error_set(bc_errno_to_code(err), err,
			     "destination '%s' must exist with REUSE_EXT", dest);
		return -err;
	}

	if (!job->opts.reuse_ext) {
		struct fmt_create_opts co = { .format = fmt, .size = src->size };
		struct fmt_info info;
		BC_AUTOFREE char *backing = NULL;

		if (!raw) {
			ret = fmt_get_info(src, &info);
			if (ret < 0)
				return ret;
			co.cluster_size = info.cluster_size;
			co.extended_l2 = info.extended_l2;
			co.compat = info.version;
		}
		if (job->opts.shallow && src->backing) {
			backing = realpath(src->backing->filename, NULL);
			if (!backing) {
				int err = errno;

				bc_error_set(bc_errno_to_code(err), err,
					     "cannot resolve backing file '%s'",
					     src->backing->filename);
				return -err;
			}
			co.backing_file = backing;
			co.backing_fmt = src->backing->drv->name;
		}
		ret = fmt_create(dest, &co);
		if (ret < 0)
			return ret;
		job->dest_fresh = true;
	}

	/* The data path decides whether the destination is opened O_DIRECT. */
	ret = copy_method_choose(job, dest, &job->method, &oflags);
	if (ret == 0)
		ret = fmt_open(dest, fmt, oflags, &job->dest);
	if (ret < 0) {
		if (job->dest_fresh)
			(void)unlink(dest);
		return ret;
	}
	return check_dest_size(job, dest);
}

/* --- resume journal (issue 12; engine/copy-journal.h) --- */

/*
 * Whether the copy to @dest keeps a journal: a regular file destination
 * and a source that is a local file (an NBD export has no inode to check).
 */
static bool wants_journal(const struct job *job, const char *dest)
{
	const struct fmt_image *top = job->disk->top;
	struct stat st;

	return !fmt_is_nbd_uri(dest) && !fmt_is_nbd_uri(top->filename) &&
	       top->fd >= 0 && stat(dest, &st) == 0 && S_ISREG(st.st_mode);
}

/* The journal flags of @job's options. */
static unsigned int journal_flags(const struct job *job)
{
	return (job->opts.shallow ? COPY_JOURNAL_SHALLOW : 0) |
	       (job->opts.dest_raw ? COPY_JOURNAL_DEST_RAW : 0);
}

/*
 * Make @j the disk's journal, with guests held so that no write is
 * between the source and the marking: every write that entered before is
 * in job->dirty when this runs, every later one sets its bits itself.
 * Then job->dirty is copied into the journal (a new job), or with @load
 * the journal into job->dirty (resume). A journal the disk kept for another
 * destination can no longer be kept up to date: it is removed.
 */
static void journal_attach(struct job *job, struct copy_journal *j, bool load)
{
	bc_disk *disk = job->disk;
	struct copy_journal *old = NULL;

	disk_quiesce(disk);
	pthread_mutex_lock(&disk->lock);
	if (disk->journal != j) {
		old = disk->journal;
		copy_journal_ref(j);
		disk->journal = j;
	}
	pthread_mutex_unlock(&disk->lock);
	pthread_mutex_lock(&job->lock);
	if (load)
		copy_journal_load(j, job->dirty);
	else
		copy_journal_mark_dirty(j, job->dirty);
	pthread_mutex_unlock(&job->lock);
	disk_resume(disk);
	if (old) {
		(void)copy_journal_remove(old);
		copy_journal_unref(old);
	}
}

void job_journal_detach(struct job *job, bool remove)
{
	bc_disk *disk = job->disk;
	struct copy_journal *j = job->journal;
	bool was_disks = false;

	if (!j)
		return;
	pthread_mutex_lock(&disk->lock);
	if (remove && disk->journal == j) {
		disk->journal = NULL;
		was_disks = true;
	}
	pthread_mutex_unlock(&disk->lock);
	if (remove)
		(void)copy_journal_remove(j);
	if (was_disks)
		copy_journal_unref(j);
}

/* The identity a journal of this job must carry. */
static int job_ident(struct job *job, const char *dest,
		     struct copy_journal_ident *id, char **src_real,
		     char **dst_real)
{
	struct fmt_image *top = job->disk->top;
	int ret;

	ret = copy_journal_ident_of(top->filename, top->fd, dest, id, src_real,
				    dst_real);
	id->size = job->disk->size;
	id->granularity = job->opts.granularity;
	id->flags = journal_flags(job);
	return ret;
}

/* A new copy: create and publish its journal (all it will copy marked). */
static int journal_start(struct job *job, const char *dest)
{
	BC_AUTOFREE char *path = NULL, *src_real = NULL, *dst_real = NULL;
	struct copy_journal_ident id;
	struct copy_journal *j;
	int ret;

	if (!wants_journal(job, dest))
		return 0;
	path = copy_journal_path(dest);
	if (!path)
		return -ENOMEM;
	ret = job_ident(job, dest, &id, &src_real, &dst_real);
	if (ret < 0)
		return ret;
	ret = copy_journal_create(path, &id, &j);
	if (ret < 0)
		return ret;
	job->journal = j;
	journal_attach(job, j, false);
	ret = copy_journal_publish(j);
	if (ret < 0)
		job_journal_detach(job, true);
	return ret;
}

/*
 * RESUME, before the bitmaps exist: find the journal (the one this disk
 * kept, or the file), take the granularity and the destination format
 * from it. Checked against the destination by journal_resume().
 */
static int journal_open_for_resume(struct job *job, const char *dest,
				   bool granularity_given)
{
	BC_AUTOFREE char *path = NULL;
	struct copy_journal *j = NULL;
	bc_disk *disk = job->disk;
	struct stat st;
	int ret;

	/* A missing destination is reported by the journal or the open. */
	if (!wants_journal(job, dest) && stat(dest, &st) == 0) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "cannot resume a copy to '%s': only a regular file destination has a journal",
			     dest);
		return -EINVAL;
	}
	path = copy_journal_path(dest);
	if (!path)
		return -ENOMEM;
	pthread_mutex_lock(&disk->lock);
	if (disk->journal && copy_journal_is_file(disk->journal, path)) {
		j = disk->journal;
		copy_journal_ref(j);
	}
	pthread_mutex_unlock(&disk->lock);
	if (!j) {
		ret = copy_journal_open(path, &j);
		if (ret < 0)
			return ret;
	}
	job->journal = j;
	if (granularity_given &&
	    job->opts.granularity != copy_journal_granularity(j)) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "journal '%s' granularity %u differs from the requested %u",
			     path, copy_journal_granularity(j),
			     job->opts.granularity);
		return -EINVAL;
	}
	job->opts.granularity = copy_journal_granularity(j);
	job->opts.dest_raw = copy_journal_flags(j) & COPY_JOURNAL_DEST_RAW;
	job->opts.reuse_ext = true;
	return 0;
}

/* RESUME, destination open: check who the journal is for, then load it. */
static int journal_resume(struct job *job, const char *dest)
{
	BC_AUTOFREE char *src_real = NULL, *dst_real = NULL;
	struct copy_journal_ident id;
	int ret;

	ret = job_ident(job, dest, &id, &src_real, &dst_real);
	if (ret == 0)
		ret = copy_journal_check(job->journal, &id);
	if (ret < 0)
		return ret;
	journal_attach(job, job->journal, true);
	return 0;
}
/* --- end resume journal --- */

int job_start_copy(bc_disk *disk, const char *dest,
		   const struct job_copy_opts *opts)
{
	struct job *job;
	int ret;

	job = job_alloc(disk, JOB_TYPE_COPY);
	if (!job)
		return -ENOMEM;
	job->opts = *opts;
	/* write_blocking is turned on by the job thread, once dest is open. */
	if (!job->opts.granularity)
		job->opts.granularity = DEFAULT_GRANULARITY;
	job->bandwidth = opts->bandwidth;
	job->dest_path = strdup(dest);
	if (!job->dest_path) {
		ret = -ENOMEM;
		goto err_unref;
	}
	/*
	 * Without RESUME a journal of an earlier copy to @dest is replaced:
	 * the new job copies everything (REUSE_EXT: zeros too).
	 */
	if (opts->resume) {
		ret = journal_open_for_resume(job, dest, opts->granularity != 0);
		if (ret < 0)
			goto err_unref;
	}

	ret = dirty_bitmap_new(disk->size, job->opts.granularity, &job->dirty);
	if (ret < 0)
		goto err_unref;
	ret = dirty_bitmap_new(disk->size, job->opts.granularity, &job->inflight);
	if (ret < 0)
		goto err_unref;
	throttle_init(&job->throttle, job->bandwidth, NULL, NULL);

	/*
	 * Attach first: the check for another job (or a snapshot) and the
	 * attach are one step, so the chain cannot change under the
	 * destination's creation and the scan. Tracking starts before the
	 * allocation scan, so a guest write that races the scan is marked;
	 * the scan is done before returning so that job info reports the
	 * real amount from the first call.
	 */
	ret = job_attach(job);
	if (ret < 0)
		goto err_unref;
	disk_drain_untracked(disk);
	/*
	 * An incremental copy's bitmap is read once tracking is on (a write
	 * from now on is the job's) and before the destination is made, so
	 * that a missing or inconsistent bitmap leaves nothing behind.
	 */
	if (opts->bitmap) {
		ret = fmt_bitmap_read(disk->top, opts->bitmap, &job->scan_bits,
				      &job->scan_nbits, &job->scan_gran_bits);
		if (ret < 0) {
			job_detach(job);
			goto err_unref;
		}
	}
	job->opts.bitmap = NULL; /* the caller's string: not kept */
	ret = open_destination(job, dest);
	if (ret < 0) {
		job_detach(job);
		goto err_unref;
	}
	if (opts->resume) {
		ret = journal_resume(job, dest);
	} else {
		ret = mirror_scan(job);
		if (ret == 0)
			ret = journal_start(job, dest);
	}
	free(job->scan_bits);
	job->scan_bits = NULL;
	if (ret < 0) {
		job_detach(job);
		goto err_unlink;
	}
	ret = job_start_thread(job, mirror_main);
	if (ret < 0)
		goto err_unlink;
	job_unref(job);
	return 0;

err_unlink:
	/* A resumed job's journal stays as it was found. */
	if (!opts->resume)
		job_journal_detach(job, true);
	if (job->dest_fresh)
		(void)unlink(dest);

err_unref:
	job_unref(job);
	return ret;
}

/* --- PULL ------------------------------------------------------------- */

int job_start_pull(bc_disk *disk, const char *base, uint64_t bandwidth,
		   bool relative)
{
	struct fmt_image *layer, *above = NULL;
	BC_AUTOFREE char *base_real = NULL;
	struct job *job;
	int depth, ret;

	if (disk->flags & DISK_OPEN_READONLY) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' is read-only", disk->path);
		return -EROFS;
	}
	job = job_alloc(disk, JOB_TYPE_PULL);
	if (!job)
		return -ENOMEM;
	job->bandwidth = bandwidth;
	throttle_init(&job->throttle, bandwidth, NULL, NULL);
	job->end_fixed = disk->size;

	if (base) {
		base_real = realpath(base, NULL);
		if (!base_real) {
			int err = errno;

			bc_error_set(bc_errno_to_code(err), err,
				     "could not find image '%s' in chain for '%s'",
				     base, disk->path);
			ret = -err;
			goto err_unref;
		}
	}
	/* Find base below the top; depth = its index in the chain. */
	depth = 0;
	for (layer = disk->top; layer; above = layer, layer = layer->backing) {
		BC_AUTOFREE char *real = realpath(layer->filename, NULL);

		if (base && real && strcmp(real, base_real) == 0)
			break;
		depth++;
	}
	if (base && (!layer || layer == disk->top)) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     layer ? "base '%s' is the top of the chain of '%s'"
				   : "could not find image '%s' in chain for '%s'",
			     base, disk->path);
		ret = -EINVAL;
		goto err_unref;
	}
	job->base_depth = depth;
	if (layer) {
		const char *name = layer->filename;

		/* RELATIVE keeps the name the layer above recorded. */
		if (relative && above->backing_name)
			name = above->backing_name;
		job->base_name = strdup(name);
		job->base_fmt = strdup(layer->drv->name);
		if (!job->base_name || !job->base_fmt) {
			ret = -ENOMEM;
			goto err_unref;
		}
	}
	ret = job_attach(job);
	if (ret < 0)
		goto err_unref;
	/* The disk's job now: reported from bc_block_rebase()'s return on. */
	copy_method_record(job, copy_method_pull(disk->top));
	ret = job_start_thread(job, pull_main);
	if (ret < 0)
		goto err_unref;
	job_unref(job);
	return 0;

err_unref:
	job_unref(job);
	return ret;
}

/* --- control ---------------------------------------------------------- */

/* The disk's job with a reference, or NULL. */
static struct job *find_job(bc_disk *disk)
{
	struct job *job;

	BC_LOCK_GUARD(&disk->lock);
	job = disk->job;
	if (job)
		job_ref(job);
	return job;
}

/* The disk's job with a reference; NULL with the error recorded. */
static struct job *get_job(bc_disk *disk)
{
	struct job *job = find_job(disk);

	if (!job)
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "disk '%s' does not have an active block job",
			     disk->path);
	return job;
}

/* Whether MIRRORING was reached (sticky; job->lock held). */
static bool was_ready_locked(const struct job *job)
{
	return job->mirroring_ns != 0;
}

/* Post a pivot request (READY → PIVOTING); 0 or -errno, recorded. */
static int request_pivot_locked(struct job *job, bool verify)
{
	bc_disk *disk = job->disk;

	if (job->type != JOB_TYPE_COPY) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "pivot of disk '%s' requires an active copy block job",
			     disk->path);
		return -EINVAL;
	}
	if (!was_ready_locked(job)) {
		bc_error_set(ERR_BLOCK_COPY_ACTIVE, 0,
			     "block copy still active: disk '%s' not ready for pivot yet",
			     disk->path);
		return -EBUSY;
	}
	if (job->state == JOB_PAUSED) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "block job on disk '%s' is paused after an error: resume or abort it",
			     disk->path);
		return -EINVAL;
	}
	if (job->state != JOB_READY) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "block job on disk '%s' is already ending",
			     disk->path);
		return -EINVAL;
	}
	job->pivot_verify = verify;
	job_set_state_locked(job, JOB_PIVOTING);
	return 0;
}

/* Post an abort: cancel before READY (or when paused), finish after. */
static void request_abort_locked(struct job *job)
{
	switch (job->state) {
	case JOB_CREATED: /* attached, thread not started yet */
	case JOB_RUNNING:
	case JOB_PAUSED:
		job_set_state_locked(job, JOB_CANCELING);
		break;
	case JOB_READY:
		job_set_state_locked(job, JOB_FINISHING);
		break;
	case JOB_PIVOTING:
		job->finish_after_pivot = true; /* applies if the pivot is refused */
		break;
	case JOB_FINISHING:
	case JOB_CANCELING:
	case JOB_CONCLUDING:
	case JOB_CONCLUDED:
		break; /* already ending */
	}
}

int job_abort(bc_disk *disk, bool async, bool pivot, bool verify)
{
	struct job *job = get_job(disk);
	unsigned int refusals;
	int ret = 0;

	if (!job)
		return -EINVAL;
	pthread_mutex_lock(&job->lock);
	refusals = job->pivot_refusals;
	if (pivot) {
		ret = request_pivot_locked(job, verify);
		if (ret < 0)
			goto out_unlock;
	} else {
		request_abort_locked(job);
	}
	if (async)
		goto out_unlock;
	while (job->state != JOB_CONCLUDED &&
	       !(pivot && job->pivot_refusals != refusals))
		pthread_cond_wait(&job->done_cond, &job->lock);
	if (pivot && job->pivot_refusals != refusals) {
		/* The job goes on mirroring; the mismatch is being recopied. */
		ret = -EIO;
		bc_error_set(job->refuse_err.code, job->refuse_err.sys_errno,
			     "%s", job->refuse_err.message);
	} else if (pivot && job->end_ret) {
		ret = job->end_ret;
		bc_error_set(job->err.code, job->err.sys_errno, "%s",
			     job->err.message);
	}
out_unlock:
	pthread_mutex_unlock(&job->lock);
	job_unref(job);
	return ret;
}

int job_resume(bc_disk *disk)
{
	struct job *job = get_job(disk);
	int ret = 0;

	if (!job)
		return -EINVAL;
	pthread_mutex_lock(&job->lock);
	if (job->state != JOB_PAUSED) {
		bc_error_set(ERR_OPERATION_INVALID, 0,
			     "block job on disk '%s' is not paused", disk->path);
		ret = -EINVAL;
	} else {
		memset(&job->pause_err, 0, sizeof(job->pause_err));
		job->target_errors = 0;
		job_set_state_locked(job, job->paused_from);
	}
	pthread_mutex_unlock(&job->lock);
	job_unref(job);
	return ret;
}

int job_get_state(bc_disk *disk, int *state, struct error_record *err)
{
	struct job *job = find_job(disk);

	if (err)
		memset(err, 0, sizeof(*err));
	if (!job)
		return 0;
	pthread_mutex_lock(&job->lock);
	switch (job->state) {
	case JOB_CREATED:
	case JOB_RUNNING:
		*state = JOB_STATE_RUNNING;
		break;
	case JOB_READY:
		*state = JOB_STATE_READY;
		break;
	case JOB_PAUSED:
		*state = JOB_STATE_PAUSED;
		if (err)
			*err = job->pause_err;
		break;
	case JOB_PIVOTING:
	case JOB_FINISHING:
	case JOB_CANCELING:
	case JOB_CONCLUDING:
	case JOB_CONCLUDED:
		*state = JOB_STATE_ENDING;
		break;
	}
	pthread_mutex_unlock(&job->lock);
	job_unref(job);
	return 1;
}

int job_get_info(bc_disk *disk, struct job_info *info, bool bytes)
{
	struct job *job = find_job(disk);

	memset(info, 0, sizeof(*info));
	if (!job)
		return 0;

	pthread_mutex_lock(&job->lock);
	info->type = job->type;
	info->cur = job->cur;
	if (job->type == JOB_TYPE_COPY)
		info->end = job->cur + job->inflight_bytes +
			    dirty_bitmap_count_bytes(job->dirty);
	else
		info->end = job->end_fixed;
	if (bytes)
		info->bandwidth = (unsigned long)job->bandwidth;
	else
		/* Round up: a limit below 1 MiB/s is not "unlimited" (0). */
		info->bandwidth = (unsigned long)((job->bandwidth + (1u << 20) - 1) >> 20);
	pthread_mutex_unlock(&job->lock);
	job_unref(job);
	return 1;
}

void job_fill_stats(struct job *job, struct job_stats *st)
{
	memset(st, 0, sizeof(*st));
	BC_LOCK_GUARD(&job->lock);
	st->active = 1;
	st->status = -1;
	st->type = job->type;
	st->mode = job->write_blocking ? JOB_MODE_WRITE_BLOCKING
				       : JOB_MODE_BACKGROUND;
	st->auto_converge = job->opts.auto_converge;
	st->ready = was_ready_locked(job);
	st->cur = job->cur;
	if (job->type == JOB_TYPE_COPY) {
		st->dirty_bytes = dirty_bitmap_count_bytes(job->dirty);
		st->end = job->cur + job->inflight_bytes + st->dirty_bytes;
	} else {
		st->end = job->end_fixed;
	}
	st->bytes_copied = job->bytes_copied;
	st->bytes_zeroed = job->bytes_zeroed;
	st->active_writes = job->blocking_writes;
	st->mirroring_ns = job->mirroring_ns;
	st->mode_switch_ns = job->mode_switch_ns;
	st->pivot_stall_ns = job->stall_ns;
	st->elapsed_ns = job_now_ns() - job->t0_ns;
}

int job_get_stats(bc_disk *disk, struct job_stats *st)
{
	struct job *job;

	pthread_mutex_lock(&disk->lock);
	job = disk->job;
	if (job) {
		job_ref(job);
	} else if (disk->has_last_stats) {
		*st = disk->last_stats;
		pthread_mutex_unlock(&disk->lock);
		return 1;
	}
	pthread_mutex_unlock(&disk->lock);
	if (!job) {
		memset(st, 0, sizeof(*st));
		return 0;
	}
	job_fill_stats(job, st);
	job_unref(job);
	return 1;
}

int job_set_speed(bc_disk *disk, uint64_t bandwidth)
{
	struct job *job = get_job(disk);

	if (!job)
		return -EINVAL;
	pthread_mutex_lock(&job->lock);
	job->bandwidth = bandwidth;
	throttle_set_rate(&job->throttle, bandwidth);
	pthread_cond_broadcast(&job->cond);
	pthread_mutex_unlock(&job->lock);
	job_unref(job);
	return 0;
}
