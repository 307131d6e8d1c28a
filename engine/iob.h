/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * I/O backend: asynchronous pread/pwrite/fdatasync for the copy loop.
 *
 * One struct iob is one submission/completion context (an io_uring ring or
 * a libaio context) used by ONE thread: nothing here is thread-safe, the
 * copy loop owns its iob and no lock is taken on the data path. The backend
 * is chosen at run time by iob_new() (BLOCKCOPY_IO=uring|aio, default
 * io_uring with libaio as fallback), behind the struct iob_ops vtable
 * (nbdcopy's rw_ops idea).
 *
 * Life of a request: iob_prep_*() reserves one of @depth slots (no
 * allocation: slots are preallocated by iob_new) and queues it;
 * iob_submit() hands everything queued to the kernel in one system call;
 * iob_wait() reaps completions in a batch and frees their slots. From prep
 * to the completion being returned, the buffer belongs to the kernel (in
 * ASan builds it is poisoned, so any access by us is reported).
 *
 * Errors come back as they do from the kernel: iob_prep_*() fail only for
 * a full context (-EBUSY) or a malformed request (-EINVAL); everything the
 * kernel refuses (bad fd, misaligned O_DIRECT, EIO, ENOSPC) arrives as a
 * completion with res = -errno, whatever the backend, so the caller has a
 * single error path. Short transfers are reported as is.
 *
 * Ordering: requests in flight are unordered, as with the kernel
 * interfaces; an fsync covers the writes that had completed before it was
 * prepared, never the ones still in flight.
 */
#ifndef BC_ENGINE_IOB_H
#define BC_ENGINE_IOB_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#if defined(__SANITIZE_ADDRESS__)
#define IOB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IOB_ASAN 1
#endif
#endif
#ifdef IOB_ASAN
#include <sanitizer/asan_interface.h>
#endif

struct iob;

/* Kinds of request; IOB_ANY only filters fault injection (iob-fault.h). */
enum iob_op {
	IOB_READ,
	IOB_WRITE,
	IOB_FSYNC,
	IOB_ANY,
};

/* One completion, as iob_wait() returns it. */
struct iob_cqe {
	uint64_t user_data; /* the caller's value from iob_prep_*() */
	int64_t res;	    /* bytes transferred (0 for fsync) or -errno */
};

/* Largest request: fits the kernel's int result, below MAX_RW_COUNT. */
#define IOB_MAX_LEN (1u << 30)
/* Largest depth iob_new() accepts. */
#define IOB_MAX_DEPTH 4096u

/*
 * Creates a context for up to @depth outstanding requests (prepared + in
 * flight; 1..IOB_MAX_DEPTH). @flags must be 0 (reserved). The backend comes
 * from the environment variable BLOCKCOPY_IO: "uring" (io_uring only),
 * "aio" (libaio only), unset or empty (io_uring, falling back to libaio
 * when io_uring cannot be set up: ENOSYS, EPERM, ENOMEM). Any other value
 * is refused with -EINVAL. Failures record a message (bc_error_set).
 * Returns 0 and the context in *@out, or -errno (-ENOTSUP: the requested
 * backend was not built in).
 */
int iob_new(unsigned depth, unsigned flags, struct iob **out);

/*
 * "uring" or "aio": the backend doing the I/O (a fault injector reports
 * the backend it wraps).
 */
const char *iob_backend_name(struct iob *iob);

/*
 * Frees the context. Cancels and waits for nothing: the caller must have
 * reaped every request (asserted). NULL is a no-op.
 */
void iob_free(struct iob *iob);

/*
 * Queue a read of @len bytes at @off of @fd into @buf (1..IOB_MAX_LEN
 * bytes, @off <= INT64_MAX). @user_data comes back in the completion
 * (index a slot array with it, docs/design.md §10). With O_DIRECT, @buf, @len
 * and @off must be aligned to the logical block size, else the completion
 * carries -EINVAL. Returns 0, -EBUSY when @depth requests are already
 * outstanding (reap some first), or -EINVAL for a malformed request.
 */
int iob_prep_read(struct iob *iob, int fd, void *buf, size_t len, uint64_t off,
		  uint64_t user_data);

/* Queue a write of @len bytes from @buf at @off of @fd; as iob_prep_read. */
int iob_prep_write(struct iob *iob, int fd, const void *buf, size_t len,
		   uint64_t off, uint64_t user_data);

/*
 * Queue an fdatasync of @fd; its completion has res 0 or -errno. libaio:
 * performed synchronously by iob_submit() (the kernel's IOCB_CMD_FDSYNC is
 * not available everywhere), then completed like the others. Returns 0 or
 * -EBUSY.
 */
int iob_prep_fsync(struct iob *iob, int fd, uint64_t user_data);

/*
 * Hands every prepared request to the kernel in one system call
 * (io_uring_submit / io_submit); nothing prepared: no call at all. Returns
 * 0 or -errno; requests the kernel refuses at submission complete with
 * -errno instead of failing this call.
 */
int iob_submit(struct iob *iob);

/*
 * Submits what is still prepared (io_uring: in the same system call), then
 * waits until at least @min_complete completions are available or
 * @timeout_ms passed (< 0: no limit; ignored when @min_complete is 0, which
 * never blocks), and writes up to @max of them to @cqes, reaping in a
 * batch. @min_complete must not exceed @max nor iob_in_flight(). Returns
 * the number written (fewer than @min_complete, maybe 0, after a timeout)
 * or -errno.
 */
int iob_wait(struct iob *iob, unsigned min_complete, struct iob_cqe *cqes,
	     unsigned max, int timeout_ms);

/* Requests prepared or in flight whose completion was not yet returned. */
unsigned iob_in_flight(struct iob *iob);

/*
 * Registers @n buffers with the kernel (io_uring fixed buffers; the pages
 * stay pinned until iob_free). Later requests whose buffer lies inside one
 * of them use read_fixed/write_fixed, saving the per-request page pinning.
 * Optional: a failure (-ENOMEM: RLIMIT_MEMLOCK, -EBUSY: already registered)
 * leaves the context usable without them. libaio: accepted and ignored.
 * The buffers must outlive the context. Returns 0 or -errno.
 */
int iob_register_buffers(struct iob *iob, const struct iovec *iov, unsigned n);

/*
 * Backends. io_uring is always built; libaio only when meson found it
 * (BC_HAVE_LIBAIO), else these are stubs failing with -ENOTSUP.
 * Each records a message on failure. Return 0 or -errno.
 */
int iob_uring_new(unsigned depth, struct iob **out);
#ifdef BC_HAVE_LIBAIO
int iob_aio_new(unsigned depth, struct iob **out);
/* Whether libaio works here (io_setup succeeds): 0 or -errno. */
int iob_aio_probe(void);
#else
static inline int iob_aio_new(unsigned depth, struct iob **out)
{
	(void)depth;
	(void)out;
	return -ENOTSUP;
}

static inline int iob_aio_probe(void)
{
	return -ENOTSUP;
}
#endif

/*
 * ---- Backend side: only engine/iob*.c use what follows. ----
 *
 * A backend embeds struct iob as its first member, fills in @ops and
 * calls iob_init(). The common code (iob.c) owns the slots: it checks
 * arguments, counts outstanding requests (-EBUSY), poisons buffers, and
 * hands the backend a slot number; the backend passes the slot number to
 * the kernel as its user data and reports it back in iob_cqe.user_data,
 * which the common code turns into the caller's user_data.
 */

/* What the common code keeps per slot until the completion is returned. */
struct iob_req {
	uint64_t user_data; /* the caller's */
	void *buf;	    /* for unpoisoning; NULL for fsync */
	size_t len;	    /* bytes */
};

struct iob_ops {
	const char *name;
	/*
	 * Queue request @slot (not yet submitted). Called with a free slot
	 * and arguments already checked. Returns 0 or -errno (then nothing
	 * is queued).
	 */
	int (*prep)(struct iob *iob, unsigned slot, enum iob_op op, int fd,
		    void *buf, size_t len, uint64_t off);
	/* Submit what is queued. Returns 0 or -errno. */
	int (*submit)(struct iob *iob);
	/*
	 * Wait for @min kernel completions (@timeout_ms as iob_wait), write
	 * up to @max to @cqes with user_data = slot. Returns the count or
	 * -errno. With @wait_submits, it first submits what is queued.
	 */
	int (*wait)(struct iob *iob, unsigned min, struct iob_cqe *cqes,
		    unsigned max, int timeout_ms);
	int (*register_buffers)(struct iob *iob, const struct iovec *iov,
				unsigned n);
	/* Releases the backend's resources, then calls iob_fini(). */
	void (*destroy)(struct iob *iob);
	bool wait_submits; /* wait() submits too: one syscall for both */
};

struct iob {
	const struct iob_ops *ops;
	const char *name;     /* iob_backend_name(); static string */
	unsigned depth;	      /* slots */
	unsigned outstanding; /* prepared + in flight + synthetic, <= depth */
	unsigned nprepared;   /* prepared since the last submit */
	struct iob_req *reqs; /* [depth], indexed by slot */
	unsigned *free_slots; /* [depth] stack of free slot numbers */
	unsigned nfree;
	struct iob_cqe *synth; /* [depth] FIFO of completions made without the
				* kernel, user_data = slot */
	unsigned synth_head, synth_count;
};

#define iob_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/*
 * Initialises the common part of a backend's context: @depth slots.
 * Returns 0 or -ENOMEM.
 */
int iob_init(struct iob *iob, const struct iob_ops *ops, unsigned depth);

/* Frees what iob_init() allocated. */
void iob_fini(struct iob *iob);

/* Records "<what>: <strerror>" with the ERR_* code matching -@neg_errno. */
__attribute__((cold, format(printf, 2, 3))) void
iob_error(int neg_errno, const char *fmt, ...);

/*
 * Completes @slot with @res without the kernel (aio fsync, refused
 * submissions, injected faults): the next iob_wait() returns it.
 */
void iob_complete_now(struct iob *iob, unsigned slot, int64_t res);

/* Whether buffers in flight are poisoned (an ASan build). */
#ifdef IOB_ASAN
#define IOB_POISONS 1
#else
#define IOB_POISONS 0
#endif

/* Whether @p is poisoned; always false without ASan (for tests). */
static inline bool iob_is_poisoned(const void *p)
{
#ifdef IOB_ASAN
	return __asan_address_is_poisoned(p) != 0;
#else
	(void)p;
	return false;
#endif
}

/* Buffer ownership passes to the kernel (ASan: any access is reported). */
static inline void iob_poison(const void *buf, size_t len)
{
#ifdef IOB_ASAN
	if (buf)
		ASAN_POISON_MEMORY_REGION(buf, len);
#else
	(void)buf;
	(void)len;
#endif
}

/* Buffer ownership returns to the caller. */
static inline void iob_unpoison(const void *buf, size_t len)
{
#ifdef IOB_ASAN
	if (buf)
		ASAN_UNPOISON_MEMORY_REGION(buf, len);
#else
	(void)buf;
	(void)len;
#endif
}

#endif /* BC_ENGINE_IOB_H */
