/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * How the tool reports a failure (see tool.h): one line on stderr,
 * "blockcopy: <reason>", and, when the command was asked for JSON, the
 * same reason as one JSON object on stdout,
 *
 *   {"error": {"code": "exists", "message": "..."}}
 *
 * so that a script reading stdout learns why there is no result. Usage
 * errors only go to stderr: the command line was not understood, so
 * nothing on it (--json included) is acted on.
 *
 * The library words its messages for libvirt-style callers (flag names
 * such as REUSE_EXT); the tool's user knows its options instead, so each
 * message passes through tool_wording() before it is shown.
 */
#include "tool.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <string.h>

#include "blockcopy.h"
#include "common/error.h"
#include "common/util.h"

/* Set by commands that print JSON: failures then also go to stdout. */
static bool json_errors;

void tool_json_errors(bool on)
{
	json_errors = on;
}

/* Library wording → the tool's option names. */
static const struct {
	const char *lib;
	const char *tool;
} wording[] = {
	{"REUSE_EXT", "--reuse-external"},
	{"SHALLOW", "--shallow"},
	{"SYNCHRONOUS_WRITES", "--mode write-blocking"},
	{"AUTO_CONVERGE", "--mode auto"},
};

void tool_wording(const char *msg, char *out, size_t len)
{
	size_t n = 0;

	assert(len > 0);
	while (*msg && n + 1 < len) {
		size_t i, l = 0;

		for (i = 0; i < BC_ARRAY_SIZE(wording); i++) {
			l = strlen(wording[i].lib);
			if (!strncmp(msg, wording[i].lib, l))
				break;
		}
		if (i < BC_ARRAY_SIZE(wording)) {
			int w = snprintf(out + n, len - n, "%s", wording[i].tool);

			n = w < 0 || (size_t)w >= len - n ? len - 1 : n + (size_t)w;
			msg += l;
		} else {
			out[n++] = *msg++;
		}
	}
	out[n] = '\0';
}

/* BC_ERR_* as the "code" of the JSON error object. */
static const char *code_name(int code)
{
	switch (code) {
	case BC_ERR_OK:
	case BC_ERR_INTERNAL:
		return "internal";
	case BC_ERR_NO_MEMORY:
		return "no-memory";
	case BC_ERR_INVALID_ARG:
		return "invalid-argument";
	case BC_ERR_OPERATION_INVALID:
		return "operation-invalid";
	case BC_ERR_BLOCK_COPY_ACTIVE:
		return "block-copy-active";
	case BC_ERR_NO_SUCH_FILE:
		return "no-such-file";
	case BC_ERR_EXISTS:
		return "exists";
	case BC_ERR_IO:
		return "io-error";
	case BC_ERR_NO_SPACE:
		return "no-space";
	case BC_ERR_IMAGE_CORRUPT:
		return "image-corrupt";
	case BC_ERR_UNSUPPORTED:
		return "unsupported";
	}
	return "internal";
}

/* The one place a failure is printed. */
static void fail_line(const char *code, const char *msg)
{
	char worded[BC_ERROR_MESSAGE_MAX + 512];

	tool_wording(msg, worded, sizeof(worded));
	fprintf(stderr, "blockcopy: %s\n", worded);
	if (json_errors) {
		printf("{\"error\": {\"code\": ");
		tool_json_string(stdout, code);
		printf(", \"message\": ");
		tool_json_string(stdout, worded);
		printf("}}\n");
		fflush(stdout);
	}
}

void tool_fail(const char *code, const char *fmt, ...)
{
	char msg[BC_ERROR_MESSAGE_MAX + 512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_line(code, msg);
}

void tool_report(const char *file, int neg_errno)
{
	const bc_error *e = bc_last_error();
	char buf[256];

	if (e->code && e->message[0]) {
		fail_line(code_name(e->code), e->message);
		return;
	}
	tool_fail(code_name(bc_errno_to_code(-neg_errno)), "%s: %s", file,
		  strerror_r(-neg_errno, buf, sizeof(buf)));
}

void tool_report_error(const bc_error *e)
{
	fail_line(code_name(e->code), e->message[0] ? e->message : "failed");
}

void tool_error_file(const char *code, const char *file, const char *fmt, ...)
{
	char msg[BC_ERROR_MESSAGE_MAX + 256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tool_fail(code, "%s: %s", file, msg);
}

void tool_warn(const char *fmt, ...)
{
	va_list ap;

	fputs("blockcopy: warning: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("blockcopy: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, " (try 'blockcopy help %s')\n", cmd);
	else
		fputs(" (try 'blockcopy --help')\n", stderr);
	return TOOL_EXIT_USAGE;
}

int tool_getopt_error(const char *cmd, int c, char **argv)
{
	/* getopt leaves optind past the offending argument. */
	const char *arg = optind > 0 ? argv[optind - 1] : "";
	bool is_long = arg[0] == '-' && arg[1] == '-';

	if (c == ':') {
		if (is_long)
			return tool_usage_error(
				cmd, "option '%s' needs an argument", arg);
		return tool_usage_error(cmd, "option '-%c' needs an argument",
					optopt);
	}
	if (is_long)
		return tool_usage_error(cmd, "unknown option '%s'", arg);
	return tool_usage_error(cmd, "unknown option '-%c'", optopt);
}
