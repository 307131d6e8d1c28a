/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PULL job (block stream): copy into the top image every range that a
 * layer between the top and base holds, then make base the top's backing
 * file with one atomic header write.
 *
 * A guest write and a pull chunk must not interleave on the same range
 * (the pull would overwrite newer guest data with older backing data). The
 * chunk asks the chain's block status and reads the backing (metadata and
 * data I/O) without holding guests, then takes the disk's write gate
 * exclusively only to write the top. That is safe because nothing but
 * guest writes changes the range meanwhile (the layers below the top are
 * read-only), and every guest write of the pull's life is seen: each one
 * marks the granules it touched in job->dirty (job_note_guest_write(),
 * under the gate's read side), which the chunk clears before it looks. A
 * granule marked by the time the gate is held means a guest wrote there
 * since: the chunk looks again under the gate (only then does the gate
 * cover block-status and read I/O), so the guest's data always wins and
 * every chunk makes progress. Writes that entered before the job existed
 * were not tracked: pull_main() waits for them first. Guest reads are not
 * held: before and after the chunk they read the same content.
 *
 * Data path (engine/copy-method.h, copy_path_open_pull): read through the
 * backing's drivers and written through the top's, which puts the data in
 * the file before the metadata that exposes it. On a buffered top the host
 * ranges written go to write-behind after the chunk, outside the write
 * gate (its waits must not hold guest writes).
 */
#include "engine/job.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/common/clock.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define PULL_CHUNK     (1u << 20)
#define PULL_BUF_ALIGN 4096u /* an O_DIRECT disk's driver reads into it */
/* Host runs of one written chunk handed to write-behind (more: dropped,
 * the final flush writes them). */
#define PULL_RUNS_MAX 8u
/* Granules of job->dirty, where guest writes are marked during a pull. */
#define PULL_TRACK_GRAN (64u * 1024)

struct pull_written {
	uint64_t host[PULL_RUNS_MAX], len[PULL_RUNS_MAX];
	unsigned int n;
};

/* Where the top now holds [off, off + len): for write-behind. */
static void note_written(struct fmt_image *top, uint64_t off, uint64_t len,
			 struct pull_written *w)
{
	struct fmt_extent e;

	while (len && w->n < PULL_RUNS_MAX &&
	       fmt_block_status(top, off, len, &e) == 0 && e.host_off >= 0) {
		w->host[w->n] = (uint64_t)e.host_off;
		w->len[w->n++] = e.len;
		off += e.len;
		len -= e.len;
	}
	bc_error_reset(); /* only a hint for the page cache */
}

/*
 * Look at the first block-status run of [off, off+len): *ext gets it,
 * and when a layer above base holds data there, @buf its content.
 * Returns 1 when the run is to be written to the top (FMT_ZERO: as
 * zeros), 0 when it is not (held by the top, or by base and below, or
 * unallocated down to base), or -errno.
 */
static int look(struct job *job, uint8_t *buf, uint64_t off, uint64_t len,
		struct fmt_extent *ext)
{
	struct fmt_image *top = job->disk->top;
	int ret;

	ret = fmt_chain_block_status(top, off, len, ext);
	if (ret < 0)
		return ret;
	if (ext->depth == 0 || ext->depth >= job->base_depth)
		return 0; /* held by the top already, or by base and below */
	if (ext->state == FMT_UNALLOC)
		return 0; /* reads zeros now and after: nothing above base */
	if (ext->state == FMT_ZERO)
		return 1;
	ret = fmt_read_backing(top, buf, (size_t)ext->len, off);
	return ret < 0 ? ret : 1;
}

/* Whether a guest wrote in [off, off+len) since the chunk cleared it. */
static bool guest_wrote(struct job *job, uint64_t off, uint64_t len)
{
	int64_t n;

	BC_LOCK_GUARD(&job->lock);
	n = dirty_bitmap_next_dirty(job->dirty, off);
	return n >= 0 && (uint64_t)n < off + len;
}

/*
 * Handle the first block-status run of [off, off+len): copy it into the
 * top if a layer above base holds it. *done = the run's length, *copied =
 * bytes written to the top (what the bandwidth limit counts).
 */
static int pull_chunk(struct job *job, const struct copy_path *path,
		      uint8_t *buf, uint64_t off, uint64_t len, uint64_t *done,
		      uint64_t *copied, struct pull_written *w)
{
	bc_disk *disk = job->disk;
	struct fmt_image *top = disk->top;
	struct fmt_extent ext;
	bool wrote = false;
	int ret;

	pthread_mutex_lock(&job->lock);
	/* Wider than the range is harmless: the bits serve this chunk only. */
	dirty_bitmap_clear(job->dirty, bc_align_down(off, PULL_TRACK_GRAN),
			   bc_align_up(off + len, PULL_TRACK_GRAN) -
				   bc_align_down(off, PULL_TRACK_GRAN));
	pthread_mutex_unlock(&job->lock);
	ret = look(job, buf, off, len, &ext);
	if (ret < 0)
		return ret;
	if (ret == 0) {
		*done = ext.len;
		return 0;
	}
	pthread_rwlock_wrlock(&disk->write_gate);
	/* Rare: a guest wrote there; look again with guests held. */
	if (guest_wrote(job, off, ext.len))
		ret = look(job, buf, off, len, &ext);
	if (ret > 0 && ext.state == FMT_ZERO) {
		ret = fmt_write_zeroes(top, off, ext.len, 0);
	} else if (ret > 0) {
		ret = fmt_pwrite(top, buf, (size_t)ext.len, off);
		wrote = ret == 0;
	}
	pthread_rwlock_unlock(&disk->write_gate);
	if (ret < 0)
		return ret;
	*done = ext.len;
	if (!wrote)
		return 0;
	*copied = ext.len;
	/* Where it landed, for write-behind (an overwrite keeps the mapping). */
	if (path->wb.fd >= 0)
		note_written(top, off, ext.len, w);
	return 0;
}

/*
 * Wait until the limit allows @len more bytes; false when the job was
 * asked to stop. The bytes are charged after the chunk, as copied.
 */
static bool wait_for_budget(struct job *job, uint64_t len)
{
	BC_LOCK_GUARD(&job->lock);
	for (;;) {
		uint64_t delay;
		struct timespec ts;

		if (job->state != JOB_RUNNING) /* CANCELING */
			return false;
		delay = throttle_delay_ns(&job->throttle, len);
		if (!delay)
			break;
		ts = bc_cond_deadline(delay);
		pthread_cond_timedwait(&job->cond, &job->lock, &ts);
	}
	return true;
}

/*
 * Point the top at base (or at nothing) and close the layers in between.
 * The guest is quiesced around it: its reads walk the chain being cut.
 */
static int pull_finish(struct job *job)
{
	bc_disk *disk = job->disk;
	struct fmt_image *top = disk->top, *cut, *base, *l;
	int ret, i;

	ret = fmt_flush(top);
	if (ret < 0)
		return ret;
	if (!top->backing)
		return 0; /* nothing to pull from, nothing to rewrite (raw too) */
	disk_quiesce(disk);
	ret = fmt_set_backing(top, job->base_name, job->base_fmt);
	if (ret == 0) {
		cut = top->backing;
		base = cut;
		for (i = 1; i < job->base_depth && base; i++)
			base = base->backing;
		/* Detach base from the last intermediate, then close those. */
		for (l = cut; l && l != base; l = l->backing) {
			if (l->backing == base) {
				l->backing = NULL;
				break;
			}
		}
		top->backing = base;
		if (cut != base)
			fmt_close(cut);
	}
	disk_resume(disk);
	return ret;
}

/*
 * From now on every guest write marks job->dirty (the header comment);
 * then wait for the writes that entered before the job: they mark
 * nothing, and a fast one does not even take the gate. Returns 0 or
 * -errno.
 */
static int track_guest_writes(struct job *job)
{
	struct dirty_bitmap *d;
	int ret;

	ret = dirty_bitmap_new(job->disk->size, PULL_TRACK_GRAN, &d);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&job->lock);
	assert(!job->dirty); /* a COPY's bitmap; a PULL has none of its own */
	job->dirty = d;	     /* freed with the job */
	pthread_mutex_unlock(&job->lock);
	disk_drain_untracked(job->disk);
	return 0;
}

void *pull_main(void *arg)
{
	struct job *job = arg;
	uint64_t off = 0, size = job->disk->size;
	int status = JOB_EVENT_FAILED;
	struct copy_path path;
	void *buf = NULL;
	int ret;

	bc_error_reset();
	copy_path_open_pull(&path, job->method, job->disk->top);
	ret = -posix_memalign(&buf, PULL_BUF_ALIGN, PULL_CHUNK);
	if (ret < 0)
		buf = NULL; /* unspecified after a failure */
	if (ret == 0)
		ret = track_guest_writes(job);
	while (ret == 0 && off < size) {
		uint64_t len = BC_MIN(PULL_CHUNK, size - off);
		uint64_t done = 0, copied = 0;
		struct pull_written w = {.n = 0};
		unsigned int i;

		if (!wait_for_budget(job, len))
			break;
		ret = pull_chunk(job, &path, buf, off, len, &done, &copied, &w);
		for (i = 0; ret == 0 && i < w.n; i++)
			ret = copy_path_written(&path, w.host[i], w.len[i]);
		off += done;
		pthread_mutex_lock(&job->lock);
		throttle_account(&job->throttle, copied);
		job->cur = off;
		pthread_mutex_unlock(&job->lock);
	}
	free(buf);
	copy_path_close(&path);

	if (ret < 0) {
		job_set_error(job, ret);
	} else if (off < size) {
		status = JOB_EVENT_CANCELED;
	} else {
		ret = pull_finish(job);
		if (ret < 0)
			job_set_error(job, ret);
		else
			status = JOB_EVENT_COMPLETED;
	}
	job_finish(job, status);
	return NULL;
}
