/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blockcopy: the command-line tool. Dispatches to one subcommand per
 * file (cmd-<name>.c); this file holds the table, --help and --version.
 *
 * Exit statuses: 0 success, 1 failure, 2 bad usage; `compare` and
 * `check` have their own (see their help). Every failure prints one line
 * on stderr.
 */
#include "tool.h"

#include <stdio.h>
#include <string.h>

#ifndef BC_VERSION
#define BC_VERSION "unknown"
#endif

static const struct tool_cmd cmds[] = {
	{"create", cmd_create, "create a qcow2 or raw image", tool_help_create},
	{"info", cmd_info, "show an image's format, sizes and backing file",
	 tool_help_info},
	{"map", cmd_map, "show where an image's guest data lives",
	 tool_help_map},
	{"compare", cmd_compare, "compare the guest content of two images",
	 tool_help_compare},
	{"check", cmd_check, "check a qcow2 image's metadata", tool_help_check},
	{"bitmap", cmd_bitmap, "add, remove, enable, disable or merge qcow2 dirty bitmaps",
	 tool_help_bitmap},
	{"copy", cmd_copy, "copy an image chain with a COPY job, then pivot",
	 tool_help_copy},
	{"pull", cmd_pull, "pull backing data into an image (block stream)",
	 tool_help_pull},
	{"demo", cmd_demo, "live mirror under a synthetic guest, end to end",
	 tool_help_demo},
	{"mirror", cmd_mirror,
	 "live mirror of your images under a synthetic guest (writes SRC)",
	 tool_help_mirror},
};

static const struct tool_cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	}
	return NULL;
}

static void print_main_help(void)
{
	size_t i;

	printf("Usage: blockcopy COMMAND [OPTIONS] ARGS...\n"
	       "       blockcopy help COMMAND | COMMAND --help\n"
	       "       blockcopy --version\n"
	       "\n"
	       "Commands:\n");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		printf("  %-10s %s\n", cmds[i].name, cmds[i].summary);
	printf("\n"
	       "Sizes take K, M, G or T suffixes (powers of 1024); a bare\n"
	       "size is bytes. Exit status: 0 success, 1 failure, 2 bad\n"
	       "usage (compare and check: see their help).\n");
}

void tool_print_help(const char *name)
{
	const struct tool_cmd *c = find_cmd(name);

	if (c)
		fputs(c->help, stdout);
}

int main(int argc, char **argv)
{
	const struct tool_cmd *c;

	if (argc < 2)
		return tool_usage_error(NULL, "missing command");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		print_main_help();
		return TOOL_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("blockcopy %s\n", BC_VERSION);
		return TOOL_EXIT_OK;
	}
	if (!strcmp(argv[1], "help")) {
		if (argc == 2) {
			print_main_help();
			return TOOL_EXIT_OK;
		}
		if (argc > 3)
			return tool_usage_error(NULL,
						"help takes one command name");
		if (!find_cmd(argv[2]))
			return tool_usage_error(NULL, "unknown command '%s'",
						argv[2]);
		tool_print_help(argv[2]);
		return TOOL_EXIT_OK;
	}
	if (argv[1][0] == '-')
		return tool_usage_error(NULL, "unknown option '%s'", argv[1]);
	c = find_cmd(argv[1]);
	if (!c)
		return tool_usage_error(NULL, "unknown command '%s'", argv[1]);
	return c->run(argc - 1, argv + 1);
}
