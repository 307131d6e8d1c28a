/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy compare: whether two chains show the guest the same bytes.
 *
 * Both chains' block status is asked first: a range that reads as zeros
 * in both (a hole, a zero cluster, unallocated everywhere) is skipped
 * without reading; a range that reads as zeros in one is read in the
 * other only and checked for zeros; the rest is read from both in
 * chunks of up to CHUNK bytes and compared. Unlike qemu-img, which
 * reports the 512-byte sector holding the first difference, the offset
 * reported is that of the first differing byte.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "formats/fmt.h"

/* Bytes read per image per step: large enough to stream. */
#define CHUNK (4u << 20)

/* compare's own exit statuses (qemu-img's). */
#define EXIT_SAME   0
#define EXIT_DIFFER 1
#define EXIT_ERROR  2

const char tool_help_compare[] =
	"Usage: blockcopy compare [-f FMT] [-F FMT] A B\n"
	"\n"
	"Compare the guest content of images A and B, each with its backing\n"
	"chain, as qemu-img compare does. Prints \"Images are identical.\" or\n"
	"\"Content mismatch at offset N!\" where N is the first differing byte\n"
	"(qemu-img rounds it down to 512). When the sizes differ it prints\n"
	"\"Warning: Image size mismatch!\" and the larger image must read as\n"
	"zeros past the end of the smaller. Opens both read-only.\n"
	"\n"
	"  -f FMT        A's format (qcow2 or raw); probed when absent\n"
	"  -F FMT        B's format\n"
	"  -h, --help    this text\n"
	"\n"
	"Exit status: 0 identical, 1 different, 2 error or bad usage.\n";

static const struct option long_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* One side of the comparison. */
struct side {
	const char *path;
	struct fmt_image *img;
	uint8_t *buf; /* CHUNK bytes */
};

/* Whether the range starting at @off reads as zeros, and for how long. */
static int zero_status(struct side *s, uint64_t off, uint64_t len, bool *zero,
		       uint64_t *n)
{
	struct fmt_extent ext;
	int ret;

	bc_error_reset();
	ret = fmt_chain_block_status(s->img, off, len, &ext);
	if (ret < 0) {
		tool_report(s->path, ret);
		return ret;
	}
	if (ext.len == 0) {
		tool_error_file("internal", s->path, "block status returned a bad extent");
		return -EIO;
	}
	*zero = ext.state != FMT_DATA;
	*n = BC_MIN(ext.len, len);
	return 0;
}

static int read_side(struct side *s, uint64_t off, size_t n)
{
	int ret;

	bc_error_reset();
	ret = fmt_pread(s->img, s->buf, n, off);
	if (ret < 0)
		tool_report(s->path, ret);
	return ret;
}

/* Index of the first nonzero byte of @buf, or @n when all are zero. */
static size_t first_nonzero(const uint8_t *buf, size_t n)
{
	size_t i;

	if (bc_is_zero(buf, n))
		return n;
	for (i = 0; i < n && !buf[i]; i++)
		;
	return i;
}

/* Index of the first byte where @a and @b differ, or @n. */
static size_t first_difference(const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t i, step;

	for (i = 0; i < n; i += step) {
		step = BC_MIN((size_t)4096, n - i);
		if (memcmp(a + i, b + i, step))
			break;
	}
	for (; i < n && a[i] == b[i]; i++)
		;
	return i;
}

/*
 * Compares guest [off, end) of both sides. Returns 0 same, 1 different
 * (*at = first differing byte), or -errno (reported).
 */
static int compare_common(struct side *a, struct side *b, uint64_t off,
			  uint64_t end, uint64_t *at)
{
	bool za, zb;
	uint64_t na, nb, n;
	size_t i;
	int ret;

	while (off < end) {
		ret = zero_status(a, off, end - off, &za, &na);
		if (ret < 0)
			return ret;
		ret = zero_status(b, off, end - off, &zb, &nb);
		if (ret < 0)
			return ret;
		n = BC_MIN(na, nb);
		if (za && zb) {
			off += n;
			continue;
		}
		n = BC_MIN(n, (uint64_t)CHUNK);
		if (!za) {
			ret = read_side(a, off, (size_t)n);
			if (ret < 0)
				return ret;
		}
		if (!zb) {
			ret = read_side(b, off, (size_t)n);
			if (ret < 0)
				return ret;
		}
		if (za)
			i = first_nonzero(b->buf, (size_t)n);
		else if (zb)
			i = first_nonzero(a->buf, (size_t)n);
		else
			i = first_difference(a->buf, b->buf, (size_t)n);
		if (i < n) {
			*at = off + i;
			return 1;
		}
		off += n;
	}
	return 0;
}

/* Checks that guest [off, end) of @s reads as zeros; as compare_common. */
static int check_zero(struct side *s, uint64_t off, uint64_t end, uint64_t *at)
{
	uint64_t n;
	bool zero;
	size_t i;
	int ret;

	while (off < end) {
		ret = zero_status(s, off, end - off, &zero, &n);
		if (ret < 0)
			return ret;
		if (zero) {
			off += n;
			continue;
		}
		n = BC_MIN(n, (uint64_t)CHUNK);
		ret = read_side(s, off, (size_t)n);
		if (ret < 0)
			return ret;
		i = first_nonzero(s->buf, (size_t)n);
		if (i < n) {
			*at = off + i;
			return 1;
		}
		off += n;
	}
	return 0;
}

static int open_side(struct side *s, const char *fmt)
{
	int ret;

	bc_error_reset();
	ret = fmt_open(s->path, fmt, 0, &s->img);
	if (ret < 0) {
		tool_report(s->path, ret);
		return ret;
	}
	s->buf = malloc(CHUNK);
	if (!s->buf) {
		tool_fail("no-memory", "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void close_side(struct side *s)
{
	free(s->buf);
	fmt_close(s->img);
}

static bool is_bad_format(const char *fmt)
{
	return fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw");
}

int cmd_compare(int argc, char **argv)
{
	struct side a = {0}, b = {0};
	const char *fmt_a = NULL, *fmt_b = NULL;
	struct side *larger;
	uint64_t common, at = 0;
	int c, ret, status = EXIT_ERROR;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":f:F:h", long_opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt_a = optarg;
			break;
		case 'F':
			fmt_b = optarg;
			break;
		case 'h':
			tool_print_help("compare");
			return EXIT_SAME;
		default:
			return tool_getopt_error("compare", c, argv);
		}
	}
	/* Bad usage is an error here (2), as tool_usage_error returns. */
	if (is_bad_format(fmt_a))
		return tool_usage_error("compare", "unknown format '%s'",
					fmt_a);
	if (is_bad_format(fmt_b))
		return tool_usage_error("compare", "unknown format '%s'",
					fmt_b);
	if (argc - optind < 2)
		return tool_usage_error("compare", "needs two image names");
	if (argc - optind > 2)
		return tool_usage_error("compare", "unexpected argument '%s'",
					argv[optind + 2]);
	a.path = argv[optind];
	b.path = argv[optind + 1];

	if (open_side(&a, fmt_a) < 0 || open_side(&b, fmt_b) < 0)
		goto out_close;

	common = BC_MIN(a.img->size, b.img->size);
	ret = compare_common(&a, &b, 0, common, &at);
	if (ret == 0 && a.img->size != b.img->size) {
		printf("Warning: Image size mismatch!\n");
		larger = a.img->size > b.img->size ? &a : &b;
		ret = check_zero(larger, common, larger->img->size, &at);
	}
	if (ret < 0)
		goto out_close;
	if (ret > 0) {
		printf("Content mismatch at offset %" PRIu64 "!\n", at);
		status = EXIT_DIFFER;
	} else {
		printf("Images are identical.\n");
		status = EXIT_SAME;
	}

out_close:
	close_side(&b);
	close_side(&a);
	return status;
}
