/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The live run (see live-run.h).
 */
#include "live-run.h"

#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/common/clock.h"
#include "tool.h"

struct live_events {
	bc_disk *disk;
	uint64_t t0;
	uint64_t mirroring_ns; /* 0: not yet */
	uint64_t copied_at_ready; /* bytes_copied when MIRRORING came */
	int status;            /* final status, -1 none */
	bc_error err;
};

static void live_on_event(bc_engine *eng, bc_disk *disk, const char *path,
			  int type, int status, void *opaque)
{
	struct live_events *ev = opaque;

	(void)eng;
	(void)path;
	(void)type;
	if (disk != ev->disk)
		return;
	if (status == BC_BLOCK_JOB_MIRRORING) {
		bc_block_job_stats st;

		if (!ev->mirroring_ns) {
			ev->mirroring_ns = bc_now_ns() - ev->t0;
			/* The copy rate is that of the bulk phase: sample it now. */
			if (bc_get_block_job_stats(disk, &st, 0) == 1)
				ev->copied_at_ready = st.bytes_copied;
		}
		return;
	}
	ev->status = status;
	if (status == BC_BLOCK_JOB_FAILED)
		ev->err = *bc_last_error();
}

/* Waits up to @ms for events and delivers them. */
static void live_poll(bc_engine *eng, int ms)
{
	struct pollfd pfd = { .fd = bc_engine_event_fd(eng), .events = POLLIN };

	(void)poll(&pfd, 1, ms);
	(void)bc_engine_dispatch(eng, 0);
}

/* Sleeps @s seconds while delivering events; false when interrupted. */
static bool live_sleep(bc_engine *eng, double s)
{
	uint64_t end = bc_now_ns() + (uint64_t)(s * 1e9);

	while (bc_now_ns() < end) {
		if (tool_stop_requested())
			return false;
		live_poll(eng, 20);
	}
	return true;
}

/* "background", "write-blocking" or "auto"; -1 for anything else. */
static int parse_mode(const char *s)
{
	if (!strcmp(s, "background"))
		return LIVE_BACKGROUND;
	if (!strcmp(s, "write-blocking"))
		return LIVE_WRITE_BLOCKING;
	if (!strcmp(s, "auto"))
		return LIVE_AUTO;
	return -1;
}

int live_option(const char *cmd, int c, char **argv, struct live_opts *o,
		struct tool_opts *common)
{
	int m;

	switch (c) {
	case LIVE_OPT_GUEST_RATE:
		if (tool_parse_rate(optarg, &o->guest.rate) < 0)
			return tool_usage_error(cmd, "invalid guest rate '%s'", optarg);
		return TOOL_CONTINUE;
	case LIVE_OPT_GUEST_THREADS:
		if (tool_parse_threads(optarg, &o->guest.threads) < 0)
			return tool_usage_error(cmd, "invalid thread count '%s' (1..64)", optarg);
		return TOOL_CONTINUE;
	case LIVE_OPT_DURATION:
		if (tool_parse_seconds(optarg, 0, &o->duration_s) < 0)
			return tool_usage_error(cmd, "invalid duration '%s'", optarg);
		return TOOL_CONTINUE;
	case LIVE_OPT_MODE:
		m = parse_mode(optarg);
		if (m < 0)
			return tool_usage_error(cmd, "invalid mode '%s' (background, write-blocking or auto)", optarg);
		o->mode = (enum live_mode)m;
		return TOOL_CONTINUE;
	case LIVE_OPT_SHALLOW:
		o->copy_flags |= BC_BLOCK_COPY_SHALLOW;
		return TOOL_CONTINUE;
	case LIVE_OPT_VERIFY:
		o->verify = true;
		return TOOL_CONTINUE;
	default:
		return tool_common_option(cmd, c, argv, common);
	}
}

const char *live_mode_name(enum live_mode mode)
{
	switch (mode) {
	case LIVE_BACKGROUND:
		return "background";
	case LIVE_WRITE_BLOCKING:
		return "write-blocking";
	case LIVE_AUTO:
		return "auto";
	}
	return "?";
}

/* Records the run's first error in res->error. */
static void live_error(struct live_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void live_error(struct live_result *res, const char *fmt, ...)
{
	va_list ap;

	if (res->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
}

/* Appends to res->checks. */
static void live_note(struct live_result *res, const char *what)
{
	size_t n = strlen(res->checks);

	snprintf(res->checks + n, sizeof(res->checks) - n, "%s%s",
		 n ? "; " : "", what);
}

/*
 * Reopens @path read-only and compares it with the guest's shadow, or
 * with the content at the switch when @marked. Returns 0 when equal.
 */
static int live_check_image(bc_engine *eng, struct guest *g, const char *path,
			    const char *fmt, bool marked, struct live_result *res)
{
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	bc_disk *d = bc_disk_open(eng, path, fmt, BC_DISK_READONLY);
	int r;

	if (!d) {
		live_error(res, "%s: cannot reopen: %s", path, bc_last_error()->message);
		return -1;
	}
	r = shadow_verify(guest_shadow(g), d, marked, &res->at_switch, msg,
			  sizeof(msg));
	(void)bc_disk_close(d);
	if (r) {
		live_error(res, "%s: %s", path, msg);
		return -1;
	}
	return 0;
}

/* How the job was ended by the run (what the marks refer to). */
enum live_switch { SWITCH_NONE, SWITCH_PIVOT, SWITCH_ABORT };

/*
 * Checks the guest's disk (then closes it) and the images reopened: the
 * one the guest ended on must hold exactly the shadow, the other one
 * (if the run switched) the content at the switch. Returns true when
 * every check passed.
 */
static bool live_checks(bc_engine *eng, struct guest *g, bc_disk *disk,
			const struct live_opts *o, enum live_switch sw,
			struct live_result *res)
{
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	const char *cur = bc_disk_path(disk);
	bool ok = true;

	if (shadow_verify(guest_shadow(g), disk, false, NULL, msg, sizeof(msg))) {
		live_error(res, "%s: %s", cur, msg);
		ok = false;
	} else {
		live_note(res, "the guest's disk reads back as it wrote");
	}
	if (bc_disk_close(disk) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		return false;
	}
	if (sw == SWITCH_PIVOT) {
		if (live_check_image(eng, g, o->dst, o->dst_format, false, res) < 0)
			return false;
		live_note(res, "the copy, reopened, holds exactly what the guest wrote");
		if (live_check_image(eng, g, o->src, NULL, true, res) < 0)
			return false;
		live_note(res, "the source kept its content from the pivot on");
		return ok;
	}
	if (live_check_image(eng, g, o->src, NULL, false, res) < 0)
		return false;
	live_note(res, "the source, reopened, holds exactly what the guest wrote");
	if (sw == SWITCH_ABORT) {
		if (live_check_image(eng, g, o->dst, o->dst_format, true, res) < 0)
			return false;
		live_note(res, "the copy holds the content at the abort");
	}
	return ok;
}

int live_run(bc_engine *eng, const struct live_opts *o,
	     shadow_initial_fn initial, void *initial_arg,
	     struct live_result *res)
{
	bc_block_copy_params params = { .bandwidth = o->bandwidth };
	/*
	 * The engine cannot forget a callback: its context outlives the run
	 * (one run per process at a time), and is detached from the disk
	 * at the end so that a later dispatch ignores it.
	 */
	static struct live_events ev;
	unsigned int flags = o->copy_flags, aflags;
	struct guest *g = NULL;
	struct guest_totals totals;
	bc_disk *disk;
	uint64_t t_job, t_end = 0;
	bool ended = false, job_started = false;
	char msg[BC_ERROR_MESSAGE_MAX + 128];
	enum live_switch sw = SWITCH_NONE;
	int ret = -1;

	memset(res, 0, sizeof(*res));
	memset(&ev, 0, sizeof(ev));
	ev.status = -1;
	tool_signals_install();

	if (o->mode == LIVE_WRITE_BLOCKING)
		flags |= BC_BLOCK_COPY_SYNCHRONOUS_WRITES;
	else if (o->mode == LIVE_AUTO)
		flags |= BC_BLOCK_COPY_AUTO_CONVERGE;

	disk = bc_disk_open(eng, o->src, NULL, o->direct ? BC_DISK_DIRECT : 0);
	if (!disk) {
		live_error(res, "%s", bc_last_error()->message);
		return -1;
	}
	res->size = (uint64_t)bc_disk_size(disk);
	res->shadow_bytes = shadow_footprint(res->size, !initial);
	g = guest_new(disk, &o->guest, initial, initial_arg, msg, sizeof(msg));
	if (!g) {
		live_error(res, "%s: %s", o->src, msg);
		goto out_disk;
	}
	ev.disk = disk;
	if (bc_engine_event_register(eng, live_on_event, &ev) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		goto out_guest;
	}
	if (guest_start(g) < 0) {
		live_error(res, "cannot start the guest threads");
		goto out_guest;
	}
	if (!live_sleep(eng, o->before_s))
		goto interrupted;

	guest_set_phase(g, GUEST_DURING);
	t_job = bc_now_ns();
	ev.t0 = t_job;
	if (bc_block_copy(disk, o->dst, &params, flags) < 0) {
		live_error(res, "%s", bc_last_error()->message);
		goto out_stop;
	}
	job_started = true;
	for (;;) {
		double t = bc_secs(bc_now_ns() - t_job);

		live_poll(eng, 20);
		if (tool_stop_requested())
			goto interrupted;
		if (ev.status >= 0) {
			live_error(res, "the job ended by itself (%s): %s",
				 ev.status == BC_BLOCK_JOB_FAILED ? "failed" : "status",
				 ev.err.message[0] ? ev.err.message : "no message");
			ended = true;
			goto out_stop;
		}
		if (guest_failure(g)) {
			live_error(res, "%s", guest_failure(g));
			goto out_abort;
		}
		if (ev.mirroring_ns && t >= o->duration_s &&
		    t - bc_secs(ev.mirroring_ns) >= o->settle_s)
			break;
		if (!ev.mirroring_ns && t >= o->timeout_s) {
			snprintf(res->error, sizeof(res->error),
				 "no MIRRORING within %.0f s: the copy did not converge",
				 o->timeout_s);
			goto out_abort;
		}
	}
	res->converged = true;

	aflags = o->pivot ? BC_BLOCK_JOB_ABORT_PIVOT : 0;
	if (o->pivot && o->verify)
		aflags |= BC_BLOCK_JOB_ABORT_VERIFY;
	guest_mark_begin(g);
	if (bc_block_job_abort(disk, aflags) < 0) {
		live_error(res, "%s refused: %s",
			 o->pivot ? "pivot" : "abort", bc_last_error()->message);
		goto out_abort;
	}
	guest_mark_end(g);
	sw = o->pivot ? SWITCH_PIVOT : SWITCH_ABORT;
	res->switched = true;
	t_end = bc_now_ns();
	while (ev.status < 0 && bc_now_ns() - t_end < 10000000000ull)
		live_poll(eng, 20);
	ended = true;
	if (ev.status != (o->pivot ? BC_BLOCK_JOB_COMPLETED : BC_BLOCK_JOB_CANCELED)) {
		live_error(res, "%s: final event %d, want %s",
			 o->dst, ev.status, o->pivot ? "COMPLETED" : "CANCELED");
		goto out_stop;
	}
	guest_set_phase(g, GUEST_AFTER);
	if (!live_sleep(eng, o->after_s))
		goto interrupted;
	goto out_stop;

interrupted:
	res->interrupted = true;
	live_error(res, "interrupted");
out_abort:
	if (job_started && !ended) {
		(void)bc_block_job_abort(disk, 0);
		t_end = bc_now_ns();
		while (ev.status < 0 && bc_now_ns() - t_end < 10000000000ull)
			live_poll(eng, 20);
		ended = true;
	}
out_stop:
	(void)guest_stop(g);
	if (!t_end)
		t_end = bc_now_ns();
	if (job_started) {
		res->job_s = bc_secs(t_end - t_job);
		res->have_stats = bc_get_block_job_stats(disk, &res->stats, 0) == 1;
		res->copied_at_ready = ev.copied_at_ready;
	}
	for (int p = 0; p < GUEST_NPHASES; p++)
		guest_phase_stats(g, (enum guest_phase)p, &res->phase[p]);
	guest_totals(g, &totals);
	res->writes = totals.writes;
	res->reads = totals.reads;
	res->zeroes = totals.zeroes;
	res->discards = totals.discards;
	res->mark_max_ms = totals.mark_max_ms;
	if (guest_failure(g)) {
		live_error(res, "%s", guest_failure(g));
		goto out_guest;
	}
	if (job_started && !ended)
		goto out_guest; /* the job could not be ended: nothing to check */
	if (res->interrupted) {
		/*
		 * Reading the whole disk again would keep an interrupted run
		 * (SIGTERM from a timeout, say) alive for a long time.
		 */
		live_note(res, "not run: the run was interrupted");
		goto out_guest;
	}

	/*
	 * The checks run whenever the job ended, a failed convergence
	 * included (the source must still hold what the guest wrote); the
	 * first error recorded stays the one reported.
	 */
	res->verified = live_checks(eng, g, disk, o, sw, res);
	disk = NULL;
	ret = res->converged && res->verified && !res->error[0] ? 0 : -1;
out_guest:
	guest_free(g);
	ev.disk = NULL;
out_disk:
	if (disk)
		(void)bc_disk_close(disk);
	return ret;
}

