/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The live run's report (see live-run.h): one JSON object for scripts
 * and bench/, or a text report that says what each figure means.
 */
#include "live-run.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/common/clock.h"
#include "tool.h"

static void json_num_or_null(FILE *f, const char *key, bool have, double v,
			     int prec)
{
	fprintf(f, "\"%s\": ", key);
	if (have)
		fprintf(f, "%.*f", prec, v);
	else
		fputs("null", f);
}

/*
 * Copy rate: data copied over the bulk phase (start to MIRRORING), or
 * over the whole job when it never got there; MiB/s.
 */
static double copy_mib_s(const struct live_result *res)
{
	if (!res->have_stats)
		return 0;
	if (res->stats.mirroring_ns)
		return (double)res->copied_at_ready / bc_secs(res->stats.mirroring_ns) /
		       (1024.0 * 1024.0);
	return res->job_s > 0 ? (double)res->stats.bytes_copied / res->job_s /
					(1024.0 * 1024.0)
			      : 0;
}

void live_print_json(FILE *f, const struct live_opts *o,
		     const struct live_result *res, const char *extra)
{
	const bc_block_job_stats *st = &res->stats;
	const struct guest_phase_stats *d = &res->phase[GUEST_DURING];

	fputc('{', f);
	if (extra)
		fputs(extra, f);
	fprintf(f, "\"converged\": %s, \"mode\": \"%s\", \"final_mode\": ",
		res->converged ? "true" : "false", live_mode_name(o->mode));
	if (res->have_stats)
		fprintf(f, "\"%s\", ", st->mode == BC_BLOCK_JOB_MODE_WRITE_BLOCKING
					     ? "write-blocking" : "background");
	else
		fputs("null, ", f);
	if (res->switched)
		fprintf(f, "\"ended\": \"%s\", ", o->pivot ? "pivot" : "abort");
	else
		fputs("\"ended\": null, ", f);
	json_num_or_null(f, "mirroring_seconds", res->have_stats && st->mirroring_ns,
			 bc_secs(st->mirroring_ns), 3);
	fputs(", ", f);
	json_num_or_null(f, "mode_switch_seconds",
			 res->have_stats && st->mode_switch_ns,
			 bc_secs(st->mode_switch_ns), 3);
	fprintf(f, ", \"pivot_stall_ms\": %.3f, \"copy_bytes\": %" PRIu64
		", \"copy_zeroed_bytes\": %" PRIu64 ", \"copy_mib_s\": %.1f, "
		"\"copy_bytes_to_mirroring\": %" PRIu64 ", \"job_seconds\": %.3f, ",
		res->have_stats ? (double)st->pivot_stall_ns / 1e6 : 0.0,
		res->have_stats ? st->bytes_copied : 0,
		res->have_stats ? st->bytes_zeroed : 0, copy_mib_s(res),
		res->copied_at_ready, res->job_s);
	fprintf(f, "\"guest\": {\"threads\": %u, ", o->guest.threads ? o->guest.threads : 4);
	json_num_or_null(f, "rate_mib_s", o->guest.rate != 0,
			 (double)o->guest.rate / (1024.0 * 1024.0), 1);
	fprintf(f, ", \"before_mib_s\": %.1f, \"during_mib_s\": %.1f, "
		"\"after_mib_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
		"\"max_ms\": %.3f, \"writes\": %" PRIu64 ", \"reads_verified\": %"
		PRIu64 ", \"switch_max_ms\": %.3f}, ",
		res->phase[GUEST_BEFORE].mib_s, d->mib_s,
		res->phase[GUEST_AFTER].mib_s, d->p50_ms, d->p99_ms, d->max_ms,
		res->writes, res->reads, res->mark_max_ms);
	fprintf(f, "\"zero_writes\": %" PRIu64 ", \"discards\": %" PRIu64
		", \"shadow_bytes\": %" PRIu64 ", ", res->zeroes, res->discards,
		res->shadow_bytes);
	/* The check of the image the guest left, at the switch (4 KiB blocks). */
	if (res->switched)
		fprintf(f, "\"switch_check\": {\"changed_after\": %" PRIu64
			", \"in_flight\": %" PRIu64 ", \"unchecked\": %" PRIu64 "}, ",
			res->at_switch.saved, res->at_switch.uncertain,
			res->at_switch.unverifiable);
	else
		fputs("\"switch_check\": null, ", f);
	fprintf(f, "\"verified\": %s, \"error\": ", res->verified ? "true" : "false");
	if (res->error[0])
		tool_json_string(f, res->error);
	else
		fputs("null", f);
	fputs("}\n", f);
}

static void mib(char *buf, size_t len, uint64_t bytes)
{
	double m = (double)bytes / (1024.0 * 1024.0);

	if (m >= 10 || m == 0)
		snprintf(buf, len, "%.0f MiB", m);
	else
		snprintf(buf, len, "%.1f MiB", m);
}

void live_print_text(FILE *f, const struct live_opts *o,
		     const struct live_result *res)
{
	const bc_block_job_stats *st = &res->stats;
	const struct guest_phase_stats *b = &res->phase[GUEST_BEFORE],
				       *d = &res->phase[GUEST_DURING],
				       *a = &res->phase[GUEST_AFTER];
	char c1[32], c2[32];

	fprintf(f, "job:    %s copy to %s, mode %s\n",
		o->copy_flags & BC_BLOCK_COPY_SHALLOW ? "shallow" : "full", o->dst,
		o->mode == LIVE_AUTO ? "auto-converge"
				     : live_mode_name(o->mode));
	if (res->have_stats) {
		mib(c1, sizeof(c1), st->bytes_copied);
		mib(c2, sizeof(c2), st->bytes_zeroed);
		if (st->mirroring_ns) {
			char c3[32];

			mib(c3, sizeof(c3), res->copied_at_ready);
			fprintf(f, "        MIRRORING after %.2f s: %s copied by then, %.0f MiB/s; %s in all (%s as zeroes)\n",
				bc_secs(st->mirroring_ns), c3, copy_mib_s(res), c1, c2);
		}
		else
			fprintf(f, "        no MIRRORING in %.1f s: %s copied (%s as zeroes)\n",
				res->job_s, c1, c2);
		if (o->mode == LIVE_AUTO && st->mode_switch_ns)
			fprintf(f, "        auto-converge: switched to write-blocking after %.2f s\n",
				bc_secs(st->mode_switch_ns));
		else if (o->mode == LIVE_AUTO)
			fprintf(f, "        auto-converge: stayed in background mode (converged without switching)\n");
		if (res->switched && o->pivot)
			fprintf(f, "        pivot under load: the guest's requests were held %.2f ms while its disk\n"
				"        switched to the copy (the pivot stall%s);\n"
				"        the longest guest request in flight across the switch took %.2f ms\n",
				(double)st->pivot_stall_ns / 1e6,
				o->verify ? ", including the comparison of source and copy" : "",
				res->mark_max_ms);
		else if (res->switched)
			fprintf(f, "        abort under load: the guest stayed on the source; the longest guest\n"
				"        request in flight across the abort took %.2f ms\n",
				res->mark_max_ms);
	}
	fprintf(f, "guest:  %u threads, ", o->guest.threads ? o->guest.threads : 4);
	if (o->guest.rate)
		fprintf(f, "paced at %.0f MiB/s\n", (double)o->guest.rate / (1024.0 * 1024.0));
	else
		fprintf(f, "unpaced\n");
	fprintf(f, "        writes before %.1f MiB/s | during %.1f MiB/s (latency p50 %.2f ms, p99 %.2f ms, max %.1f ms) | after %.1f MiB/s\n",
		b->mib_s, d->mib_s, d->p50_ms, d->p99_ms, d->max_ms, a->mib_s);
	fprintf(f, "        %" PRIu64 " writes, %" PRIu64 " zero writes, %" PRIu64
		" discards; %" PRIu64 " reads, each checked against what the guest wrote\n",
		res->writes, res->zeroes, res->discards, res->reads);
	if (res->checks[0])
		fprintf(f, "checks: %s\n", res->checks);
	if (res->switched) {
		const struct shadow_switch_stats *w = &res->at_switch;

		fprintf(f, "        the %s was checked against its content at the %s: every block the\n"
			"        guest changed later was compared with what it held then (%" PRIu64 " blocks of 4 KiB)",
			o->pivot ? "source" : "copy", o->pivot ? "pivot" : "abort", w->saved);
		if (w->uncertain)
			fprintf(f, ";\n        %" PRIu64 " blocks were being written while the disk switched: the switch instant\n"
				"        within those writes is unknown, so each byte was checked to hold either its\n"
				"        content before the write or the data written",
				w->uncertain);
		if (w->unverifiable)
			fprintf(f, ";\n        %" PRIu64 " blocks were NOT checked: rewritten more than %u times while\n"
				"        the disk switched, or holding a mix of writes and starting content\n"
				"        that the guest knows only by its CRC",
				w->unverifiable, SHADOW_CANDIDATES_MAX);
		fputs("\n", f);
	}
}
