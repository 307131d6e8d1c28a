/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy bitmap: add, remove, clear, enable, disable and merge the
 * persistent dirty bitmaps of a qcow2 image, with qemu-img bitmap's
 * options. Operations apply in the order given; each one is committed to
 * the image before the next (formats/qcow2-bitmap.c).
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/fmt.h"

const char tool_help_bitmap[] =
	"Usage: blockcopy bitmap (--add | --remove | --clear | --enable |\n"
	"                         --disable | --merge SOURCE)...\n"
	"                        [-g GRANULARITY] [-b SOURCE_FILE [-F SOURCE_FMT]]\n"
	"                        [-f FMT] IMG BITMAP\n"
	"\n"
	"Change the persistent dirty bitmap BITMAP of the qcow2 image IMG, as\n"
	"qemu-img bitmap does. An enabled bitmap records every write made to\n"
	"IMG (by blockcopy, QEMU or any program that keeps bitmaps); `blockcopy\n"
	"info IMG` lists the bitmaps. IMG must not be in use by another program.\n"
	"\n"
	"  --add             create BITMAP, empty and enabled\n"
	"  --remove          delete BITMAP\n"
	"  --clear           reset every bit of BITMAP\n"
	"  --enable          BITMAP records writes from now on\n"
	"  --disable         BITMAP stops recording writes\n"
	"  --merge SOURCE    set in BITMAP every bit set in bitmap SOURCE (of\n"
	"                    IMG, or of SOURCE_FILE with -b)\n"
	"  -g, --granularity=SIZE  bytes per bit for --add: a power of two from\n"
	"                    512 to 2G (default: the cluster size, within 4K..64K)\n"
	"  -b, --source-file=FILE  the image holding SOURCE for --merge\n"
	"  -F, --source-format=FMT SOURCE_FILE's format (probed when absent)\n"
	"  -f, --format=FMT  IMG's format (qcow2; probed when absent)\n"
	"  -h, --help        this text\n"
	"\n"
	"Exit status: 0 done, 1 an operation failed (the ones before it are\n"
	"done), 2 bad usage.\n";

enum {
	OPT_ADD = 256,
	OPT_REMOVE,
	OPT_CLEAR,
	OPT_ENABLE,
	OPT_DISABLE,
	OPT_MERGE,
};

static const struct option long_opts[] = {
	{"add", no_argument, NULL, OPT_ADD},
	{"remove", no_argument, NULL, OPT_REMOVE},
	{"clear", no_argument, NULL, OPT_CLEAR},
	{"enable", no_argument, NULL, OPT_ENABLE},
	{"disable", no_argument, NULL, OPT_DISABLE},
	{"merge", required_argument, NULL, OPT_MERGE},
	{"granularity", required_argument, NULL, 'g'},
	{"source-file", required_argument, NULL, 'b'},
	{"source-format", required_argument, NULL, 'F'},
	{"format", required_argument, NULL, 'f'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

#define MAX_OPS 16

static bool known_format(const char *f)
{
	return !f || !strcmp(f, "qcow2") || !strcmp(f, "raw");
}

int cmd_bitmap(int argc, char **argv)
{
	struct fmt_bitmap_change ops[MAX_OPS];
	const char *format = NULL, *src_file = NULL, *src_format = NULL;
	struct fmt_image *img = NULL, *src = NULL;
	uint64_t granularity = 0;
	bool has_add = false, has_merge = false;
	int c, i, nops = 0, ret, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	optind = 1;
	memset(ops, 0, sizeof(ops));
	while ((c = getopt_long(argc, argv, ":g:b:F:f:h", long_opts, NULL)) !=
	       -1) {
		switch (c) {
		case OPT_ADD:
		case OPT_REMOVE:
		case OPT_CLEAR:
		case OPT_ENABLE:
		case OPT_DISABLE:
		case OPT_MERGE:
			if (nops == MAX_OPS)
				return tool_usage_error("bitmap",
							"at most %d operations",
							MAX_OPS);
			ops[nops].verb = (enum fmt_bitmap_verb)(c - OPT_ADD);
			if (c == OPT_MERGE) {
				ops[nops].src_name = optarg;
				has_merge = true;
			}
			has_add |= c == OPT_ADD;
			nops++;
			break;
		case 'g':
			if (tool_parse_size(optarg, &granularity) < 0 ||
			    !granularity)
				return tool_usage_error("bitmap",
							"invalid granularity '%s'",
							optarg);
			break;
		case 'b':
			src_file = optarg;
			break;
		case 'F':
			src_format = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 'h':
			tool_print_help("bitmap");
			return TOOL_EXIT_OK;
		default:
			return tool_getopt_error("bitmap", c, argv);
		}
	}
	if (!nops)
		return tool_usage_error("bitmap",
					"need at least one of --add, --remove, --clear, --enable, --disable, --merge");
	if (argc - optind != 2)
		return tool_usage_error("bitmap",
					"expected IMG and BITMAP, got %d arguments",
					argc - optind);
	if (granularity && !has_add)
		return tool_usage_error("bitmap",
					"-g/--granularity is only for --add");
	if (src_file && !has_merge)
		return tool_usage_error("bitmap",
					"-b/--source-file is only for --merge");
	if (src_format && !src_file)
		return tool_usage_error("bitmap",
					"-F/--source-format needs -b/--source-file");
	if (!known_format(format) || !known_format(src_format))
		return tool_usage_error("bitmap", "unknown format '%s'",
					known_format(format) ? src_format
							     : format);

	bc_error_reset();
	ret = fmt_open(argv[optind], format,
		       FMT_OPEN_RDWR | FMT_OPEN_NO_BACKING, &img);
	if (ret < 0) {
		tool_report(argv[optind], ret);
		return TOOL_EXIT_FAILURE;
	}
	if (src_file) {
		ret = fmt_open(src_file, src_format, FMT_OPEN_NO_BACKING, &src);
		if (ret < 0) {
			tool_report(src_file, ret);
			goto out_close;
		}
	}
	for (i = 0; i < nops; i++) {
		ops[i].name = argv[optind + 1];
		ops[i].granularity = granularity;
		ops[i].src = src ? src : img;
		bc_error_reset();
		ret = fmt_bitmap_change(img, &ops[i]);
		if (ret < 0) {
			tool_report(argv[optind], ret);
			goto out_close;
		}
	}
	status = TOOL_EXIT_OK;
out_close:
	fmt_close(src);
	bc_error_reset();
	fmt_close(img);
	if (status == TOOL_EXIT_OK && bc_error_is_set()) {
		/* Close writes the header back: its failure is ours. */
		tool_report(argv[optind], -EIO);
		status = TOOL_EXIT_FAILURE;
	}
	return status;
}
