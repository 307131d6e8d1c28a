/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection for the I/O backend: TEST-ONLY.
 *
 * engine/iob-fault.c is built as its own static library that only test
 * programs link; libblockcopy (shared or static) never contains it, so
 * the shipped data path has no hook to consult and pays nothing.
 *
 * Tests that cannot reach the copy job's context (the job creates its
 * own) link with -Wl,--wrap=iob_new: every iob_new() of the engine then
 * goes through __wrap_iob_new(), which wraps the context in an injector
 * while iob_fault_global() has a plan armed.
 */
#ifndef BC_ENGINE_IOB_FAULT_H
#define BC_ENGINE_IOB_FAULT_H

#include "engine/iob.h"

/*
 * iob_fault_wrap() puts a fault injector in front of @inner and takes
 * ownership of it (iob_free(*@out) frees both). Requests pass through,
 * except the one iob_fault_set() designates, which completes with -err
 * without reaching the device. Returns 0 or -ENOMEM.
 */
int iob_fault_wrap(struct iob *inner, struct iob **out);

/*
 * Arms the injector @iob (from iob_fault_wrap): the @nth (1-based) request
 * prepared from now on that matches @op (IOB_ANY: any) and @fd (-1: any)
 * completes with -@err (e.g. EIO, ENOSPC); only that one. @nth = 0
 * disarms. Resets the match count.
 */
void iob_fault_set(struct iob *iob, enum iob_op op, int fd, unsigned nth,
		   int err);

/* Matching requests the injector @iob has seen since iob_fault_set(). */
unsigned iob_fault_matched(struct iob *iob);

/*
 * Process-wide variant for tests that cannot reach the iob (the copy job
 * creates its own): from now on every iob_new() returns its context
 * wrapped in an injector, and all of them count matches together, in
 * prep order, so that exactly one request in the process (the @nth
 * matching one) fails with -@err. @nth = 0 disarms (later iob_new()
 * return plain contexts). Safe to count from several threads.
 */
void iob_fault_global(enum iob_op op, int fd, unsigned nth, int err);

/* Matching requests seen since iob_fault_global() armed the plan. */
unsigned iob_fault_global_matched(void);

/*
 * Like iob_fault_global(), but every matching request from the @nth on
 * fails with -@err until disarmed (a device that stays full or dead).
 */
void iob_fault_global_from(enum iob_op op, int fd, unsigned nth, int err);

/*
 * Process-wide submission fault: from now on every iob_new() returns its
 * context wrapped in an injector, and the @nth (1-based) iob_submit() in
 * the process, direct or the one iob_wait() makes first, of a batch
 * holding a request of kind @op (IOB_ANY: any request) fails with -@err
 * and records "submit (injected fault): <reason>"; only that one. The
 * batch stays prepared, as after a refused io_uring_submit: the next
 * submit or wait hands it over. @nth = 0 disarms. Independent of the
 * request plan of iob_fault_global().
 */
void iob_fault_global_submit(enum iob_op op, unsigned nth, int err);

/* Matching submissions seen since iob_fault_global_submit() armed it. */
unsigned iob_fault_global_submit_matched(void);

/*
 * The linker's --wrap=iob_new target: the real iob_new(), then an
 * injector around its context while a global plan is armed.
 */
int __wrap_iob_new(unsigned depth, unsigned flags, struct iob **out);
int __real_iob_new(unsigned depth, unsigned flags, struct iob **out);

#endif /* BC_ENGINE_IOB_FAULT_H */
