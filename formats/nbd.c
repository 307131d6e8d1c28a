/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbd: an NBD export as an image, through libnbd.
 *
 * The export is the guest view (the server owns the format: a qcow2 file
 * served by qemu-nbd is read here as its guest data), so this layer has
 * no backing and no create. img->fd is -1: nothing can be written to the
 * export around the driver.
 *
 * Connections: one libnbd handle per connection, opened at open time.
 * When the server offers multi-conn (every connection sees every other
 * one's writes, and a flush on one covers all), NBD_CONNS connections
 * are opened; otherwise one. Requests are spread over them round-robin.
 *
 * Every command is issued with libnbd's asynchronous calls (nbd_aio_*)
 * and a completion callback. One driver thread per image (not one per
 * request) polls the connections' descriptors in the direction libnbd
 * asks for, plus an eventfd that callers write when they queue a
 * command, and calls nbd_aio_notify_read/write: it is the only thread
 * that moves the connections, so no two threads ever drive one handle.
 * A caller queues the pieces of its request (data split into pieces so
 * that several are on the wire at once) and sleeps on its own condition
 * until their callbacks have run: a completion wakes the one thread that
 * waits for it (with a guest's writes in flight, waking every waiter on
 * each completion cost more CPU than the I/O).
 *
 * Write-behind (fmt_pwrite_behind, the copy loop's destination writes):
 * the data is copied into one of NBD_WB_BUFS buffers and the call returns
 * once the write is queued, so the copy loop reads the next chunks while
 * earlier ones are on the wire (a single connection, as qemu-nbd gives,
 * then carries many requests at once). A write-behind never overlaps
 * another one in flight (it waits); every other entry point first waits
 * for those overlapping its range (a flush for all of them), so no
 * request passes one it follows where they touch the same bytes. While a
 * synchronous request is under way (a write-blocking guest write mirrored
 * here) new write-behinds wait until at most NBD_WB_BUFS_SYNC are in
 * flight: the guest write queues behind little of the copy. The first
 * failure is kept and returned by the next call that waits (flush always
 * does), naming the URI and offset.
 *
 * Block status uses the "base:allocation" meta context: holes and zero
 * runs are FMT_ZERO (the copy writes them as zero writes, which the
 * server may keep sparse), the rest FMT_DATA. A server without the
 * context reports everything as data.
 *
 * Errors name the URI and the reason: libnbd's message where a call
 * failed, the server's errno for a command it failed. A connection that
 * dies fails the commands on it (libnbd completes them with an error)
 * and every later one: the handle is not reconnected.
 */
#include "fmt.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libnbd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Connections opened when the server offers multi-conn (nbdcopy: 4). */
#define NBD_CONNS        4u
/* Data requests are split into pieces of this size, in flight together. */
#define NBD_PIECE        (256u * 1024u)
/* Largest data request when the server states no maximum. */
#define NBD_DATA_MAX     (32u * 1024u * 1024u)
/* Zero, trim and block status carry a 32-bit length. */
#define NBD_RANGE_MAX    (1ull << 30)
/* Pieces one request has in flight at a time. */
#define NBD_SLOTS        16u
/* Write-behind: buffers (allocated on first use) and their size. */
#define NBD_WB_BUFS      32u
#define NBD_WB_SIZE      (1024u * 1024u)
/*
 * ...and in flight while a synchronous request waits. The server serves
 * one connection's requests about in order: a write-blocking guest write
 * queued behind 32 MiB of copy got 25-33 MiB/s against QEMU's 120-160;
 * with 2 buffers it got QEMU's rate, the copy reaching MIRRORING in about
 * QEMU's time to READY (4 buffers: both worse).
 */
#define NBD_WB_BUFS_SYNC 2u
/* The driver's poll timeout: only bounds a lost wake-up. */
#define NBD_POLL_MS      100

struct nbd;

/* One write-behind in flight. */
struct wb_buf {
	struct nbd *nbd;
	uint8_t *data;              /* NBD_WB_SIZE bytes, NULL until used */
	uint64_t off, len;
	bool busy;                  /* queued, callback not yet done (lock) */
};

struct nbd {
	struct fmt_image *img;
	struct nbd_handle *conns[NBD_CONNS];
	unsigned int nconns;
	uint64_t data_max;          /* largest pread/pwrite piece */
	bool can_zero, can_fast_zero, can_trim, can_flush, has_alloc;
	bool fast_zero_refused;     /* the server said no once: stop asking */
	pthread_mutex_t lock;       /* guards what follows */
	pthread_cond_t work;        /* the driver: commands queued, or stop */
	pthread_cond_t wb_done;     /* a write-behind completed */
	unsigned int rr;            /* round-robin connection choice */
	unsigned int ncmds;         /* commands queued, callback not done */
	struct wb_buf wb[NBD_WB_BUFS];
	unsigned int wb_busy;
	unsigned int sync_active;   /* run_request() calls under way */
	int wb_err;                 /* first failed write-behind: errno */
	uint64_t wb_err_off;        /* ...and its offset */
	bool stop;                  /* the driver exits once ncmds is 0 */
	pthread_t driver;
	bool driver_running;
	int efd;                    /* eventfd: a command was queued */
};

enum nbd_op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_STATUS };

static const char *const op_names[] = {
	[OP_READ] = "read", [OP_WRITE] = "write",
	[OP_ZERO] = "write zeroes", [OP_TRIM] = "trim", [OP_FLUSH] = "flush",
	[OP_STATUS] = "block status",
};

/* Records "<uri>: <what> ...: <libnbd's message>"; returns -errno. */
static __cold int nbd_fail(const struct fmt_image *img, const char *what,
			   uint64_t off, bool has_off)
{
	int err = nbd_get_errno();
	const char *msg = nbd_get_error();

	if (err <= 0)
		err = EIO;
	if (!msg)
		msg = "unknown error";
	if (has_off)
		bc_error_set(bc_errno_to_code(err), err,
			     "%s: %s failed at offset %llu: %s", img->filename,
			     what, (unsigned long long)off, msg);
	else
		bc_error_set(bc_errno_to_code(err), err, "%s: %s failed: %s",
			     img->filename, what, msg);
	return -err;
}

/* A command the server (or a dead connection) failed: its errno. */
static __cold int cmd_fail(const struct fmt_image *img, const char *what,
			   uint64_t off, int err)
{
	char ebuf[128];

	if (!strcmp(what, "flush"))
		bc_error_set(bc_errno_to_code(err), err, "%s: flush failed: %s",
			     img->filename, strerror_r(err, ebuf, sizeof(ebuf)));
	else
		bc_error_set(bc_errno_to_code(err), err,
			     "%s: %s failed at offset %llu: %s", img->filename,
			     what, (unsigned long long)off,
			     strerror_r(err, ebuf, sizeof(ebuf)));
	return -err;
}

/* --- the driver --------------------------------------------------------- */

static void wake(struct nbd *nbd)
{
	uint64_t one = 1;

	if (write(nbd->efd, &one, sizeof(one)) < 0)
		(void)0; /* the counter is full: the driver is awake anyway */
}

/*
 * While commands are in flight, poll every connection in the direction
 * libnbd wants, and the eventfd (a new command may need another
 * direction), and let libnbd move. Completion callbacks run here.
 */
static void *driver_main(void *arg)
{
	struct nbd *nbd = arg;

	for (;;) {
		struct pollfd pfd[NBD_CONNS + 1];
		unsigned int i, k = 1, map[NBD_CONNS];

		pthread_mutex_lock(&nbd->lock);
		while (!nbd->stop && !nbd->ncmds)
			pthread_cond_wait(&nbd->work, &nbd->lock);
		if (nbd->stop && !nbd->ncmds) {
			pthread_mutex_unlock(&nbd->lock);
			return NULL;
		}
		pthread_mutex_unlock(&nbd->lock);

		pfd[0] = (struct pollfd){ .fd = nbd->efd, .events = POLLIN };
		for (i = 0; i < nbd->nconns; i++) {
			struct nbd_handle *h = nbd->conns[i];
			unsigned int dir = nbd_aio_get_direction(h);
			int fd = nbd_aio_get_fd(h);

			if (fd < 0 || !dir)
				continue;
			pfd[k].fd = fd;
			pfd[k].events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
						((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
			pfd[k].revents = 0;
			map[k - 1] = i;
			k++;
		}
		if (poll(pfd, k, NBD_POLL_MS) <= 0)
			continue;
		if (pfd[0].revents) {
			uint64_t v;

			if (read(nbd->efd, &v, sizeof(v)) < 0)
				(void)0; /* EAGAIN: nothing to clear */
		}
		for (i = 1; i < k; i++) {
			struct nbd_handle *h = nbd->conns[map[i - 1]];

			/* A hang-up is read as the end of the stream. */
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				(void)nbd_aio_notify_read(h);
			if (pfd[i].revents & POLLOUT)
				(void)nbd_aio_notify_write(h);
		}
	}
}

static struct nbd_handle *pick(struct nbd *nbd)
{
	BC_LOCK_GUARD(&nbd->lock);
	return nbd->conns[nbd->rr++ % nbd->nconns];
}

/* --- one request, split into pieces ----------------------------------- */

struct request;

struct piece {
	struct request *rq;
	uint64_t off;
	bool busy;          /* queued, callback not done (nbd->lock) */
};

struct request {
	struct nbd *nbd;
	enum nbd_op op;
	uint8_t *buf;       /* OP_READ / OP_WRITE: data of [base, end) */
	uint64_t base, off, end; /* what is left to queue: [off, end) */
	uint64_t piece;
	uint32_t flags;     /* LIBNBD_CMD_FLAG_* */
	nbd_extent_callback extent; /* OP_STATUS */
	struct piece pieces[NBD_SLOTS];
	pthread_cond_t done;       /* a piece completed (nbd->lock) */
	unsigned int inflight;     /* nbd->lock */
	int err;            /* first failure, -errno; message recorded */
	int cmd_err;        /* first command failure: errno (nbd->lock) */
	uint64_t cmd_err_off;
};

static int piece_done(void *opaque, int *error)
{
	struct piece *p = opaque;
	struct request *rq = p->rq;

	BC_LOCK_GUARD(&rq->nbd->lock);
	if (*error && !rq->cmd_err) {
		rq->cmd_err = *error;
		rq->cmd_err_off = p->off;
	}
	return 1; /* retire the command */
}

/* After the completion, or at once when the command was never queued. */
static void piece_free(void *opaque)
{
	struct piece *p = opaque;
	struct nbd *nbd = p->rq->nbd;

	BC_LOCK_GUARD(&nbd->lock);
	p->busy = false;
	p->rq->inflight--;
	nbd->ncmds--;
	/* Only the request's caller waits: it returns after our unlock. */
	pthread_cond_signal(&p->rq->done);
}

static int64_t queue_piece(struct request *rq, struct piece *p, uint64_t len)
{
	struct nbd_handle *h = pick(rq->nbd);
	nbd_completion_callback cb = { .callback = piece_done, .user_data = p,
				       .free = piece_free };
	uint8_t *data = rq->buf ? rq->buf + (p->off - rq->base) : NULL;

	switch (rq->op) {
	case OP_READ:
		return nbd_aio_pread(h, data, (size_t)len, p->off, cb, 0);
	case OP_WRITE:
		return nbd_aio_pwrite(h, data, (size_t)len, p->off, cb, rq->flags);
	case OP_ZERO:
		return nbd_aio_zero(h, len, p->off, cb, rq->flags);
	case OP_TRIM:
		return nbd_aio_trim(h, len, p->off, cb, 0);
	case OP_FLUSH:
		return nbd_aio_flush(h, cb, 0);
	case OP_STATUS:
		return nbd_aio_block_status(h, len, p->off, rq->extent, cb,
					    LIBNBD_CMD_FLAG_REQ_ONE);
	}
	return -1;
}

/*
 * Queue every piece of the request (at most NBD_SLOTS at a time) and wait
 * for all of them. Returns 0 or -errno with the message recorded.
 */
static int run_request(struct request *rq)
{
	struct nbd *nbd = rq->nbd;
	bool flush = rq->op == OP_FLUSH;
	int ret = -pthread_cond_init(&rq->done, NULL);

	if (ret < 0) {
		bc_error_set(bc_errno_to_code(-ret), -ret,
			     "%s: cannot wait for an NBD request",
			     nbd->img->filename);
		return ret;
	}
	pthread_mutex_lock(&nbd->lock);
	nbd->sync_active++;
	for (;;) {
		unsigned int s;
		bool queued = false;

		while ((rq->off < rq->end || flush) && !rq->err && !rq->cmd_err &&
		       rq->inflight < NBD_SLOTS) {
			struct piece *p;
			uint64_t len = BC_MIN(rq->piece, rq->end - rq->off);
			int64_t cookie;

			for (s = 0; rq->pieces[s].busy; s++)
				;
			p = &rq->pieces[s];
			p->rq = rq;
			p->off = rq->off;
			p->busy = true;
			rq->inflight++;
			if (nbd->ncmds++ == 0)
				pthread_cond_signal(&nbd->work);
			rq->off += len;
			flush = false;
			pthread_mutex_unlock(&nbd->lock);
			cookie = queue_piece(rq, p, len);
			/* On failure piece_free has run already. */
			if (cookie < 0)
				rq->err = nbd_fail(nbd->img, op_names[rq->op],
						   p->off, rq->op != OP_FLUSH);
			pthread_mutex_lock(&nbd->lock);
			queued = true;
		}
		if (queued) {
			pthread_mutex_unlock(&nbd->lock);
			wake(nbd);
			pthread_mutex_lock(&nbd->lock);
		}
		if (!rq->inflight && (rq->off >= rq->end || rq->err || rq->cmd_err))
			break;
		pthread_cond_wait(&rq->done, &nbd->lock);
	}
	if (--nbd->sync_active == 0)
		pthread_cond_broadcast(&nbd->wb_done);
	pthread_mutex_unlock(&nbd->lock);
	pthread_cond_destroy(&rq->done);
	if (!rq->err && rq->cmd_err)
		rq->err = cmd_fail(nbd->img, op_names[rq->op], rq->cmd_err_off,
				   rq->cmd_err);
	return rq->err;
}

static int run(struct fmt_image *img, enum nbd_op op, void *buf, uint64_t n,
	       uint64_t off, uint32_t flags)
{
	struct nbd *nbd = img->priv;
	struct request rq = {
		.nbd = nbd, .op = op, .buf = buf, .base = off, .off = off,
		.end = off + n, .flags = flags,
	};
	bool data = op == OP_READ || op == OP_WRITE;

	/* Data in pieces spread over the wire; ranges in few, large ones. */
	rq.piece = data ? BC_MIN(nbd->data_max, NBD_PIECE) : NBD_RANGE_MAX;
	return run_request(&rq);
}

/* --- write-behind -------------------------------------------------------- */

static int wb_complete(void *opaque, int *error)
{
	struct wb_buf *w = opaque;
	struct nbd *nbd = w->nbd;

	BC_LOCK_GUARD(&nbd->lock);
	if (*error && !nbd->wb_err) {
		nbd->wb_err = *error;
		nbd->wb_err_off = w->off;
	}
	return 1; /* retire the command */
}

static void wb_free(void *opaque)
{
	struct wb_buf *w = opaque;
	struct nbd *nbd = w->nbd;

	BC_LOCK_GUARD(&nbd->lock);
	w->busy = false;
	nbd->wb_busy--;
	nbd->ncmds--;
	/* The copy loop, guest writes over this range, a flush, close. */
	pthread_cond_broadcast(&nbd->wb_done);
}

/* Whether a write-behind in flight overlaps [off, off+len); lock held. */
static bool wb_overlaps_locked(const struct nbd *nbd, uint64_t off, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < NBD_WB_BUFS; i++) {
		const struct wb_buf *w = &nbd->wb[i];

		if (w->busy && w->off < off + len && off < w->off + w->len)
			return true;
	}
	return false;
}

/*
 * Write-behinds allowed in flight now: NBD_WB_BUFS, or NBD_WB_BUFS_SYNC
 * while a synchronous request (a mirrored guest write) is under way, so
 * that it queues behind at most that much of the copy's data.
 */
static unsigned int wb_window_locked(const struct nbd *nbd)
{
	return nbd->sync_active ? NBD_WB_BUFS_SYNC : NBD_WB_BUFS;
}

/*
 * Wait until no write-behind is in flight (@len 0), or until a buffer is
 * free and none in flight overlaps [off, off+len); then returns that
 * buffer, busy, counted and covering [off, off+len) (NULL when draining).
 */
static struct wb_buf *wb_wait(struct nbd *nbd, uint64_t off, uint64_t len)
{
	unsigned int i;

	BC_LOCK_GUARD(&nbd->lock);
	for (;;) {
		if (!len && !nbd->wb_busy)
			return NULL;
		if (len && nbd->wb_busy < wb_window_locked(nbd) &&
		    !wb_overlaps_locked(nbd, off, len))
			break;
		pthread_cond_wait(&nbd->wb_done, &nbd->lock);
	}
	for (i = 0; nbd->wb[i].busy; i++)
		;
	/*
	 * Its range is set before the lock is dropped: a request that
	 * checks for overlaps must never see it busy with an old range.
	 */
	nbd->wb[i].nbd = nbd;
	nbd->wb[i].off = off;
	nbd->wb[i].len = len;
	nbd->wb[i].busy = true;
	nbd->wb_busy++;
	if (nbd->ncmds++ == 0)
		pthread_cond_signal(&nbd->work);
	return &nbd->wb[i];
}

/* The first write-behind failure, reported now; 0 when none. */
static int wb_error(struct fmt_image *img)
{
	struct nbd *nbd = img->priv;
	int err;
	uint64_t off;

	pthread_mutex_lock(&nbd->lock);
	err = nbd->wb_err;
	off = nbd->wb_err_off;
	pthread_mutex_unlock(&nbd->lock);
	return err ? cmd_fail(img, "write", off, err) : 0;
}

/* Every write-behind done; its first error, if any. */
static int drain(struct fmt_image *img)
{
	(void)wb_wait(img->priv, 0, 0);
	return wb_error(img);
}

/*
 * No write-behind overlapping [off, off+len) in flight (the others may
 * go on: NBD orders nothing between requests that do not overlap); the
 * first write-behind error, if any. A write-blocking guest write mirrored
 * here thus waits for the copy's writes of its own range only, not for
 * the megabytes queued behind it elsewhere.
 */
static int drain_range(struct fmt_image *img, uint64_t off, uint64_t len)
{
	struct nbd *nbd = img->priv;

	pthread_mutex_lock(&nbd->lock);
	while (wb_overlaps_locked(nbd, off, len))
		pthread_cond_wait(&nbd->wb_done, &nbd->lock);
	pthread_mutex_unlock(&nbd->lock);
	return wb_error(img);
}

/* Queue one write-behind of at most NBD_WB_SIZE bytes. */
static int queue_behind(struct fmt_image *img, const void *buf, size_t n,
			uint64_t off)
{
	struct nbd *nbd = img->priv;
	struct wb_buf *w;
	int64_t cookie;

	w = wb_wait(nbd, off, n);
	if (!w->data)
		w->data = malloc(NBD_WB_SIZE);
	if (!w->data) {
		wb_free(w);
		return -ENOMEM;
	}
	memcpy(w->data, buf, n);
	cookie = nbd_aio_pwrite(pick(nbd), w->data, n, off,
				(nbd_completion_callback){ .callback = wb_complete,
							   .user_data = w,
							   .free = wb_free },
				0);
	/* On failure wb_free has released the buffer already. */
	if (cookie < 0)
		return nbd_fail(img, "write", off, true);
	wake(nbd);
	return 0;
}

/*
 * A chunk larger than a buffer (the copy's offline chunks are 4 MiB) goes
 * as several write-behinds, each waiting for a free buffer, rather than
 * synchronously: the window stays NBD_WB_BUFS buffers whatever the chunk.
 */
static int nbd_drv_pwrite_behind(struct fmt_image *img, const void *buf,
				 size_t n, uint64_t off)
{
	struct nbd *nbd = img->priv;
	size_t piece = (size_t)BC_MIN((uint64_t)NBD_WB_SIZE, nbd->data_max);
	const uint8_t *p = buf;
	int ret = wb_error(img);

	while (ret == 0 && n) {
		size_t len = BC_MIN(n, piece);

		ret = queue_behind(img, p, len, off);
		p += len;
		off += len;
		n -= len;
	}
	return ret;
}

/* --- driver entry points ------------------------------------------------ */

static int nbd_drv_pread(struct fmt_image *img, void *buf, size_t n,
			 uint64_t off)
{
	int ret = drain_range(img, off, n);

	return ret < 0 ? ret : run(img, OP_READ, buf, n, off, 0);
}

static int nbd_drv_pwrite(struct fmt_image *img, const void *buf, size_t n,
			  uint64_t off)
{
	int ret = drain_range(img, off, n);

	/* libnbd reads the buffer only: the cast does not make it written. */
	return ret < 0 ? ret : run(img, OP_WRITE, (void *)(uintptr_t)buf, n, off, 0);
}

/* Write explicit zeros where the server has no WRITE_ZEROES. */
static int write_zero_data(struct fmt_image *img, uint64_t off, uint64_t len)
{
	uint64_t chunk = BC_MIN(len, (uint64_t)NBD_DATA_MAX);
	uint8_t *zero = calloc(1, chunk);
	int ret = 0;

	if (!zero)
		return -ENOMEM;
	while (len && !ret) {
		uint64_t n = BC_MIN(len, chunk);

		ret = run(img, OP_WRITE, zero, n, off, 0);
		off += n;
		len -= n;
	}
	free(zero);
	return ret;
}

static int nbd_drv_write_zeroes(struct fmt_image *img, uint64_t off,
				uint64_t len, unsigned int flags)
{
	struct nbd *nbd = img->priv;
	uint32_t f = (flags & FMT_ZERO_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
	int ret = drain_range(img, off, len);

	if (ret < 0)
		return ret;
	if (!nbd->can_zero)
		return write_zero_data(img, off, len);
	/*
	 * Fast zero first where offered: a server that can only zero by
	 * writing says so (ENOTSUP) at once instead of after the work, and
	 * is then asked the plain way from then on.
	 */
	if (nbd->can_fast_zero && !__atomic_load_n(&nbd->fast_zero_refused,
						   __ATOMIC_RELAXED)) {
		ret = run(img, OP_ZERO, NULL, len, off,
			  f | LIBNBD_CMD_FLAG_FAST_ZERO);
		if (ret != -ENOTSUP && ret != -EOPNOTSUPP)
			return ret;
		bc_error_reset();
		__atomic_store_n(&nbd->fast_zero_refused, true, __ATOMIC_RELAXED);
	}
	return run(img, OP_ZERO, NULL, len, off, f);
}

static int nbd_drv_discard(struct fmt_image *img, uint64_t off, uint64_t len)
{
	struct nbd *nbd = img->priv;
	int ret = drain_range(img, off, len);

	if (ret < 0)
		return ret;
	/* A discard is a hint: a server without TRIM keeps the data. */
	if (!nbd->can_trim)
		return 0;
	return run(img, OP_TRIM, NULL, len, off, 0);
}

static int nbd_drv_flush(struct fmt_image *img)
{
	struct nbd *nbd = img->priv;
	int ret = drain(img);

	if (ret < 0 || !nbd->can_flush)
		return ret;
	/*
	 * With multi-conn a flush on one connection covers the writes of
	 * all; without it there is only one connection.
	 */
	return run(img, OP_FLUSH, NULL, 0, 0, 0);
}

struct extent_answer {
	uint64_t len;
	uint32_t flags;
	bool seen;
};

static int extent_cb(void *opaque, const char *ctx, uint64_t off,
		     uint32_t *entries, size_t nr, int *error)
{
	struct extent_answer *a = opaque;

	if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) || nr < 2 || a->seen)
		return 0;
	a->len = entries[0];
	a->flags = entries[1];
	a->seen = true;
	return 0;
}

static int nbd_drv_block_status(struct fmt_image *img, uint64_t off,
				uint64_t len, struct fmt_extent *ext)
{
	struct nbd *nbd = img->priv;
	struct extent_answer a = { 0 };
	struct request rq = {
		.nbd = nbd, .op = OP_STATUS, .base = off, .off = off,
		.end = off + BC_MIN(len, NBD_RANGE_MAX), .piece = NBD_RANGE_MAX,
		.extent = { .callback = extent_cb, .user_data = &a },
	};
	int r;

	ext->depth = 0;
	ext->host_off = -1;
	ext->compressed = false;
	ext->state = FMT_DATA;
	ext->len = len;
	r = drain_range(img, off, BC_MIN(len, NBD_RANGE_MAX));
	if (r < 0 || !nbd->has_alloc)
		return r;
	r = run_request(&rq);
	if (r < 0)
		return r;
	if (!a.seen || !a.len) {
		bc_error_set(ERR_IO, EPROTO,
			     "%s: block status at offset %llu: the server answered no extent",
			     img->filename, (unsigned long long)off);
		return -EPROTO;
	}
	ext->len = BC_MIN(len, a.len);
	/* A hole that does not read as zero still holds the server's data. */
	if (a.flags & LIBNBD_STATE_ZERO)
		ext->state = FMT_ZERO;
	return 0;
}

static int nbd_drv_get_info(struct fmt_image *img, struct fmt_info *info)
{
	/* The server's format is not visible: the export is raw data. */
	info->format = "raw";
	info->virtual_size = img->size;
	return 0;
}

static int nbd_drv_set_backing(struct fmt_image *img, const char *name,
			       const char *fmt)
{
	bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
		     "%s: an NBD export's backing file belongs to its server",
		     img->filename);
	return -ENOTSUP;
}

/* --- open and close ----------------------------------------------------- */

static void nbd_drv_close(struct fmt_image *img)
{
	struct nbd *nbd = img->priv;
	unsigned int i;

	if (!nbd)
		return;
	/* Whatever fails here was never relied on: no flush covered it. */
	(void)wb_wait(nbd, 0, 0);
	pthread_mutex_lock(&nbd->lock);
	nbd->stop = true;
	pthread_cond_signal(&nbd->work);
	pthread_mutex_unlock(&nbd->lock);
	wake(nbd);
	(void)pthread_join(nbd->driver, NULL);
	for (i = 0; i < nbd->nconns; i++) {
		/* Ask politely; a dead connection just closes. */
		(void)nbd_shutdown(nbd->conns[i], 0);
		nbd_close(nbd->conns[i]);
	}
	for (i = 0; i < NBD_WB_BUFS; i++)
		free(nbd->wb[i].data);
	(void)close(nbd->efd);
	pthread_cond_destroy(&nbd->wb_done);
	pthread_cond_destroy(&nbd->work);
	pthread_mutex_destroy(&nbd->lock);
	free(nbd);
	img->priv = NULL;
}

static int connect_one(struct fmt_image *img, struct nbd_handle **out)
{
	struct nbd_handle *h = nbd_create();

	if (!h)
		return nbd_fail(img, "connect", 0, false);
	if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    nbd_connect_uri(h, img->filename) < 0) {
		int ret = nbd_fail(img, "connect", 0, false);

		nbd_close(h);
		return ret;
	}
	*out = h;
	return 0;
}

/* A capability flag of the server: true, false, or -errno recorded. */
static int flag_of(struct fmt_image *img, int r, const char *what)
{
	if (r < 0)
		return nbd_fail(img, what, 0, false);
	return r;
}

static int nbd_drv_open(struct fmt_image *img)
{
	struct nbd *nbd;
	struct nbd_handle *h = NULL;
	int64_t size, bmax;
	unsigned int want, i;
	int r, ret;

	nbd = calloc(1, sizeof(*nbd));
	if (!nbd)
		return -ENOMEM;
	nbd->img = img;
	nbd->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (nbd->efd < 0) {
		ret = -errno;
		goto err_free;
	}
	if ((ret = -pthread_mutex_init(&nbd->lock, NULL)))
		goto err_efd;
	if ((ret = -pthread_cond_init(&nbd->work, NULL)))
		goto err_mutex;
	if ((ret = -pthread_cond_init(&nbd->wb_done, NULL)))
		goto err_work;
	img->priv = nbd;
	ret = connect_one(img, &h);
	if (ret < 0)
		goto err_cond;
	nbd->conns[0] = h;
	nbd->nconns = 1;

	size = nbd_get_size(h);
	if (size < 0) {
		ret = nbd_fail(img, "get size", 0, false);
		goto err_close;
	}
	r = flag_of(img, nbd_is_read_only(h), "read-only flag");
	if (r < 0 || (r && (img->flags & FMT_OPEN_RDWR))) {
		if (r > 0) {
			bc_error_set(ERR_OPERATION_INVALID, EROFS,
				     "%s: the export is read-only", img->filename);
			r = -EROFS;
		}
		ret = r;
		goto err_close;
	}
	nbd->can_zero = nbd_can_zero(h) > 0;
	nbd->can_fast_zero = nbd_can_fast_zero(h) > 0;
	nbd->can_trim = nbd_can_trim(h) > 0;
	nbd->can_flush = nbd_can_flush(h) > 0;
	nbd->has_alloc = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) > 0;
	bmax = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	nbd->data_max = bmax > 0 ? BC_MIN((uint64_t)bmax, (uint64_t)NBD_DATA_MAX)
				 : NBD_DATA_MAX;

	want = nbd_can_multi_conn(h) > 0 ? NBD_CONNS : 1;
	for (i = 1; i < want; i++) {
		ret = connect_one(img, &nbd->conns[i]);
		if (ret < 0)
			goto err_close;
		nbd->nconns++;
	}
	ret = -pthread_create(&nbd->driver, NULL, driver_main, nbd);
	if (ret < 0) {
		bc_error_set(ERR_INTERNAL, -ret,
			     "%s: cannot start the NBD driver thread", img->filename);
		goto err_close;
	}
	img->size = (uint64_t)size;
	img->request_align = 1;
	return 0;

err_close:
	for (i = 0; i < nbd->nconns; i++)
		nbd_close(nbd->conns[i]);
err_cond:
	pthread_cond_destroy(&nbd->wb_done);
err_work:
	pthread_cond_destroy(&nbd->work);
err_mutex:
	pthread_mutex_destroy(&nbd->lock);
err_efd:
	(void)close(nbd->efd);
err_free:
	free(nbd);
	img->priv = NULL;
	return ret;
}

const struct fmt_driver fmt_nbd_driver = {
	.name = "nbd",
	.protocol = true,
	.probe = NULL,
	.open = nbd_drv_open,
	.close = nbd_drv_close,
	.pread = nbd_drv_pread,
	.pwrite = nbd_drv_pwrite,
	.pwrite_behind = nbd_drv_pwrite_behind,
	.write_zeroes = nbd_drv_write_zeroes,
	.discard = nbd_drv_discard,
	.flush = nbd_drv_flush,
	.block_status = nbd_drv_block_status,
	.create = NULL,
	.set_backing = nbd_drv_set_backing,
	.get_info = nbd_drv_get_info,
	.check = NULL,
	.map_for_overwrite = NULL,
};
