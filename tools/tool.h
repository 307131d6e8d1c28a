/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared pieces of the blockcopy command-line tool: the subcommand table,
 * argument parsing (sizes, rates, on/off), error reporting and JSON
 * string output.
 *
 * Every subcommand is `int cmd_<name>(int argc, char **argv)` where
 * argv[0] is the subcommand name; it returns the process exit status.
 * Failures print exactly one line on stderr, "blockcopy: <reason>", the
 * reason naming the file it concerns.
 */
#ifndef BC_TOOLS_TOOL_H
#define BC_TOOLS_TOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses common to every subcommand (compare and check differ). */
#define TOOL_EXIT_OK	  0
#define TOOL_EXIT_FAILURE 1
#define TOOL_EXIT_USAGE	  2

/* One subcommand: its name, entry point and help text. */
struct tool_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary; /* one line for `blockcopy --help` */
	const char *help;    /* full text for `blockcopy help NAME` */
};

int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_copy(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_mirror(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);

/* Help texts, defined next to each command. */
extern const char tool_help_create[];
extern const char tool_help_info[];
extern const char tool_help_map[];
extern const char tool_help_compare[];
extern const char tool_help_check[];
extern const char tool_help_copy[];
extern const char tool_help_pull[];
extern const char tool_help_demo[];
extern const char tool_help_mirror[];
extern const char tool_help_bitmap[];

/* Prints the help of subcommand @name on stdout. */
void tool_print_help(const char *name);

/*
 * Parses a size: decimal digits with an optional K, M, G or T suffix
 * (case-insensitive, powers of 1024). A fraction is accepted with a
 * suffix when the result is a whole number of bytes ("1.5M" = 1572864,
 * "0.1K" is refused). Returns 0, or -EINVAL (malformed) / -ERANGE
 * (does not fit in 63 bits).
 */
int tool_parse_size(const char *s, uint64_t *out);

/*
 * Parses a rate in bytes per second: a size with a suffix is bytes per
 * second ("50M" = 50 MiB/s); a bare number is MiB/s, virsh's unit for
 * --bandwidth. Returns 0, -EINVAL or -ERANGE as tool_parse_size().
 */
int tool_parse_rate(const char *s, uint64_t *out);

/*
 * Parses a duration in seconds (a decimal number, fractions allowed) of
 * at least @min and at most one day. Returns 0 or -EINVAL.
 */
int tool_parse_seconds(const char *s, double min, double *out);

/* Parses a thread count, 1..64. Returns 0 or -EINVAL. */
int tool_parse_threads(const char *s, unsigned int *out);

/*
 * --output=json|human (qemu-img's spelling): sets *json. A bad value is
 * reported as a usage error of @cmd; returns 0 or -1.
 */
int tool_parse_output(const char *cmd, const char *arg, bool *json);

/*
 * After option parsing: exactly one image argument at argv[optind] and a
 * known -f FMT (or none). Sets *path; a problem is reported as a usage
 * error of @cmd and returns -1.
 */
int tool_one_image(const char *cmd, int argc, char **argv, const char *format,
		   const char **path);

/*
 * The options several subcommands share, one meaning each: -f/--format,
 * --json, --output=json|human, --progress, -q/--quiet, --backing-chain,
 * -h/--help. A subcommand lists those it takes in its getopt_long()
 * tables (long ones with the codes below) and hands every option it does
 * not handle itself to tool_common_option().
 */
enum {
	TOOL_OPT_JSON = 0x1000, /* above every subcommand's own codes */
	TOOL_OPT_PROGRESS,
	TOOL_OPT_CHAIN,
};

struct tool_opts {
	const char *format; /* -f FMT; NULL: probe */
	bool json;
	bool progress;
	bool quiet;
	bool chain;         /* --backing-chain */
};

/* Parsing goes on (tool_common_option(), tool_image_command()). */
#define TOOL_CONTINUE (-1)

/*
 * Option @c, as getopt_long() returned it (optarg set), of subcommand
 * @cmd into @o. Returns TOOL_CONTINUE, or the exit status to return now:
 * TOOL_EXIT_OK after -h (the help printed), TOOL_EXIT_USAGE after an
 * unknown option, a missing argument or a bad --output (reported).
 */
int tool_common_option(const char *cmd, int c, char **argv,
		       struct tool_opts *o);

/*
 * The command line of a subcommand that reads one image (check, info,
 * map): -f/--format, --json, --output, -h/--help and, with @chain_option,
 * --backing-chain; then exactly one IMG, into *@path, of a known format.
 * --json turns on JSON errors. Returns TOOL_CONTINUE, or the exit status
 * to return now.
 */
int tool_image_command(const char *cmd, int argc, char **argv,
		       bool chain_option, struct tool_opts *o,
		       const char **path);

/* A --granularity bc_block_copy accepts: a power of two, 4K..64M. */
bool tool_granularity_ok(uint64_t v);

/* A --buf-size bc_block_copy accepts with @granularity (0: default). */
bool tool_buf_size_ok(uint64_t v, uint64_t granularity);

/* -f FMT names a format the tool knows (qcow2, raw). */
bool tool_format_known(const char *format);

/* Parses on|off|true|false|yes|no. Returns 0 or -EINVAL. */
int tool_parse_bool(const char *s, bool *out);

/*
 * Reports a usage error of subcommand @cmd (NULL: the tool itself) as one
 * line with a hint where to look, and returns TOOL_EXIT_USAGE.
 */
__attribute__((format(printf, 2, 3))) int
tool_usage_error(const char *cmd, const char *fmt, ...);

/*
 * Reports what getopt_long() (called with opterr = 0 and an optstring
 * starting with ':') returned as '?' or ':' for subcommand @cmd, as a
 * usage error. Returns TOOL_EXIT_USAGE.
 */
int tool_getopt_error(const char *cmd, int c, char **argv);

/*
 * Failures (tool-report.c). Each prints one line "blockcopy: <reason>" on
 * stderr, library flag names reworded as the tool's options; after
 * tool_json_errors(true) also {"error": {"code": C, "message": M}} on
 * stdout. C is the BC_ERR_* code in words ("exists", "io-error", ...) or
 * one of the tool's own ("interrupted", "incomplete", "no-memory").
 */
void tool_json_errors(bool on);

/* Rewrites @msg with the tool's option names into @out of @len. */
void tool_wording(const char *msg, char *out, size_t len);

__attribute__((format(printf, 2, 3))) void tool_fail(const char *code,
						     const char *fmt, ...);

/*
 * The failure @neg_errno of an operation on @file: the message recorded
 * in bc_last_error() when there is one (formats name the file
 * themselves), else "<file>: <strerror>".
 */
void tool_report(const char *file, int neg_errno);

/* A job's error as delivered with its FAILED event. */
struct bc_error;
void tool_report_error(const struct bc_error *e);

/* "blockcopy: <file>: <message>". */
__attribute__((format(printf, 3, 4))) void
tool_error_file(const char *code, const char *file, const char *fmt, ...);

/* Prints "blockcopy: warning: <message>" on stderr. */
__attribute__((format(printf, 1, 2))) void tool_warn(const char *fmt, ...);

/*
 * SIGINT/SIGTERM and SIGUSR1 (tool-signal.c): one handler for the whole
 * tool, which only records the request; job loops poll
 * tool_stop_requested() and end their job cleanly, and
 * tool_resume_requested() (true once per SIGUSR1) to resume a paused job.
 */
void tool_signals_install(void);
bool tool_stop_requested(void);
bool tool_resume_requested(void);

/* Writes @s as a JSON string literal, quotes included, to @f. */
void tool_json_string(FILE *f, const char *s);

/*
 * Formats @val like qemu's size_to_str(): three significant digits and a
 * binary unit ("324 KiB", "1.5 MiB", "0 B"). Writes into @buf of @len.
 */
void tool_human_size(uint64_t val, char *buf, size_t len);

/*
 * The path a backing name refers to, the way qemu-img shows it: the
 * name itself when absolute or when @overlay has no directory part, else
 * @overlay's directory joined with the name. Returns a malloc'd string
 * or NULL (ENOMEM).
 */
char *tool_backing_path(const char *overlay, const char *name);

#endif /* BC_TOOLS_TOOL_H */
