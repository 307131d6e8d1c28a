/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection for tests (TEST-ONLY: see iob-fault.h; never linked
 * into libblockcopy): a backend that forwards every request to an inner
 * context, except the ones its rule designates, which complete with -err
 * without reaching the device.
 *
 * The inner context is driven through the public iob_* calls with the
 * injector's slot number as user_data, so its completions come back
 * already tagged with our slots; injected completions go through
 * iob_complete_now() and are returned first by iob_wait().
 *
 * A rule is either the injector's own (iob_fault_set) or the process-wide
 * plan (iob_fault_global), shared by every context iob_new() created while
 * the plan was armed (tests link with --wrap=iob_new for that). Matches are counted with an atomic increment, so
 * exactly one request in the process gets the @nth number even when
 * several threads prepare requests; the rule's other fields are written
 * only while no context uses it (arm the plan before starting the job).
 */
#include "iob-fault.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "lib/common/util.h"

struct fault_rule {
	enum iob_op op;	     /* IOB_ANY: every kind */
	int fd;		     /* -1: every fd */
	unsigned nth;	     /* 1-based; 0: disarmed */
	bool from_nth;	     /* fail every match from the nth on, not just it */
	int err;	     /* positive errno to inject */
	atomic_uint matched; /* matching requests seen */
};

struct iob_fault {
	struct iob iob;
	struct iob *inner; /* owned */
	struct fault_rule own;
	struct fault_rule *rule; /* &own or &global_rule */
	unsigned batch_ops;	 /* 1u << op of each request prepared since
				  * the last successful submit */
};

static struct fault_rule global_rule;
/* Submission faults (iob_fault_global_submit): op and nth, fd unused. */
static struct fault_rule global_submit;

static struct iob_fault *to_fault(struct iob *iob)
{
	return iob_container_of(iob, struct iob_fault, iob);
}

/* Whether this request is the one to fail; counts it if it matches. */
static bool hit(struct fault_rule *r, enum iob_op op, int fd)
{
	if (!r->nth || (r->op != IOB_ANY && r->op != op) ||
	    (r->fd >= 0 && r->fd != fd))
		return false;
	if (r->from_nth)
		return atomic_fetch_add(&r->matched, 1) + 1 >= r->nth;
	return atomic_fetch_add(&r->matched, 1) + 1 == r->nth;
}

static int fault_prep(struct iob *iob, unsigned slot, enum iob_op op, int fd,
		      void *buf, size_t len, uint64_t off)
{
	struct iob_fault *f = to_fault(iob);

	if (hit(f->rule, op, fd)) {
		iob_complete_now(iob, slot, -(int64_t)f->rule->err);
		return 0;
	}
	f->batch_ops |= 1u << op;
	switch (op) {
	case IOB_READ:
		return iob_prep_read(f->inner, fd, buf, len, off, slot);
	case IOB_WRITE:
		return iob_prep_write(f->inner, fd, buf, len, off, slot);
	case IOB_FSYNC:
		return iob_prep_fsync(f->inner, fd, slot);
	case IOB_ANY:
		/* A filter; iob.c never queues it. */
		assert(op != IOB_ANY);
		break;
	}
	return -EINVAL;
}

static int fault_submit(struct iob *iob)
{
	struct iob_fault *f = to_fault(iob);
	struct fault_rule *r = &global_submit;
	int ret;

	/* A batch of injected completions only has nothing to hand over. */
	if (f->batch_ops && r->nth &&
	    (r->op == IOB_ANY || (f->batch_ops & (1u << r->op))) &&
	    atomic_fetch_add(&r->matched, 1) + 1 == r->nth) {
		/* The batch stays prepared, as a refused io_uring_submit. */
		iob_error(-r->err, "submit (injected fault)");
		return -r->err;
	}
	ret = iob_submit(f->inner);
	if (ret == 0)
		f->batch_ops = 0;
	return ret;
}

static int fault_wait(struct iob *iob, unsigned min, struct iob_cqe *cqes,
		      unsigned max, int timeout_ms)
{
	/* The inner context returns our slots as its user_data. */
	return iob_wait(to_fault(iob)->inner, min, cqes, max, timeout_ms);
}

static int fault_register_buffers(struct iob *iob, const struct iovec *iov,
				  unsigned n)
{
	return iob_register_buffers(to_fault(iob)->inner, iov, n);
}

static void fault_destroy(struct iob *iob)
{
	struct iob_fault *f = to_fault(iob);

	iob_free(f->inner);
	iob_fini(iob);
	free(f);
}

static const struct iob_ops fault_ops = {
	.name = "fault",
	.prep = fault_prep,
	.submit = fault_submit,
	.wait = fault_wait,
	.register_buffers = fault_register_buffers,
	.destroy = fault_destroy,
	.wait_submits = false,
};

int iob_fault_wrap(struct iob *inner, struct iob **out)
{
	struct iob_fault *f = calloc(1, sizeof(*f));
	int ret;

	if (!f) {
		iob_error(-ENOMEM, "fault injector");
		return -ENOMEM;
	}
	ret = iob_init(&f->iob, &fault_ops, inner->depth);
	if (ret < 0) {
		free(f);
		return ret;
	}
	f->iob.name = inner->name;
	f->inner = inner;
	f->own.op = IOB_ANY;
	f->own.fd = -1;
	f->rule = &f->own;
	*out = &f->iob;
	return 0;
}

void iob_fault_set(struct iob *iob, enum iob_op op, int fd, unsigned nth,
		   int err)
{
	struct iob_fault *f = to_fault(iob);

	assert(iob->ops == &fault_ops);
	f->own.op = op;
	f->own.fd = fd;
	f->own.nth = nth;
	f->own.from_nth = false;
	f->own.err = err;
	atomic_store(&f->own.matched, 0);
	f->rule = &f->own;
}

unsigned iob_fault_matched(struct iob *iob)
{
	assert(iob->ops == &fault_ops);
	return atomic_load(&to_fault(iob)->rule->matched);
}

static void set_global(enum iob_op op, int fd, unsigned nth, bool from_nth,
		       int err)
{
	global_rule.op = op;
	global_rule.fd = fd;
	global_rule.nth = nth;
	global_rule.from_nth = from_nth;
	global_rule.err = err;
	atomic_store(&global_rule.matched, 0);
}

void iob_fault_global(enum iob_op op, int fd, unsigned nth, int err)
{
	set_global(op, fd, nth, false, err);
}

void iob_fault_global_from(enum iob_op op, int fd, unsigned nth, int err)
{
	set_global(op, fd, nth, true, err);
}

unsigned iob_fault_global_matched(void)
{
	return atomic_load(&global_rule.matched);
}

void iob_fault_global_submit(enum iob_op op, unsigned nth, int err)
{
	global_submit.op = op;
	global_submit.fd = -1;
	global_submit.nth = nth;
	global_submit.from_nth = false;
	global_submit.err = err;
	atomic_store(&global_submit.matched, 0);
}

unsigned iob_fault_global_submit_matched(void)
{
	return atomic_load(&global_submit.matched);
}

int __wrap_iob_new(unsigned depth, unsigned flags, struct iob **out)
{
	struct iob *wrapped;
	int ret;

	ret = __real_iob_new(depth, flags, out);
	if (ret < 0 || (!global_rule.nth && !global_submit.nth))
		return ret;
	ret = iob_fault_wrap(*out, &wrapped);
	if (ret < 0) {
		iob_free(*out);
		*out = NULL;
		return ret;
	}
	to_fault(wrapped)->rule = &global_rule;
	*out = wrapped;
	return 0;
}
