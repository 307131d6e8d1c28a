/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy create: a new qcow2 or raw image, optionally over a backing
 * file. Quiet on success; never overwrites an existing file.
 *
 * A backing file given without -F is probed once, here, and the probed
 * format is recorded in the new image: qemu-img refuses -b without -F
 * because an overlay without a recorded backing format is probed on
 * every open (a raw backing whose guest wrote a qcow2 header would turn
 * into that qcow2). Recording the result closes that hole while keeping
 * the short form usable; the warning says what was decided.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/util.h"
#include "formats/fmt.h"

const char tool_help_create[] =
	"Usage: blockcopy create [-f qcow2|raw] [-b BACKING [-F FMT]] [-o OPTIONS]\n"
	"                        IMG [SIZE]\n"
	"\n"
	"Create the image IMG with a virtual size of SIZE bytes. SIZE takes K, M,\n"
	"G or T suffixes (powers of 1024); a fraction such as 1.5M is accepted\n"
	"when the result is a whole number of bytes. Prints nothing on success.\n"
	"An existing IMG is never overwritten (unlike qemu-img create).\n"
	"\n"
	"  -f, --format=FMT          qcow2 (default) or raw\n"
	"  -b, --backing=BACKING     backing file (qcow2 only), recorded as given;\n"
	"                            a relative name is relative to IMG's directory.\n"
	"                            Without SIZE, the backing's size is used.\n"
	"  -F, --backing-format=FMT  the backing's format (qcow2 or raw), recorded\n"
	"                            in IMG. Without -F the backing is probed, a\n"
	"                            warning names the result, and it is recorded:\n"
	"                            IMG never relies on probing later.\n"
	"  -o, --options=OPT[,OPT]   qcow2 creation options:\n"
	"        cluster_size=SIZE     512 .. 2M, a power of two (default 64K)\n"
	"        compat=0.10|1.1|v2|v3 qcow2 version (default 1.1)\n"
	"        refcount_bits=N       1, 2, 4, 8, 16, 32 or 64 (default 16)\n"
	"        extended_l2=on|off    subclusters (1.1, cluster_size >= 16K)\n"
	"        lazy_refcounts=on|off (1.1 only)\n"
	"        preallocation=off|metadata|falloc|full\n"
	"                              (raw accepts off, falloc and full)\n"
	"  -h, --help                this text\n"
	"\n"
	"Exit status: 0 created, 1 failure (IMG exists, backing unreadable, ...),\n"
	"2 bad usage.\n";

static const struct option long_opts[] = {
	{"format", required_argument, NULL, 'f'},
	{"backing", required_argument, NULL, 'b'},
	{"backing-format", required_argument, NULL, 'F'},
	{"options", required_argument, NULL, 'o'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static bool is_known_format(const char *fmt)
{
	return !strcmp(fmt, "qcow2") || !strcmp(fmt, "raw");
}

/*
 * Applies one "key=value" of -o to @opts; @qcow2_only is set when the
 * key exists for qcow2 only. Returns 0 or TOOL_EXIT_USAGE (reported).
 */
static int apply_option(char *kv, struct fmt_create_opts *opts,
			bool *qcow2_only)
{
	char *val = strchr(kv, '=');
	uint64_t n;

	if (!val)
		return tool_usage_error("create", "option '%s' needs a value",
					kv);
	*val++ = '\0';
	if (!strcmp(kv, "cluster_size")) {
		if (tool_parse_size(val, &n) || n > UINT32_MAX)
			goto bad_value;
		opts->cluster_size = (uint32_t)n;
		*qcow2_only = true;
	} else if (!strcmp(kv, "compat")) {
		if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
			opts->compat = 2;
		else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
			opts->compat = 3;
		else
			goto bad_value;
		*qcow2_only = true;
	} else if (!strcmp(kv, "refcount_bits")) {
		if (tool_parse_size(val, &n) || n > 64)
			goto bad_value;
		opts->refcount_bits = (int)n;
		*qcow2_only = true;
	} else if (!strcmp(kv, "extended_l2")) {
		if (tool_parse_bool(val, &opts->extended_l2))
			goto bad_value;
		*qcow2_only = true;
	} else if (!strcmp(kv, "lazy_refcounts")) {
		if (tool_parse_bool(val, &opts->lazy_refcounts))
			goto bad_value;
		*qcow2_only = true;
	} else if (!strcmp(kv, "preallocation")) {
		if (!strcmp(val, "off"))
			opts->prealloc = FMT_PREALLOC_OFF;
		else if (!strcmp(val, "metadata"))
			opts->prealloc = FMT_PREALLOC_METADATA;
		else if (!strcmp(val, "falloc"))
			opts->prealloc = FMT_PREALLOC_FALLOC;
		else if (!strcmp(val, "full"))
			opts->prealloc = FMT_PREALLOC_FULL;
		else
			goto bad_value;
	} else {
		return tool_usage_error("create", "unknown option '%s'", kv);
	}
	return 0;

bad_value:
	return tool_usage_error("create", "invalid value '%s' for option '%s'",
				val, kv);
}

static int parse_options(const char *arg, struct fmt_create_opts *opts,
			 bool *qcow2_only)
{
	BC_AUTOFREE char *copy = strdup(arg);
	char *save = NULL, *kv;
	int ret;

	if (!copy) {
		tool_fail("no-memory", "out of memory");
		return TOOL_EXIT_FAILURE;
	}
	for (kv = strtok_r(copy, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		ret = apply_option(kv, opts, qcow2_only);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Opens the backing file the way the new image will find it, to check
 * that it is there and readable as @fmt, or to probe its format when
 * @fmt is NULL. On success *probed holds the format found (malloc'd).
 */
static int open_backing(const char *img, const char *backing, const char *fmt,
			char **probed)
{
	BC_AUTOFREE char *path = fmt_resolve_backing(img, backing);
	struct fmt_image *b = NULL;
	int ret;

	if (!path) {
		tool_fail("no-memory", "out of memory");
		return TOOL_EXIT_FAILURE;
	}
	bc_error_reset();
	ret = fmt_open(path, fmt, FMT_OPEN_NO_BACKING, &b);
	if (ret < 0) {
		tool_report(path, ret);
		return TOOL_EXIT_FAILURE;
	}
	*probed = strdup(b->drv->name);
	fmt_close(b);
	if (!*probed) {
		tool_fail("no-memory", "out of memory");
		return TOOL_EXIT_FAILURE;
	}
	return 0;
}

int cmd_create(int argc, char **argv)
{
	struct fmt_create_opts opts = {.format = "qcow2"};
	BC_AUTOFREE char *found_fmt = NULL;
	const char *img, *backing = NULL, *backing_fmt = NULL;
	bool qcow2_only = false;
	struct stat st;
	int c, ret;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":f:b:F:o:h", long_opts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			if (!is_known_format(optarg))
				return tool_usage_error("create",
							"unknown format '%s'",
							optarg);
			opts.format = optarg;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'F':
			if (!is_known_format(optarg))
				return tool_usage_error("create",
							"unknown format '%s'",
							optarg);
			backing_fmt = optarg;
			break;
		case 'o':
			ret = parse_options(optarg, &opts, &qcow2_only);
			if (ret)
				return ret;
			break;
		case 'h':
			tool_print_help("create");
			return TOOL_EXIT_OK;
		default:
			return tool_getopt_error("create", c, argv);
		}
	}
	if (optind >= argc)
		return tool_usage_error("create", "missing image name");
	img = argv[optind++];
	if (optind < argc) {
		ret = tool_parse_size(argv[optind], &opts.size);
		if (ret == -ERANGE)
			return tool_usage_error("create",
						"size '%s' is too large",
						argv[optind]);
		if (ret)
			return tool_usage_error("create", "invalid size '%s'",
						argv[optind]);
		optind++;
	} else if (!backing) {
		return tool_usage_error("create", "missing size");
	}
	if (optind < argc)
		return tool_usage_error("create", "unexpected argument '%s'",
					argv[optind]);
	if (backing_fmt && !backing)
		return tool_usage_error("create", "-F needs -b");
	if (!strcmp(opts.format, "raw")) {
		if (backing)
			return tool_usage_error(
				"create",
				"raw images cannot have a backing file");
		if (qcow2_only)
			return tool_usage_error(
				"create",
				"raw images take only the preallocation option");
		if (opts.prealloc == FMT_PREALLOC_METADATA)
			return tool_usage_error(
				"create",
				"raw images cannot preallocate metadata");
	}

	/* fmt_create refuses too; checking first keeps the message exact. */
	if (lstat(img, &st) == 0) {
		tool_error_file("exists", img, "file exists");
		return TOOL_EXIT_FAILURE;
	}
	if (backing) {
		ret = open_backing(img, backing, backing_fmt, &found_fmt);
		if (ret)
			return ret;
		opts.backing_file = backing;
		opts.backing_fmt = found_fmt;
	}

	bc_error_reset();
	ret = fmt_create(img, &opts);
	if (ret < 0) {
		if (ret == -EEXIST && !bc_error_is_set())
			tool_error_file("exists", img, "file exists");
		else
			tool_report(img, ret);
		return TOOL_EXIT_FAILURE;
	}
	if (backing && !backing_fmt)
		tool_warn(
			"backing format of '%s' probed as %s; use -F to declare it",
			backing, found_fmt);
	return TOOL_EXIT_OK;
}
