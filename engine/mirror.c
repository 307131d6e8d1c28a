/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The COPY job: initial scan, bulk copy, mirroring, pivot and abort.
 *
 * The copy loop takes dirty extents (coalesced granules, at most one chunk
 * each), clears their dirty bits and marks them in flight before reading,
 * so a guest write landing meanwhile re-dirties them and a later pass
 * copies them again. An extent whose granules are still in flight from an
 * earlier copy waits: two copies of a granule never overlap, so a stale
 * copy can never land after a newer one.
 *
 * Data path per chunk ("slot", a preallocated aligned buffer):
 *   source range mapped to host ranges of its layers' files (up to
 *   RUNS_MAX consecutive data runs, one read each)
 *       → read with the I/O backend (io_uring or libaio)
 *   anything else (compressed, mixed runs inside one granule)
 *       → synchronous read through the format driver
 *   zero/unallocated ranges, and data that turns out all zero
 *       → a zero write to the destination (skipped by the initial scan
 *         where the destination reads zero already: a fresh one, or the
 *         holes and zero runs of a reused one)
 *   destination: where its format maps the range for an overwrite (raw:
 *   itself; qcow2: whole clusters, allocated under the driver lock) the
 *   write goes through the I/O backend at the host offsets; the rest
 *   through the driver, synchronously (submit_write()).
 *
 * Write-blocking mode (SYNCHRONOUS_WRITES, or AUTO_CONVERGE once the
 * dirty set stops shrinking): a guest write first waits for in-flight
 * copies of the granules it touches and claims them, writes the source,
 * then the destination, then marks the granules it covered whole as in
 * sync. Where every granule it touches is still dirty the background copy
 * will carry the write anyway, so it skips the destination: guest writes
 * only pay for the destination where it is already in sync. Only true
 * overlaps wait; the bandwidth limit does not apply to guest writes.
 *
 * Slots and buffers are allocated once at job start; the loop itself does
 * not allocate. The bandwidth limit is charged per chunk when its
 * destination write is submitted (a chunk read waits in SLOT_THROTTLED
 * until the limit lets it go; reads run at most THROTTLE_READ_AHEAD_NS
 * ahead), so the destination sees the limit whatever the read latency. It
 * is not applied in the final sync of a pivot or finish, so the pivot's
 * stall depends only on the remaining dirty data.
 */
#include "engine/job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "engine/iob.h"
#include "lib/common/clock.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

/*
 * A chunk is a sixteenth of the buffer, at most CHUNK_MAX: the default
 * 16 MiB buffer gives 1 MiB requests (as QEMU's mirror); `blockcopy copy`
 * asks for 64 MiB and gets 4 MiB requests, the disk's largest
 * (max_sectors_kb 4096 here), which measured 7-12 % faster on qcow2
 * sparse and chain copies. (Under a bandwidth limit an extent is also cut
 * to about 1/100 s of the limit: take_extent_locked().)
 */
#define CHUNK_MAX (4u << 20)
/* Chunks the kernel copies (copy_file_range, reflink): large, few calls. */
#define OFFLOAD_CHUNK (64u << 20)
#define SLOTS_MAX   64u
/* Host runs one chunk may be written as (qcow2 clusters need not be
 * contiguous); past this the rest of the chunk goes through the driver. */
#define RUNS_MAX    8u
#define BUF_ALIGN   4096u
/* Auto-converge: switch when the dirty set made no new low for this long. */
#define CONVERGE_STALL_NS (1000ull * 1000 * 1000)
#define VERIFY_CHUNK      (1u << 20)
/*
 * While mirroring, flush the destination at most this often when it was
 * written: the flush under the pivot's quiesce then only has what came
 * since, so the guest stall does not grow with time spent mirroring.
 */
#define FLUSH_INTERVAL_NS (500ull * 1000 * 1000)
/*
 * Resume journal checkpoints (engine/copy-journal.h): at most this long,
 * or this much copied, between two; a resumed copy redoes at most about
 * that much (plus what was in flight).
 */
#define CHECKPOINT_NS    (1000ull * 1000 * 1000)
#define CHECKPOINT_BYTES (128ull << 20)
/*
 * ...but no sooner than this many times the time the last one held the
 * copy loop: a qcow2 destination's flush (refcounts, sync, tables, sync)
 * stalls the loop ~20 ms, every 120 ms at 128 MiB on this disk, while a
 * raw destination's fdatasync is queued and costs the loop nothing. So a
 * checkpoint costs the copy at most 1/20 of its time.
 */
#define CHECKPOINT_COST_FACTOR 20u
#define CHECKPOINT_GAP_MAX_NS  (10 * CHECKPOINT_NS)
/* A checkpoint waiting for guest writes of the old epoch looks again after. */
#define CHECKPOINT_RETRY_NS (1000ull * 1000)
/* user_data of a checkpoint's fdatasync: no slot has it. */
#define CKPT_TAG UINT64_MAX

/* THROTTLED: read, waiting for the bandwidth limit to let its write go. */
enum slot_state { SLOT_FREE, SLOT_READING, SLOT_THROTTLED, SLOT_WRITING };

/*
 * Under a limit, another read is issued only while the chunks read or being
 * read could all be written within this time: a read stall shorter than
 * this costs the destination nothing (measured: with 50 ms, stalls of the
 * loaded source made 1-s windows dip 5-16 %), and a chunk holds its
 * granules in flight (where a write-blocking guest write would wait for
 * them) for at most about this long, whatever the limit.
 */
#define THROTTLE_READ_AHEAD_NS (200ull * 1000 * 1000)

struct slot_run {
	uint64_t buf_off; /* from the start of the slot's buffer */
	uint64_t host;    /* in the destination file */
	uint64_t len;
};

struct slot_read {
	const struct fmt_image *layer; /* the file read */
	int fd;                        /* ...through this descriptor */
	uint32_t align;                /* ...which wants this alignment */
	uint64_t host;                 /* at this offset in it */
	uint64_t buf_off;              /* into the slot's buffer there */
	uint64_t len;
};

struct slot {
	enum slot_state state;
	uint64_t off;  /* guest offset */
	uint64_t len;
	bool zero;     /* written as zeroes */
	bool skipped;  /* nothing to write (shallow: held by the backing) */
	uint8_t *buf;
	/*
	 * Asynchronous reads: the chunk's data runs, each from its layer's
	 * file (several when consecutive runs sit in different layers).
	 */
	struct slot_read reads[RUNS_MAX];
	unsigned int nreads;            /* 0: read through the driver */
	unsigned int reads_pending;     /* ...not yet completed */
	int read_err;                   /* first failure among them */
	bool read_short;                /* one ended early: see handle_cqe */
	struct slot_run runs[RUNS_MAX]; /* destination writes in flight */
	unsigned int pending;           /* ...how many have not completed */
	int err;                        /* first error among them */
	struct slot *next_throttled;	/* SLOT_THROTTLED: the next one */
};

struct mirror {
	struct job *job;
	struct fmt_image *src;
	struct fmt_image *dest;
	struct iob *iob;
	struct slot *slots;
	unsigned int nslots;
	unsigned int nbusy;
	struct slot *throttled_head; /* SLOT_THROTTLED slots, in read order */
	struct slot *throttled_tail;
	unsigned int nthrottled;
	uint64_t chunk;
	uint64_t gran;
	uint64_t cursor;     /* where the next dirty search starts */
	bool dest_async;     /* destination writes go through the backend */
	struct copy_path path; /* data path state (engine/copy-method.c) */
	bool quiesced;
	uint64_t quiesce_t0;
	uint64_t last_flush_ns;
	struct iob_cqe *cqes;
	/* resume journal checkpoints */
	bool ckpt_pending;    /* begun, waiting for the old epoch's writes */
	bool ckpt_flushing;   /* its destination fdatasync is in flight */
	uint64_t ckpt_now;    /* ...and when it was taken */
	uint64_t ckpt_ns;     /* when the last one was committed */
	uint64_t ckpt_cost_ns; /* how long the last one held the loop */
	uint64_t ckpt_work;   /* job progress then (work_done_locked) */
	uint64_t ckpt_begin_work;
};

/* --- setup ------------------------------------------------------------ */

/*
 * Pin the slot buffers as fixed buffers (io_uring): saves the per-request
 * page pinning, which the iob measurements showed as ~40% of the copy's
 * system time. Optional: without it the copy works the same.
 */
static void register_slots(struct mirror *m)
{
	struct iovec *iov = calloc(m->nslots, sizeof(*iov));
	unsigned int i;

	if (!iov)
		return;
	for (i = 0; i < m->nslots; i++) {
		iov[i].iov_base = m->slots[i].buf;
		iov[i].iov_len = m->chunk;
	}
	if (iob_register_buffers(m->iob, iov, m->nslots) < 0)
		bc_error_reset();
	free(iov);
}

/*
 * A destination this job created (or is resuming) receives the data the
 * scan found (a resumed or incremental copy: what its bitmap marks; zero
 * runs allocate nothing), into space not yet allocated: tell its format,
 * so that a qcow2 file grows once rather than while the writes run. Only
 * a hint: a refusal (no space now) leaves the writes to allocate, and
 * fail, as they would have.
 */
static void reserve_dest(struct mirror *m)
{
	struct job *job = m->job;
	uint64_t bytes = job->scan_data;

	if (!job->dest_fresh && !job->opts.resume)
		return;
	pthread_mutex_lock(&job->lock);
	if (job->opts.resume)
		bytes = dirty_bitmap_count_bytes(job->dirty);
	pthread_mutex_unlock(&job->lock);
	if (fmt_reserve(m->dest, bytes) < 0)
		bc_error_reset();
}

static int mirror_setup(struct mirror *m, struct job *job)
{
	uint64_t buf_size = job->opts.buf_size ? job->opts.buf_size
					       : 16ull << 20;
	unsigned int i;
	int ret;

	m->job = job;
	m->src = job->disk->top;
	m->dest = job->dest;
	m->gran = job->opts.granularity;
	m->chunk = BC_MAX(m->gran, BC_MIN(CHUNK_MAX, buf_size / 16));
	m->nslots = (unsigned int)BC_MIN(SLOTS_MAX,
					 BC_MAX(1, buf_size / m->chunk));
	m->dest_async = m->dest->drv->map_for_overwrite != NULL;
	ret = copy_path_open(&m->path, job->method, m->src, m->dest);
	if (ret < 0)
		return ret;
	if (copy_path_offloads(&m->path)) {
		/* No data passes through the slots: one, with a token buffer. */
		m->chunk = BC_MAX(m->gran, OFFLOAD_CHUNK);
		m->nslots = 1;
	}

	m->slots = calloc(m->nslots, sizeof(*m->slots));
	m->cqes = calloc(m->nslots, sizeof(*m->cqes));
	if (!m->slots || !m->cqes)
		return -ENOMEM;
	for (i = 0; i < m->nslots; i++) {
		void *p;

		ret = posix_memalign(&p, BUF_ALIGN,
				     copy_path_offloads(&m->path) ? BUF_ALIGN
								  : m->chunk);
		if (ret)
			return -ret;
		m->slots[i].buf = p;
	}
	/* + 1: a checkpoint's fdatasync (checkpoint()). */
	ret = iob_new(m->nslots * RUNS_MAX + 1, 0, &m->iob);
	if (ret < 0) {
		/* The backend's message names its ring only: say whose. */
		struct error_record e = *bc_error_get();

		bc_error_set(e.code, e.sys_errno, "%s: cannot start the copy: %s",
			     job->dest_path, e.message);
		return ret;
	}
	if (!copy_path_offloads(&m->path))
		register_slots(m);
	reserve_dest(m);
	return 0;
}

static void mirror_teardown(struct mirror *m)
{
	unsigned int i;

	if (m->iob)
		iob_free(m->iob);
	if (m->slots) {
		for (i = 0; i < m->nslots; i++)
			free(m->slots[i].buf);
	}
	free(m->slots);
	free(m->cqes);
	copy_path_close(&m->path);
}

/*
 * Incremental copy: the runs of granules the bitmap marks, whatever they
 * hold now (a range that became zero must become zero in the copy too);
 * for a shallow copy, only what the top layer holds within them.
 */
static int scan_bitmap(struct job *job)
{
	struct fmt_image *src = job->disk->top;
	uint64_t size = src->size, i = 0, n = job->scan_nbits;
	uint32_t g = job->scan_gran_bits;
	int ret;

	while (i < n) {
		uint64_t j, off, end;

		if (!(job->scan_bits[i / 8] & (1u << (i % 8)))) {
			i++;
			continue;
		}
		for (j = i + 1; j < n && (job->scan_bits[j / 8] & (1u << (j % 8)));)
			j++;
		off = i << g;
		end = BC_MIN(size, j << g);
		i = j;
		while (off < end) {
			struct fmt_extent ext = { .len = end - off };
			bool mark = true;

			if (job->opts.shallow) {
				ret = fmt_chain_block_status(src, off, end - off,
							     &ext);
				if (ret < 0)
					return ret;
				mark = ext.depth == 0 && ext.state != FMT_UNALLOC;
			}
			if (mark) {
				BC_LOCK_GUARD(&job->lock);
				dirty_bitmap_set(job->dirty, off, ext.len);
			}
			/* Zero clusters of a shallow copy allocate nothing. */
			if (mark && ext.state != FMT_ZERO)
				job->scan_data += ext.len;
			off += ext.len;
		}
	}
	return 0;
}

/* The destination's last block-status answer, for the queries it covers. */
struct dest_status {
	uint64_t off, end; /* [off, end) answered; end == 0: none yet */
	enum fmt_state state;
};

/*
 * Mark dirty the parts of [off, off+len), which the source reads as zeros,
 * where the existing destination does not read zeros already: a reused
 * destination that is empty there (a new export, a sparse file) gets no
 * zero writes, as QEMU's mirror skips ranges its target already zeroes.
 */

static int scan_zero_run(struct job *job, struct dest_status *ds, uint64_t off,
			 uint64_t len)
{
	uint64_t end = off + len;
	int ret;

	while (off < end) {
		uint64_t n;

		/*
		 * Nothing writes the destination during the scan: an answer
		 * stays true. A guest that wrote between many holes of the
		 * source would otherwise cost a round trip per hole to a
		 * remote destination, whose empty export answers once.
		 */
		if (!(ds->off <= off && off < ds->end)) {
			struct fmt_extent d;

			ret = fmt_chain_block_status(job->dest, off,
						     job->dest->size - off, &d);
			if (ret < 0)
				return ret;
			ds->off = off;
			ds->end = off + d.len;
			ds->state = d.state;
		}
		n = BC_MIN(end, ds->end) - off;
		if (ds->state == FMT_DATA) {
			BC_LOCK_GUARD(&job->lock);
			dirty_bitmap_set(job->dirty, off, n);
		}
		off += n;
	}
	return 0;
}

/*
 * Initial bitmap from block status. Full copy: data anywhere in the chain,
 * plus zero/unallocated ranges where a reused destination holds data.
 * Shallow copy: what the top layer holds (data or zero). Runs after the
 * job is attached to the disk and the writes that entered before it have
 * drained, so every write is either seen here or tracked.
 */
int mirror_scan(struct job *job)
{
	struct fmt_image *src = job->disk->top;
	uint64_t off = 0, size = src->size;
	struct dest_status ds = { 0 };
	int ret;

	if (job->scan_bits)
		return scan_bitmap(job);

	while (off < size) {
		struct fmt_extent ext;
		bool mark;

		ret = fmt_chain_block_status(src, off, size - off, &ext);
		if (ret < 0)
			return ret;
		if (job->opts.shallow) {
			mark = ext.depth == 0 && ext.state != FMT_UNALLOC;
		} else if (ext.state != FMT_DATA && !job->dest_fresh) {
			ret = scan_zero_run(job, &ds, off, ext.len);
			if (ret < 0)
				return ret;
			mark = false;
		} else {
			mark = ext.state == FMT_DATA;
		}
		if (mark) {
			BC_LOCK_GUARD(&job->lock);
			dirty_bitmap_set(job->dirty, off, ext.len);
		}
		if (mark && ext.state == FMT_DATA)
			job->scan_data += ext.len;
		off += ext.len;
	}
	return 0;
}

/* --- per-chunk work --------------------------------------------------- */

static struct fmt_image *layer_at(struct fmt_image *top, int depth)
{
	while (depth-- > 0 && top)
		top = top->backing;
	return top;
}

/*
 * Chunk done (successfully or not): release its granules. A failed chunk
 * is dirty again; @target says the destination failed, which the
 * target-error policy handles (a source error fails the job).
 */
static void slot_release(struct mirror *m, struct slot *s, int ret,
			 bool target)
{
	struct job *job = m->job;

	pthread_mutex_lock(&job->lock);
	dirty_bitmap_clear(job->inflight, s->off, s->len);
	pthread_cond_broadcast(&job->inflight_cond);
	job->inflight_bytes -= s->len;
	if (ret < 0) {
		dirty_bitmap_set(job->dirty, s->off, s->len); /* copy it again later */
	} else {
		job->cur += s->len;
		if (!s->skipped) {
			job->dest_unflushed = true;
			job_target_ok_locked(job);
		}
		if (s->zero)
			job->bytes_zeroed += s->len;
		else if (!s->skipped)
			job->bytes_copied += s->len;
	}
	pthread_mutex_unlock(&job->lock);
	if (ret < 0 && target)
		(void)job_target_error(job, ret);
	else if (ret < 0)
		job_set_error(job, ret);
	s->state = SLOT_FREE;
	m->nbusy--;
}

static int write_zeroes_dest(struct mirror *m, struct slot *s)
{
	s->zero = true;
	return fmt_write_zeroes(m->dest, s->off, s->len, FMT_ZERO_MAY_UNMAP);
}

/* user_data of a destination write: slot index and run number. */
static uint64_t run_tag(const struct mirror *m, const struct slot *s,
			unsigned int run)
{
	return (uint64_t)(s - m->slots) | ((uint64_t)run << 16);
}

/*
 * Write the chunk in s->buf (non-zero data the limit let go) to the
 * destination, or have the kernel copy it (offload). Where the format maps the
 * range for an overwrite (raw: itself; qcow2: whole clusters, allocated
 * once under the driver lock) the data goes through the I/O backend at
 * the host offsets, up to RUNS_MAX runs; the rest through the driver.
 */
static void submit_write(struct mirror *m, struct slot *s)
{
	uint32_t align;
	int ret = 0, fd = copy_path_write_fd(&m->path, m->dest, &align);
	uint64_t done = 0;

	if (copy_path_offloads(&m->path)) {
		/* Raw → raw: the kernel copies (or shares) the range. */
		slot_release(m, s,
			     copy_path_offload(&m->path, m->src, m->dest,
					       s->off, s->len),
			     true);
		return;
	}
	s->pending = 0;
	s->err = 0;
	s->state = SLOT_WRITING;
	while (m->dest_async && done < s->len && s->pending < RUNS_MAX) {
		struct fmt_extent ext;
		struct slot_run *r = &s->runs[s->pending];

		ret = fmt_map_for_overwrite(m->dest, s->off + done,
					    s->len - done, &ext);
		if (ret == -ENOTSUP) {
			bc_error_reset();
			ret = 0;
			break;
		}
		if (ret < 0)
			break;
		if (!bc_is_aligned((uint64_t)ext.host_off | ext.len | done, align))
			break; /* O_DIRECT alignment: the driver path copes */
		if (copy_path_sync_writes(&m->path)) {
			/* Page-cache writes on this thread, then write-behind. */
			ret = fmt_pwrite_file(m->dest->fd, s->buf + done,
					      ext.len, (uint64_t)ext.host_off);
			if (ret == 0)
				ret = copy_path_written(&m->path,
							(uint64_t)ext.host_off,
							ext.len);
			if (ret < 0)
				break;
			done += ext.len;
			continue;
		}
		r->buf_off = done;
		r->host = (uint64_t)ext.host_off;
		r->len = ext.len;
		ret = iob_prep_write(m->iob, fd, s->buf + done, ext.len,
				     r->host, run_tag(m, s, s->pending));
		if (ret < 0)
			break;
		s->pending++;
		done += ext.len;
	}
	/*
	 * NBD hook (issue 11): a remote destination takes the write behind,
	 * so the loop reads on while it is on the wire; flush_dest() waits.
	 */
	if (ret == 0 && done < s->len)
		ret = fmt_pwrite_behind(m->dest, s->buf + done, s->len - done,
					s->off + done);
	if (ret < 0)
		s->err = ret;
	if (!s->pending)
		slot_release(m, s, s->err, true);
}

/*
 * Whether the limit paces the copy now (job->lock held): while copying in
 * RUNNING or READY. Not in the final sync of a pivot or finish (R22), nor
 * once the job stopped copying (cancel, error, pause): what waits then
 * goes at once.
 */
static bool is_throttled_locked(const struct mirror *m, const struct job *job)
{
	return job->throttle.rate && !m->quiesced && !job->err.code &&
	       (job->state == JOB_RUNNING || job->state == JOB_READY);
}

/*
 * Let the waiting writes go, oldest first, as far as the bandwidth limit
 * allows, charging each; returns how long until the next may go (0: none
 * waits). The limit is charged here, when the write is submitted, not when
 * the read is: what the destination receives is what is paced, whatever
 * the reads' latency (a read stall used to release a burst of writes).
 * Unless is_throttled_locked(), everything waiting goes at once.
 */
static uint64_t admit_writes(struct mirror *m)
{
	struct job *job = m->job;
	struct slot *s;
	uint64_t delay = 0;

	while ((s = m->throttled_head)) {
		pthread_mutex_lock(&job->lock);
		if (is_throttled_locked(m, job)) {
			delay = throttle_delay_ns(&job->throttle, s->len);
			if (!delay)
				throttle_account(&job->throttle, s->len);
		}
		pthread_mutex_unlock(&job->lock);
		if (delay)
			break;
		m->throttled_head = s->next_throttled;
		if (!m->throttled_head)
			m->throttled_tail = NULL;
		m->nthrottled--;
		submit_write(m, s);
	}
	return delay;
}

/*
 * The chunk in s->buf is read (or, offloaded, due): write it once the
 * limit allows. A chunk that reads all zero is a free zero write, as zero
 * ranges are (R22).
 */
static void slot_write(struct mirror *m, struct slot *s)
{
	if (!copy_path_offloads(&m->path) && bc_is_zero(s->buf, s->len)) {
		slot_release(m, s, write_zeroes_dest(m, s), true);
		return;
	}
	s->state = SLOT_THROTTLED;
	s->next_throttled = NULL;
	if (m->throttled_tail)
		m->throttled_tail->next_throttled = s;
	else
		m->throttled_head = s;
	m->throttled_tail = s;
	m->nthrottled++;
	(void)admit_writes(m);
}

/*
 * Start copying [s->off, s->off + s->len): one run of one block status,
 * already clipped by the caller.
 */
static void slot_start(struct mirror *m, struct slot *s,
		       const struct fmt_extent *ext)
{
	int ret = 0;

	s->zero = false;
	s->skipped = false;
	if (m->job->opts.shallow && ext->depth > 0) {
		/* The destination shares this backing: nothing to write. */
		s->skipped = true;
		slot_release(m, s, 0, false);
		return;
	}
	if (ext->state != FMT_DATA) {
		slot_release(m, s, write_zeroes_dest(m, s), true);
		return;
	}
	if (copy_path_offloads(&m->path)) {
		/* No read: the limit paces the kernel's copy. */
		slot_write(m, s);
		return;
	}
	if (s->nreads) {
		unsigned int i;

		s->state = SLOT_READING;
		s->reads_pending = 0;
		s->read_err = 0;
		s->read_short = false;
		for (i = 0; i < s->nreads; i++) {
			const struct slot_read *r = &s->reads[i];

			ret = iob_prep_read(m->iob, r->fd, s->buf + r->buf_off,
					    r->len, r->host, run_tag(m, s, i));
			if (ret < 0)
				break;
			s->reads_pending++;
		}
		if (ret == 0)
			return;
		/* Those prepared complete first: the buffer is theirs. */
		s->read_err = ret;
		if (!s->reads_pending)
			slot_release(m, s, ret, false);
		return;
	}
	ret = fmt_pread(m->src, s->buf, s->len, s->off);
	if (ret < 0) {
		slot_release(m, s, ret, false);
		return;
	}
	slot_write(m, s);
}

/*
 * Record a failed asynchronous request the way the synchronous paths do
 * ("<file>: write failed at offset <N>: <reason>", N in the file) and
 * return @ret: the completion alone only has the errno.
 */
static __cold int io_failed(const struct fmt_image *img, const char *what,
			    uint64_t host, int ret)
{
	char ebuf[128];

	bc_error_set(bc_errno_to_code(-ret), -ret,
		     "%s: %s failed at offset %llu: %s", img->filename, what,
		     (unsigned long long)host,
		     strerror_r(-ret, ebuf, sizeof(ebuf)));
	return ret;
}

static void checkpoint_flushed(struct mirror *m, int ret, uint64_t held_since);

/* The checkpoint's fdatasync completed with @res (raw_flush's message). */
static void checkpoint_fsync_done(struct mirror *m, int64_t res)
{
	char ebuf[128];
	int err = (int)-res;

	if (res < 0)
		bc_error_set(bc_errno_to_code(err), err, "%s: flush: %s",
			     m->dest->filename, strerror_r(err, ebuf, sizeof(ebuf)));
	checkpoint_flushed(m, res < 0 ? -err : 0, job_now_ns());
}

static void handle_cqe(struct mirror *m, const struct iob_cqe *c)
{
	struct slot *s;
	struct slot_run *r;
	int ret = 0;

	if (c->user_data == CKPT_TAG) {
		checkpoint_fsync_done(m, c->res);
		return;
	}
	s = &m->slots[c->user_data & 0xffff];
	if (s->state == SLOT_READING) {
		const struct slot_read *rd = &s->reads[c->user_data >> 16];

		if (c->res < 0 && !s->read_err)
			s->read_err = io_failed(rd->layer, "read", rd->host,
						(int)c->res);
		else if (c->res >= 0 && (uint64_t)c->res < rd->len)
			s->read_short = true;
		if (--s->reads_pending)
			return;
		if (s->read_err) {
			slot_release(m, s, s->read_err, false);
			return;
		}
		/*
		 * Short: the file ends inside the range. Whether that is a
		 * legitimate tail (a qcow2 file ending inside its last
		 * cluster) or a file truncated under us is the format's to
		 * say: read the chunk again through the driver.
		 */
		if (s->read_short) {
			ret = fmt_pread(m->src, s->buf, s->len, s->off);
			if (ret < 0) {
				slot_release(m, s, ret, false);
				return;
			}
		}
		slot_write(m, s);
		return;
	}
	r = &s->runs[c->user_data >> 16];
	if (c->res < 0) {
		ret = io_failed(m->dest, "write", r->host, (int)c->res);
	} else if ((uint64_t)c->res < r->len) {
		/* Short write: finish synchronously to learn the real error. */
		ret = fmt_pwrite_file(m->dest->fd, s->buf + r->buf_off + c->res,
				      r->len - (uint64_t)c->res,
				      r->host + (uint64_t)c->res);
	}
	if (ret < 0 && !s->err)
		s->err = ret;
	if (--s->pending == 0)
		slot_release(m, s, s->err, true);
}

/* Reap completions; waits for at least one when @block. */
static int reap(struct mirror *m, bool block, int timeout_ms)
{
	int n, i;

	n = iob_wait(m->iob, block ? 1 : 0, m->cqes, m->nslots, timeout_ms);
	if (n < 0)
		return n;
	for (i = 0; i < n; i++)
		handle_cqe(m, &m->cqes[i]);
	return n;
}

/*
 * Pick the next dirty extent that is not in flight, clear it and mark it
 * in flight. Called with job->lock held. False when there is none.
 */
static bool take_extent_locked(struct mirror *m, uint64_t *off, uint64_t *len)
{
	struct job *job = m->job;
	uint64_t from = m->cursor, o, l, size = m->src->size;
	uint64_t max_len = m->chunk;
	bool wrapped = false;

	/*
	 * Under a limit, chunks of about 1/100 s of it (whole granules): the
	 * limit then holds over any 1-s window, not just on average.
	 */
	if (job->throttle.rate && !m->quiesced)
		max_len = BC_MIN(m->chunk, BC_MAX(m->gran, bc_align_up(job->throttle.rate / 100,
								       m->gran)));
	for (;;) {
		int64_t nin;

		if (!dirty_bitmap_next_dirty_extent(job->dirty, from, max_len, &o, &l)) {
			if (wrapped || from == 0)
				return false;
			wrapped = true;
			from = 0;
			continue;
		}
		if (wrapped && o >= m->cursor)
			return false;
		if (dirty_bitmap_get(job->inflight, o)) {
			int64_t c = dirty_bitmap_next_clean(job->inflight, o);

			if (c < 0 || (uint64_t)c >= size) {
				if (wrapped)
					return false;
				wrapped = true;
				from = 0;
			} else {
				from = (uint64_t)c;
			}
			continue;
		}
		nin = dirty_bitmap_next_dirty(job->inflight, o);
		if (nin >= 0 && (uint64_t)nin < o + l)
			l = (uint64_t)nin - o;
		break;
	}
	*off = o;
	*len = l;
	m->cursor = o + l >= size ? 0 : o + l;
	return true;
}

/*
 * Whether [host, host+len) of @layer (chain depth @depth) can be read
 * into the slot buffer at @buf_off asynchronously; the descriptor then.
 */
static bool can_read_async(struct mirror *m, const struct fmt_image *layer,
			   int depth, int64_t host, uint64_t buf_off,
			   uint64_t len, struct slot_read *r)
{
	if (!layer || host < 0)
		return false;
	r->fd = copy_path_read_fd(&m->path, layer, depth, &r->align);
	return bc_is_aligned((uint64_t)host | buf_off | len, r->align);
}

/*
 * Plan the asynchronous reads of the data at @off, whose first run is
 * @ext, into s->reads: that run, then the data runs that follow it in
 * other layers (a guest's writes into the top layer cut the backing's
 * data into runs), up to RUNS_MAX and @len; ext->len grows to what they
 * cover. One chunk thus carries what one read through the chain would
 * give, and the destination gets one large write instead of one per run,
 * in order (small writes cost a remote destination most: qemu-nbd takes
 * 64 KiB writes at a quarter of its 1 MiB rate). s->nreads stays 0 where
 * the first run cannot be read so (the driver reads the chunk). Returns 0
 * or -errno.
 */
static int plan_reads(struct mirror *m, struct slot *s, uint64_t off,
		      uint64_t len, struct fmt_extent *ext)
{
	struct fmt_extent e = *ext;
	uint64_t got = 0;
	int ret;

	if (ext->state != FMT_DATA || copy_path_offloads(&m->path) ||
	    (m->job->opts.shallow && ext->depth > 0))
		return 0;
	for (;;) {
		struct slot_read *r = &s->reads[s->nreads];
		uint64_t n = BC_MIN(e.len, len - got);

		if (!can_read_async(m, layer_at(m->src, e.depth), e.depth,
				    e.host_off, got, n, r))
			break;
		r->layer = layer_at(m->src, e.depth);
		r->host = (uint64_t)e.host_off;
		r->buf_off = got;
		r->len = n;
		s->nreads++;
		got += n;
		/* A shallow copy skips the backing's runs: one at a time. */
		if (got >= len || s->nreads == RUNS_MAX || m->job->opts.shallow)
			break;
		ret = fmt_chain_block_status(m->src, off + got, len - got, &e);
		if (ret < 0)
			return ret;
		if (e.state != FMT_DATA)
			break;
	}
	if (s->nreads > 1)
		ext->len = got;
	return 0;
}

/*
 * The chunk was cut to @keep bytes (whole granules): drop or shorten the
 * reads past it. A shortened read that no longer meets the file's
 * alignment sends the chunk through the driver instead.
 */
static void clip_reads(struct slot *s, uint64_t keep)
{
	unsigned int i;

	for (i = 0; i < s->nreads; i++) {
		struct slot_read *r = &s->reads[i];

		if (r->buf_off >= keep)
			break;
		r->len = BC_MIN(r->len, keep - r->buf_off);
		if (!bc_is_aligned(r->len, r->align)) {
			s->nreads = 0;
			return;
		}
	}
	s->nreads = i;
}

/*
 * Clip a taken extent to its first block-status run (or the data runs
 * plan_reads() joins to it), keeping whole granules; hand back what is not
 * used, to be taken next. Returns the extent to copy in *ext (ext->len is
 * the length) and the slot's reads, or -errno.
 */
static int classify_extent(struct mirror *m, struct slot *s, uint64_t off,
			   uint64_t *len, struct fmt_extent *ext)
{
	struct job *job = m->job;
	uint64_t keep;
	int ret;

	s->nreads = 0;
	ret = fmt_chain_block_status(m->src, off, *len, ext);
	if (ret < 0)
		return ret;
	ret = plan_reads(m, s, off, *len, ext);
	if (ret < 0)
		return ret;
	if (ext->len >= *len)
		return 0;
	keep = bc_align_down(off + ext->len, m->gran) - off;
	if (keep == 0) {
		/* Mixed content inside one granule: read it through the driver. */
		keep = BC_MIN(*len, m->gran);
		s->nreads = 0;
		ext->state = FMT_DATA;
		ext->host_off = -1;
		ext->depth = 0;
	}
	if (keep < *len) {
		BC_LOCK_GUARD(&job->lock);
		dirty_bitmap_clear(job->inflight, off + keep, *len - keep);
		dirty_bitmap_set(job->dirty, off + keep, *len - keep);
		job->inflight_bytes -= *len - keep;
		/*
		 * The rest is taken next, not after the cursor wraps: the
		 * chunks stay in order (a destination sees sequential
		 * writes) and a pass copies what it found dirty.
		 */
		m->cursor = off + keep;
	}
	*len = keep;
	ext->len = keep;
	clip_reads(s, keep);
	return 0;
}

static struct slot *free_slot(struct mirror *m)
{
	unsigned int i;

	for (i = 0; i < m->nslots; i++) {
		if (m->slots[i].state == SLOT_FREE)
			return &m->slots[i];
	}
	return NULL;
}

/* Whether the loop copies in this state (job->lock held). */
static bool is_copying_locked(const struct job *job)
{
	if (job->err.code)
		return false;
	switch (job->state) {
	case JOB_RUNNING:
	case JOB_READY:
	case JOB_PIVOTING:
	case JOB_FINISHING:
		return true;
	case JOB_CREATED:
	case JOB_PAUSED:
	case JOB_CANCELING:
	case JOB_CONCLUDING:
	case JOB_CONCLUDED:
		return false;
	}
	return false;
}

/* Bytes read or being read whose write the limit has not let go yet. */
static uint64_t bytes_ahead(const struct mirror *m)
{
	uint64_t n = 0;
	unsigned int i;

	for (i = 0; i < m->nslots; i++) {
		if (m->slots[i].state == SLOT_READING ||
		    m->slots[i].state == SLOT_THROTTLED)
			n += m->slots[i].len;
	}
	return n;
}

/*
 * Let waiting writes go, then issue as many chunks as slots, the read-ahead
 * under a limit and the IGNORE policy's back-off allow. Returns the delay
 * in ns until a waiting write may go or the back-off ends (the sooner),
 * else 0.
 */
static uint64_t issue(struct mirror *m)
{
	struct job *job = m->job;
	uint64_t delay = 0, wdelay, ahead;

	(void)admit_writes(m);
	while (m->nbusy < m->nslots) {
		struct fmt_extent ext;
		uint64_t off, len, now;
		struct slot *s;
		int ret;

		pthread_mutex_lock(&job->lock);
		if (!is_copying_locked(job)) {
			pthread_mutex_unlock(&job->lock);
			break;
		}
		if (job->retry_at_ns && (now = job_now_ns()) < job->retry_at_ns) {
			delay = job->retry_at_ns - now;
			pthread_mutex_unlock(&job->lock);
			break;
		}
		if (!m->quiesced && (job->state == JOB_PIVOTING ||
				     job->state == JOB_FINISHING)) {
			/* The final sync, unthrottled, starts at the quiesce:
			 * take nothing new before it. */
			pthread_mutex_unlock(&job->lock);
			break;
		}
		ahead = is_throttled_locked(m, job)
				? throttle_delay_ns(&job->throttle,
						    bytes_ahead(m))
				: 0;
		if (ahead > THROTTLE_READ_AHEAD_NS) {
			delay = ahead - THROTTLE_READ_AHEAD_NS;
			pthread_mutex_unlock(&job->lock);
			break;
		}
		if (!take_extent_locked(m, &off, &len)) {
			pthread_mutex_unlock(&job->lock);
			break;
		}
		dirty_bitmap_clear(job->dirty, off, len);
		dirty_bitmap_set(job->inflight, off, len);
		job->inflight_bytes += len;
		pthread_mutex_unlock(&job->lock);

		s = free_slot(m);
		ret = classify_extent(m, s, off, &len, &ext);
		s->off = off;
		s->len = len;
		m->nbusy++;
		if (ret < 0) {
			slot_release(m, s, ret, false);
			break;
		}
		/* Data is charged when its write goes (admit_writes); zero
		 * ranges and skips are free. */
		slot_start(m, s, &ext);
	}
	wdelay = admit_writes(m);
	if (wdelay && (!delay || wdelay < delay))
		delay = wdelay;
	return delay;
}

/* --- write-blocking mode (guest write path) --------------------------- */

void mirror_guest_write_begin(struct job *job, enum guest_write_kind kind,
			 uint64_t off, uint64_t len, struct write_claim *aw)
{
	uint64_t gran, size;
	int64_t n;

	aw->claimed = false;
	aw->mirror = false;
	if (job->type != JOB_TYPE_COPY)
		return;
	BC_LOCK_GUARD(&job->lock);
	/* Not while paused: the destination failed, the bitmap keeps the write. */
	if (!job->write_blocking || !is_copying_locked(job))
		return;
	gran = dirty_bitmap_granularity(job->dirty);
	size = dirty_bitmap_size(job->dirty);
	aw->g_off = bc_align_down(off, gran);
	aw->g_end = BC_MIN(bc_align_up(off + len, gran), size);
	/*
	 * Every write claims its granules, mirrored or not: a claimed write
	 * marks granules in sync, which must not race with another write
	 * (or a copy) that changes the source there.
	 */
	for (;;) {
		n = dirty_bitmap_next_dirty(job->inflight, aw->g_off);
		if (n < 0 || (uint64_t)n >= aw->g_end)
			break;
		pthread_cond_wait(&job->inflight_cond, &job->lock);
	}
	dirty_bitmap_set(job->inflight, aw->g_off, aw->g_end - aw->g_off);
	aw->claimed = true;
	/*
	 * Where every granule is still dirty the copy loop will carry the
	 * write too: skip the destination.
	 */
	n = dirty_bitmap_next_clean(job->dirty, aw->g_off);
	aw->mirror = n >= 0 && (uint64_t)n < aw->g_end;
}

/*
 * Mirror a discard: what the source reads there afterwards (zeros, or the
 * backing's data where the format keeps it visible) is copied to the
 * destination, in chunks, zeros as zero writes. Runs on the guest's thread
 * with the range claimed. Returns 0 or -errno.
 */
static int mirror_discard(struct job *job, uint64_t off, uint64_t len)
{
	struct fmt_image *src = job->disk->top; /* stable: a guest is inside */
	uint64_t chunk = BC_MIN(len, (uint64_t)CHUNK_MAX);
	uint8_t *buf = malloc(chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (len && ret == 0) {
		uint64_t n = BC_MIN(len, chunk);

		ret = fmt_pread(src, buf, (size_t)n, off);
		if (ret == 0 && bc_is_zero(buf, (size_t)n))
			ret = fmt_write_zeroes(job->dest, off, n, FMT_ZERO_MAY_UNMAP);
		else if (ret == 0)
			ret = fmt_pwrite(job->dest, buf, (size_t)n, off);
		off += n;
		len -= n;
	}
	free(buf);
	return ret;
}

void mirror_guest_write_end(struct job *job, enum guest_write_kind kind,
		       const void *buf, uint64_t off, uint64_t len,
		       unsigned int zflags, int src_ret,
		       struct write_claim *aw)
{
	int ret = src_ret;

	if (!aw->claimed) {
		job_note_guest_write(job, off, len);
		return;
	}
	if (ret == 0 && aw->mirror) {
		/* job->dest stays open while a claim is held: pivot drains us. */
		if (kind == GUEST_WRITE_DATA)
			ret = fmt_pwrite(job->dest, buf, (size_t)len, off);
		else if (kind == GUEST_WRITE_ZEROES)
			ret = fmt_write_zeroes(job->dest, off, len, zflags);
		else
			ret = mirror_discard(job, off, len);
		if (ret < 0)
			(void)job_target_error(job, ret);
	}
	pthread_mutex_lock(&job->lock);
	if (ret < 0 || !aw->mirror) {
		/* Marked before the claim is released: no one can clear it first. */
		dirty_bitmap_set(job->dirty, off, len);
	} else {
		uint64_t gran = dirty_bitmap_granularity(job->dirty);
		uint64_t a = bc_align_up(off, gran);
		uint64_t b = off + len == dirty_bitmap_size(job->dirty)
				     ? off + len
				     : bc_align_down(off + len, gran);

		/* Granules covered whole now hold the same bytes on both sides. */
		if (b > a)
			dirty_bitmap_clear(job->dirty, a, b - a);
		job_target_ok_locked(job);
		job->blocking_writes++;
		job->dest_unflushed = true;
	}
	dirty_bitmap_clear(job->inflight, aw->g_off, aw->g_end - aw->g_off);
	pthread_cond_broadcast(&job->inflight_cond);
	pthread_cond_signal(&job->cond);
	pthread_mutex_unlock(&job->lock);
}

/* --- auto-converge and verification ----------------------------------- */

struct converge {
	uint64_t best_dirty;
	uint64_t best_ns;
};

/*
 * Auto-converge: in background mode, when the dirty set has made no new
 * low for CONVERGE_STALL_NS, guest writes are outrunning the copy: switch
 * to write-blocking, after which the dirty set can only shrink.
 */
static void check_converge(struct job *job, struct converge *cv)
{
	uint64_t now = job_now_ns(), dirty;

	BC_LOCK_GUARD(&job->lock);
	if (!job->opts.auto_converge || job->write_blocking)
		return;
	dirty = dirty_bitmap_count_bytes(job->dirty) + job->inflight_bytes;
	/* Reaching clean (or a new low) is progress: a paced guest that the
	 * copy keeps up with never triggers the switch. */
	if (!cv->best_ns || dirty < cv->best_dirty || dirty == 0) {
		cv->best_dirty = dirty;
		cv->best_ns = now;
		return;
	}
	if (dirty && now - cv->best_ns >= CONVERGE_STALL_NS) {
		job->write_blocking = true;
		job->mode_switch_ns = now - job->t0_ns;
	}
}

/*
 * Compare source and destination (guest is quiesced, both in sync by the
 * bitmap). Ranges that read as zero on both sides, or that a shallow copy
 * shares through the same backing file, are not read. On a mismatch,
 * records the error and re-dirties the chunk so mirroring repairs it.
 * Returns 0 when equal, -EIO on a mismatch, or -errno.
 */
static int verify_copy(struct mirror *m)
{
	struct job *job = m->job;
	uint64_t off = 0, size = m->src->size;
	BC_AUTOFREE uint8_t *a = malloc(VERIFY_CHUNK);
	BC_AUTOFREE uint8_t *b = malloc(VERIFY_CHUNK);
	int ret;

	if (!a || !b)
		return -ENOMEM;
	while (off < size) {
		struct fmt_extent es, ed;
		uint64_t len = BC_MIN(VERIFY_CHUNK, size - off);

		ret = fmt_chain_block_status(m->src, off, len, &es);
		if (ret == 0)
			ret = fmt_chain_block_status(m->dest, off, len, &ed);
		if (ret < 0)
			return ret;
		len = BC_MIN(es.len, ed.len);
		if ((es.state != FMT_DATA && ed.state != FMT_DATA) ||
		    (job->opts.shallow && job->dest_fresh && es.depth > 0 &&
		     ed.depth > 0)) {
			off += len;
			continue;
		}
		ret = fmt_pread(m->src, a, (size_t)len, off);
		if (ret == 0)
			ret = fmt_pread(m->dest, b, (size_t)len, off);
		if (ret < 0)
			return ret;
		if (memcmp(a, b, (size_t)len) != 0) {
			uint64_t i = 0;

			while (a[i] == b[i])
				i++;
			bc_error_set(ERR_IO, 0,
				     "verification failed: '%s' and '%s' differ at offset %llu; pivot refused, mirroring goes on",
				     m->src->filename, job->dest_path,
				     (unsigned long long)(off + i));
			pthread_mutex_lock(&job->lock);
			dirty_bitmap_set(job->dirty, off, len);
			if (job->journal)
				copy_journal_mark(job->journal, off, len);
			pthread_mutex_unlock(&job->lock);
			return -EIO;
		}
		off += len;
	}
	return 0;
}

/*
 * Verification refused the pivot: hand the error to the waiting caller
 * and go back to mirroring.
 */
static void refuse_pivot(struct mirror *m)
{
	struct job *job = m->job;

	pthread_mutex_lock(&job->lock);
	job->refuse_err = *bc_error_get();
	job->pivot_refusals++;
	job->pivot_verify = false;
	job_set_state_locked(job, job->finish_after_pivot ? JOB_FINISHING
							  : JOB_READY);
	job->finish_after_pivot = false;
	pthread_mutex_unlock(&job->lock);
	bc_error_reset();
	disk_resume(job->disk);
	m->quiesced = false;
}

/* Flush the destination if written since the last flush; 0 or -errno. */
static int flush_dest(struct mirror *m)
{
	struct job *job = m->job;
	bool need;
	int ret;

	pthread_mutex_lock(&job->lock);
	need = job->dest_unflushed;
	job->dest_unflushed = false;
	pthread_mutex_unlock(&job->lock);
	m->last_flush_ns = job_now_ns();
	if (!need)
		return 0;
	ret = fmt_flush(m->dest);
	if (ret < 0) {
		pthread_mutex_lock(&job->lock);
		job->dest_unflushed = true;
		pthread_mutex_unlock(&job->lock);
	}
	return ret;
}

/* --- resume journal checkpoints (engine/copy-journal.h) ------------------ */

/* What the destination received so far: copies and mirrored guest writes. */
static uint64_t work_done_locked(const struct job *job)
{
	return job->cur + job->blocking_writes;
}

/*
 * The least time from one checkpoint to the next (CHECKPOINT_COST_FACTOR),
 * at most CHECKPOINT_GAP_MAX_NS: one stall of seconds must not stop the
 * checkpoints for minutes.
 */
static uint64_t checkpoint_gap(const struct mirror *m)
{
	return BC_MIN(m->ckpt_cost_ns * CHECKPOINT_COST_FACTOR,
		      CHECKPOINT_GAP_MAX_NS);
}

/*
 * Advance the journal's checkpoint: begin one when CHECKPOINT_NS or
 * CHECKPOINT_BYTES of work passed since the last (at once when @now_due),
 * and once the guest writes of the old epoch have ended, snapshot what is
 * clean, flush the destination and clear those bits. Never blocks on
 * guests.
 */
static void checkpoint(struct mirror *m, bool now_due)
{
	struct job *job = m->job;
	struct copy_journal *j = job->journal;
	uint64_t now, work;
	int ret;

	/*
	 * One checkpoint at a time: beginning the next one while the
	 * previous one's fdatasync runs would forget the granules written
	 * since that one began (its "recent" set), and its commit would then
	 * clear their bits.
	 */
	if (!j || m->ckpt_flushing)
		return;
	now = job_now_ns();
	pthread_mutex_lock(&job->lock);
	work = work_done_locked(job);
	pthread_mutex_unlock(&job->lock);
	if (!m->ckpt_pending) {
		if (work == m->ckpt_work)
			return; /* nothing reached the destination since */
		if (!now_due && (now - m->ckpt_ns < checkpoint_gap(m) ||
				 (now - m->ckpt_ns < CHECKPOINT_NS &&
				  work - m->ckpt_work < CHECKPOINT_BYTES)))
			return;
		copy_journal_checkpoint_begin(j);
		m->ckpt_pending = true;
		m->ckpt_begin_work = work;
	}
	if (!copy_journal_checkpoint_ready(j))
		return;
	pthread_mutex_lock(&job->lock);
	copy_journal_checkpoint_snapshot(j, job->dirty, job->inflight);
	pthread_mutex_unlock(&job->lock);
	m->ckpt_pending = false;
	m->ckpt_now = now;
	/*
	 * Bits are cleared only for data that is durable. A raw destination's
	 * flush is one fdatasync: queued with the copies, so the copy goes on
	 * meanwhile (what the snapshot counts as copied had completed before
	 * it is queued); checkpoint_flushed() continues. Others: at once.
	 */
	if (m->iob && m->dest->drv == &fmt_raw_driver &&
	    !fmt_is_nbd_uri(job->dest_path)) {
		bool need;

		pthread_mutex_lock(&job->lock);
		need = job->dest_unflushed;
		job->dest_unflushed = false;
		pthread_mutex_unlock(&job->lock);
		if (need) {
			ret = iob_prep_fsync(m->iob, m->dest->fd, CKPT_TAG);
			if (ret == 0) {
				m->ckpt_flushing = true;
				return;
			}
			pthread_mutex_lock(&job->lock);
			job->dest_unflushed = true;
			pthread_mutex_unlock(&job->lock);
		}
	}
	now = job_now_ns(); /* the loop waits from here */
	checkpoint_flushed(m, flush_dest(m), now);
}

/*
 * The checkpoint's destination flush ended with @ret: the rest of it. The
 * loop has waited for the checkpoint since @held_since (a queued fdatasync
 * held it only from its completion on).
 */
static void checkpoint_flushed(struct mirror *m, int ret, uint64_t held_since)
{
	struct job *job = m->job;

	m->ckpt_flushing = false;
	if (ret < 0) {
		pthread_mutex_lock(&job->lock);
		job->dest_unflushed = true;
		pthread_mutex_unlock(&job->lock);
		(void)job_target_error(job, ret);
		return;
	}
	/*
	 * ...on both sides: what was copied must not be lost from the source
	 * either (a qcow2 source's metadata cache holds a guest write until
	 * a flush; killed before it, the source forgets what the copy has).
	 */
	ret = fmt_flush(m->src);
	if (ret == 0)
		ret = copy_journal_checkpoint_commit(job->journal);
	if (ret < 0) {
		job_set_error(job, ret);
		return;
	}
	m->ckpt_ns = m->ckpt_now;
	m->ckpt_work = m->ckpt_begin_work;
	m->ckpt_cost_ns = job_now_ns() - held_since;
}

/* How long the loop may sleep before checkpoint() has work; 0 = no limit. */
static uint64_t checkpoint_delay(struct mirror *m)
{
	struct job *job = m->job;
	uint64_t now, work, due;

	if (!job->journal)
		return 0;
	if (m->ckpt_pending)
		return CHECKPOINT_RETRY_NS;
	pthread_mutex_lock(&job->lock);
	work = work_done_locked(job);
	pthread_mutex_unlock(&job->lock);
	if (work == m->ckpt_work)
		return 0;
	now = job_now_ns();
	due = BC_MAX(CHECKPOINT_NS, checkpoint_gap(m));
	return now - m->ckpt_ns >= due ? CHECKPOINT_RETRY_NS
				       : due - (now - m->ckpt_ns);
}

static uint64_t min_delay(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	return b ? BC_MIN(a, b) : a;
}

/* --- the job ---------------------------------------------------------- */

static void wait_ns_locked(struct job *job, uint64_t ns)
{
	struct timespec ts = bc_cond_deadline(ns);

	pthread_cond_timedwait(&job->cond, &job->lock, &ts);
}

/* Swap the disk onto the destination chain; the guest is quiesced. */
static void pivot_swap(struct mirror *m)
{
	struct job *job = m->job;
	bc_disk *disk = job->disk;
	struct fmt_image *old;
	char *path = strdup(job->dest_path);

	if (!path)
		abort(); /* a pivot cannot be half done */
	pthread_mutex_lock(&disk->lock);
	if (disk_set_path_locked(disk, path) < 0)
		abort(); /* a pivot cannot be half done */
	old = disk->top;
	disk->top = job->dest;
	disk_watch_top(disk, disk->top);
	pthread_mutex_unlock(&disk->lock);
	job->dest = NULL;
	fmt_close(old);
}

/* What one pass of the loop acts on, read under one lock. */
struct pass {
	enum job_state state;
	bool failed;  /* the job has an error */
	bool clean;   /* nothing dirty (the loop has nothing in flight) */
	bool verify;  /* PIVOTING: compare before switching */
};

static void read_pass(struct job *job, struct pass *p)
{
	BC_LOCK_GUARD(&job->lock);
	p->state = job->state;
	p->failed = job->err.code != 0;
	p->clean = dirty_bitmap_count_bytes(job->dirty) == 0;
	p->verify = job->pivot_verify;
}

/*
 * The pivot protocol, and the finish (abort after MIRRORING) that shares
 * it: flush with guests running; quiesce them (new requests wait,
 * in-flight ones drain); the loop copies what they dirtied; once clean,
 * flush again, verify when asked. Returns true with *status set when the
 * outcome is decided (mirror_main then concludes, swaps on COMPLETED and
 * resumes the guests), false to go on looping.
 */
static bool pivot_or_finish(struct mirror *m, const struct pass *p,
			    int *status)
{
	struct job *job = m->job;
	int ret;

	if (!m->quiesced) {
		/* Flush first, guests running: the quiesced flush is short. */
		ret = flush_dest(m);
		if (ret < 0) {
			job_set_error(job, ret);
			return false;
		}
		m->quiesce_t0 = job_now_ns();
		disk_quiesce(job->disk);
		m->quiesced = true;
		return false; /* copy what the drained writes dirtied */
	}
	if (!p->clean)
		return false;
	/* Everything written is flushed by the time this returns. */
	ret = flush_dest(m);
	if (ret < 0) {
		job_set_error(job, ret);
		return false;
	}
	if (p->state == JOB_PIVOTING && p->verify) {
		ret = verify_copy(m);
		if (ret == -EIO) {
			refuse_pivot(m);
			return false;
		}
		if (ret < 0) {
			job_set_error(job, ret);
			return false;
		}
	}
	*status = p->state == JOB_PIVOTING ? JOB_EVENT_COMPLETED
					   : JOB_EVENT_CANCELED;
	return true;
}

/*
 * Clean while RUNNING or READY: flush (at once the first time, then at
 * most every FLUSH_INTERVAL_NS) and, the first time, enter READY and
 * queue MIRRORING. Returns true when it queued the event.
 */
static bool reached_sync(struct mirror *m, const struct pass *p)
{
	struct job *job = m->job;
	bool queue_ready = false;
	int ret;

	if (p->state == JOB_RUNNING ||
	    job_now_ns() - m->last_flush_ns >= FLUSH_INTERVAL_NS) {
		ret = flush_dest(m);
		if (ret < 0) {
			/* Not durable yet: flushed again on the next pass. */
			(void)job_target_error(job, ret);
			return false;
		}
	}
	pthread_mutex_lock(&job->lock);
	if (job->state == JOB_RUNNING && !job->err.code &&
	    dirty_bitmap_count_bytes(job->dirty) == 0) {
		job->mirroring_ns = BC_MAX(job_now_ns() - job->t0_ns, 1);
		job_set_state_locked(job, JOB_READY);
		queue_ready = true;
	}
	pthread_mutex_unlock(&job->lock);
	if (queue_ready)
		engine_queue_event(job->disk->eng, job->disk, job->type,
				   JOB_EVENT_MIRRORING, NULL);
	return queue_ready;
}

/*
 * Nothing in flight and nothing to issue now: sleep until a guest write,
 * a request, the throttle's or back-off's @delay, or the next periodic
 * flush, unless the state changed since @p was read.
 */
static void wait_for_work(struct mirror *m, const struct pass *p,
			  uint64_t delay)
{
	struct job *job = m->job;

	BC_LOCK_GUARD(&job->lock);
	if (job->state != p->state || job->err.code)
		return;
	if (job->state == JOB_PAUSED)
		pthread_cond_wait(&job->cond, &job->lock);
	else if (delay)
		wait_ns_locked(job, delay);
	else if (dirty_bitmap_count_bytes(job->dirty) != 0)
		return;
	else if (job->dest_unflushed)
		wait_ns_locked(job, FLUSH_INTERVAL_NS);
	else
		pthread_cond_wait(&job->cond, &job->lock);
}

/*
 * Submit what is prepared (a cancel's checkpoint fdatasync), then reap
 * until nothing is in flight: copies and that fdatasync. A refused
 * submission is tried again by the wait (iob_wait() submits first), as
 * in the loop, so nothing is waited for that was never handed over. If
 * the backend fails with requests outstanding, the kernel may still
 * write into the slot buffers: they and the context are leaked rather
 * than freed, the checkpoint is not committed, and the job fails.
 * Returns 0 or -errno.
 */
static int drain(struct mirror *m)
{
	int ret = 0;

	if (m->iob && iob_submit(m->iob) < 0)
		bc_error_reset(); /* the wait below tries again */
	while (m->nbusy || m->ckpt_flushing) {
		ret = reap(m, true, -1);
		if (ret < 0)
			break;
	}
	if (!m->iob || !iob_in_flight(m->iob))
		return 0;
	job_set_error(m->job, ret < 0 ? ret : -EIO);
	m->iob = NULL;
	m->slots = NULL;
	m->nbusy = 0;
	m->ckpt_flushing = false;
	return ret < 0 ? ret : -EIO;
}

/*
 * The COPY job's thread: issue dirty chunks, reap completions, and act on
 * the state (job.h) once nothing is in flight, until the outcome is
 * decided; then conclude.
 */
void *mirror_main(void *arg)
{
	struct job *job = arg;
	struct mirror m = { 0 };
	struct converge cv = { 0 };
	int status = JOB_EVENT_FAILED;
	bool finished = false; /* abort after MIRRORING: a complete copy */
	int ret;

	bc_error_reset();
	m.ckpt_ns = job_now_ns();
	ret = mirror_setup(&m, job);
	pthread_mutex_lock(&job->lock);
	job->write_blocking = job->opts.write_blocking; /* job->dest is open now */
	pthread_mutex_unlock(&job->lock);
	if (ret < 0) {
		job_set_error(job, ret);
		goto out;
	}

	for (;;) {
		struct pass p;
		uint64_t delay;

		check_converge(job, &cv);
		delay = issue(&m);
		ret = iob_submit(m.iob);
		if (ret < 0)
			job_set_error(job, ret);
		if (m.nbusy && m.nbusy == m.nthrottled && !m.ckpt_flushing) {
			/* Only writes waiting for the limit: a set-speed wakes us. */
			uint64_t ns = min_delay(delay, checkpoint_delay(&m));

			pthread_mutex_lock(&job->lock);
			wait_ns_locked(job, ns);
			pthread_mutex_unlock(&job->lock);
			checkpoint(&m, false);
			continue;
		}
		if (m.nbusy || m.ckpt_flushing) {
			int ms = delay ? (int)BC_MIN(delay / 1000000 + 1, 1000) : -1;

			ret = reap(&m, true, ms);
			if (ret < 0) {
				/* The backend is broken: nothing more will complete. */
				job_set_error(job, ret);
				break;
			}
			checkpoint(&m, false);
			continue;
		}

		read_pass(job, &p);
		if (p.failed)
			break;
		if (p.state == JOB_CANCELING) {
			status = JOB_EVENT_CANCELED;
			break;
		}
		if (p.state == JOB_PIVOTING || p.state == JOB_FINISHING) {
			if (pivot_or_finish(&m, &p, &status)) {
				finished = p.state == JOB_FINISHING;
				break;
			}
			continue;
		}
		if (p.clean && p.state != JOB_PAUSED && reached_sync(&m, &p))
			continue;
		checkpoint(&m, false);
		if (m.ckpt_flushing)
			continue; /* submit its fdatasync, reap it */
		wait_for_work(&m, &p, min_delay(delay, checkpoint_delay(&m)));
	}

out:
	/* Drain whatever is still in flight before touching the chain. */
	if (drain(&m) < 0)
		status = JOB_EVENT_FAILED;

	/*
	 * Guests are held: stop tracking and mirroring before they resume, so
	 * nothing reaches the destination after the pivot or finish point.
	 * The job stays the disk's job until job_finish(): no snapshot or new
	 * job slips in between.
	 */
	if (status == JOB_EVENT_CANCELED && !finished) {
		/* Canceled early: record what is done, for a resume. */
		checkpoint(&m, true);
		if (m.ckpt_pending)
			checkpoint(&m, true);
		/* Its fdatasync, if queued: submitted, reaped, committed. */
		if (drain(&m) < 0)
			status = JOB_EVENT_FAILED;
	}
	job_conclude(job);
	if (status == JOB_EVENT_COMPLETED)
		pivot_swap(&m);
	if (m.quiesced) {
		pthread_mutex_lock(&job->lock);
		job->stall_ns = job_now_ns() - m.quiesce_t0;
		pthread_mutex_unlock(&job->lock);
		disk_resume(job->disk);
	}
	/*
	 * Journal (after the guests resume: unlinking is not their stall):
	 * removed once the copy is complete (pivoted, or finished after
	 * MIRRORING); kept by the disk otherwise (job.h). Still the disk's
	 * job until job_finish(), so no new job races this.
	 */
	job_journal_detach(job, status == JOB_EVENT_COMPLETED || finished);
	mirror_teardown(&m);
	job_finish(job, status);
	return NULL;
}
