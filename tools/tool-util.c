/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Argument parsing and JSON/size output shared by the blockcopy
 * subcommands (failure reporting is tool-report.c). See tool.h.
 */
#include "tool.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "blockcopy.h"
#include "common/error.h"
#include "common/util.h"

/* Fraction digits we keep exactly: 10^6 * 2^40 still fits in 64 bits. */
#define FRACTION_DIGITS_MAX 6

static int suffix_shift(char c)
{
	switch (toupper((unsigned char)c)) {
	case 'K':
		return 10;
	case 'M':
		return 20;
	case 'G':
		return 30;
	case 'T':
		return 40;
	default:
		return -1;
	}
}

/*
 * Parses "<digits>[.<digits>][suffix]" into a whole number of bytes;
 * @bare_shift is the unit of a number without suffix (0 bytes, 20 MiB).
 */
static int parse_scaled(const char *s, int bare_shift, uint64_t *out)
{
	uint64_t whole = 0, frac = 0, frac_div = 1, mult, res, part;
	const char *p = s;
	bool has_digits = false, has_point = false;
	int shift = bare_shift;

	while (isdigit((unsigned char)*p)) {
		if (bc_mul_overflow(whole, 10u, &whole) ||
		    bc_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return -ERANGE;
		has_digits = true;
		p++;
	}
	if (*p == '.') {
		has_point = true;
		p++;
		while (isdigit((unsigned char)*p)) {
			if (frac_div >= 1000000) {
				/* Beyond what we keep: only zeros allowed. */
				if (*p != '0')
					return -EINVAL;
			} else {
				frac = frac * 10 + (uint64_t)(*p - '0');
				frac_div *= 10;
			}
			has_digits = true;
			p++;
		}
	}
	if (!has_digits)
		return -EINVAL;
	if (*p) {
		shift = suffix_shift(*p);
		if (shift < 0 || p[1])
			return -EINVAL;
	}
	mult = UINT64_C(1) << shift;
	if (has_point && frac) {
		/* frac < 10^6 and mult <= 2^40: the product fits. */
		part = frac * mult;
		if (part % frac_div)
			return -EINVAL; /* not a whole number of bytes */
		part /= frac_div;
	} else {
		part = 0;
	}
	if (bc_mul_overflow(whole, mult, &res) ||
	    bc_add_overflow(res, part, &res) || res > (uint64_t)INT64_MAX)
		return -ERANGE;
	*out = res;
	return 0;
}

int tool_parse_size(const char *s, uint64_t *out)
{
	return parse_scaled(s, 0, out);
}

int tool_parse_rate(const char *s, uint64_t *out)
{
	return parse_scaled(s, 20, out);
}

int tool_parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes")) {
		*out = true;
		return 0;
	}
	if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

void tool_json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f); /* UTF-8 passes through */
			break;
		}
	}
	fputc('"', f);
}

void tool_human_size(uint64_t val, char *buf, size_t len)
{
	static const char *const units[] = {"",	  "Ki", "Mi", "Gi",
					    "Ti", "Pi", "Ei"};
	/*
	 * qemu switches to the next unit once the value would print as
	 * 1000 or more: the unit is the largest 1024^i <= val * 1024/1000.
	 */
	double scaled = (double)val * 1024.0 / 1000.0;
	unsigned int i = 0;

	while (i + 1 < BC_ARRAY_SIZE(units) &&
	       scaled >= (double)(UINT64_C(1) << (10 * (i + 1))))
		i++;
	snprintf(buf, len, "%0.3g %sB",
		 (double)val / (double)(UINT64_C(1) << (10 * i)), units[i]);
}

char *tool_backing_path(const char *overlay, const char *name)
{
	const char *slash = strrchr(overlay, '/');
	size_t dir_len;
	char *p;

	if (name[0] == '/' || !slash)
		return strdup(name);
	dir_len = (size_t)(slash - overlay) + 1;
	p = malloc(dir_len + strlen(name) + 1);
	if (!p)
		return NULL;
	memcpy(p, overlay, dir_len);
	strcpy(p + dir_len, name);
	return p;
}

int tool_parse_output(const char *cmd, const char *arg, bool *json)
{
	if (!strcmp(arg, "json")) {
		*json = true;
	} else if (!strcmp(arg, "human")) {
		*json = false;
	} else {
		tool_usage_error(cmd, "unknown output format '%s'", arg);
		return -1;
	}
	return 0;
}

int tool_one_image(const char *cmd, int argc, char **argv, const char *format,
		   const char **path)
{
	if (optind >= argc) {
		tool_usage_error(cmd, "missing image name");
		return -1;
	}
	if (optind + 1 < argc) {
		tool_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
		return -1;
	}
	if (format && !tool_format_known(format)) {
		tool_usage_error(cmd, "unknown format '%s'", format);
		return -1;
	}
	*path = argv[optind];
	return 0;
}

int tool_common_option(const char *cmd, int c, char **argv,
		       struct tool_opts *o)
{
	switch (c) {
	case 'f':
		o->format = optarg;
		return TOOL_CONTINUE;
	case TOOL_OPT_JSON:
		o->json = true;
		return TOOL_CONTINUE;
	case 'O': /* qemu-img's spelling, for muscle memory */
		if (tool_parse_output(cmd, optarg, &o->json) < 0)
			return TOOL_EXIT_USAGE;
		return TOOL_CONTINUE;
	case TOOL_OPT_PROGRESS:
		o->progress = true;
		return TOOL_CONTINUE;
	case 'q':
		o->quiet = true;
		return TOOL_CONTINUE;
	case TOOL_OPT_CHAIN:
		o->chain = true;
		return TOOL_CONTINUE;
	case 'h':
		tool_print_help(cmd);
		return TOOL_EXIT_OK;
	default:
		return tool_getopt_error(cmd, c, argv);
	}
}

int tool_image_command(const char *cmd, int argc, char **argv,
		       bool chain_option, struct tool_opts *o,
		       const char **path)
{
	static const struct option image_opts[] = {
		{"format", required_argument, NULL, 'f'},
		{"json", no_argument, NULL, TOOL_OPT_JSON},
		{"output", required_argument, NULL, 'O'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const struct option chain_opts[] = {
		{"format", required_argument, NULL, 'f'},
		{"backing-chain", no_argument, NULL, TOOL_OPT_CHAIN},
		{"json", no_argument, NULL, TOOL_OPT_JSON},
		{"output", required_argument, NULL, 'O'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const struct option *long_opts = chain_option ? chain_opts : image_opts;
	int c, ret;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":f:h", long_opts, NULL)) != -1) {
		ret = tool_common_option(cmd, c, argv, o);
		if (ret != TOOL_CONTINUE)
			return ret;
	}
	if (tool_one_image(cmd, argc, argv, o->format, path) < 0)
		return TOOL_EXIT_USAGE;
	tool_json_errors(o->json);
	return TOOL_CONTINUE;
}

int tool_parse_seconds(const char *s, double min, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < min || v > 86400)
		return -EINVAL;
	*out = v;
	return 0;
}

int tool_parse_threads(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < 1 || v > 64)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

/*
 * The limits bc_block_copy_params documents (lib/blockcopy.h), checked
 * here so that a value out of range is a usage error of the tool, worded
 * with its options, rather than a failure of the library call.
 */
#define GRANULARITY_MIN	    (4u << 10)
#define GRANULARITY_MAX	    (64u << 20)
#define GRANULARITY_DEFAULT (64u << 10)
#define BUF_SIZE_MAX	    (1ull << 30)

bool tool_granularity_ok(uint64_t v)
{
	return v >= GRANULARITY_MIN && v <= GRANULARITY_MAX && !(v & (v - 1));
}

bool tool_buf_size_ok(uint64_t v, uint64_t granularity)
{
	return v >= (granularity ? granularity : GRANULARITY_DEFAULT) &&
	       v <= BUF_SIZE_MAX;
}

bool tool_format_known(const char *format)
{
	return !strcmp(format, "qcow2") || !strcmp(format, "raw");
}
