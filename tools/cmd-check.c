/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy check: consistency of one image's metadata (qcow2 refcounts
 * against references), reported as qemu-img check reports it. Read-only:
 * nothing is repaired. Only the named layer is opened; its backing file
 * plays no part in its metadata.
 */
#include "tool.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "formats/fmt.h"

/* check's own exit statuses (qemu-img's). */
#define EXIT_CLEAN   0
#define EXIT_NOCHECK 1
#define EXIT_CORRUPT 2
#define EXIT_LEAKS   3

const char tool_help_check[] =
	"Usage: blockcopy check [-f FMT] [--json] IMG\n"
	"\n"
	"Check the metadata of IMG (not its backing chain) for corruption and\n"
	"leaked clusters, as qemu-img check does, without repairing anything.\n"
	"Each finding is one line on stderr in qemu-img's words (\"ERROR cluster\n"
	"5 refcount=0 reference=1\", \"Leaked cluster 9 refcount=1 reference=0\");\n"
	"the summary goes to stdout.\n"
	"Opens IMG read-only. A raw image has no metadata: check prints\n"
	"  blockcopy: IMG: raw images have no metadata to check\n"
	"on stdout and exits 0 (qemu-img exits 63 there).\n"
	"\n"
	"  -f, --format=FMT  IMG's format (qcow2 or raw); probed when absent\n"
	"      --json        a JSON object with qemu-img's keys\n"
	"      --output=json|human  qemu-img's spelling of --json (or not)\n"
	"  -h, --help        this text\n"
	"\n"
	"Exit status: 0 no errors, 1 could not check (IMG unreadable, errors\n"
	"while checking), 2 corruptions found, 3 leaked clusters only. Bad usage\n"
	"also exits 2, with its one line on stderr and nothing on stdout.\n";

/* A finding, as qemu-img check prints it: one line on stderr. */
static void print_finding(void *opaque, const char *line)
{
	(void)opaque;
	fprintf(stderr, "%s\n", line);
}

static void print_human(const struct fmt_check_report *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors)
		printf("No errors were found on the image.\n");
	if (r->corruptions)
		printf("\n%" PRIu64 " errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       r->corruptions);
	if (r->leaks)
		printf("\n%" PRIu64
		       " leaked clusters were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       r->leaks);
	if (r->check_errors)
		printf("\n%" PRIu64
		       " internal errors have occurred during the check.\n",
		       r->check_errors);
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64
		       " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       (double)r->allocated_clusters * 100.0 /
			       (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 /
			       (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 /
			       (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

/* Members in the order of qemu's ImageCheck; zero counts left out as qemu does. */
static void print_json(const char *path, const char *format,
		       const struct fmt_check_report *r)
{
	const struct {
		const char *key;
		uint64_t val;
	} counts[] = {
		{"image-end-offset", r->image_end_offset},
		{"corruptions", r->corruptions},
		{"leaks", r->leaks},
		{"total-clusters", r->total_clusters},
		{"allocated-clusters", r->allocated_clusters},
		{"fragmented-clusters", r->fragmented_clusters},
		{"compressed-clusters", r->compressed_clusters},
	};
	size_t i;

	printf("{\n    \"filename\": ");
	tool_json_string(stdout, path);
	printf(",\n    \"format\": ");
	tool_json_string(stdout, format);
	printf(",\n    \"check-errors\": %" PRIu64, r->check_errors);
	for (i = 0; i < BC_ARRAY_SIZE(counts); i++) {
		if (counts[i].val)
			printf(",\n    \"%s\": %" PRIu64, counts[i].key,
			       counts[i].val);
	}
	printf("\n}\n");
}

int cmd_check(int argc, char **argv)
{
	struct fmt_check_report rep = {0};
	struct tool_opts o = { 0 };
	struct fmt_image *img = NULL;
	const char *path;
	int ret, status;

	ret = tool_image_command("check", argc, argv, false, &o, &path);
	if (ret != TOOL_CONTINUE)
		return ret; /* --help: EXIT_CLEAN */

	bc_error_reset();
	ret = fmt_open(path, o.format, FMT_OPEN_NO_BACKING | FMT_OPEN_CHECK, &img);
	if (ret < 0) {
		tool_report(path, ret);
		return EXIT_NOCHECK;
	}
	bc_error_reset();
	ret = fmt_check_noted(img, &rep, print_finding, NULL);
	if (ret == -ENOTSUP) {
		printf("blockcopy: %s: %s images have no metadata to check\n",
		       path, img->drv->name);
		fmt_close(img);
		return EXIT_CLEAN;
	}
	if (ret < 0) {
		tool_report(path, ret);
		fmt_close(img);
		return EXIT_NOCHECK;
	}
	tool_json_errors(false); /* the report is on stdout */
	if (o.json)
		print_json(path, img->drv->name, &rep);
	else
		print_human(&rep);
	fmt_close(img);

	if (rep.check_errors) {
		fflush(stdout);
		tool_error_file("internal", path,
				"check failed: %" PRIu64
				" internal errors while checking",
				rep.check_errors);
		status = EXIT_NOCHECK;
	} else if (rep.corruptions) {
		status = EXIT_CORRUPT;
	} else if (rep.leaks) {
		status = EXIT_LEAKS;
	} else {
		status = EXIT_CLEAN;
	}
	return status;
}
