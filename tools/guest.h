/*
 * A synthetic guest for the live-mirror commands (demo, mirror), and the
 * live run that drives a COPY job under its load.
 *
 * The guest is N threads issuing random writes of mixed sizes (some
 * unaligned), reads that verify, zero writes, discards and flushes
 * through bc_disk_*, optionally paced to a total write rate. It keeps an
 * exact shadow of the disk: every thread owns interleaved stripes and
 * writes only there, so the shadow needs no lock. Memory is the disk's
 * size plus a little.
 *
 * Around a pivot or an abort (guest_mark_begin/end), each thread notes
 * which of its stripes it changed after the switch and what they held
 * before, so that the image the guest left (the source after a pivot,
 * the destination after an abort) can be checked against the content
 * at the switch. Stripes an operation in flight across the switch
 * touched are uncertain (either content is right) and are skipped.
 */
#ifndef BC_TOOLS_GUEST_H
#define BC_TOOLS_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/blockcopy.h"

struct guest;

struct guest_opts {
	unsigned int threads; /* 0 = 4 */
	uint64_t rate;        /* bytes/s of data writes over all threads; 0 = unpaced */
	unsigned int seed;    /* 0 = from the clock */
};

/* Throughput is counted in the phase an operation started in. */
enum guest_phase { GUEST_BEFORE, GUEST_DURING, GUEST_AFTER, GUEST_NPHASES };

struct guest_phase_stats {
	double seconds;       /* how long the phase lasted */
	uint64_t writes;      /* data writes (pwrite) */
	uint64_t write_bytes;
	uint64_t ops;         /* every operation */
	double mib_s;         /* write_bytes per second, MiB */
	double p50_ms;        /* data-write latency (12.5% buckets) */
	double p99_ms;
	double max_ms;        /* longest data write */
};

/*
 * A guest on @disk. Reads the disk's whole content into the shadow (the
 * guest starts from what is there). Returns NULL and fills @err (one
 * line) on failure.
 */
struct guest *guest_new(bc_disk *disk, const struct guest_opts *opts,
			char *err, size_t errlen);

/* The shadow: the disk's expected content, guest_size() bytes. */
const uint8_t *guest_shadow(const struct guest *g);
uint64_t guest_size(const struct guest *g);

/* Starts the threads in phase GUEST_BEFORE. Returns 0 or -errno. */
int guest_start(struct guest *g);

/* Moves to @phase (only forwards). */
void guest_set_phase(struct guest *g, enum guest_phase phase);

/* A pivot or abort is about to start / has returned (see above). */
void guest_mark_begin(struct guest *g);
void guest_mark_end(struct guest *g);

/*
 * Stops and joins the threads. Returns 0, or -1 when a thread failed
 * (an I/O error or a read that did not match the shadow): guest_failure()
 * says what.
 */
int guest_stop(struct guest *g);
const char *guest_failure(const struct guest *g);

void guest_phase_stats(const struct guest *g, enum guest_phase phase,
		       struct guest_phase_stats *st);
/* Totals: data writes and verified reads over the whole run. */
uint64_t guest_total_writes(const struct guest *g);
uint64_t guest_total_reads(const struct guest *g);
/* Longest operation of any kind in flight across the marked switch, ms. */
double guest_mark_max_ms(const struct guest *g);

/*
 * Compares @disk's whole content with the shadow. Returns 0 when equal,
 * 1 when it differs (@msg names the first differing offset), -1 on a read
 * error (@msg says which).
 */
int guest_verify(const struct guest *g, bc_disk *disk, char *msg, size_t len);

/*
 * Compares @disk with the content at the marked switch, skipping the
 * uncertain stripes (*@skipped gets their count). Returns as guest_verify.
 */
int guest_verify_marked(const struct guest *g, bc_disk *disk,
			uint64_t *skipped, char *msg, size_t len);

void guest_free(struct guest *g);

/* --- the live run ------------------------------------------------------ */

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
	uint64_t writes, reads;
	double mark_max_ms;
	uint64_t skipped_stripes;
	uint64_t size;
	char checks[512];        /* what was verified, for the report */
};

/*
 * Opens @opts->src read-write on @eng, runs the guest, the COPY job, the
 * pivot or abort and the checks. One run at a time per process (it owns
 * an event callback on @eng and SIGINT/SIGTERM, which abort the job). Returns 0 when converged and verified,
 * else -1 with @res->error set. @init, when set, is called with the guest
 * (its shadow loaded, before any write) and may refuse with a message.
 */
int live_run(bc_engine *eng, const struct live_opts *opts,
	     int (*init)(struct guest *g, void *arg, char *err, size_t len),
	     void *init_arg, struct live_result *res);

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

/* "background", "write-blocking" or "auto"; -1 for anything else. */
int live_parse_mode(const char *s);
const char *live_mode_name(enum live_mode mode);

#endif /* BC_TOOLS_GUEST_H */
