/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for backing chains (formats/chain.c, fmt.c): opening
 * chains made by qemu-img with relative and absolute backing names from
 * another working directory, backing-format rules (a declared raw layer
 * is never read as qcow2; an unrecorded format is probed and flagged),
 * refusals (missing file, loops, depth, protocol names), and block status
 * and reads across layers compared with qemu-img.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

/* Absolute path of @name in the scratch directory (static buffer). */
static const char *abs_path(const char *name)
{
	static char buf[2][PATH_MAX + 64];
	static int i;
	char *dir = realpath(tu_dir, NULL);

	ck_assert_ptr_nonnull(dir);
	i ^= 1;
	(void)snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	free(dir);
	return buf[i];
}

/* Read the whole image through fmt_pread; malloc'd. */
static uint8_t *read_all(struct fmt_image *img)
{
	uint8_t *buf = malloc(img->size ? img->size : 1);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fmt_pread(img, buf, img->size, 0), 0);
	return buf;
}

/* Compare the guest view of @img with qemu-img convert of @path. */
static void assert_same_as_qemu(struct fmt_image *img, const char *path)
{
	uint8_t *ours = read_all(img), *theirs = malloc(img->size);
	int fd;

	ck_assert_ptr_nonnull(theirs);
	tu_sh("rm -f conv.raw && qemu-img convert -O raw '%s' conv.raw", path);
	fd = open("conv.raw", O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fmt_pread_file(fd, theirs, img->size, 0), 0);
	close(fd);
	ck_assert(memcmp(ours, theirs, img->size) == 0);
	free(ours);
	free(theirs);
}

/*
 * Remove the backing-format header extension of a qcow2 file, as an old
 * qemu-img wrote overlays: its type becomes "end of extensions".
 */
static void strip_backing_fmt(const char *path)
{
	uint8_t buf[4096];
	size_t i;
	int fd = open(path, O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fmt_pread_file(fd, buf, sizeof(buf), 0), 0);
	for (i = 72; i + 4 <= sizeof(buf); i += 8) {
		if (bc_get_be32(buf + i) == 0xe2792acau)
			break;
	}
	ck_assert_uint_lt(i + 4, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite_file(fd, "\0\0\0\0", 4, i), 0);
	close(fd);
}

/*
 * d1/base.raw (data at 0 and 1M-4k), d2/mid.qcow2 -> ../d1/base.raw
 * (relative, raw), top.qcow2 -> <abs>/d2/mid.qcow2 (absolute, qcow2).
 */
static void make_three_deep(void)
{
	tu_sh("mkdir d1 d2 && qemu-img create -q -f raw d1/base.raw 1M && "
	      "qemu-io -f raw -c 'write -P 0x11 0 128k' -c 'write -P 0x12 1020k 4k' "
	      "d1/base.raw >/dev/null");
	tu_sh("qemu-img create -q -f qcow2 -b ../d1/base.raw -F raw d2/mid.qcow2 2M && "
	      "qemu-io -c 'write -P 0x21 64k 64k' -c 'write -P 0x22 1536k 64k' "
	      "d2/mid.qcow2 >/dev/null");
	tu_sh("qemu-img create -q -f qcow2 -b '%s' -F qcow2 top.qcow2 3M && "
	      "qemu-io -c 'write -P 0x31 96k 8k' -c 'write -z 0 64k' "
	      "-c 'write -P 0x32 2560k 64k' top.qcow2 >/dev/null",
	      abs_path("d2/mid.qcow2"));
}

START_TEST(three_deep_relative_and_absolute)
{
	struct fmt_image *img;
	char *top_abs;

	make_three_deep();
	top_abs = strdup(abs_path("top.qcow2"));
	ck_assert_ptr_nonnull(top_abs);
	/* From another working directory, by a relative path... */
	ck_assert_int_eq(chdir("d1"), 0);
	ck_assert_int_eq(fmt_open("../top.qcow2", NULL, 0, &img), 0);
	ck_assert_str_eq(img->filename, "../top.qcow2");
	ck_assert_str_eq(img->drv->name, "qcow2");
	ck_assert(img->probed); /* the top was probed: no format given */
	ck_assert_uint_eq(img->size, 3 * MiB);
	ck_assert_str_eq(img->backing_name, abs_path("d2/mid.qcow2"));
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	ck_assert_ptr_nonnull(img->backing);
	ck_assert_str_eq(img->backing->filename, abs_path("d2/mid.qcow2"));
	ck_assert_str_eq(img->backing->drv->name, "qcow2");
	ck_assert(!img->backing->probed);
	ck_assert_int_eq(img->backing->flags & FMT_OPEN_RDWR, 0);
	ck_assert_str_eq(img->backing->backing_name, "../d1/base.raw");
	ck_assert_str_eq(img->backing->backing->filename, abs_path("d1/base.raw"));
	ck_assert_str_eq(img->backing->backing->drv->name, "raw");
	ck_assert(!img->backing->backing->probed);
	ck_assert_ptr_null(img->backing->backing->backing);
	assert_same_as_qemu(img, top_abs);
	fmt_close(img);

	/* ... and from / by an absolute path, writable. */
	ck_assert_int_eq(chdir("/"), 0);
	ck_assert_int_eq(fmt_open(top_abs, "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert(!img->probed);
	ck_assert_int_eq(fcntl(img->fd, F_GETFL) & O_ACCMODE, O_RDWR);
	ck_assert_int_eq(fcntl(img->backing->fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	ck_assert_int_eq(fcntl(img->backing->backing->fd, F_GETFL) & O_ACCMODE,
			 O_RDONLY);
	ck_assert_int_eq(fmt_pwrite(img->backing, "x", 1, 0), -EROFS);
	fmt_close(img);
	ck_assert_int_eq(chdir(tu_dir), 0);
	free(top_abs);
}
END_TEST

START_TEST(no_backing_flag_opens_one_layer)
{
	struct fmt_image *img;
	uint8_t buf[4096];

	make_three_deep();
	ck_assert_int_eq(fmt_open("top.qcow2", "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_ptr_null(img->backing);
	ck_assert_ptr_nonnull(img->backing_name);
	/* Unallocated in the top, no backing opened: zeros. */
	ck_assert_int_eq(fmt_pread(img, buf, sizeof(buf), 128 * KiB), 0);
	ck_assert(bc_is_zero(buf, sizeof(buf)));
	fmt_close(img);
}
END_TEST

START_TEST(direct_chain_every_layer)
{
	struct fmt_image *img, *l;

	make_three_deep();
	ck_assert_int_eq(fmt_open("top.qcow2", "qcow2", FMT_OPEN_DIRECT, &img), 0);
	for (l = img; l; l = l->backing) {
		ck_assert_int_eq(fcntl(l->fd, F_GETFL) & O_DIRECT, O_DIRECT);
		ck_assert_uint_ge(l->request_align, 512);
	}
	assert_same_as_qemu(img, "top.qcow2");
	fmt_close(img);
}
END_TEST

START_TEST(raw_backing_with_qcow2_magic_stays_raw)
{
	struct fmt_image *img;
	uint8_t *data;
	struct stat st;
	int fd;

	/*
	 * The "raw" backing is byte for byte a qcow2 image whose own backing
	 * is a secret file: following it would leak the secret.
	 */
	tu_sh("echo secret > secret.raw && qemu-img create -q -f qcow2 -b secret.raw "
	      "-F raw -u evil.raw 64k && "
	      "qemu-img create -q -f qcow2 -b evil.raw -F raw top.qcow2");
	ck_assert_int_eq(stat("evil.raw", &st), 0);
	ck_assert_int_eq(fmt_open("top.qcow2", "qcow2", 0, &img), 0);
	ck_assert_str_eq(img->backing->drv->name, "raw");
	ck_assert(!img->backing->probed);
	ck_assert_ptr_null(img->backing->backing);
	ck_assert_ptr_null(img->backing->backing_name);
	ck_assert_uint_eq(img->backing->size, (uint64_t)st.st_size);
	ck_assert_uint_ge(img->size, (uint64_t)st.st_size);
	data = read_all(img);
	ck_assert_mem_eq(data, "QFI\373", 4);
	fd = open("evil.raw", O_RDONLY);
	{
		uint8_t *file = malloc((size_t)st.st_size);

		ck_assert_int_eq(fmt_pread_file(fd, file, (size_t)st.st_size, 0), 0);
		ck_assert(memcmp(data, file, (size_t)st.st_size) == 0);
		free(file);
	}
	close(fd);
	free(data);
	assert_same_as_qemu(img, "top.qcow2");
	fmt_close(img);
}
END_TEST

START_TEST(unrecorded_backing_format_is_probed)
{
	struct fmt_image *img;

	tu_sh("qemu-img create -q -f raw base.raw 1M && "
	      "qemu-img create -q -f qcow2 mid.qcow2 1M && "
	      "qemu-io -c 'write -P 7 0 64k' mid.qcow2 >/dev/null && "
	      "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
	      "qemu-img create -q -f qcow2 -b base.raw -F raw top2.qcow2");
	strip_backing_fmt("top.qcow2");
	strip_backing_fmt("top2.qcow2");
	ck_assert_int_eq(fmt_open("top.qcow2", "qcow2", 0, &img), 0);
	ck_assert_ptr_null(img->backing_fmt);
	ck_assert(!img->probed);
	ck_assert_str_eq(img->backing->drv->name, "qcow2");
	ck_assert(img->backing->probed);
	assert_same_as_qemu(img, "top.qcow2");
	fmt_close(img);
	ck_assert_int_eq(fmt_open("top2.qcow2", "qcow2", 0, &img), 0);
	ck_assert_str_eq(img->backing->drv->name, "raw");
	ck_assert(img->backing->probed);
	fmt_close(img);
}
END_TEST

START_TEST(unknown_backing_format_refused)
{
	struct fmt_image *img = NULL;

	tu_sh("qemu-img create -q -f raw base.img 1M && "
	      "qemu-img create -q -f qcow2 -u -b base.img -F vmdk top.qcow2 1M");
	ck_assert_int_eq(fmt_open("top.qcow2", "qcow2", 0, &img), -ENOTSUP);
	ck_assert_int_eq(bc_error_get()->code, ERR_UNSUPPORTED);
	ck_assert_str_eq(bc_error_get()->message,
			 "top.qcow2: backing format 'vmdk' not supported");
	ck_assert_ptr_null(img);
}
END_TEST

START_TEST(missing_backing_is_enoent)
{
	struct fmt_image *img = NULL;
	static char exp[PATH_MAX + 200];

	tu_sh("mkdir sub && qemu-img create -q -f raw sub/base.raw 1M && "
	      "qemu-img create -q -f qcow2 -b base.raw -F raw sub/top.qcow2 && "
	      "rm sub/base.raw");
	ck_assert_int_eq(fmt_open("sub/top.qcow2", NULL, 0, &img), -ENOENT);
	ck_assert_int_eq(bc_error_get()->code, ERR_NO_SUCH_FILE);
	ck_assert_str_eq(bc_error_get()->message,
			 "sub/top.qcow2: could not open backing file 'sub/base.raw': No such file or directory");
	ck_assert_ptr_null(img);
	/* Deeper: the message names the backing layer by its real path. */
	tu_sh("qemu-img create -q -f raw sub/base.raw 1M && "
	      "qemu-img create -q -f qcow2 -b sub/top.qcow2 -F qcow2 top2.qcow2 && "
	      "rm sub/base.raw");
	ck_assert_int_eq(fmt_open("top2.qcow2", NULL, 0, &img), -ENOENT);
	(void)snprintf(exp, sizeof(exp),
		       "%s: could not open backing file '%s': No such file or directory",
		       abs_path("sub/top.qcow2"), abs_path("sub/base.raw"));
	ck_assert_str_eq(bc_error_get()->message, exp);
}
END_TEST

START_TEST(loop_a_b_a)
{
	struct fmt_image *img = NULL;
	static char exp[PATH_MAX * 2 + 100];

	tu_sh("qemu-img create -q -f qcow2 b.qcow2 1M && "
	      "qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 a.qcow2 && "
	      "qemu-img rebase -u -b a.qcow2 -F qcow2 b.qcow2");
	ck_assert_int_eq(fmt_open("a.qcow2", NULL, 0, &img), -ELOOP);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	(void)snprintf(exp, sizeof(exp), "%s: backing chain loops back to '%s'",
		       abs_path("b.qcow2"), abs_path("a.qcow2"));
	ck_assert_str_eq(bc_error_get()->message, exp);
	ck_assert_ptr_null(img);
	/* Through a symlink: the same file, another name. */
	tu_sh("ln -s a.qcow2 alias.qcow2 && qemu-img rebase -u -b alias.qcow2 -F qcow2 b.qcow2");
	ck_assert_int_eq(fmt_open("a.qcow2", NULL, 0, &img), -ELOOP);
}
END_TEST

START_TEST(self_loop)
{
	struct fmt_image *img = NULL;
	static char exp[PATH_MAX + 100];

	tu_sh("qemu-img create -q -f qcow2 s.qcow2 1M && "
	      "qemu-img rebase -u -b s.qcow2 -F qcow2 s.qcow2");
	ck_assert_int_eq(fmt_open("s.qcow2", NULL, 0, &img), -ELOOP);
	(void)snprintf(exp, sizeof(exp), "s.qcow2: backing chain loops back to '%s'",
		       abs_path("s.qcow2"));
	ck_assert_str_eq(bc_error_get()->message, exp);
	ck_assert_ptr_null(img);
}
END_TEST

START_TEST(depth_limit)
{
	struct fmt_image *img = NULL, *l;
	static char exp[PATH_MAX + 100];
	int n;

	/* l0 is the bottom; lN has depth N below nothing: l257 is 257 deep. */
	tu_sh("qemu-img create -q -f qcow2 -o cluster_size=512 l0.qcow2 64k && "
	      "for i in $(seq 1 257); do qemu-img create -q -f qcow2 "
	      "-o cluster_size=512 -u -b l$((i-1)).qcow2 -F qcow2 l$i.qcow2 64k "
	      "|| exit 1; done");
	ck_assert_int_eq(fmt_open("l256.qcow2", NULL, 0, &img), 0);
	for (n = 0, l = img; l->backing; l = l->backing)
		n++;
	ck_assert_int_eq(n, FMT_CHAIN_MAX_DEPTH);
	ck_assert_str_eq(l->filename, abs_path("l0.qcow2"));
	fmt_close(img);
	img = NULL;
	ck_assert_int_eq(fmt_open("l257.qcow2", NULL, 0, &img), -ELOOP);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	(void)snprintf(exp, sizeof(exp), "%s: backing chain deeper than 256",
		       abs_path("l1.qcow2"));
	ck_assert_str_eq(bc_error_get()->message, exp);
	ck_assert_ptr_null(img);
}
END_TEST

START_TEST(protocol_names_refused)
{
	static const char *const names[] = {
		"json:{\"file\":{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}}",
		"nbd:localhost:10809",
		"nbd+unix:///x?socket=/tmp/s",
		"http://example.com/x.img",
		"file:/etc/passwd",
		"NBD:localhost:10809",
	};
	struct fmt_image *img = NULL;
	static char exp[1200];
	size_t i;

	for (i = 0; i < BC_ARRAY_SIZE(names); i++) {
		tu_sh("rm -f p.qcow2 && qemu-img create -q -f qcow2 -u -b '%s' "
		      "-F raw p.qcow2 1M", names[i]);
		bc_error_reset();
		ck_assert_int_eq(fmt_open("p.qcow2", NULL, 0, &img), -ENOTSUP);
		ck_assert_int_eq(bc_error_get()->code, ERR_UNSUPPORTED);
		(void)snprintf(exp, sizeof(exp),
			       "p.qcow2: backing file '%s' uses a protocol, not supported",
			       names[i]);
		ck_assert_str_eq(bc_error_get()->message, exp);
		ck_assert_ptr_null(img);
	}
}
END_TEST

START_TEST(colon_file_names_are_files)
{
	struct fmt_image *img = NULL;

	/* "./nbd:x" and an unknown "foo:bar" name plain files. */
	tu_sh("truncate -s 1M 'nbd:x' 'foo:bar' && "
	      "qemu-img create -q -f qcow2 -u -b './nbd:x' -F raw a.qcow2 1M && "
	      "qemu-img create -q -f qcow2 -u -b 'foo:bar' -F raw b.qcow2 1M");
	ck_assert_int_eq(fmt_open("a.qcow2", NULL, 0, &img), 0);
	ck_assert_str_eq(img->backing->filename, abs_path("nbd:x"));
	fmt_close(img);
	ck_assert_int_eq(fmt_open("b.qcow2", NULL, 0, &img), 0);
	ck_assert_str_eq(img->backing->filename, abs_path("foo:bar"));
	fmt_close(img);
}
END_TEST

START_TEST(chain_block_status_like_qemu_map)
{
	struct fmt_image *img;
	struct fmt_extent ext;

	make_three_deep();
	ck_assert_int_eq(fmt_open("top.qcow2", NULL, 0, &img), 0);
	tu_assert_map_matches(img, "top.qcow2", "qcow2");
	/* A zero cluster in the top hides the backing. */
	ck_assert_int_eq(fmt_chain_block_status(img, 0, 3 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_int_eq(ext.depth, 0);
	ck_assert_uint_eq(ext.len, 64 * KiB);
	/* The raw base answers [128k, 1020k): a hole, at its own offset. */
	ck_assert_int_eq(fmt_chain_block_status(img, 128 * KiB, 3 * MiB - 128 * KiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_int_eq(ext.depth, 2);
	ck_assert_uint_eq(ext.len, 892 * KiB);
	ck_assert_int_eq(ext.host_off, 128 * KiB);
	/* The middle answers with data in its own file. */
	ck_assert_int_eq(fmt_chain_block_status(img, 1536 * KiB, 64 * KiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_int_eq(ext.depth, 1);
	ck_assert_uint_eq(ext.len, 64 * KiB);
	ck_assert_int_ge(ext.host_off, 0);
	/* Past the base's end, inside mid: not present, at mid's depth. */
	ck_assert_int_eq(fmt_chain_block_status(img, MiB, 512 * KiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_UNALLOC);
	ck_assert_int_eq(ext.depth, 1);
	ck_assert_uint_eq(ext.len, 512 * KiB);
	/* Past mid's end: not present at the top's depth. */
	ck_assert_int_eq(fmt_chain_block_status(img, 2 * MiB, 512 * KiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_UNALLOC);
	ck_assert_int_eq(ext.depth, 0);
	ck_assert_uint_eq(ext.len, 512 * KiB);
	/* A query crossing the base's end is clipped there. */
	ck_assert_int_eq(fmt_chain_block_status(img, MiB - 4 * KiB, 64 * KiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_int_eq(ext.depth, 2);
	ck_assert_uint_eq(ext.len, 4 * KiB);
	fmt_close(img);

	/* The middle alone, and a qcow2 without backing: bottom not present. */
	ck_assert_int_eq(fmt_open("d2/mid.qcow2", NULL, 0, &img), 0);
	tu_assert_map_matches(img, "d2/mid.qcow2", "qcow2");
	fmt_close(img);
	tu_sh("qemu-img create -q -f qcow2 solo.qcow2 1M && "
	      "qemu-io -c 'write -P 1 64k 64k' solo.qcow2 >/dev/null");
	ck_assert_int_eq(fmt_open("solo.qcow2", NULL, 0, &img), 0);
	ck_assert_int_eq(fmt_chain_block_status(img, 0, MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_UNALLOC);
	ck_assert_int_eq(ext.depth, 0);
	tu_assert_map_matches(img, "solo.qcow2", "qcow2");
	fmt_close(img);
}
END_TEST

START_TEST(read_backing_past_end_is_zero)
{
	struct fmt_image *img;
	static uint8_t buf[256 * KiB], exp[256 * KiB];

	make_three_deep();
	ck_assert_int_eq(fmt_open("top.qcow2", NULL, 0, &img), 0);
	/* Across the base's end: its last 4k, then zeros. */
	memset(buf, 0xee, sizeof(buf));
	ck_assert_int_eq(fmt_read_backing(img->backing, buf, 64 * KiB, MiB - 4 * KiB), 0);
	memset(exp, 0x12, 4 * KiB);
	memset(exp + 4 * KiB, 0, 60 * KiB);
	ck_assert_mem_eq(buf, exp, 64 * KiB);
	/* Entirely past the middle's end (top's backing is 2M). */
	memset(buf, 0xee, sizeof(buf));
	ck_assert_int_eq(fmt_read_backing(img, buf, sizeof(buf), 2 * MiB + 64 * KiB), 0);
	ck_assert(bc_is_zero(buf, sizeof(buf)));
	/* No backing at all. */
	memset(buf, 0xee, sizeof(buf));
	ck_assert_int_eq(fmt_read_backing(img->backing->backing, buf, 4096, 0), 0);
	ck_assert(bc_is_zero(buf, 4096));
	/* Through the top: what qemu-io reads. */
	ck_assert_int_eq(fmt_pread(img, buf, sizeof(buf), 2 * MiB), 0);
	ck_assert(bc_is_zero(buf, sizeof(buf)));
	fmt_close(img);
}
END_TEST

START_TEST(create_takes_backing_size)
{
	struct fmt_create_opts o = { .format = "qcow2" };
	struct fmt_image *img;
	char *info;

	make_three_deep();
	tu_sh("mkdir new");
	/* Relative to the new image's directory, not the CWD. */
	o.backing_file = "../d2/mid.qcow2";
	o.backing_fmt = "qcow2";
	ck_assert_int_eq(fmt_create("new/n.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("new/n.qcow2", NULL, 0, &img), 0);
	ck_assert_uint_eq(img->size, 2 * MiB);
	ck_assert_str_eq(img->backing->filename, abs_path("d2/mid.qcow2"));
	fmt_close(img);
	info = tu_out("qemu-img info --output=json new/n.qcow2 | grep -c '\"virtual-size\": 2097152'");
	ck_assert_str_eq(info, "1\n");
	free(info);
	/* Probed when no format is given; a raw base. */
	o.backing_file = "../d1/base.raw";
	o.backing_fmt = NULL;
	ck_assert_int_eq(fmt_create("new/m.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("new/m.qcow2", NULL, FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_uint_eq(img->size, MiB);
	fmt_close(img);
	/* Missing backing: nothing created. */
	o.backing_file = "nope.raw";
	ck_assert_int_eq(fmt_create("new/x.qcow2", &o), -ENOENT);
	ck_assert_int_eq(access("new/x.qcow2", F_OK), -1);
	/* Protocols are refused at creation too. */
	o.backing_file = "nbd:localhost:10809";
	o.size = MiB;
	ck_assert_int_eq(fmt_create("new/y.qcow2", &o), -ENOTSUP);
	ck_assert_str_eq(bc_error_get()->message,
			 "new/y.qcow2: backing file 'nbd:localhost:10809' uses a protocol, not supported");
	ck_assert_int_eq(access("new/y.qcow2", F_OK), -1);
}
END_TEST

START_TEST(resolve_backing_names)
{
	char *s;

	s = fmt_resolve_backing("/a/b/top.qcow2", "base.raw");
	ck_assert_str_eq(s, "/a/b/base.raw");
	free(s);
	s = fmt_resolve_backing("/a/b/top.qcow2", "/abs/base.raw");
	ck_assert_str_eq(s, "/abs/base.raw");
	free(s);
	s = fmt_resolve_backing("top.qcow2", "../base.raw");
	ck_assert_str_eq(s, "../base.raw");
	free(s);
	s = fmt_resolve_backing("x/top.qcow2", "../base.raw");
	ck_assert_str_eq(s, "x/../base.raw");
	free(s);
	s = fmt_resolve_backing("/top.qcow2", "base.raw");
	ck_assert_str_eq(s, "/base.raw");
	free(s);
}
END_TEST

static Suite *chain_suite(void)
{
	Suite *s = suite_create("chain");
	TCase *tc = tcase_create("open");

	tcase_set_timeout(tc, 60);
	tu_add_fixtures(tc);
	tcase_add_test(tc, three_deep_relative_and_absolute);
	tcase_add_test(tc, no_backing_flag_opens_one_layer);
	tcase_add_test(tc, direct_chain_every_layer);
	tcase_add_test(tc, raw_backing_with_qcow2_magic_stays_raw);
	tcase_add_test(tc, unrecorded_backing_format_is_probed);
	tcase_add_test(tc, colon_file_names_are_files);
	tcase_add_test(tc, resolve_backing_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("refusals");
	tcase_set_timeout(tc, 100);
	tu_add_fixtures(tc);
	tcase_add_test(tc, unknown_backing_format_refused);
	tcase_add_test(tc, missing_backing_is_enoent);
	tcase_add_test(tc, loop_a_b_a);
	tcase_add_test(tc, self_loop);
	tcase_add_test(tc, depth_limit);
	tcase_add_test(tc, protocol_names_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("data");
	tcase_set_timeout(tc, 60);
	tu_add_fixtures(tc);
	tcase_add_test(tc, chain_block_status_like_qemu_map);
	tcase_add_test(tc, read_backing_past_end_is_zero);
	tcase_add_test(tc, create_takes_backing_size);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(chain_suite());
}
