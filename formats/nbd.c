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
 * are opened; otherwise one. A request checks connections out of the
 * pool (at least one, more when it is large and they are free), so
 * concurrent callers (guest threads) never share a handle, and splits
 * itself into pieces issued with libnbd's asynchronous calls, several in
 * flight per connection. The caller's thread then drives those
 * connections itself: poll() on their descriptors in the direction
 * libnbd asks for, nbd_aio_notify_read/write, until every piece has
 * completed. No thread is started and none waits per request.
 *
 * Write-behind (fmt_pwrite_behind, the copy loop's destination writes):
 * the data is copied into one of NBD_WB_BUFS buffers and the write is
 * issued with a completion callback; the call returns without waiting,
 * so the copy loop reads the next chunks while earlier ones are on the
 * wire (a single connection, as qemu-nbd gives, then carries many
 * requests at once). Whoever drives a connection next retires them; a
 * caller that needs a buffer, or an ordering, drives them itself. A
 * write-behind never overlaps another one in flight (it waits), and every
 * other entry point (reads, writes, zeroes, trims, flush, block status)
 * first waits for all of them, so no request passes one it follows. The
 * first failure is kept and returned by the next call that waits (flush
 * always does), naming the URI and offset.
 *
 * Block status uses the "base:allocation" meta context: holes and zero
 * runs are FMT_ZERO (the copy writes them as zero writes, which the
 * server may keep sparse), the rest FMT_DATA. A server without the
 * context reports everything as data.
 *
 * Errors name the URI and carry libnbd's message (which includes the
 * server's reason where it gave one). A connection that dies fails the
 * requests on it and every later one: the handle is not reconnected.
 */
#include "fmt.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Connections opened when the server offers multi-conn (nbdcopy: 4). */
#define NBD_CONNS        4u
/* Data pieces: a request larger than this is split so that its pieces
 * are in flight together, on one connection or several. */
#define NBD_PIECE        (256u * 1024u)
/* Largest data request when the server states no maximum. */
#define NBD_DATA_MAX     (32u * 1024u * 1024u)
/* Zero, trim and block status carry a 32-bit length. */
#define NBD_RANGE_MAX    (1ull << 30)
/* Pieces in flight per connection within one request. */
#define NBD_DEPTH        8u
/* Pieces one request tracks at a time. */
#define NBD_SLOTS        (NBD_CONNS * NBD_DEPTH)
/* Write-behind: buffers (allocated on first use) and their size. */
#define NBD_WB_BUFS      32u
#define NBD_WB_SIZE      (1024u * 1024u)
/* How long a waiter sleeps before looking again (another thread may be
 * driving the connections it waits for). */
#define NBD_WB_POLL_MS   10

struct nbd_conn {
	struct nbd_handle *h;
	bool busy; /* checked out by a request (nbd->lock) */
};

struct nbd;

/* One write-behind in flight. */
struct wb_buf {
	struct nbd *nbd;
	uint8_t *data;              /* NBD_WB_SIZE bytes, NULL until used */
	uint64_t off, len;
	bool busy;                  /* issued, not completed (nbd->wb_lock) */
};

struct nbd {
	pthread_mutex_t lock;
	pthread_cond_t freed;       /* a connection came back to the pool */
	struct nbd_conn conns[NBD_CONNS];
	unsigned int nconns;
	unsigned int nfree;         /* under lock */
	uint64_t data_max;          /* largest pread/pwrite piece */
	bool can_zero, can_fast_zero, can_trim, can_flush, has_alloc;
	bool fast_zero_refused;     /* the server said no once: stop asking */
	pthread_mutex_t wb_lock;    /* guards the wb_* fields */
	pthread_cond_t wb_done;     /* a write-behind completed */
	struct wb_buf wb[NBD_WB_BUFS];
	unsigned int wb_busy;
	int wb_err;                 /* first failed write-behind: errno */
	uint64_t wb_err_off;        /* ...and its offset */
};

enum nbd_op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM };

static const char *const op_names[] = {
	[OP_READ] = "read", [OP_WRITE] = "write",
	[OP_ZERO] = "write zeroes", [OP_TRIM] = "trim",
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

/* --- the pool --------------------------------------------------------- */

/* Check out between 1 and @want connections; blocks until one is free. */
static unsigned int checkout(struct nbd *nbd, unsigned int want,
			     struct nbd_conn **out)
{
	unsigned int i, n = 0;

	BC_LOCK_GUARD(&nbd->lock);
	while (!nbd->nfree)
		pthread_cond_wait(&nbd->freed, &nbd->lock);
	for (i = 0; i < nbd->nconns && n < want; i++) {
		if (!nbd->conns[i].busy) {
			nbd->conns[i].busy = true;
			out[n++] = &nbd->conns[i];
		}
	}
	nbd->nfree -= n;
	return n;
}

static void checkin(struct nbd *nbd, struct nbd_conn **conns, unsigned int n)
{
	unsigned int i;

	BC_LOCK_GUARD(&nbd->lock);
	for (i = 0; i < n; i++)
		conns[i]->busy = false;
	nbd->nfree += n;
	pthread_cond_broadcast(&nbd->freed);
}

/* --- one request, split and driven here -------------------------------- */

struct piece {
	int64_t cookie;    /* 0 = slot free */
	unsigned int conn; /* index into the request's connections */
	uint64_t off;
};

struct request {
	struct fmt_image *img;
	enum nbd_op op;
	uint8_t *buf;      /* OP_READ / OP_WRITE */
	uint64_t off, end; /* what is left to issue: [off, end) */
	uint64_t piece;
	uint32_t flags;    /* LIBNBD_CMD_FLAG_* */
	struct nbd_conn *conns[NBD_CONNS];
	unsigned int nconns;
	unsigned int depth[NBD_CONNS]; /* pieces in flight per connection */
	struct piece slots[NBD_SLOTS];
	unsigned int inflight;
	int err;           /* first error, -errno; the message is recorded */
	uint64_t err_off;
};

static int64_t issue_piece(const struct request *rq, struct nbd_handle *h,
			   uint8_t *p, uint64_t off, uint64_t len)
{
	switch (rq->op) {
	case OP_READ:
		return nbd_aio_pread(h, p, (size_t)len, off,
				     NBD_NULL_COMPLETION, 0);
	case OP_WRITE:
		return nbd_aio_pwrite(h, p, (size_t)len, off,
				      NBD_NULL_COMPLETION, rq->flags);
	case OP_ZERO:
		return nbd_aio_zero(h, len, off, NBD_NULL_COMPLETION, rq->flags);
	case OP_TRIM:
		return nbd_aio_trim(h, len, off, NBD_NULL_COMPLETION, 0);
	}
	return -1;
}

/* Issue pieces while slots, connection depth and range allow. */
static void fill(struct request *rq, uint64_t base)
{
	unsigned int s, c = 0;

	for (s = 0; s < NBD_SLOTS && rq->off < rq->end && !rq->err; s++) {
		struct piece *pc = &rq->slots[s];
		uint64_t len = BC_MIN(rq->piece, rq->end - rq->off);
		unsigned int tries;
		int64_t cookie;

		if (pc->cookie)
			continue;
		/* The least loaded connection of the request. */
		for (tries = 0; tries < rq->nconns; tries++) {
			if (rq->depth[c] < NBD_DEPTH)
				break;
			c = (c + 1) % rq->nconns;
		}
		if (rq->depth[c] >= NBD_DEPTH)
			return;
		cookie = issue_piece(rq, rq->conns[c]->h,
				     rq->buf ? rq->buf + (rq->off - base) : NULL,
				     rq->off, len);
		if (cookie < 0) {
			rq->err = nbd_fail(rq->img, op_names[rq->op], rq->off, true);
			return;
		}
		pc->cookie = cookie;
		pc->conn = c;
		pc->off = rq->off;
		rq->depth[c]++;
		rq->inflight++;
		rq->off += len;
		c = (c + 1) % rq->nconns;
	}
}

/* Retire completed pieces; records the first failure. */
static void collect(struct request *rq)
{
	unsigned int s;

	for (s = 0; s < NBD_SLOTS && rq->inflight; s++) {
		struct piece *pc = &rq->slots[s];
		int r;

		if (!pc->cookie)
			continue;
		r = nbd_aio_command_completed(rq->conns[pc->conn]->h, pc->cookie);
		if (r == 0)
			continue;
		if (r < 0 && !rq->err)
			rq->err = nbd_fail(rq->img, op_names[rq->op], pc->off, true);
		pc->cookie = 0;
		rq->depth[pc->conn]--;
		rq->inflight--;
	}
}

/*
 * Wait for the request's connections to be ready and let libnbd move.
 * A connection that died completes its commands with an error (collect()
 * sees them); one with nothing to wait for is skipped.
 */
static int drive(struct request *rq)
{
	struct pollfd pfd[NBD_CONNS];
	unsigned int i, n = 0, map[NBD_CONNS];

	for (i = 0; i < rq->nconns; i++) {
		struct nbd_handle *h = rq->conns[i]->h;
		unsigned int dir = nbd_aio_get_direction(h);
		int fd = nbd_aio_get_fd(h);

		if (!rq->depth[i] || fd < 0 || !dir)
			continue;
		pfd[n].fd = fd;
		pfd[n].events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
					((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
		pfd[n].revents = 0;
		map[n++] = i;
	}
	if (!n) {
		/* Pieces in flight on connections that cannot move: dead. */
		bc_error_set(BC_ERR_IO, ENOTCONN,
			     "%s: %s failed: connection to the server lost",
			     rq->img->filename, op_names[rq->op]);
		return -ENOTCONN;
	}
	if (poll(pfd, n, -1) < 0) {
		if (errno == EINTR)
			return 0;
		return -errno;
	}
	for (i = 0; i < n; i++) {
		struct nbd_handle *h = rq->conns[map[i]]->h;
		short ev = pfd[i].revents;

		/* A hang-up is read as the end of the stream. */
		if (ev & (POLLIN | POLLHUP | POLLERR))
			(void)nbd_aio_notify_read(h);
		if (ev & POLLOUT)
			(void)nbd_aio_notify_write(h);
	}
	return 0;
}

/* Forget what is in flight on a connection that cannot complete it. */
static void abandon(struct request *rq)
{
	memset(rq->slots, 0, sizeof(rq->slots));
	memset(rq->depth, 0, sizeof(rq->depth));
	rq->inflight = 0;
}

static int run(struct fmt_image *img, enum nbd_op op, void *buf, uint64_t n,
	       uint64_t off, uint32_t flags)
{
	struct nbd *nbd = img->priv;
	struct request rq = {
		.img = img, .op = op, .buf = buf, .off = off, .end = off + n,
		.flags = flags,
	};
	uint64_t max = (op == OP_READ || op == OP_WRITE) ? nbd->data_max
							  : NBD_RANGE_MAX;
	uint64_t pieces;
	unsigned int want;

	/* Data in pieces spread over connections; ranges in few, large ones. */
	rq.piece = (op == OP_READ || op == OP_WRITE) ? BC_MIN(max, NBD_PIECE) : max;
	pieces = (n + rq.piece - 1) / rq.piece;
	want = (unsigned int)BC_MIN(pieces, (uint64_t)nbd->nconns);
	rq.nconns = checkout(nbd, want, rq.conns);
	if (pieces > rq.nconns && pieces <= (uint64_t)rq.nconns * NBD_DEPTH &&
	    (op == OP_READ || op == OP_WRITE)) {
		/* Fewer, larger pieces: one round per connection. */
		rq.piece = BC_MIN(max, bc_align_up((n + rq.nconns - 1) / rq.nconns, 4096));
	}

	for (;;) {
		int ret;

		fill(&rq, off);
		if (!rq.inflight)
			break;
		ret = drive(&rq);
		if (ret < 0) {
			if (!rq.err)
				rq.err = ret;
			abandon(&rq);
			break;
		}
		collect(&rq);
	}
	checkin(nbd, rq.conns, rq.nconns);
	return rq.err;
}

/* --- write-behind -------------------------------------------------------- */

/* libnbd calls this from whichever thread drives the connection. */
static int wb_complete(void *opaque, int *error)
{
	struct wb_buf *w = opaque;
	struct nbd *nbd = w->nbd;

	BC_LOCK_GUARD(&nbd->wb_lock);
	if (*error && !nbd->wb_err) {
		nbd->wb_err = *error;
		nbd->wb_err_off = w->off;
	}
	return 1; /* retire the command */
}

/*
 * The buffer is free when libnbd is done with the callback: after the
 * completion, or at once when the write could not even be issued.
 */
static void wb_free(void *opaque)
{
	struct wb_buf *w = opaque;
	struct nbd *nbd = w->nbd;

	BC_LOCK_GUARD(&nbd->wb_lock);
	w->busy = false;
	nbd->wb_busy--;
	pthread_cond_broadcast(&nbd->wb_done);
}

/*
 * Let libnbd move on the connections in @conns that have commands in
 * flight: poll them for up to @timeout_ms and notify. Returns how many
 * had something in flight.
 */
static unsigned int kick(struct nbd_conn **conns, unsigned int n, int timeout_ms)
{
	struct pollfd pfd[NBD_CONNS];
	unsigned int i, k = 0, map[NBD_CONNS];

	for (i = 0; i < n; i++) {
		struct nbd_handle *h = conns[i]->h;
		unsigned int dir;
		int fd;

		if (nbd_aio_in_flight(h) <= 0)
			continue;
		dir = nbd_aio_get_direction(h);
		fd = nbd_aio_get_fd(h);
		if (fd < 0 || !dir)
			continue;
		pfd[k].fd = fd;
		pfd[k].events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
					((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
		pfd[k].revents = 0;
		map[k++] = i;
	}
	if (!k || poll(pfd, k, timeout_ms) <= 0)
		return k;
	for (i = 0; i < k; i++) {
		struct nbd_handle *h = conns[map[i]]->h;

		if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
			(void)nbd_aio_notify_read(h);
		if (pfd[i].revents & POLLOUT)
			(void)nbd_aio_notify_write(h);
	}
	return k;
}

/* Whether a write-behind in flight overlaps [off, off+len); wb_lock held. */
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
 * Wait until no write-behind is in flight (@len 0) or until a buffer is
 * free and none in flight overlaps [off, off+len), driving the
 * connections meanwhile. Returns the free buffer (or NULL when draining).
 */
static struct wb_buf *wb_wait(struct nbd *nbd, uint64_t off, uint64_t len)
{
	for (;;) {
		struct nbd_conn *c[NBD_CONNS];
		unsigned int i, n;

		pthread_mutex_lock(&nbd->wb_lock);
		if (!len && !nbd->wb_busy) {
			pthread_mutex_unlock(&nbd->wb_lock);
			return NULL;
		}
		if (len && nbd->wb_busy < NBD_WB_BUFS &&
		    !wb_overlaps_locked(nbd, off, len)) {
			for (i = 0; nbd->wb[i].busy; i++)
				;
			nbd->wb[i].busy = true;
			nbd->wb_busy++;
			pthread_mutex_unlock(&nbd->wb_lock);
			return &nbd->wb[i];
		}
		pthread_mutex_unlock(&nbd->wb_lock);

		n = checkout(nbd, nbd->nconns, c);
		if (!kick(c, n, NBD_WB_POLL_MS)) {
			/* What we wait for is on connections others are driving. */
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += NBD_WB_POLL_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			checkin(nbd, c, n);
			pthread_mutex_lock(&nbd->wb_lock);
			if (nbd->wb_busy)
				(void)pthread_cond_timedwait(&nbd->wb_done,
							     &nbd->wb_lock, &ts);
			pthread_mutex_unlock(&nbd->wb_lock);
			continue;
		}
		checkin(nbd, c, n);
	}
}

/* The first write-behind failure, reported now; 0 when none. */
static int wb_error(struct fmt_image *img)
{
	struct nbd *nbd = img->priv;
	char ebuf[128];
	int err;
	uint64_t off;

	pthread_mutex_lock(&nbd->wb_lock);
	err = nbd->wb_err;
	off = nbd->wb_err_off;
	pthread_mutex_unlock(&nbd->wb_lock);
	if (!err)
		return 0;
	bc_error_set(bc_errno_to_code(err), err,
		     "%s: write failed at offset %llu: %s", img->filename,
		     (unsigned long long)off, strerror_r(err, ebuf, sizeof(ebuf)));
	return -err;
}

/* Every write-behind done; its first error, if any. */
static int drain(struct fmt_image *img)
{
	(void)wb_wait(img->priv, 0, 0);
	return wb_error(img);
}

static int nbd_drv_pwrite_behind(struct fmt_image *img, const void *buf,
				 size_t n, uint64_t off)
{
	struct nbd *nbd = img->priv;
	struct nbd_conn *c[NBD_CONNS] = { NULL };
	struct wb_buf *w;
	unsigned int k;
	int64_t cookie;
	int ret;

	ret = wb_error(img);
	if (ret < 0)
		return ret;
	if (n > NBD_WB_SIZE) {
		ret = drain(img);
		return ret < 0 ? ret : run(img, OP_WRITE, (void *)(uintptr_t)buf, n, off, 0);
	}
	w = wb_wait(nbd, off, n);
	if (!w->data) {
		w->data = malloc(NBD_WB_SIZE);
		if (!w->data) {
			pthread_mutex_lock(&nbd->wb_lock);
			w->busy = false;
			nbd->wb_busy--;
			pthread_mutex_unlock(&nbd->wb_lock);
			return -ENOMEM;
		}
	}
	w->nbd = nbd;
	w->off = off;
	w->len = n;
	memcpy(w->data, buf, n);
	k = checkout(nbd, 1, c);
	cookie = nbd_aio_pwrite(c[0]->h, w->data, n, off,
				(nbd_completion_callback){ .callback = wb_complete,
							   .user_data = w,
							   .free = wb_free },
				0);
	if (cookie < 0) {
		/* wb_free has released the buffer already. */
		ret = nbd_fail(img, "write", off, true);
		checkin(nbd, c, k);
		return ret;
	}
	checkin(nbd, c, k);
	/* Move whatever is ready on the free connections, without waiting. */
	k = checkout(nbd, nbd->nconns, c);
	(void)kick(c, k, 0);
	checkin(nbd, c, k);
	return 0;
}

/* --- driver entry points ------------------------------------------------ */

static int nbd_drv_pread(struct fmt_image *img, void *buf, size_t n,
			 uint64_t off)
{
	int ret = drain(img);

	return ret < 0 ? ret : run(img, OP_READ, buf, n, off, 0);
}

static int nbd_drv_pwrite(struct fmt_image *img, const void *buf, size_t n,
			  uint64_t off)
{
	int ret = drain(img);

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
	int ret = drain(img);

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
	int ret = drain(img);

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
	struct nbd_conn *c[NBD_CONNS];
	unsigned int n, i;
	int ret = drain(img);

	if (ret < 0 || !nbd->can_flush)
		return ret;
	/*
	 * With multi-conn a flush on one connection covers the writes of
	 * all; without it there is only one connection.
	 */
	n = checkout(nbd, 1, c);
	for (i = 0; i < n && !ret; i++) {
		if (nbd_flush(c[i]->h, 0) < 0)
			ret = nbd_fail(img, "flush", 0, false);
	}
	checkin(nbd, c, n);
	return ret;
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
	struct nbd_conn *c = NULL;
	int r;

	ext->depth = 0;
	ext->host_off = -1;
	ext->compressed = false;
	ext->state = FMT_DATA;
	ext->len = len;
	r = drain(img);
	if (r < 0 || !nbd->has_alloc)
		return r;
	(void)checkout(nbd, 1, &c);
	r = nbd_block_status(c->h, BC_MIN(len, NBD_RANGE_MAX), off,
			     (nbd_extent_callback){ .callback = extent_cb,
						    .user_data = &a },
			     LIBNBD_CMD_FLAG_REQ_ONE);
	checkin(nbd, &c, 1);
	if (r < 0)
		return nbd_fail(img, "block status", off, true);
	if (!a.seen || !a.len) {
		bc_error_set(BC_ERR_IO, EPROTO,
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
	bc_error_set(BC_ERR_UNSUPPORTED, ENOTSUP,
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
	for (i = 0; i < nbd->nconns; i++) {
		/* Ask politely; a dead connection just closes. */
		(void)nbd_shutdown(nbd->conns[i].h, 0);
		nbd_close(nbd->conns[i].h);
	}
	for (i = 0; i < NBD_WB_BUFS; i++)
		free(nbd->wb[i].data);
	pthread_cond_destroy(&nbd->wb_done);
	pthread_mutex_destroy(&nbd->wb_lock);
	pthread_cond_destroy(&nbd->freed);
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
	if ((ret = -pthread_mutex_init(&nbd->lock, NULL)))
		goto err_free;
	if ((ret = -pthread_cond_init(&nbd->freed, NULL)))
		goto err_mutex;
	if ((ret = -pthread_mutex_init(&nbd->wb_lock, NULL)))
		goto err_cond;
	if ((ret = -pthread_cond_init(&nbd->wb_done, NULL)))
		goto err_wb_lock;
	img->priv = nbd;
	ret = connect_one(img, &h);
	if (ret < 0)
		goto err_wb_cond;
	nbd->conns[0].h = h;
	nbd->nconns = 1;

	size = nbd_get_size(h);
	if (size < 0) {
		ret = nbd_fail(img, "get size", 0, false);
		goto err_close;
	}
	r = flag_of(img, nbd_is_read_only(h), "read-only flag");
	if (r < 0 || (r && (img->flags & FMT_OPEN_RDWR))) {
		if (r > 0) {
			bc_error_set(BC_ERR_OPERATION_INVALID, EROFS,
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
		ret = connect_one(img, &nbd->conns[i].h);
		if (ret < 0)
			goto err_close;
		nbd->nconns++;
	}
	nbd->nfree = nbd->nconns;
	img->size = (uint64_t)size;
	img->request_align = 1;
	return 0;

err_close:
	for (i = 0; i < nbd->nconns; i++)
		nbd_close(nbd->conns[i].h);
err_wb_cond:
	pthread_cond_destroy(&nbd->wb_done);
err_wb_lock:
	pthread_mutex_destroy(&nbd->wb_lock);
err_cond:
	pthread_cond_destroy(&nbd->freed);
err_mutex:
	pthread_mutex_destroy(&nbd->lock);
err_free:
	free(nbd);
	img->priv = NULL;
	return ret;
}

const struct fmt_driver fmt_nbd_driver = {
	.name = "nbd",
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
