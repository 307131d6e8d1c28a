/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The live run behind `blockcopy demo` and `blockcopy mirror`: the
 * synthetic guest (guest.h) on the source, a COPY job under its load, a
 * pivot or abort under load, and the checks of every image against what
 * the guest wrote (live-run.c); and its report (live-report.c).
 */
#ifndef BC_TOOLS_LIVE_RUN_H
#define BC_TOOLS_LIVE_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "guest.h"
#include "lib/blockcopy.h"

enum live_mode { LIVE_BACKGROUND, LIVE_WRITE_BLOCKING, LIVE_AUTO };

struct live_opts {
	const char *src;        /* for messages */
	const char *dst;
	const char *dst_format; /* for reopening; NULL = probe */
	unsigned int copy_flags; /* SHALLOW, REUSE_EXT; the mode adds its own */
	enum live_mode mode;
	uint64_t bandwidth;     /* bytes/s, 0 = unlimited */
	struct guest_opts guest;
	double before_s;        /* guest alone before the job */
	double duration_s;      /* from job start, at least, before the end */
	double settle_s;        /* at least this long in MIRRORING before it */
	double timeout_s;       /* no MIRRORING by then: not converged */
	bool pivot;             /* else abort (after MIRRORING) */
	bool verify;            /* ABORT_VERIFY with the pivot */
	bool direct;            /* BC_DISK_DIRECT: O_DIRECT source and copy */
	double after_s;         /* guest after the pivot or abort */
};

struct live_result {
	bool converged;
	bool switched;           /* the pivot or abort was done */
	bool verified;
	bool interrupted;
	char error[BC_ERROR_MESSAGE_MAX + 256]; /* what failed or differed */
	bc_block_job_stats stats;  /* at the job's end */
	bool have_stats;
	uint64_t copied_at_ready;  /* stats.bytes_copied when MIRRORING came */
	double job_s;            /* job start to its end */
	struct guest_phase_stats phase[GUEST_NPHASES];
	uint64_t writes, reads, zeroes, discards;
	double mark_max_ms;
	struct shadow_switch_stats at_switch; /* the left image's check */
	uint64_t size;
	uint64_t shadow_bytes;   /* the guest's memory for its shadow */
	char checks[1024];       /* what was verified, for the report */
};

/*
 * Opens @opts->src read-write on @eng, runs the guest, the COPY job, the
 * pivot or abort and the checks. One run at a time per process (it owns
 * an event callback on @eng; SIGINT/SIGTERM (tool_signals_install)
 * abort the job). Returns 0 when converged and verified, else -1 with
 * @res->error set. @initial, when set, produces the source's content at
 * the start (checked before the guest writes); without, the guest reads
 * the source once and keeps a CRC per block.
 */
int live_run(bc_engine *eng, const struct live_opts *opts,
	     shadow_initial_fn initial, void *initial_arg,
	     struct live_result *res);

/*
 * Prints the result as one JSON object on @f (the keys bench/ reads:
 * converged, mode, mirroring_seconds, mode_switch_seconds, pivot_stall_ms,
 * copy_bytes, copy_mib_s, guest{before_mib_s, during_mib_s, after_mib_s,
 * p50_ms, p99_ms, max_ms, writes}, verified), then a newline. @extra,
 * when set, is inserted verbatim after the opening brace ("key": value,).
 */
void live_print_json(FILE *f, const struct live_opts *o,
		     const struct live_result *res, const char *extra);

/* Prints the human report (job, guest, checks) on @f. */
void live_print_text(FILE *f, const struct live_opts *o,
		     const struct live_result *res);

const char *live_mode_name(enum live_mode mode);

/*
 * The options the live subcommands (mirror, demo) share, codes for their
 * getopt_long() tables: --guest-rate, --guest-threads, --duration,
 * --mode, --shallow, --verify.
 */
enum {
	LIVE_OPT_GUEST_RATE = 0x1100, /* above TOOL_OPT_* */
	LIVE_OPT_GUEST_THREADS,
	LIVE_OPT_DURATION,
	LIVE_OPT_MODE,
	LIVE_OPT_SHALLOW,
	LIVE_OPT_VERIFY,
};

/*
 * Option @c of subcommand @cmd: one of the live options into @o, any
 * other to tool_common_option() with @common. Returns TOOL_CONTINUE, or
 * the exit status to return now (a bad value is a usage error, reported).
 */
struct tool_opts;
int live_option(const char *cmd, int c, char **argv, struct live_opts *o,
		struct tool_opts *common);

#endif /* BC_TOOLS_LIVE_RUN_H */
