/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy mirror: the live mirror on the user's own images. SRC is the
 * guest's disk (opened read-write: the synthetic guest writes to it),
 * DST the copy; the run pivots (or aborts) under load and checks every
 * byte against the guest's shadow.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fmt.h"
#include "live-run.h"
#include "lib/blockcopy.h"

const char tool_help_mirror[] =
	"Usage: blockcopy mirror [OPTIONS] SRC DST\n"
	"\n"
	"Live mirror of the image chain whose top is SRC to DST while a synthetic\n"
	"guest writes to SRC: WARNING, SRC IS MODIFIED (random data is written\n"
	"over it; use a scratch copy). The guest runs 1 s alone, then the COPY\n"
	"job starts; once the job is MIRRORING and --duration has passed since\n"
	"its start, it pivots to DST (or aborts) under load, the guest runs 1 s\n"
	"more, and the result is checked: the disk, DST and SRC reopened must\n"
	"hold exactly what the guest wrote (after a pivot SRC keeps the content\n"
	"at the pivot; after an abort DST holds the content at the abort).\n"
	"The guest reads SRC once at the start (a CRC per 4 KiB block) and then\n"
	"knows each block by a generation number: about 13 bytes of memory per\n"
	"4 KiB of disk, so disks larger than memory work.\n"
	"\n"
	"      --shallow            copy only SRC's own data, DST backed by its backing\n"
	"      --reuse-external     DST exists: keep its metadata, write data\n"
	"      --mode=MODE          background, write-blocking or auto (default:\n"
	"                           background first, write-blocking when the\n"
	"                           dirty set stops shrinking)\n"
	"      --bandwidth=RATE     copy limit; bare number MiB/s, or K/M/G/T per second\n"
	"      --guest-rate=RATE    guest writes per second over all threads\n"
	"                           (bare number MiB/s); 0 = as fast as it can (default)\n"
	"      --guest-threads=N    guest threads (default 4)\n"
	"      --duration=SECS      guest time from the job's start (default 5)\n"
	"      --timeout=SECS       give up when not MIRRORING by then (default 60)\n"
	"      --pivot              end with a pivot to DST (default)\n"
	"      --abort              end with an abort: the guest stays on SRC\n"
	"      --verify             verify source against destination at the pivot\n"
	"      --direct             O_DIRECT on the source and the copy (the guest too)\n"
	"      --json               print the result as one JSON object\n"
	"  -h, --help               this text\n"
	"\n"
	"Exit status: 0 converged and verified, 1 not converged or a check\n"
	"failed (one line says what), 2 bad usage.\n";

enum {
	OPT_REUSE = 256,
	OPT_BANDWIDTH,
	OPT_TIMEOUT,
	OPT_PIVOT,
	OPT_ABORT,
	OPT_DIRECT,
};

static const struct option long_opts[] = {
	{"shallow", no_argument, NULL, LIVE_OPT_SHALLOW},
	{"reuse-external", no_argument, NULL, OPT_REUSE},
	{"mode", required_argument, NULL, LIVE_OPT_MODE},
	{"bandwidth", required_argument, NULL, OPT_BANDWIDTH},
	{"guest-rate", required_argument, NULL, LIVE_OPT_GUEST_RATE},
	{"guest-threads", required_argument, NULL, LIVE_OPT_GUEST_THREADS},
	{"duration", required_argument, NULL, LIVE_OPT_DURATION},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"pivot", no_argument, NULL, OPT_PIVOT},
	{"abort", no_argument, NULL, OPT_ABORT},
	{"verify", no_argument, NULL, LIVE_OPT_VERIFY},
	{"direct", no_argument, NULL, OPT_DIRECT},
	{"json", no_argument, NULL, TOOL_OPT_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

int cmd_mirror(int argc, char **argv)
{
	struct live_opts o = {
		.mode = LIVE_AUTO,
		.before_s = 1,
		.duration_s = 5,
		.timeout_s = 60,
		.after_s = 1,
		.pivot = true,
	};
	struct tool_opts common = { 0 };
	struct live_result *res;
	bool have_pivot = false, have_abort = false;
	bc_engine *eng;
	uint64_t v;
	int c, ret;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_REUSE:
			o.copy_flags |= BC_BLOCK_COPY_REUSE_EXT;
			break;
		case OPT_BANDWIDTH:
			if (tool_parse_rate(optarg, &v) < 0)
				return tool_usage_error("mirror", "invalid rate '%s'", optarg);
			o.bandwidth = v;
			break;
		case OPT_TIMEOUT:
			if (tool_parse_seconds(optarg, 0.001, &o.timeout_s) < 0)
				return tool_usage_error("mirror", "invalid timeout '%s'", optarg);
			break;
		case OPT_PIVOT:
			have_pivot = true;
			break;
		case OPT_ABORT:
			have_abort = true;
			break;
		case OPT_DIRECT:
			o.direct = true;
			break;
		default:
			c = live_option("mirror", c, argv, &o, &common);
			if (c != TOOL_CONTINUE)
				return c;
		}
	}
	if (have_pivot && have_abort)
		return tool_usage_error("mirror", "--pivot and --abort are mutually exclusive");
	if (have_abort && o.verify)
		return tool_usage_error("mirror", "--verify applies to a pivot, not to --abort");
	o.pivot = !have_abort;
	if (argc - optind != 2)
		return tool_usage_error("mirror", "expected SRC and DST");
	o.src = argv[optind];
	o.dst = argv[optind + 1];
	/* NBD (issue 11): say it before the guest starts, in the job's words. */
	if (fmt_is_nbd_uri(o.dst) && !(o.copy_flags & BC_BLOCK_COPY_REUSE_EXT)) {
		fprintf(stderr, "blockcopy: destination '%s' is an NBD export: it must exist, use --reuse-external\n",
			o.dst);
		return TOOL_EXIT_FAILURE;
	}
	if (o.duration_s < 2 * o.before_s) {
		o.before_s = o.duration_s / 2;
		o.after_s = o.duration_s / 2;
	}

	res = calloc(1, sizeof(*res));
	eng = bc_engine_new(0);
	if (!res || !eng) {
		tool_report(o.src, eng ? -ENOMEM : -EIO);
		free(res);
		if (eng)
			bc_engine_free(eng);
		return TOOL_EXIT_FAILURE;
	}
	ret = live_run(eng, &o, NULL, NULL, res);
	if (common.json)
		live_print_json(stdout, &o, res, NULL);
	else
		live_print_text(stdout, &o, res);
	if (ret < 0) {
		tool_fail(res->interrupted ? "interrupted" : "verify-failed", "%s",
			  res->error);
	} else if (!common.json) {
		printf("verified: %s matches the guest's %llu writes\n",
		       o.pivot ? o.dst : o.src, (unsigned long long)res->writes);
	}
	bc_engine_free(eng);
	free(res);
	return ret < 0 ? TOOL_EXIT_FAILURE : TOOL_EXIT_OK;
}
