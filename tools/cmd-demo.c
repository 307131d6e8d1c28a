/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy demo: the live mirror end to end on images it makes itself.
 * A qcow2 chain base <- snap1 <- snap2 with known content, a synthetic
 * guest on it, a COPY job under that load, a pivot under load, and the
 * proof that the copy holds exactly what the guest wrote.
 *
 * The content of each layer is a pattern of its layer number and offset,
 * in chunks of 1/1024 of the disk: base every 4th chunk, snap1 every 8th
 * (all of them over base data), snap2 every 16th (where nothing lies
 * below). Before the guest writes anything, the disk must read back as
 * those patterns.
 */
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fmt.h"
#include "live-run.h"
#include "lib/blockcopy.h"

const char tool_help_demo[] =
	"Usage: blockcopy demo [OPTIONS] [DIR]\n"
	"\n"
	"The live mirror, end to end: makes a qcow2 chain base <- snap1 <- snap2\n"
	"with known content in DIR (default: a new directory under /tmp, removed\n"
	"afterwards unless --keep; a DIR given must be empty or absent and is\n"
	"kept), opens snap2 as a guest disk and runs a synthetic guest on it\n"
	"(random writes of 4 KiB..256 KiB, some unaligned, reads that verify,\n"
	"zero writes, discards, flushes). After 1 s a COPY job to copy.qcow2\n"
	"starts; once it is MIRRORING and --duration has passed, it pivots under\n"
	"load, the guest runs 1 s on the copy, and the run proves that the copy\n"
	"holds exactly what the guest wrote and the source kept its content from\n"
	"the pivot on. Prints the data copied, copy rate, time to MIRRORING,\n"
	"guest throughput before/during/after, latency and the pivot stall (how\n"
	"long the guest's requests were held while its disk switched). Before it\n"
	"starts it says how much memory and disk it will use, and where; at the\n"
	"end what it removed or kept.\n"
	"\n"
	"      --size=N             virtual size, multiple of 4M (default 1G)\n"
	"      --guest-rate=RATE    guest writes per second (bare number MiB/s;\n"
	"                           default 50M; 0 = as fast as it can)\n"
	"      --guest-threads=N    guest threads (default 4)\n"
	"      --duration=SECS      guest time from the job's start (default 3)\n"
	"      --mode=MODE          background, write-blocking or auto (default)\n"
	"      --shallow            copy only snap2's data, backed by snap1\n"
	"      --verify             also compare source and copy under the pivot's\n"
	"                           quiesce (the guest then waits for the reading\n"
	"                           of all data on both sides: a longer stall)\n"
	"      --keep               keep the temporary directory\n"
	"      --json               print the result as one JSON object\n"
	"  -h, --help               this text\n"
	"\n"
	"Exit status: 0 verified, 1 failure (one line says what differed),\n"
	"2 bad usage.\n";

enum {
	OPT_SIZE = 256,
	OPT_KEEP,
};

static const struct option long_opts[] = {
	{"size", required_argument, NULL, OPT_SIZE},
	{"guest-rate", required_argument, NULL, LIVE_OPT_GUEST_RATE},
	{"guest-threads", required_argument, NULL, LIVE_OPT_GUEST_THREADS},
	{"duration", required_argument, NULL, LIVE_OPT_DURATION},
	{"mode", required_argument, NULL, LIVE_OPT_MODE},
	{"shallow", no_argument, NULL, LIVE_OPT_SHALLOW},
	{"keep", no_argument, NULL, OPT_KEEP},
	{"json", no_argument, NULL, TOOL_OPT_JSON},
	{"verify", no_argument, NULL, LIVE_OPT_VERIFY},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

#define NCHUNKS 1024u

static const char *const layer_names[] = { "base.qcow2", "snap1.qcow2", "snap2.qcow2" };

/* Does layer @l hold chunk @i? */
static bool layer_has(unsigned int l, uint64_t i)
{
	switch (l) {
	case 0:
		return i % 4 == 0;
	case 1:
		return i % 8 == 4;
	default:
		return i % 16 == 2;
	}
}

/* The chunks a layer holds, for the report. */
static uint64_t layer_chunks(unsigned int l)
{
	return l == 0 ? NCHUNKS / 4 : l == 1 ? NCHUNKS / 8 : NCHUNKS / 16;
}

/* The 8 bytes of layer @l at guest offset @pos (a multiple of 8). */
static uint64_t pattern_word(unsigned int l, uint64_t pos)
{
	uint64_t z = pos * 0x9e3779b97f4a7c15ull + ((uint64_t)l + 1) * 0xd1b54a32d192ed03ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void pattern_fill(uint8_t *buf, size_t len, unsigned int l, uint64_t off)
{
	size_t i;

	for (i = 0; i < len; i += 8) {
		uint64_t v = pattern_word(l, off + i);

		memcpy(buf + i, &v, 8);
	}
}

struct demo {
	char *dir;
	char *paths[3];
	char *dst;
	uint64_t size;
	uint64_t chunk;
};

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* Creates layer @l and writes its chunks through the lib. */
static int make_layer(bc_engine *eng, struct demo *d, unsigned int l,
		      uint8_t *buf)
{
	struct fmt_create_opts co = { .format = "qcow2", .size = d->size };
	bc_disk *disk;
	uint64_t i;
	int ret;

	if (l > 0) {
		co.backing_file = layer_names[l - 1];
		co.backing_fmt = "qcow2";
	}
	ret = fmt_create(d->paths[l], &co);
	if (ret < 0) {
		tool_report(d->paths[l], ret);
		return -1;
	}
	disk = bc_disk_open(eng, d->paths[l], "qcow2", 0);
	if (!disk) {
		tool_report(d->paths[l], -EIO);
		return -1;
	}
	for (i = 0; i < NCHUNKS; i++) {
		if (!layer_has(l, i))
			continue;
		pattern_fill(buf, d->chunk, l, i * d->chunk);
		if (bc_disk_pwrite(disk, buf, d->chunk, i * d->chunk) != (ssize_t)d->chunk) {
			tool_report(d->paths[l], -EIO);
			(void)bc_disk_close(disk);
			return -1;
		}
	}
	if (bc_disk_flush(disk) < 0 || bc_disk_close(disk) < 0) {
		tool_report(d->paths[l], -EIO);
		return -1;
	}
	return 0;
}

/*
 * The guest's starting content (shadow_initial_fn): the top layer that
 * holds each chunk, or zeros. The guest checks that the chain reads so
 * before it writes anything, and every block it never writes at the end.
 */
static void chain_content(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
	const struct demo *d = arg;
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		uint64_t i = pos / d->chunk, word = pos & ~7ull, v;
		int l = layer_has(2, i) ? 2 : layer_has(1, i) ? 1 : layer_has(0, i) ? 0 : -1;
		size_t skip = (size_t)(pos - word), n = 8 - skip;

		if (n > end - pos)
			n = (size_t)(end - pos);
		v = l < 0 ? 0 : pattern_word((unsigned int)l, word);
		memcpy(buf + (pos - off), (uint8_t *)&v + skip, n);
		pos += n;
	}
}

/* DIR must be empty or absent; creates it. Returns 0 or -1 (reported). */
static int prepare_dir(const char *dir)
{
	struct dirent *e;
	DIR *dp;

	if (mkdir(dir, 0777) == 0)
		return 0;
	if (errno != EEXIST) {
		tool_report(dir, -errno);
		return -1;
	}
	dp = opendir(dir);
	if (!dp) {
		tool_report(dir, -errno);
		return -1;
	}
	while ((e = readdir(dp))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(dp);
			tool_error_file("exists", dir, "directory is not empty");
			return -1;
		}
	}
	closedir(dp);
	return 0;
}

/* Bytes the files in @d's directory take on disk now. */
static uint64_t disk_used(const struct demo *d)
{
	uint64_t n = 0;
	struct stat st;
	unsigned int l;

	for (l = 0; l < 3; l++)
		if (d->paths[l] && stat(d->paths[l], &st) == 0)
			n += (uint64_t)st.st_blocks * 512;
	if (d->dst && stat(d->dst, &st) == 0)
		n += (uint64_t)st.st_blocks * 512;
	return n;
}

/* The copy's default bytes in flight (bc_block_copy_params.buf_size). */
#define COPY_BUF_SIZE (16ull << 20)

/*
 * What the run will take, said before it starts: memory (the guest's
 * record of its disk, the copy's buffers, the guest's and the checks'
 * buffers) and the most disk it can fill (the chain's data, the guest's
 * writes, a copy as large as the disk).
 */
static void print_footprint(const struct demo *d, const struct live_opts *o,
			    bool temp, bool keep)
{
	unsigned int threads = o->guest.threads ? o->guest.threads : 4;
	uint64_t shadow = shadow_footprint(d->size, false);
	/* 8 MiB: the program, its libraries and I/O rings (measured ~6). */
	uint64_t mem = shadow + COPY_BUF_SIZE + threads * 512ull * 1024 +
		       (1u << 20) + (8u << 20);
	uint64_t chain = (layer_chunks(0) + layer_chunks(1) + layer_chunks(2)) * d->chunk;
	double secs = o->before_s + o->duration_s + o->after_s;
	uint64_t guest = o->guest.rate ? (uint64_t)((double)o->guest.rate * secs) : d->size;
	char m[32], sh[32], dk[32], ch[32], gw[32], sz[32];

	if (guest > d->size)
		guest = d->size;
	tool_human_size(mem, m, sizeof(m));
	tool_human_size(shadow, sh, sizeof(sh));
	tool_human_size(chain + guest + d->size, dk, sizeof(dk));
	tool_human_size(chain, ch, sizeof(ch));
	tool_human_size(guest, gw, sizeof(gw));
	tool_human_size(d->size, sz, sizeof(sz));
	printf("uses:   about %s of memory (the guest's record of what it wrote, %s,\n"
	       "        one generation number per 4 KiB block; the copy's 16 MiB of buffers;\n"
	       "        the program's own 8 MiB)\n"
	       "        and up to %s of disk in %s: the chain's %s of data,\n"
	       "        what the guest writes (at most %s) and a copy of up to %s;\n"
	       "        %s\n",
	       m, sh, dk, d->dir, ch, gw, sz,
	       temp && !keep ? "all removed at the end (--keep keeps them)"
			     : "kept at the end");
	fflush(stdout);
}

static void remove_files(struct demo *d)
{
	unsigned int l;

	for (l = 0; l < 3; l++)
		if (d->paths[l])
			(void)unlink(d->paths[l]);
	if (d->dst)
		(void)unlink(d->dst);
	(void)rmdir(d->dir);
}

int cmd_demo(int argc, char **argv)
{
	struct live_opts o = {
		.mode = LIVE_AUTO,
		.guest = { .rate = 50ull << 20 },
		.before_s = 1,
		.duration_s = 3,
		.settle_s = 0.3,
		.timeout_s = 60,
		.after_s = 1,
		.pivot = true,
		.dst_format = "qcow2",
	};
	struct demo d = { .size = 1ull << 30 };
	struct live_result *res = NULL;
	struct tool_opts common = { 0 };
	bool json, keep = false, temp;
	bc_engine *eng = NULL;
	uint8_t *buf = NULL;
	char tmpl[] = "/tmp/blockcopy-demo.XXXXXX", extra[1024];
	unsigned int l;
	uint64_t v;
	int c, ret = TOOL_EXIT_FAILURE;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_SIZE:
			if (tool_parse_size(optarg, &v) < 0 || v < (16u << 20) ||
			    v % (4u << 20) || v > (64ull << 30))
				return tool_usage_error("demo", "invalid size '%s' (a multiple of 4M, 16M..64G)", optarg);
			d.size = v;
			break;
		case OPT_KEEP:
			keep = true;
			break;
		default:
			c = live_option("demo", c, argv, &o, &common);
			if (c != TOOL_CONTINUE)
				return c;
		}
	}
	json = common.json;
	if (argc - optind > 1)
		return tool_usage_error("demo", "expected at most one DIR");
	if (o.duration_s < 2 * o.before_s) {
		o.before_s = o.duration_s / 2;
		o.after_s = o.duration_s / 2;
	}
	tool_json_errors(json); /* until the run's own result is printed */
	temp = argc == optind;
	if (temp) {
		if (!mkdtemp(tmpl)) {
			tool_report("/tmp", -errno);
			return TOOL_EXIT_FAILURE;
		}
		d.dir = strdup(tmpl);
	} else {
		if (prepare_dir(argv[optind]) < 0)
			return TOOL_EXIT_FAILURE;
		d.dir = strdup(argv[optind]);
	}
	d.chunk = d.size / NCHUNKS;
	for (l = 0; l < 3; l++)
		d.paths[l] = d.dir ? join(d.dir, layer_names[l]) : NULL;
	d.dst = d.dir ? join(d.dir, "copy.qcow2") : NULL;
	buf = malloc(d.chunk);
	res = calloc(1, sizeof(*res));
	if (!d.dst || !d.paths[0] || !d.paths[1] || !d.paths[2] || !buf || !res) {
		tool_report(tmpl, -ENOMEM);
		goto out;
	}
	eng = bc_engine_new(0);
	if (!eng) {
		tool_report(d.dir, -EIO);
		goto out;
	}
	if (!json)
		print_footprint(&d, &o, temp, keep);
	for (l = 0; l < 3; l++)
		if (make_layer(eng, &d, l, buf) < 0)
			goto out;
	free(buf); /* the guest needs no copy of the chain */
	buf = NULL;
	o.src = d.paths[2];
	o.dst = d.dst;

	if (!json) {
		char sz[32];

		tool_human_size(d.size, sz, sizeof(sz));
		printf("chain:  %s: base.qcow2 (%" PRIu64 " MiB of data) <- snap1.qcow2 (%"
		       PRIu64 " MiB) <- snap2.qcow2 (%" PRIu64 " MiB), %s virtual\n",
		       d.dir, layer_chunks(0) * d.chunk >> 20,
		       layer_chunks(1) * d.chunk >> 20,
		       layer_chunks(2) * d.chunk >> 20, sz);
		fflush(stdout);
	}
	c = live_run(eng, &o, chain_content, &d, res);
	tool_json_errors(false);
	if (json) {
		int n = snprintf(extra, sizeof(extra),
				 "\"kept\": %s, \"disk_bytes\": %" PRIu64 ", \"dir\": ",
				 temp && !keep ? "false" : "true", disk_used(&d));

		if (n > 0 && (size_t)n < sizeof(extra)) {
			FILE *f = fmemopen(extra + n, sizeof(extra) - (size_t)n, "w");

			if (f) {
				tool_json_string(f, d.dir);
				fputs(", ", f);
				fclose(f);
			}
		}
		live_print_json(stdout, &o, res, extra);
	} else {
		live_print_text(stdout, &o, res);
	}
	if (c < 0) {
		tool_fail(res->interrupted ? "interrupted" : "verify-failed", "%s",
			  res->error);
		goto out;
	}
	if (!json)
		printf("verified: destination matches the guest's %" PRIu64 " writes\n",
		       res->writes);
	ret = TOOL_EXIT_OK;
out:
	if (eng)
		bc_engine_free(eng);
	if (d.dir && !json) {
		char used[32];

		tool_human_size(disk_used(&d), used, sizeof(used));
		printf("%s %s (%s on disk)\n", temp && !keep ? "removed:" : "kept:   ",
		       d.dir, used);
	}
	if (d.dir && temp && !keep)
		remove_files(&d);
	for (l = 0; l < 3; l++)
		free(d.paths[l]);
	free(d.dst);
	free(d.dir);
	free(buf);
	free(res);
	return ret;
}
