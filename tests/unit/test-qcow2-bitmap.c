/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for qcow2 persistent dirty bitmaps (formats/qcow2-bitmap.c),
 * with qemu-img as the oracle: bitmaps made by `qemu-img bitmap` record
 * our writes and stay consistent (`qemu-img check` clean, `qemu-img info`
 * shows them with the flags it should); a process that dies while writing
 * leaves them in use (inconsistent), never claiming a false state; the
 * verbs add/remove/clear/enable/disable/merge give images qemu-img reads
 * back; malformed directories are refused with a message naming the file
 * and the field.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

static int have_qemu;

static struct fmt_image *open_rw(const char *path)
{
	struct fmt_image *img = NULL;
	int ret = fmt_open(path, "qcow2", FMT_OPEN_RDWR | FMT_OPEN_NO_BACKING,
			   &img);

	ck_assert_msg(ret == 0, "open %s: %d %s", path, ret,
		      bc_error_get()->message);
	return img;
}

static struct fmt_image *open_ro(const char *path)
{
	struct fmt_image *img = NULL;
	int ret = fmt_open(path, "qcow2", FMT_OPEN_NO_BACKING, &img);

	ck_assert_msg(ret == 0, "open %s: %d %s", path, ret,
		      bc_error_get()->message);
	return img;
}

/* The granules set in bitmap @name of @path, as "i,j,k" (our reader). */
static char *set_bits(const char *path, const char *name)
{
	struct fmt_image *img = open_ro(path);
	static char out[4096];
	uint64_t nbits, i;
	uint32_t g;
	uint8_t *bits;
	size_t len = 0;
	int ret;

	ret = fmt_bitmap_read(img, name, &bits, &nbits, &g);
	ck_assert_msg(ret == 0, "read %s: %s", name, bc_error_get()->message);
	out[0] = '\0';
	for (i = 0; i < nbits; i++)
		if (bits[i / 8] & (1u << (i % 8)))
			len += (size_t)snprintf(out + len, sizeof(out) - len,
						"%s%llu", len ? "," : "",
						(unsigned long long)i);
	free(bits);
	fmt_close(img);
	return out;
}

static void assert_check_clean(const char *path)
{
	char *out = tu_out("qemu-img check '%s' 2>&1; echo rc=$?", path);

	ck_assert_msg(strstr(out, "No errors were found") && strstr(out, "rc=0"),
		      "qemu-img check %s:\n%s", path, out);
	free(out);
}

/* qemu-img info's bitmaps of @path as "name:flags:gran;..." */
static char *qemu_bitmaps(const char *path)
{
	return tu_out(
		"qemu-img info --output=json '%s' | python3 -c '"
		"import json,sys; d=json.load(sys.stdin)[\"format-specific\"][\"data\"];"
		"print(\";\".join(\"%%s:%%s:%%d\" %% (b[\"name\"], \"+\".join(b[\"flags\"]), b[\"granularity\"])"
		" for b in d.get(\"bitmaps\", [])))'",
		path);
}

static void make_image(const char *path)
{
	tu_sh("qemu-img create -q -f qcow2 '%s' 64M", path);
	tu_sh("qemu-img bitmap --add '%s' on", path);
	tu_sh("qemu-img bitmap --add -g 128K --disable '%s' off", path);
	/* QEMU's own write, recorded by QEMU: granule 0 of "on". */
	tu_sh("qemu-io -c 'write -P 1 0 4k' '%s' >/dev/null", path);
}

START_TEST(writes_are_recorded)
{
	struct fmt_image *img;
	static uint8_t buf[70000];
	char *s;

	if (!have_qemu)
		return;
	make_image("a.qcow2");
	ck_assert_str_eq(set_bits("a.qcow2", "on"), "0");
	img = open_rw("a.qcow2");
	memset(buf, 7, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 1 * MiB + 100), 0);
	ck_assert_int_eq(fmt_write_zeroes(img, 10 * MiB, 64 * KiB, 0), 0);
	ck_assert_int_eq(fmt_discard(img, 20 * MiB, 128 * KiB), 0);
	/* While we write, the enabled bitmap is in use on disk. */
	s = qemu_bitmaps("a.qcow2");
	ck_assert_str_eq(s, "on:in-use+auto:65536;off::131072\n");
	free(s);
	fmt_close(img);
	ck_assert(!bc_error_is_set());
	s = qemu_bitmaps("a.qcow2");
	ck_assert_str_eq(s, "on:auto:65536;off::131072\n");
	free(s);
	assert_check_clean("a.qcow2");
	/* 1M+100..+70000 covers granules 16,17; 10M = 160; 20M+128K = 320,321. */
	ck_assert_str_eq(set_bits("a.qcow2", "on"), "0,16,17,160,320,321");
	ck_assert_str_eq(set_bits("a.qcow2", "off"), "");
	/* And QEMU reads the same bits: merging into a fresh bitmap of a copy. */
	tu_sh("qemu-img bitmap --add a.qcow2 q && qemu-img bitmap --merge on a.qcow2 q");
	ck_assert_str_eq(set_bits("a.qcow2", "q"), "0,16,17,160,320,321");
	assert_check_clean("a.qcow2");
}
END_TEST

START_TEST(crash_leaves_in_use)
{
	struct fmt_image *img;
	uint8_t buf[4096] = { 1 };
	struct fmt_bitmap_info *l;
	size_t n;
	pid_t pid;
	int st;

	if (!have_qemu)
		return;
	make_image("c.qcow2");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		img = open_rw("c.qcow2");
		if (fmt_pwrite(img, buf, sizeof(buf), 5 * MiB) != 0)
			_exit(1);
		_exit(0); /* dies without closing: as a crash would */
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	img = open_ro("c.qcow2");
	ck_assert_int_eq(fmt_bitmap_list(img, &l, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(l[0].name, "on");
	ck_assert(l[0].in_use && l[0].enabled);
	ck_assert(!l[1].in_use && !l[1].enabled);
	fmt_bitmap_list_free(l, n);
	{
		uint8_t *bits;
		uint64_t nbits;
		uint32_t g;

		bc_error_reset();
		ck_assert_int_eq(fmt_bitmap_read(img, "on", &bits, &nbits, &g),
				 -EUCLEAN);
		ck_assert_str_eq(bc_error_get()->message,
				 "c.qcow2: bitmap 'on' is inconsistent (in use when last saved); it can only be removed");
	}
	fmt_close(img);
	/* A later writer leaves the inconsistent bitmap as it is. */
	img = open_rw("c.qcow2");
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 6 * MiB), 0);
	fmt_close(img);
	{
		char *s = qemu_bitmaps("c.qcow2");

		ck_assert_str_eq(s, "on:in-use+auto:65536;off::131072\n");
		free(s);
	}
	img = open_rw("c.qcow2");
	bc_error_reset();
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_CLEAR, .name = "on" }),
			 -EUCLEAN);
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_REMOVE, .name = "on" }),
			 0);
	fmt_close(img);
	{
		char *s = qemu_bitmaps("c.qcow2");

		ck_assert_str_eq(s, "off::131072\n");
		free(s);
	}
	assert_check_clean("c.qcow2");
}
END_TEST

static int change(struct fmt_image *img, enum fmt_bitmap_verb v,
		  const char *name)
{
	bc_error_reset();
	return fmt_bitmap_change(img, &(struct fmt_bitmap_change){
					      .verb = v, .name = name });
}

START_TEST(verbs)
{
	struct fmt_image *img, *other;
	uint8_t buf[512] = { 3 };
	char *s;

	if (!have_qemu)
		return;
	tu_sh("qemu-img create -q -f qcow2 -o cluster_size=4k v.qcow2 64M");
	img = open_rw("v.qcow2");
	ck_assert_int_eq(change(img, FMT_BITMAP_ADD, "a"), 0);
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_ADD, .name = "b",
				 .granularity = 512 * KiB, .disabled = true }),
			 0);
	ck_assert_int_eq(change(img, FMT_BITMAP_ADD, "a"), -EEXIST);
	ck_assert_str_eq(bc_error_get()->message,
			 "v.qcow2: bitmap 'a' already exists");
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_ADD, .name = "c",
				 .granularity = 3000 }),
			 -EINVAL);
	ck_assert_str_eq(bc_error_get()->message,
			 "v.qcow2: bitmap 'c': granularity must be a power of two from 512 bytes to 2 GiB");
	ck_assert_int_eq(change(img, FMT_BITMAP_REMOVE, "nope"), -ENOENT);
	ck_assert_str_eq(bc_error_get()->message,
			 "v.qcow2: bitmap 'nope' not found");
	fmt_close(img);
	s = qemu_bitmaps("v.qcow2");
	ck_assert_str_eq(s, "a:auto:4096;b::524288\n"); /* default = cluster size */
	free(s);
	assert_check_clean("v.qcow2");

	/* Writes set "a" only; then enable/disable/clear/merge. */
	img = open_rw("v.qcow2");
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 8192), 0);
	/* Not while the image is being written. */
	ck_assert_int_eq(change(img, FMT_BITMAP_CLEAR, "a"), -EBUSY);
	ck_assert_str_eq(bc_error_get()->message,
			 "v.qcow2: bitmaps cannot be changed while the image is being written");
	fmt_close(img);
	ck_assert_str_eq(set_bits("v.qcow2", "a"), "2");
	ck_assert_str_eq(set_bits("v.qcow2", "b"), "");
	img = open_rw("v.qcow2");
	ck_assert_int_eq(change(img, FMT_BITMAP_ENABLE, "b"), 0);
	ck_assert_int_eq(change(img, FMT_BITMAP_DISABLE, "a"), 0);
	fmt_close(img);
	img = open_rw("v.qcow2");
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 40 * MiB), 0);
	fmt_close(img);
	ck_assert_str_eq(set_bits("v.qcow2", "a"), "2");
	ck_assert_str_eq(set_bits("v.qcow2", "b"), "80");
	s = qemu_bitmaps("v.qcow2");
	ck_assert_str_eq(s, "a::4096;b:auto:524288\n");
	free(s);
	/* b (512K) merged into a (4K): granule 80 of b is a's 10240..10367. */
	img = open_rw("v.qcow2");
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_MERGE, .name = "a",
				 .src = img, .src_name = "b" }),
			 0);
	fmt_close(img);
	s = set_bits("v.qcow2", "a");
	ck_assert_int_eq(strncmp(s, "2,10240,10241,", 14), 0);
	ck_assert_ptr_nonnull(strstr(s, ",10367"));
	ck_assert_ptr_null(strstr(s, ",10368"));
	/* Merge from another image, then clear and remove. */
	tu_sh("qemu-img create -q -f qcow2 w.qcow2 64M && qemu-img bitmap --add w.qcow2 x");
	tu_sh("qemu-io -c 'write 63M 4k' w.qcow2 >/dev/null");
	other = open_ro("w.qcow2");
	img = open_rw("v.qcow2");
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
				 .verb = FMT_BITMAP_MERGE, .name = "b",
				 .src = other, .src_name = "x" }),
			 0);
	fmt_close(other);
	ck_assert_int_eq(change(img, FMT_BITMAP_CLEAR, "a"), 0);
	fmt_close(img);
	ck_assert_str_eq(set_bits("v.qcow2", "b"), "80,126");
	ck_assert_str_eq(set_bits("v.qcow2", "a"), "");
	assert_check_clean("v.qcow2");
	img = open_rw("v.qcow2");
	ck_assert_int_eq(change(img, FMT_BITMAP_REMOVE, "a"), 0);
	ck_assert_int_eq(change(img, FMT_BITMAP_REMOVE, "b"), 0);
	fmt_close(img);
	s = qemu_bitmaps("v.qcow2");
	ck_assert_str_eq(s, "\n");
	free(s);
	/* No extension left, no cluster leaked. */
	assert_check_clean("v.qcow2");
	s = tu_out("qemu-img info --output=json v.qcow2 | grep -c bitmaps || true");
	ck_assert_str_eq(s, "0\n");
	free(s);
}
END_TEST

/* Patch @n bytes at offset @off of @path. */
static void patch(const char *path, uint64_t off, const void *bytes, size_t n)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
	close(fd);
}

/* Offsets of the bitmaps extension's data and of the directory. */
static void locate(const char *path, uint64_t *ext, uint64_t *dir)
{
	static uint8_t c0[65536];
	uint64_t pos;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, c0, sizeof(c0), 0), (ssize_t)sizeof(c0));
	close(fd);
	for (pos = bc_get_be32(c0 + 100); pos + 8 <= sizeof(c0);
	     pos += 8 + bc_align_up(bc_get_be32(c0 + pos + 4), 8)) {
		if (bc_get_be32(c0 + pos) == 0x23852875u) {
			*ext = pos + 8;
			*dir = bc_get_be64(c0 + pos + 8 + 16);
			return;
		}
	}
	ck_abort_msg("no bitmaps extension in %s", path);
}

static void expect_refused(const char *path, const char *msg)
{
	struct fmt_image *img = NULL;

	bc_error_reset();
	ck_assert_int_eq(fmt_open(path, "qcow2", FMT_OPEN_NO_BACKING, &img),
			 -EUCLEAN);
	ck_assert_str_eq(bc_error_get()->message, msg);
	/* check still opens it, to report. */
	ck_assert_int_eq(fmt_open(path, "qcow2",
				  FMT_OPEN_NO_BACKING | FMT_OPEN_CHECK, &img),
			 0);
	fmt_close(img);
}

START_TEST(malformed)
{
	uint64_t ext, dir;
	uint8_t b[8];

	if (!have_qemu)
		return;
	tu_sh("qemu-img create -q -f qcow2 m.qcow2 64M && qemu-img bitmap --add m.qcow2 bm");
	locate("m.qcow2", &ext, &dir);
	tu_sh("cp m.qcow2 g.qcow2 && cp m.qcow2 f.qcow2 && cp m.qcow2 t.qcow2 && "
	      "cp m.qcow2 n.qcow2 && cp m.qcow2 s.qcow2 && cp m.qcow2 d.qcow2 && cp m.qcow2 z.qcow2");
	b[0] = 8; /* granularity 2^8 */
	patch("g.qcow2", dir + 17, b, 1);
	expect_refused("g.qcow2", "g.qcow2: bitmap 'bm': granularity 2^8 out of range");
	bc_put_be32(b, 0x10 | 2);
	patch("f.qcow2", dir + 12, b, 4);
	expect_refused("f.qcow2", "f.qcow2: bitmap 'bm': reserved flags 0x10 set");
	b[0] = 2;
	patch("t.qcow2", dir + 16, b, 1);
	expect_refused("t.qcow2", "t.qcow2: bitmap 'bm': unknown type 2");
	bc_put_be16(b, 0);
	patch("n.qcow2", dir + 18, b, 2);
	expect_refused("n.qcow2", "n.qcow2: Invalid bitmap directory: bad bitmap name");
	bc_put_be32(b, 7);
	patch("s.qcow2", dir + 8, b, 4);
	expect_refused("s.qcow2", "s.qcow2: bitmap 'bm': table has 7 entries, the image size needs 1");
	bc_put_be64(b, dir + 512);
	patch("d.qcow2", ext + 16, b, 8);
	{
		char want[128];

		(void)snprintf(want, sizeof(want),
			       "d.qcow2: Invalid bitmaps extension: directory at 0x%llx, 32 bytes",
			       (unsigned long long)(dir + 512));
		expect_refused("d.qcow2", want);
	}
	bc_put_be32(b, 0);
	patch("z.qcow2", ext, b, 4);
	expect_refused("z.qcow2", "z.qcow2: Invalid bitmaps extension: 0 bitmaps");
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("qcow2-bitmap");
	TCase *tc = tcase_create("bitmaps");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, writes_are_recorded);
	tcase_add_test(tc, crash_leaves_in_use);
	tcase_add_test(tc, verbs);
	tcase_add_test(tc, malformed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	have_qemu = system("qemu-img --version >/dev/null 2>&1 && "
			   "qemu-io --version >/dev/null 2>&1") == 0;
	if (!have_qemu)
		printf("# qemu-img/qemu-io not installed: bitmap tests skip their checks\n");
	return bc_check_run(suite());
}
