/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy map: where each guest range of an image chain comes from,
 * walked with fmt_chain_block_status() over the whole virtual size.
 *
 * Extents are merged the way qemu-img map merges them (same depth,
 * present, zero and data flags, and host offsets that continue each
 * other), so `map --json` prints exactly `qemu-img map --output=json`
 * lines for the same chain. The human table lists data extents only,
 * like qemu-img's, with the layer named as qemu-img names it.
 */
#include "tool.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "formats/fmt.h"

const char tool_help_map[] =
	"Usage: blockcopy map [-f FMT] [--json] IMG\n"
	"\n"
	"Show, for every guest range of IMG and its backing chain, which layer\n"
	"answers and how. Opens the chain read-only.\n"
	"\n"
	"Without --json, a table of the ranges holding data, as qemu-img map:\n"
	"  Offset  Length  Mapped to  File\n"
	"guest offset and length, offset in the file of the layer that holds\n"
	"them, and that layer (hexadecimal). Ranges reading as zeros are not\n"
	"listed. Compressed data has no offset: use --json for such images.\n"
	"\n"
	"With --json, one object per line as qemu-img map --output=json:\n"
	"  start, length   guest range\n"
	"  depth           layer that answers (0 = IMG); for ranges no layer\n"
	"                  holds, the bottom layer\n"
	"  present         a layer holds the range\n"
	"  zero            the range reads as zeros\n"
	"  data            a layer holds data for the range\n"
	"  offset          where the range is in that layer's file, if mapped\n"
	"\n"
	"  -f, --format=FMT  IMG's format (qcow2 or raw); probed when absent\n"
	"      --json        the JSON form above\n"
	"      --output=json|human  qemu-img's spelling of --json (or not)\n"
	"  -h, --help        this text\n"
	"\n"
	"Exit status: 0 success, 1 failure, 2 bad usage.\n";

/* One merged run of qemu-img's map entry. */
struct map_entry {
	uint64_t start;
	uint64_t length;
	int depth;
	bool present;
	bool zero;
	bool data;
	int64_t offset; /* -1: no host offset */
};

/* The layer of @top at @depth (0: @top), which block status reported. */
static const struct fmt_image *layer_at(const struct fmt_image *top, int depth)
{
	while (depth-- > 0 && top)
		top = top->backing;
	return top;
}

/*
 * An export's data is at its guest offsets, as `qemu-img map` shows it
 * (the NBD protocol layer maps one to one).
 */
static void entry_from_extent(struct map_entry *e, uint64_t start,
			      const struct fmt_extent *ext,
			      const struct fmt_image *top)
{
	const struct fmt_image *layer = layer_at(top, ext->depth);

	e->start = start;
	e->length = ext->len;
	e->depth = ext->depth;
	e->present = ext->state != FMT_UNALLOC;
	e->zero = ext->state != FMT_DATA;
	e->data = ext->state == FMT_DATA;
	e->offset = ext->state == FMT_UNALLOC ? -1 : ext->host_off;
	if (e->present && layer && layer->drv->protocol)
		e->offset = (int64_t)start;
}

static bool mergeable(const struct map_entry *a, const struct map_entry *b)
{
	if (a->depth != b->depth || a->present != b->present ||
	    a->zero != b->zero || a->data != b->data)
		return false;
	if ((a->offset < 0) != (b->offset < 0))
		return false;
	return a->offset < 0 ||
	       (uint64_t)a->offset + a->length == (uint64_t)b->offset;
}

static void print_json_entry(const struct map_entry *e, bool last)
{
	printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
	       ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
	       e->start ? "" : "[", e->start, e->length, e->depth,
	       e->present ? "true" : "false", e->zero ? "true" : "false",
	       e->data ? "true" : "false");
	if (e->offset >= 0)
		printf(", \"offset\": %" PRId64, e->offset);
	printf("}%s\n", last ? "]" : ",");
}

/* Human row; returns 0, or 1 when the extent has no host offset. */
static int print_human_entry(const struct map_entry *e, char *const *names)
{
	if (!e->data)
		return 0;
	if (e->offset < 0)
		return 1;
	/* %#x prints 0 bare, as qemu-img's table does. */
	printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start,
	       e->length, (uint64_t)e->offset, names[e->depth]);
	return 0;
}

static void free_names(char **names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * Display names of every layer, top first (tool_backing_path()).
 * Returns a malloc'd array of *n malloc'd strings, or NULL (ENOMEM).
 */
static char **layer_names(const char *path, struct fmt_image *top, int *n)
{
	struct fmt_image *img;
	char **names;
	int i, count = 0;

	for (img = top; img; img = img->backing)
		count++;
	names = calloc((size_t)count, sizeof(*names));
	if (!names)
		return NULL;
	names[0] = strdup(path);
	for (img = top, i = 1; i < count && names[i - 1];
	     img = img->backing, i++)
		names[i] = tool_backing_path(names[i - 1], img->backing_name);
	if (!names[count - 1]) {
		free_names(names, count);
		return NULL;
	}
	*n = count;
	return names;
}

static int walk(const char *path, struct fmt_image *top, bool json,
		char *const *names, int n_layers)
{
	struct map_entry cur = {0}, next;
	struct fmt_extent ext;
	uint64_t off = 0;
	bool have = false;
	int ret;

	if (!json)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
		       "File");
	else if (top->size == 0) /* qemu-img's one empty entry */
		printf("[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, \"data\": false}]\n");
	while (off < top->size) {
		bc_error_reset();
		ret = fmt_chain_block_status(top, off, top->size - off, &ext);
		if (ret < 0) {
			fflush(stdout);
			tool_report(path, ret);
			return TOOL_EXIT_FAILURE;
		}
		if (ext.len == 0 || ext.len > top->size - off ||
		    ext.depth < 0 || ext.depth >= n_layers) {
			fflush(stdout);
			tool_error_file("internal", path,
					"block status returned a bad extent");
			return TOOL_EXIT_FAILURE;
		}
		entry_from_extent(&next, off, &ext, top);
		off += ext.len;
		if (have && mergeable(&cur, &next)) {
			cur.length += next.length;
			continue;
		}
		if (have) {
			if (json)
				print_json_entry(&cur, false);
			else if (print_human_entry(&cur, names))
				goto out_compressed;
		}
		cur = next;
		have = true;
	}
	if (have) {
		if (json)
			print_json_entry(&cur, true);
		else if (print_human_entry(&cur, names))
			goto out_compressed;
	}
	return TOOL_EXIT_OK;

out_compressed:
	fflush(stdout);
	tool_error_file("unsupported", names[cur.depth],
			"compressed data has no offset to show; use --json");
	return TOOL_EXIT_FAILURE;
}

int cmd_map(int argc, char **argv)
{
	struct tool_opts o = { 0 };
	struct fmt_image *top = NULL;
	const char *path;
	char **names;
	int n = 0, ret;

	ret = tool_image_command("map", argc, argv, false, &o, &path);
	if (ret != TOOL_CONTINUE)
		return ret;

	bc_error_reset();
	ret = fmt_open(path, o.format, 0, &top);
	if (ret < 0) {
		tool_report(path, ret);
		return TOOL_EXIT_FAILURE;
	}
	names = layer_names(path, top, &n);
	if (!names) {
		tool_fail("no-memory", "out of memory");
		fmt_close(top);
		return TOOL_EXIT_FAILURE;
	}
	/* From here stdout holds the result: a failure is stderr's alone. */
	tool_json_errors(false);
	ret = walk(path, top, o.json, names, n);
	free_names(names, n);
	fmt_close(top);
	return ret;
}
