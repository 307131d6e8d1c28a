/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy info: what an image is (format, sizes, backing file, qcow2
 * features), in qemu-img info's human shape or its JSON keys.
 *
 * Only the named image is opened unless --backing-chain, so info works
 * on an overlay whose backing file is missing. Layers below the top are
 * named the way qemu-img names them: the backing name joined to the
 * overlay's directory as the overlay was named (tool_backing_path()).
 */
#include "tool.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "formats/fmt.h"

const char tool_help_info[] =
	"Usage: blockcopy info [-f FMT] [--backing-chain] [--json] IMG\n"
	"\n"
	"Show the format, virtual size, disk usage, backing file and qcow2\n"
	"features of IMG, as qemu-img info does. Opens IMG read-only and alone\n"
	"(its backing file need not exist) unless --backing-chain.\n"
	"\n"
	"  -f, --format=FMT    IMG's format (qcow2 or raw); probed when absent\n"
	"      --backing-chain every layer, top first (a JSON array with --json)\n"
	"      --json          a JSON object with qemu-img's keys\n"
	"      --output=json|human  qemu-img's spelling of --json (or not)\n"
	"  -h, --help          this text\n"
	"\n"
	"Exit status: 0 success, 1 failure, 2 bad usage.\n";

static const char *compression_name(int type)
{
	return type == 1 ? "zstd" : "zlib";
}

static const char *bool_str(bool b)
{
	return b ? "true" : "false";
}

static void print_human(const char *name, const struct fmt_image *img,
			const struct fmt_bitmap_info *bm, size_t nbm,
			const struct fmt_info *info, const char *full_backing)
{
	char vsize[32], dsize[32];

	tool_human_size(info->virtual_size, vsize, sizeof(vsize));
	tool_human_size(info->actual_size, dsize, sizeof(dsize));
	printf("image: %s\n", name);
	printf("file format: %s\n", info->format);
	printf("virtual size: %s (%" PRIu64 " bytes)\n", vsize,
	       info->virtual_size);
	printf("disk size: %s\n", dsize);
	if (info->cluster_size)
		printf("cluster_size: %" PRIu32 "\n", info->cluster_size);
	if (info->dirty)
		printf("cleanly shut down: no\n");
	if (img->backing_name) {
		printf("backing file: %s", img->backing_name);
		if (strcmp(img->backing_name, full_backing))
			printf(" (actual path: %s)", full_backing);
		putchar('\n');
	}
	if (img->backing_fmt)
		printf("backing file format: %s\n", img->backing_fmt);
	if (!info->version)
		return;
	printf("Format specific information:\n");
	printf("    compat: %s\n", info->version >= 3 ? "1.1" : "0.10");
	printf("    compression type: %s\n",
	       compression_name(info->compression_type));
	if (info->version >= 3)
		printf("    lazy refcounts: %s\n",
		       bool_str(info->lazy_refcounts));
	if (nbm) {
		size_t i;

		printf("    bitmaps:\n");
		for (i = 0; i < nbm; i++) {
			int k = 0;

			printf("        [%zu]:\n", i);
			printf("            flags:\n");
			if (bm[i].in_use)
				printf("                [%d]: in-use\n", k++);
			if (bm[i].enabled)
				printf("                [%d]: auto\n", k++);
			printf("            name: %s\n", bm[i].name);
			printf("            granularity: %" PRIu64 "\n",
			       bm[i].granularity);
		}
	}
	printf("    refcount bits: %d\n", info->refcount_bits);
	if (info->version >= 3) {
		printf("    corrupt: %s\n", bool_str(info->corrupt));
		printf("    extended l2: %s\n", bool_str(info->extended_l2));
	}
}

/* One "key": value member at indent @ind; @first says no comma before. */
static void json_key(int ind, bool *first, const char *key)
{
	printf("%s\n%*s\"%s\": ", *first ? "" : ",", ind, "", key);
	*first = false;
}

static void print_json(int ind, const char *name, const struct fmt_image *img,
		       const struct fmt_bitmap_info *bm, size_t nbm,
		       const struct fmt_info *info, const char *full_backing)
{
	bool first = true, dfirst = true;
	int in = ind + 4;

	printf("%*s{", ind, "");
	json_key(in, &first, "filename");
	tool_json_string(stdout, name);
	json_key(in, &first, "format");
	tool_json_string(stdout, info->format);
	json_key(in, &first, "virtual-size");
	printf("%" PRIu64, info->virtual_size);
	json_key(in, &first, "actual-size");
	printf("%" PRIu64, info->actual_size);
	if (info->cluster_size) {
		json_key(in, &first, "cluster-size");
		printf("%" PRIu32, info->cluster_size);
	}
	if (img->backing_name) {
		json_key(in, &first, "backing-filename");
		tool_json_string(stdout, img->backing_name);
		json_key(in, &first, "full-backing-filename");
		tool_json_string(stdout, full_backing);
	}
	if (img->backing_fmt) {
		json_key(in, &first, "backing-filename-format");
		tool_json_string(stdout, img->backing_fmt);
	}
	json_key(in, &first, "dirty-flag");
	printf("%s", bool_str(info->dirty));
	if (info->version) {
		json_key(in, &first, "format-specific");
		printf("{");
		json_key(in + 4, &dfirst, "type");
		tool_json_string(stdout, info->format);
		json_key(in + 4, &dfirst, "data");
		printf("{");
		dfirst = true;
		json_key(in + 8, &dfirst, "compat");
		printf("\"%s\"", info->version >= 3 ? "1.1" : "0.10");
		json_key(in + 8, &dfirst, "compression-type");
		printf("\"%s\"", compression_name(info->compression_type));
		if (info->version >= 3) {
			json_key(in + 8, &dfirst, "lazy-refcounts");
			printf("%s", bool_str(info->lazy_refcounts));
		}
		if (nbm) {
			size_t i;

			json_key(in + 8, &dfirst, "bitmaps");
			printf("[");
			for (i = 0; i < nbm; i++) {
				int bi = in + 16;

				printf("%s\n%*s{\n%*s\"flags\": [", i ? "," : "",
				       in + 12, "", bi, "");
				if (bm[i].in_use)
					printf("\n%*s\"in-use\"%s", bi + 4, "",
					       bm[i].enabled ? "," : "");
				if (bm[i].enabled)
					printf("\n%*s\"auto\"", bi + 4, "");
				printf("\n%*s],\n%*s\"name\": ", bi, "", bi, "");
				tool_json_string(stdout, bm[i].name);
				printf(",\n%*s\"granularity\": %" PRIu64
				       "\n%*s}",
				       bi, "", bm[i].granularity, in + 12, "");
			}
			printf("\n%*s]", in + 8, "");
		}
		json_key(in + 8, &dfirst, "refcount-bits");
		printf("%d", info->refcount_bits);
		if (info->version >= 3) {
			json_key(in + 8, &dfirst, "corrupt");
			printf("%s", bool_str(info->corrupt));
			json_key(in + 8, &dfirst, "extended-l2");
			printf("%s", bool_str(info->extended_l2));
		}
		printf("\n%*s}\n%*s}", in + 4, "", in, "");
	}
	printf("\n%*s}", ind, "");
}

int cmd_info(int argc, char **argv)
{
	struct tool_opts o = { 0 };
	struct fmt_image *top = NULL, *img;
	char *name = NULL, *next_name;
	struct fmt_bitmap_info *bm = NULL;
	const char *path;
	size_t nbm = 0;
	int ret, status = TOOL_EXIT_FAILURE;
	bool chain, json;

	ret = tool_image_command("info", argc, argv, true, &o, &path);
	if (ret != TOOL_CONTINUE)
		return ret;
	chain = o.chain;
	json = o.json;

	bc_error_reset();
	ret = fmt_open(path, o.format, chain ? 0 : FMT_OPEN_NO_BACKING, &top);
	if (ret < 0) {
		tool_report(path, ret);
		return TOOL_EXIT_FAILURE;
	}
	name = strdup(path);
	if (!name)
		goto out_oom;
	/* From here stdout holds the result: a failure is stderr's alone. */
	tool_json_errors(false);
	if (chain && json)
		printf("[\n");
	for (img = top; img; img = chain ? img->backing : NULL) {
		struct fmt_info info = {0};

		next_name = NULL;
		if (img->backing_name) {
			next_name = tool_backing_path(name, img->backing_name);
			if (!next_name)
				goto out_oom;
		}
		bc_error_reset();
		ret = fmt_get_info(img, &info);
		if (ret < 0) {
			fflush(stdout);
			tool_report(img->filename, ret);
			free(next_name);
			goto out_close;
		}
		if (info.version) {
			ret = fmt_bitmap_list(img, &bm, &nbm);
			if (ret < 0) {
				fflush(stdout);
				tool_report(img->filename, ret);
				free(next_name);
				goto out_close;
			}
		}
		if (json) {
			print_json(chain ? 4 : 0, name, img, bm, nbm, &info,
				   next_name);
			if (chain && img->backing)
				putchar(',');
			putchar('\n');
		} else {
			if (img != top)
				putchar('\n');
			print_human(name, img, bm, nbm, &info, next_name);
		}
		fmt_bitmap_list_free(bm, nbm);
		bm = NULL;
		nbm = 0;
		free(name);
		name = next_name;
	}
	if (chain && json)
		printf("]\n");
	status = TOOL_EXIT_OK;
	goto out_close;

out_oom:
	tool_fail("no-memory", "out of memory");
out_close:
	fmt_bitmap_list_free(bm, nbm);
	free(name);
	fmt_close(top);
	return status;
}
