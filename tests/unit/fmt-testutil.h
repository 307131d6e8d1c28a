/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers for the format-layer unit tests (test-raw.c, test-chain.c):
 * a scratch directory per test, shell commands, and the block status of
 * an image rendered exactly as `qemu-img map --output=json` prints it, so
 * tests compare our answers with qemu-img's byte for byte.
 */
#ifndef BC_TESTS_UNIT_FMT_TESTUTIL_H
#define BC_TESTS_UNIT_FMT_TESTUTIL_H

#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fmt.h"
#include "lib/common/error.h"
#include "tests/scratch.h"

static char tu_dir[4096];

static char tu_base[2048];

/*
 * Unchecked fixture (parent process, always torn down): a directory per
 * TCase under $BC_TEST_TMPDIR that holds every test's scratch directory,
 * so a failed test (whose checked teardown does not run) leaves nothing.
 */
static inline void tu_case_setup(void)
{
	scratch_dir(tu_base, sizeof(tu_base), NULL, "fmt-");
}

static inline void tu_case_teardown(void)
{
	scratch_remove(tu_base);
}

/* Checked fixture: a fresh scratch directory, also the test's CWD. */
static inline void tu_setup(void)
{
	scratch_dir(tu_dir, sizeof(tu_dir), tu_base, "t-");
	ck_assert_int_eq(chdir(tu_dir), 0);
	bc_error_reset();
}

static inline void tu_teardown(void)
{
	ck_assert_int_eq(chdir("/"), 0);
	scratch_remove(tu_dir);
}

/* Both fixtures on @tc. */
static inline void tu_add_fixtures(TCase *tc)
{
	tcase_add_unchecked_fixture(tc, tu_case_setup, tu_case_teardown);
	tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
}

/* Run a shell command (printf-style) in the CWD; asserts success. */
__attribute__((format(printf, 1, 2))) static inline void tu_sh(const char *fmt,
							       ...)
{
	static char cmd[8192]; /* tests are single-threaded */
	va_list ap;
	int ret;

	va_start(ap, fmt);
	(void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	ret = system(cmd);
	if (ret != 0)
		ck_abort_msg("command failed (%d): %s", ret, cmd);
}

/* stdout of a shell command, malloc'd. */
__attribute__((format(printf, 1, 2))) static inline char *tu_out(const char *fmt,
								...)
{
	static char cmd[8192]; /* tests are single-threaded */
	char *buf = NULL;
	size_t len = 0, cap = 0;
	va_list ap;
	FILE *f;
	int c;

	va_start(ap, fmt);
	(void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	while ((c = fgetc(f)) != EOF) {
		if (len + 2 > cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			ck_assert_ptr_nonnull(buf);
		}
		buf[len++] = (char)c;
	}
	if (!buf) {
		buf = malloc(1);
		ck_assert_ptr_nonnull(buf);
	}
	buf[len] = '\0';
	ck_assert_int_eq(pclose(f), 0);
	return buf;
}

struct tu_map_ent {
	unsigned long long start, length;
	int depth;
	int present, zero, data;
	long long offset; /* -1: none */
};

static inline void tu_map_emit(char **out, size_t *len, size_t *cap, int *first,
			       const struct tu_map_ent *e)
{
	char line[512];
	int n;

	n = snprintf(line, sizeof(line),
		     "%s{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
		     *first ? "[" : ",\n", e->start, e->length, e->depth,
		     e->present ? "true" : "false", e->zero ? "true" : "false",
		     e->data ? "true" : "false");
	if (e->offset >= 0)
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      ", \"offset\": %lld", e->offset);
	n += snprintf(line + n, sizeof(line) - (size_t)n, "}");
	*first = 0;
	while (*len + (size_t)n + 4 > *cap) {
		*cap = *cap ? *cap * 2 : 4096;
		*out = realloc(*out, *cap);
		ck_assert_ptr_nonnull(*out);
	}
	memcpy(*out + *len, line, (size_t)n + 1);
	*len += (size_t)n;
}

/*
 * Our chain block status of the whole image as qemu-img map --output=json
 * prints it (entries merged as qemu-img merges them). malloc'd.
 */
static inline char *tu_map_json(struct fmt_image *img)
{
	struct tu_map_ent cur = { 0 }, e;
	char *out = NULL;
	size_t len = 0, cap = 0;
	int first = 1, have = 0;
	uint64_t off = 0;

	while (off < img->size) {
		struct fmt_extent ext;

		ck_assert_int_eq(fmt_chain_block_status(img, off, img->size - off,
							&ext), 0);
		ck_assert_uint_gt(ext.len, 0);
		e.start = off;
		e.length = ext.len;
		e.depth = ext.depth;
		e.present = ext.state != FMT_UNALLOC;
		e.zero = ext.state != FMT_DATA;
		e.data = ext.state == FMT_DATA;
		e.offset = ext.state == FMT_UNALLOC ? -1 : ext.host_off;
		if (have && cur.depth == e.depth && cur.present == e.present &&
		    cur.zero == e.zero && cur.data == e.data &&
		    ((cur.offset < 0 && e.offset < 0) ||
		     (cur.offset >= 0 && e.offset >= 0 &&
		      (unsigned long long)cur.offset + cur.length ==
			      (unsigned long long)e.offset))) {
			cur.length += e.length;
		} else {
			if (have)
				tu_map_emit(&out, &len, &cap, &first, &cur);
			cur = e;
			have = 1;
		}
		off += ext.len;
	}
	if (have)
		tu_map_emit(&out, &len, &cap, &first, &cur);
	if (!out) {
		out = malloc(4);
		ck_assert_ptr_nonnull(out);
		strcpy(out, "[");
		len = 1;
	}
	out = realloc(out, len + 3);
	ck_assert_ptr_nonnull(out);
	strcpy(out + len, "]\n");
	return out;
}

/* Assert that our map of @img equals qemu-img's map of @path. */
static inline void tu_assert_map_matches(struct fmt_image *img,
					 const char *path, const char *fmt)
{
	char *ours = tu_map_json(img);
	char *theirs = tu_out("qemu-img map --output=json -f %s '%s'", fmt, path);

	ck_assert_str_eq(ours, theirs);
	free(ours);
	free(theirs);
}

/* The whole file at @path, malloc'd (at least one byte); its size in *@len. */
static inline uint8_t *tu_read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fmt_pread_file(fd, buf, (size_t)st.st_size, 0), 0);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Fill @buf with a pattern that depends on the byte offset and @seed. */
static inline void tu_pattern(uint8_t *buf, size_t n, uint64_t off,
			      unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = (uint8_t)((off + i) * 7u + seed + ((off + i) >> 9));
}

#endif /* BC_TESTS_UNIT_FMT_TESTUTIL_H */
