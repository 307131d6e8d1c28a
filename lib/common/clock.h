/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one clock of every layer: CLOCK_MONOTONIC in nanoseconds for
 * durations and deadlines, and the CLOCK_REALTIME instant that
 * pthread_cond_timedwait() wants (our condition variables keep the default
 * clock). Nothing here calls into the project.
 */
#ifndef BC_LIB_COMMON_CLOCK_H
#define BC_LIB_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

#define BC_NS_PER_SEC 1000000000ull

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline uint64_t bc_now_ns(void)
{
	struct timespec ts;

	/* Cannot fail for CLOCK_MONOTONIC on Linux. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * BC_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* @ns nanoseconds in seconds, for reports. */
static inline double bc_secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* The CLOCK_REALTIME instant @ns from now, for pthread_cond_timedwait(). */
static inline struct timespec bc_cond_deadline(uint64_t ns)
{
	struct timespec ts;
	uint64_t t;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	t = (uint64_t)ts.tv_nsec + ns;
	ts.tv_sec += (time_t)(t / BC_NS_PER_SEC);
	ts.tv_nsec = (long)(t % BC_NS_PER_SEC);
	return ts;
}

#endif /* BC_LIB_COMMON_CLOCK_H */
