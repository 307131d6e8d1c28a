/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PULL job (block stream): copy into the top image every range that a
 * layer between the top and base holds, then make base the top's backing
 * file with one atomic header write.
 *
 * A guest write and a pull chunk must not interleave on the same range
 * (the pull would overwrite newer guest data with older backing data), so
 * each chunk holds the disk's write gate exclusively while it checks that
 * the top still does not hold the range, reads the backing and writes the
 * top. Guest reads are not held: before and after the chunk they read the
 * same content.
 *
 * Data path (engine/copy-method.h, copy_path_open_pull): read through the
 * backing's drivers and written through the top's, which puts the data in
 * the file before the metadata that exposes it. On a buffered top the host
 * ranges written go to write-behind after the chunk, outside the write
 * gate (its waits must not hold guest writes).
 */
#include "engine/job.h"

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
	int ret;

	pthread_rwlock_wrlock(&disk->write_gate);
	ret = fmt_chain_block_status(top, off, len, &ext);
	if (ret < 0)
		goto out;
	*done = ext.len;
	if (ext.depth == 0 || ext.depth >= job->base_depth)
		goto out; /* held by the top already, or by base and below */
	if (ext.state == FMT_UNALLOC)
		goto out; /* reads zeros now and after: nothing above base */
	if (ext.state == FMT_ZERO) {
		ret = fmt_write_zeroes(top, off, ext.len, 0);
		goto out;
	}
	ret = fmt_read_backing(top, buf, (size_t)ext.len, off);
	if (ret == 0)
		ret = fmt_pwrite(top, buf, (size_t)ext.len, off);
	if (ret == 0 && path->wb.fd >= 0)
		note_written(top, off, ext.len, w);
	*copied = ext.len;
out:
	pthread_rwlock_unlock(&disk->write_gate);
	return ret;
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
