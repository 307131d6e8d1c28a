/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy pull: run a PULL job on IMG: copy into IMG what its backing
 * chain holds above BASE (everything without --base), then make BASE its
 * backing file (none without --base). The only subcommand that writes to
 * its argument's image.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "job-run.h"
#include "lib/blockcopy.h"

const char tool_help_pull[] =
	"Usage: blockcopy pull [OPTIONS] IMG\n"
	"\n"
	"Pull data from IMG's backing chain into IMG with a PULL block job,\n"
	"then rewrite IMG's backing pointer (atomically) to BASE, or remove it\n"
	"when no --base is given. The images below IMG are not changed.\n"
	"\n"
	"  -f, --format=FMT       IMG's format; probed when absent\n"
	"      --base=BASE        keep BASE (an image in IMG's chain) as backing\n"
	"      --relative         record BASE under the relative name the chain\n"
	"                         used for it (default: its absolute path)\n"
	"      --bandwidth=RATE   limit; bare number MiB/s, or K/M/G/T per second\n"
	"      --progress         progress bar with rate and ETA on stderr\n"
	"  -q, --quiet            print nothing on success\n"
	"      --json             print the result as a JSON object\n"
	"  -h, --help             this text\n"
	"\n"
	"Data path: the backing chain is read and IMG written through their\n"
	"format drivers (the data before the metadata that exposes it), through\n"
	"the page cache with write-behind. --json reports it as \"method\".\n"
	"\n"
	"Exit status: 0 pulled, 1 failed or interrupted, 2 bad usage.\n";

enum { OPT_BASE = 256, OPT_RELATIVE, OPT_BANDWIDTH };

static const struct option long_opts[] = {
	{"format", required_argument, NULL, 'f'},
	{"base", required_argument, NULL, OPT_BASE},
	{"relative", no_argument, NULL, OPT_RELATIVE},
	{"bandwidth", required_argument, NULL, OPT_BANDWIDTH},
	{"progress", no_argument, NULL, TOOL_OPT_PROGRESS},
	{"quiet", no_argument, NULL, 'q'},
	{"json", no_argument, NULL, TOOL_OPT_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

int cmd_pull(int argc, char **argv)
{
	struct job_run run = { 0 };
	struct tool_opts o = { 0 };
	const char *base = NULL, *img;
	unsigned int flags = BC_BLOCK_REBASE_BANDWIDTH_BYTES;
	uint64_t bw = 0;
	int c, ret = TOOL_EXIT_FAILURE;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":f:qh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_BASE:
			base = optarg;
			break;
		case OPT_RELATIVE:
			flags |= BC_BLOCK_REBASE_RELATIVE;
			break;
		case OPT_BANDWIDTH:
			if (tool_parse_rate(optarg, &bw) < 0)
				return tool_usage_error("pull", "invalid rate '%s'", optarg);
			break;
		default:
			c = tool_common_option("pull", c, argv, &o);
			if (c != TOOL_CONTINUE)
				return c;
		}
	}
	if (o.progress && o.quiet)
		return tool_usage_error("pull", "--progress and --quiet are mutually exclusive");
	if ((flags & BC_BLOCK_REBASE_RELATIVE) && !base)
		return tool_usage_error("pull", "--relative needs --base");
	if (argc - optind != 1)
		return tool_usage_error("pull", "expected one image");
	if (o.format && !tool_format_known(o.format))
		return tool_usage_error("pull", "unknown format '%s'", o.format);
	img = argv[optind];
	tool_json_errors(o.json);
	run.progress = o.progress;

	if (job_run_open(&run, img, o.format, 0) < 0)
		return TOOL_EXIT_FAILURE;
	if (bc_block_rebase(run.disk, base, (unsigned long)bw, flags) < 0) {
		tool_report(img, -EIO);
		goto out_close;
	}
	if (job_run_wait(&run) < 0) {
		job_run_report_failure(&run, img, "pull",
				       "pull interrupted (the image is valid; its backing file is unchanged)");
		goto out_close;
	}
	if (o.json) {
		printf("{\"image\": ");
		tool_json_string(stdout, img);
		printf(", \"base\": ");
		if (base)
			tool_json_string(stdout, base);
		else
			printf("null");
		printf(", \"method\": ");
		tool_json_string(stdout, bc_block_job_copy_method(run.disk));
		printf(", \"seconds\": %.3f}\n", run.seconds);
	} else if (!o.quiet) {
		printf("Pulled into %s in %.2f s; backing file: %s\n", img,
		       run.seconds, base ? base : "none");
	}
	ret = TOOL_EXIT_OK;
out_close:
	job_run_close(&run);
	return ret;
}
