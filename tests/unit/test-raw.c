/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the raw driver and the fmt.c wrappers: creation, data
 * round trips (also unaligned and through O_DIRECT), zero writes and
 * discards checked with block status and against `qemu-img map`, exact
 * SEEK_DATA extents, and the argument/permission errors.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define MiB (1024u * 1024u)

static struct fmt_image *create_open(const char *name, uint64_t size,
				     unsigned int flags)
{
	struct fmt_create_opts o = { .format = "raw", .size = size };
	struct fmt_image *img = NULL;

	ck_assert_int_eq(fmt_create(name, &o), 0);
	ck_assert_int_eq(fmt_open(name, "raw", flags, &img), 0);
	return img;
}

START_TEST(create_makes_sparse_file_of_size)
{
	struct fmt_image *img = create_open("a.raw", 3 * MiB + 512, FMT_OPEN_RDWR);
	struct fmt_info info;
	struct stat st;

	ck_assert_int_eq(stat("a.raw", &st), 0);
	ck_assert_int_eq(st.st_size, 3 * MiB + 512);
	ck_assert_int_eq(st.st_blocks, 0);
	ck_assert_uint_eq(img->size, 3 * MiB + 512);
	ck_assert_str_eq(img->drv->name, "raw");
	ck_assert_str_eq(img->filename, "a.raw");
	ck_assert_ptr_null(img->backing_name);
	ck_assert(!img->probed);
	ck_assert_uint_eq(img->request_align, 1);
	ck_assert_int_eq(fmt_get_info(img, &info), 0);
	ck_assert_str_eq(info.format, "raw");
	ck_assert_uint_eq(info.virtual_size, 3 * MiB + 512);
	ck_assert_uint_eq(info.actual_size, 0);
	ck_assert_uint_eq(info.cluster_size, 0);
	fmt_close(img);
}
END_TEST

START_TEST(create_prealloc_allocates)
{
	struct fmt_create_opts o = { .format = "raw", .size = MiB };
	struct stat st;

	o.prealloc = FMT_PREALLOC_FALLOC;
	ck_assert_int_eq(fmt_create("f.raw", &o), 0);
	ck_assert_int_eq(stat("f.raw", &st), 0);
	ck_assert_int_eq(st.st_size, MiB);
	ck_assert_int_ge(st.st_blocks * 512, MiB);
	o.prealloc = FMT_PREALLOC_FULL;
	ck_assert_int_eq(fmt_create("g.raw", &o), 0);
	ck_assert_int_eq(stat("g.raw", &st), 0);
	ck_assert_int_eq(st.st_size, MiB);
	ck_assert_int_ge(st.st_blocks * 512, MiB);
	/* Written zeros are data to SEEK_DATA, as to qemu-img. */
	{
		struct fmt_image *img;

		ck_assert_int_eq(fmt_open("g.raw", "raw", 0, &img), 0);
		tu_assert_map_matches(img, "g.raw", "raw");
		fmt_close(img);
	}
	o.prealloc = FMT_PREALLOC_METADATA;
	ck_assert_int_eq(fmt_create("m.raw", &o), 0);
	ck_assert_int_eq(stat("m.raw", &st), 0);
	ck_assert_int_eq(st.st_blocks, 0);
}
END_TEST

START_TEST(create_refuses_existing_file)
{
	struct fmt_create_opts o = { .format = "raw", .size = MiB };
	struct stat st;

	tu_sh("echo hello > x.raw");
	ck_assert_int_eq(fmt_create("x.raw", &o), -EEXIST);
	ck_assert_int_eq(bc_error_get()->code, ERR_EXISTS);
	ck_assert_str_eq(bc_error_get()->message, "x.raw: file exists");
	ck_assert_int_eq(stat("x.raw", &st), 0);
	ck_assert_int_eq(st.st_size, 6); /* untouched */
	/* A dangling symlink is an existing name too. */
	tu_sh("ln -s nowhere link.raw");
	ck_assert_int_eq(fmt_create("link.raw", &o), -EEXIST);
	ck_assert_int_eq(access("nowhere", F_OK), -1);
}
END_TEST

START_TEST(create_refuses_bad_args)
{
	struct fmt_create_opts o = { .format = "vmdk", .size = MiB };

	ck_assert_int_eq(fmt_create("v.img", &o), -EINVAL);
	ck_assert_str_eq(bc_error_get()->message, "unknown format 'vmdk'");
	ck_assert_int_eq(access("v.img", F_OK), -1);
	o.format = "raw";
	o.backing_file = "base.raw";
	tu_sh("truncate -s 1M base.raw");
	ck_assert_int_eq(fmt_create("r.img", &o), -ENOTSUP);
	ck_assert_str_eq(bc_error_get()->message,
			 "r.img: raw images have no backing file");
	ck_assert_int_eq(access("r.img", F_OK), -1);
}
END_TEST

START_TEST(roundtrip_aligned_and_unaligned)
{
	struct fmt_image *img = create_open("rt.raw", 2 * MiB, FMT_OPEN_RDWR);
	static uint8_t w[300000], r[300000];
	char *copy;

	tu_pattern(w, sizeof(w), 4097, 1);
	ck_assert_int_eq(fmt_pwrite(img, w, sizeof(w), 4097), 0);
	memset(r, 0xee, sizeof(r));
	ck_assert_int_eq(fmt_pread(img, r, sizeof(r), 4097), 0);
	ck_assert_mem_eq(r, w, sizeof(w));
	/* Around the written range: zeros, and the same bytes qemu-io sees. */
	ck_assert_int_eq(fmt_pread(img, r, 8192, 0), 0);
	ck_assert(bc_is_zero(r, 4097));
	ck_assert_mem_eq(r + 4097, w, 8192 - 4097);
	ck_assert_int_eq(fmt_flush(img), 0);
	tu_sh("qemu-img convert -f raw -O raw rt.raw copy.raw");
	copy = tu_out("cmp rt.raw copy.raw && echo same");
	ck_assert_str_eq(copy, "same\n");
	free(copy);
	/* The last byte of the image. */
	w[0] = 0x5a;
	ck_assert_int_eq(fmt_pwrite(img, w, 1, 2 * MiB - 1), 0);
	ck_assert_int_eq(fmt_pread(img, r, 1, 2 * MiB - 1), 0);
	ck_assert_uint_eq(r[0], 0x5a);
	copy = tu_out("qemu-io -f raw -c 'read -P 0x5a %u 1' rt.raw | head -1",
		      2 * MiB - 1);
	ck_assert_str_eq(copy, "read 1/1 bytes at offset 2097151\n");
	free(copy);
	fmt_close(img);
}
END_TEST

START_TEST(write_zeroes_and_discard_effects)
{
	struct fmt_image *img = create_open("z.raw", 4 * MiB, FMT_OPEN_RDWR);
	static uint8_t buf[MiB];
	struct fmt_extent ext;

	tu_pattern(buf, sizeof(buf), 0, 3);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 2 * MiB), 0);
	ck_assert_int_eq(fmt_block_status(img, 0, 4 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, MiB);
	ck_assert_int_eq(ext.host_off, 0);

	/* Zeroes with unmap punch a hole: block status says zero. */
	ck_assert_int_eq(fmt_write_zeroes(img, 65536, 65536, FMT_ZERO_MAY_UNMAP), 0);
	ck_assert_int_eq(fmt_block_status(img, 65536, 4 * MiB - 65536, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_uint_eq(ext.len, 65536);
	ck_assert_int_eq(ext.host_off, 65536);
	ck_assert_int_eq(ext.depth, 0);
	/* Unaligned zeroes: the bytes read as zero, the rest is untouched. */
	ck_assert_int_eq(fmt_write_zeroes(img, 1000, 3000, 0), 0);
	ck_assert_int_eq(fmt_pread(img, buf, 8192, 0), 0);
	{
		static uint8_t ref[8192];

		tu_pattern(ref, sizeof(ref), 0, 3);
		ck_assert_mem_eq(buf, ref, 1000);
		ck_assert(bc_is_zero(buf + 1000, 3000));
		ck_assert_mem_eq(buf + 4000, ref + 4000, 8192 - 4000);
	}
	ck_assert_int_eq(fmt_pread(img, buf, 65536, 65536), 0);
	ck_assert(bc_is_zero(buf, 65536));

	/* Discard punches a hole too (ext4 supports it). */
	ck_assert_int_eq(fmt_discard(img, 2 * MiB + 4096, 8192), 0);
	ck_assert_int_eq(fmt_block_status(img, 2 * MiB + 4096, MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_uint_eq(ext.len, 8192);
	ck_assert_int_eq(fmt_pread(img, buf, 8192, 2 * MiB + 4096), 0);
	ck_assert(bc_is_zero(buf, 8192));
	ck_assert_int_eq(fmt_flush(img), 0);
	tu_assert_map_matches(img, "z.raw", "raw");
	fmt_close(img);
}
END_TEST

START_TEST(seek_data_extents_exact)
{
	struct fmt_image *img;
	struct fmt_extent ext;

	tu_sh("truncate -s 8M s.raw && qemu-io -f raw -c 'write -P 1 1M 64k' "
	      "-c 'write -P 2 3M 4k' -c 'write -P 3 8380416 8192' s.raw >/dev/null");
	ck_assert_int_eq(fmt_open("s.raw", NULL, 0, &img), 0);
	ck_assert_str_eq(img->drv->name, "raw");
	ck_assert(img->probed);
	ck_assert_int_eq(fmt_block_status(img, 0, 8 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_uint_eq(ext.len, MiB);
	ck_assert_int_eq(ext.host_off, 0);
	ck_assert_int_eq(fmt_block_status(img, MiB, 7 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, 65536);
	ck_assert_int_eq(ext.host_off, MiB);
	/* Clipped to the asked length, from the middle of an extent. */
	ck_assert_int_eq(fmt_block_status(img, MiB + 100, 200, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, 200);
	ck_assert_int_eq(ext.host_off, MiB + 100);
	ck_assert_int_eq(fmt_block_status(img, MiB + 65536, 7 * MiB - 65536, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_uint_eq(ext.len, 2 * MiB - 65536);
	ck_assert_int_eq(fmt_block_status(img, 3 * MiB, 5 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, 4096);
	/* Data up to the very end of the file. */
	ck_assert_int_eq(fmt_block_status(img, 8 * MiB - 8192, 8192, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, 8192);
	tu_assert_map_matches(img, "s.raw", "raw");
	fmt_close(img);
}
END_TEST

START_TEST(hole_at_end_and_unaligned_size)
{
	struct fmt_image *img;
	struct fmt_extent ext;

	tu_sh("truncate -s 1000000 u.raw && qemu-io -f raw -c 'write -P 9 0 4k' u.raw >/dev/null");
	ck_assert_int_eq(fmt_open("u.raw", "raw", 0, &img), 0);
	ck_assert_uint_eq(img->size, 1000000);
	ck_assert_int_eq(fmt_block_status(img, 4096, 1000000 - 4096, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_uint_eq(ext.len, 1000000 - 4096);
	/*
	 * qemu-img rounds the size up to 512 bytes (its map ends at
	 * 1000448); ours is the file's exact size.
	 */
	{
		char *ours = tu_map_json(img);

		ck_assert_str_eq(ours,
				 "[{ \"start\": 0, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 0},\n"
				 "{ \"start\": 4096, \"length\": 995904, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 4096}]\n");
		free(ours);
	}
	fmt_close(img);
}
END_TEST

START_TEST(direct_io_unaligned_requests)
{
	struct fmt_image *img, *plain;
	static uint8_t w[70001], r[70004];
	uint8_t *wbuf = w + 1; /* deliberately unaligned buffer */
	struct stat st;

	tu_sh("truncate -s 1000000 d.raw");
	ck_assert_int_eq(fmt_open("d.raw", "raw", FMT_OPEN_RDWR | FMT_OPEN_DIRECT, &img), 0);
	ck_assert(img->request_align == 512 || img->request_align == 4096);
	ck_assert_int_eq(fcntl(img->fd, F_GETFL) & O_DIRECT, O_DIRECT);
	tu_pattern(wbuf, 70000, 1001, 5);
	ck_assert_int_eq(fmt_pwrite(img, wbuf, 70000, 1001), 0);
	memset(r, 0, sizeof(r));
	ck_assert_int_eq(fmt_pread(img, r + 3, 70000, 1001), 0);
	ck_assert_mem_eq(r + 3, wbuf, 70000);
	/* The file's last, partial block: the size must not change. */
	tu_pattern(wbuf, 100, 1000000 - 100, 6);
	ck_assert_int_eq(fmt_pwrite(img, wbuf, 100, 1000000 - 100), 0);
	ck_assert_int_eq(stat("d.raw", &st), 0);
	ck_assert_int_eq(st.st_size, 1000000);
	ck_assert_int_eq(fmt_pread(img, r, 100, 1000000 - 100), 0);
	ck_assert_mem_eq(r, wbuf, 100);
	/* Unaligned zeroes under O_DIRECT. */
	ck_assert_int_eq(fmt_write_zeroes(img, 1500, 100, 0), 0);
	fmt_close(img);

	/* Same bytes through the page cache. */
	ck_assert_int_eq(fmt_open("d.raw", "raw", 0, &plain), 0);
	tu_pattern(w, 70000, 1001, 5);
	ck_assert_int_eq(fmt_pread(plain, r, 70000, 1001), 0);
	ck_assert_mem_eq(r, w, 499);
	ck_assert(bc_is_zero(r + 499, 100));
	ck_assert_mem_eq(r + 599, w + 599, 70000 - 599);
	ck_assert_int_eq(fmt_pread(plain, r, 1001, 0), 0);
	ck_assert(bc_is_zero(r, 1001));
	tu_pattern(w, 100, 1000000 - 100, 6);
	ck_assert_int_eq(fmt_pread(plain, r, 100, 1000000 - 100), 0);
	ck_assert_mem_eq(r, w, 100);
	fmt_close(plain);
}
END_TEST

struct rmw_arg {
	struct fmt_image *img;
	unsigned int id;
};

/* Thread @id owns bytes [id*100, id*100+100) of every 4 KiB block. */
static void *rmw_writer(void *p)
{
	const struct rmw_arg *a = p;
	uint8_t b[100];
	unsigned int round, blk;

	for (round = 0; round < 20; round++) {
		for (blk = 0; blk < 8; blk++) {
			memset(b, (int)(a->id * 16 + round), sizeof(b));
			if (fmt_pwrite(a->img, b, sizeof(b),
				       blk * 4096u + a->id * 100u) < 0)
				return (void *)1;
		}
	}
	return NULL;
}

START_TEST(direct_io_concurrent_unaligned_writes)
{
	struct fmt_image *img;
	struct rmw_arg args[8];
	pthread_t th[8];
	static uint8_t r[32768];
	unsigned int i, blk;
	void *res;

	tu_sh("truncate -s 32k c.raw");
	ck_assert_int_eq(fmt_open("c.raw", "raw", FMT_OPEN_RDWR | FMT_OPEN_DIRECT, &img), 0);
	for (i = 0; i < 8; i++) {
		args[i].img = img;
		args[i].id = i;
		ck_assert_int_eq(pthread_create(&th[i], NULL, rmw_writer, &args[i]), 0);
	}
	for (i = 0; i < 8; i++) {
		ck_assert_int_eq(pthread_join(th[i], &res), 0);
		ck_assert_ptr_null(res);
	}
	/* Every thread's last write survived the others' read-modify-writes. */
	ck_assert_int_eq(fmt_pread(img, r, sizeof(r), 0), 0);
	for (blk = 0; blk < 8; blk++) {
		for (i = 0; i < 8; i++) {
			uint8_t exp[100];

			memset(exp, (int)(i * 16 + 19), sizeof(exp));
			ck_assert_mem_eq(r + blk * 4096 + i * 100, exp, 100);
		}
		ck_assert(bc_is_zero(r + blk * 4096 + 800, 4096 - 800));
	}
	fmt_close(img);
}
END_TEST

START_TEST(read_only_refuses_writes)
{
	struct fmt_image *img;
	uint8_t b[512] = { 1 };

	tu_sh("truncate -s 1M ro.raw");
	ck_assert_int_eq(fmt_open("ro.raw", "raw", 0, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, b, sizeof(b), 0), -EROFS);
	ck_assert_str_eq(bc_error_get()->message, "ro.raw: image is read-only");
	bc_error_reset();
	ck_assert_int_eq(fmt_write_zeroes(img, 0, 512, 0), -EROFS);
	ck_assert_str_eq(bc_error_get()->message, "ro.raw: image is read-only");
	ck_assert_int_eq(fmt_discard(img, 0, 512), -EROFS);
	ck_assert_int_eq(fmt_set_backing(img, NULL, NULL), -EROFS);
	ck_assert_int_eq(fcntl(img->fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
}
END_TEST

START_TEST(out_of_range_is_einval)
{
	struct fmt_image *img = create_open("o.raw", MiB, FMT_OPEN_RDWR);
	struct fmt_extent ext;
	uint8_t b[16];

	ck_assert_int_eq(fmt_pread(img, b, 2, MiB - 1), -EINVAL);
	ck_assert_int_eq(bc_error_get()->code, ERR_INVALID_ARG);
	ck_assert_str_eq(bc_error_get()->message,
			 "o.raw: range 1048575+2 is outside the image (size 1048576)");
	ck_assert_int_eq(fmt_pwrite(img, b, 16, UINT64_MAX - 8), -EINVAL);
	ck_assert_int_eq(fmt_write_zeroes(img, 512, UINT64_MAX, 0), -EINVAL);
	ck_assert_int_eq(fmt_discard(img, MiB, 1), -EINVAL);
	ck_assert_int_eq(fmt_block_status(img, MiB, 1, &ext), -EINVAL);
	ck_assert_int_eq(fmt_block_status(img, 0, 0, &ext), -EINVAL);
	ck_assert_int_eq(fmt_write_zeroes(img, 0, 512, 0x80), -EINVAL);
	/* The edge itself is fine. */
	ck_assert_int_eq(fmt_pread(img, b, 1, MiB - 1), 0);
	ck_assert_int_eq(fmt_pread(img, b, 0, MiB), 0);
	fmt_close(img);
}
END_TEST

START_TEST(open_errors)
{
	struct fmt_image *img = NULL;

	ck_assert_int_eq(fmt_open("missing.raw", NULL, 0, &img), -ENOENT);
	ck_assert_int_eq(bc_error_get()->code, ERR_NO_SUCH_FILE);
	ck_assert_str_eq(bc_error_get()->message,
			 "missing.raw: No such file or directory");
	tu_sh("mkdir dir");
	ck_assert_int_eq(fmt_open("dir", "raw", 0, &img), -EISDIR);
	ck_assert_str_eq(bc_error_get()->message, "dir: is a directory");
	ck_assert_int_eq(fmt_open("dir", "raw", FMT_OPEN_RDWR, &img), -EISDIR);
	tu_sh("mkfifo fifo");
	ck_assert_int_eq(fmt_open("fifo", "raw", 0, &img), -EINVAL);
	tu_sh("truncate -s 1M f.raw");
	ck_assert_int_eq(fmt_open("f.raw", "vhdx", 0, &img), -EINVAL);
	ck_assert_str_eq(bc_error_get()->message, "unknown format 'vhdx'");
	ck_assert_ptr_null(img);
}
END_TEST

START_TEST(declared_raw_is_never_qcow2)
{
	struct fmt_image *img;
	uint8_t b[4];

	/* A guest wrote a qcow2 magic into its raw disk. */
	tu_sh("truncate -s 1M g.raw && printf 'QFI\\373' | dd of=g.raw conv=notrunc status=none");
	ck_assert_int_eq(fmt_open("g.raw", "raw", FMT_OPEN_RDWR, &img), 0);
	ck_assert_str_eq(img->drv->name, "raw");
	ck_assert(!img->probed);
	ck_assert_uint_eq(img->size, MiB);
	ck_assert_int_eq(fmt_pread(img, b, 4, 0), 0);
	ck_assert_mem_eq(b, "QFI\373", 4);
	ck_assert_int_eq(fmt_set_backing(img, "x.qcow2", "qcow2"), -ENOTSUP);
	ck_assert_str_eq(bc_error_get()->message,
			 "g.raw: raw images have no backing file");
	ck_assert_int_eq(fmt_check(img, &(struct fmt_check_report){ 0 }), -ENOTSUP);
	fmt_close(img);
}
END_TEST

START_TEST(probe_buf)
{
	ck_assert_str_eq(fmt_probe_buf((const uint8_t *)"QFI\373\0\0\0\3", 8), "qcow2");
	ck_assert_str_eq(fmt_probe_buf((const uint8_t *)"QFI", 3), "raw");
	ck_assert_str_eq(fmt_probe_buf((const uint8_t *)"QFI\372", 4), "raw");
	ck_assert_str_eq(fmt_probe_buf((const uint8_t *)"", 0), "raw");
	ck_assert_ptr_eq(fmt_driver_find("raw"), &fmt_raw_driver);
	ck_assert_ptr_null(fmt_driver_find("RAW"));
	ck_assert_ptr_null(fmt_driver_find(NULL));
}
END_TEST

START_TEST(file_helpers)
{
	uint8_t b[64];
	int fd;

	tu_sh("printf abcdef > h.bin");
	fd = open("h.bin", O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fmt_pread_file(fd, b, 6, 0), 0);
	ck_assert_mem_eq(b, "abcdef", 6);
	ck_assert_int_eq(fmt_pread_file(fd, b, 7, 0), -EIO);
	/* Named by its path from /proc: the scratch directory's realpath. */
	{
		static char exp[8192];
		char *dir = realpath(".", NULL);

		ck_assert_ptr_nonnull(dir);
		(void)snprintf(exp, sizeof(exp),
			       "%s/h.bin: unexpected end of file reading 7 bytes at offset 0",
			       dir);
		ck_assert_str_eq(bc_error_get()->message, exp);
		free(dir);
	}
	memset(b, 0xff, sizeof(b));
	ck_assert_int_eq(fmt_pread_file_zfill(fd, b, 10, 2), 0);
	ck_assert_mem_eq(b, "cdef\0\0\0\0\0\0", 10);
	ck_assert_int_eq(fmt_pwrite_file(fd, "XY", 2, 10), 0);
	ck_assert_int_eq(fmt_pread_file(fd, b, 12, 0), 0);
	ck_assert_mem_eq(b, "abcdef\0\0\0\0XY", 12);
	close(fd);
}
END_TEST

static Suite *raw_suite(void)
{
	Suite *s = suite_create("raw");
	TCase *tc = tcase_create("create");

	tu_add_fixtures(tc);
	tcase_add_test(tc, create_makes_sparse_file_of_size);
	tcase_add_test(tc, create_prealloc_allocates);
	tcase_add_test(tc, create_refuses_existing_file);
	tcase_add_test(tc, create_refuses_bad_args);
	suite_add_tcase(s, tc);

	tc = tcase_create("io");
	tcase_set_timeout(tc, 60);
	tu_add_fixtures(tc);
	tcase_add_test(tc, roundtrip_aligned_and_unaligned);
	tcase_add_test(tc, write_zeroes_and_discard_effects);
	tcase_add_test(tc, direct_io_unaligned_requests);
	tcase_add_test(tc, direct_io_concurrent_unaligned_writes);
	tcase_add_test(tc, file_helpers);
	suite_add_tcase(s, tc);

	tc = tcase_create("block_status");
	tu_add_fixtures(tc);
	tcase_add_test(tc, seek_data_extents_exact);
	tcase_add_test(tc, hole_at_end_and_unaligned_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tu_add_fixtures(tc);
	tcase_add_test(tc, read_only_refuses_writes);
	tcase_add_test(tc, out_of_range_is_einval);
	tcase_add_test(tc, open_errors);
	tcase_add_test(tc, declared_raw_is_never_qcow2);
	tcase_add_test(tc, probe_buf);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(raw_suite());
}
