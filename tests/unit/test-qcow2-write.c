/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the qcow2 write side: images made by qcow2_create (via
 * fmt_create) get random writes, zero writes and discards (unaligned,
 * straddling clusters and L2 tables) mirrored in a shadow buffer; then
 * the image must read back as the shadow, pass our check and
 * `qemu-img check` without leaks, and `qemu-img compare` equal to a raw
 * file holding the shadow. Configurations cover v2/v3, cluster sizes
 * 512 B..2 MiB, refcount widths 1/16/64, extended L2, lazy refcounts,
 * with and without a backing file, and images from qemu-img with
 * compressed clusters and internal snapshots (shared clusters).
 *
 * The seed is printed; BC_TEST_SEED=<n> replays a run; BC_TEST_OPS_SCALE=<n>
 * multiplies the number of random operations (soak runs).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "formats/qcow2.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define GiB (1024ull * MiB)

static int have_qemu_img;

struct cfg {
	int compat;
	uint32_t cluster_size;
	int refcount_bits;
	bool extended_l2;
	bool lazy;
	uint64_t size;
	uint64_t backing_size; /* 0 = no backing file */
	int ops;
	bool direct; /* open with O_DIRECT */
};

static unsigned int test_seed(void)
{
	const char *s = getenv("BC_TEST_SEED");
	unsigned int seed =
		s ? (unsigned int)strtoul(s, NULL, 0)
		  : (unsigned int)time(NULL) ^ (unsigned int)getpid();

	printf("# seed %u (BC_TEST_SEED=%u replays)\n", seed, seed);
	fflush(stdout);
	return seed;
}

static int ops_scale(void)
{
	const char *s = getenv("BC_TEST_OPS_SCALE");
	int v = s ? atoi(s) : 1;

	return v > 0 ? v : 1;
}

static uint64_t rnd(unsigned int *s, uint64_t n)
{
	uint64_t v = ((uint64_t)rand_r(s) << 31) ^ (uint64_t)rand_r(s);

	return n ? v % n : 0;
}

static void write_file(const char *name, const uint8_t *buf, uint64_t n)
{
	int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fmt_pwrite_file(fd, buf, n, 0), 0);
	ck_assert_int_eq(close(fd), 0);
}

/* qemu-img check: exit 0 means no corruption and no leak. */
static void assert_qemu_check(const char *name)
{
	char cmd[512];
	int ret;

	if (!have_qemu_img)
		return;
	(void)snprintf(cmd, sizeof(cmd),
		       "qemu-img check -f qcow2 '%s' >check.out 2>&1", name);
	ret = system(cmd);
	if (ret != 0) {
		(void)system("cat check.out");
		ck_abort_msg("qemu-img check %s failed: %d", name, ret);
	}
}

static void assert_qemu_compare(const char *name, const uint8_t *shadow,
				uint64_t size)
{
	if (!have_qemu_img)
		return;
	write_file("shadow.raw", shadow, size);
	tu_sh("qemu-img compare -q -f qcow2 -F raw '%s' shadow.raw", name);
}

static void assert_reads_shadow(struct fmt_image *img, const uint8_t *shadow)
{
	uint8_t *buf = malloc(img->size);
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fmt_pread(img, buf, img->size, 0), 0);
	if (memcmp(buf, shadow, img->size)) {
		for (i = 0; i < img->size && buf[i] == shadow[i]; i++)
			;
		ck_abort_msg("content differs at offset %llu: 0x%02x != 0x%02x",
			     (unsigned long long)i, buf[i], shadow[i]);
	}
	free(buf);
}

static void assert_our_check_clean(struct fmt_image *img)
{
	struct fmt_check_report rep;

	ck_assert_int_eq(fmt_check(img, &rep), 0);
	ck_assert_uint_eq(rep.corruptions, 0);
	ck_assert_uint_eq(rep.leaks, 0);
	ck_assert_uint_eq(rep.check_errors, 0);
}

/* A random range: aligned, unaligned, straddling; sometimes long. */
static void rand_range(unsigned int *s, const struct cfg *c, uint64_t *off,
		       uint64_t *len)
{
	uint64_t cs = c->cluster_size, size = c->size, o, l;

	switch (rnd(s, 5)) {
	case 0: /* cluster aligned, whole clusters */
		o = rnd(s, size / cs) * cs;
		l = (1 + rnd(s, 4)) * cs;
		break;
	case 1: /* straddling a cluster boundary */
		o = rnd(s, size / cs) * cs + cs - 1 - rnd(s, BC_MIN(cs, 700));
		l = 1 + rnd(s, 1500);
		break;
	case 2: /* long run */
		o = rnd(s, size);
		l = 1 + rnd(s, BC_MIN(size / 2, 40 * cs));
		break;
	case 3: /* subcluster-ish units */
		o = rnd(s, size / 512) * 512;
		l = (1 + rnd(s, 16)) * 512;
		break;
	default:
		o = rnd(s, size);
		l = 1 + rnd(s, 3 * cs);
		break;
	}
	if (o >= size)
		o = size - 1;
	if (l > size - o)
		l = size - o;
	*off = o;
	*len = l;
}

/* Shadow of a discard: whole clusters (or up to the image end) read 0. */
static void shadow_discard(const struct cfg *c, uint8_t *shadow, uint64_t off,
			   uint64_t len)
{
	uint64_t cs = c->cluster_size, end = off + len;
	uint64_t a = bc_align_up(off, cs);
	uint64_t b = end >= c->size ? end : bc_align_down(end, cs);

	if (a < b)
		memset(shadow + a, 0, b - a);
}

static void run_random(const struct cfg *c, unsigned int seed)
{
	struct fmt_create_opts o = {
		.format = "qcow2",
		.size = c->size,
		.cluster_size = c->cluster_size,
		.compat = c->compat,
		.refcount_bits = c->refcount_bits,
		.extended_l2 = c->extended_l2,
		.lazy_refcounts = c->lazy,
	};
	uint8_t *shadow = calloc(1, c->size), *data = malloc(c->size);
	struct fmt_image *img;
	unsigned int s = seed;
	int i;

	ck_assert_ptr_nonnull(shadow);
	ck_assert_ptr_nonnull(data);
	if (c->backing_size) {
		uint8_t *b = malloc(c->backing_size);

		ck_assert_ptr_nonnull(b);
		tu_pattern(b, c->backing_size, 0, 77);
		write_file("base.raw", b, c->backing_size);
		memcpy(shadow, b, BC_MIN(c->backing_size, c->size));
		free(b);
		o.backing_file = "base.raw";
		o.backing_fmt = "raw";
	}
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	assert_qemu_check("t.qcow2");
	ck_assert_int_eq(
		fmt_open("t.qcow2", "qcow2",
			 FMT_OPEN_RDWR | (c->direct ? FMT_OPEN_DIRECT : 0),
			 &img),
		0);
	assert_reads_shadow(img, shadow);
	for (i = 0; i < c->ops * ops_scale(); i++) {
		uint64_t off, len;
		unsigned int op = (unsigned int)rnd(&s, 10);
		int ret;

		rand_range(&s, c, &off, &len);
		if (op < 6) {
			tu_pattern(data, len, off, (unsigned int)i + 1);
			ck_assert_int_eq(fmt_pwrite(img, data, len, off), 0);
			memcpy(shadow + off, data, len);
		} else if (op < 8) {
			unsigned int fl = rnd(&s, 2) ? FMT_ZERO_MAY_UNMAP : 0;

			ck_assert_int_eq(fmt_write_zeroes(img, off, len, fl),
					 0);
			memset(shadow + off, 0, len);
		} else {
			ret = fmt_discard(img, off, len);
			if (c->compat == 2 && c->backing_size) {
				ck_assert_int_eq(ret, -ENOTSUP);
			} else {
				ck_assert_int_eq(ret, 0);
				shadow_discard(c, shadow, off, len);
			}
		}
		if (i % 25 == 24)
			assert_reads_shadow(img, shadow);
	}
	assert_reads_shadow(img, shadow);
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	assert_qemu_compare("t.qcow2", shadow, c->size);
	/* Reopened, it still reads the same. */
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", 0, &img), 0);
	assert_reads_shadow(img, shadow);
	assert_our_check_clean(img);
	fmt_close(img);
	free(shadow);
	free(data);
}

static const struct cfg cfgs[] = {
	{3, 65536, 16, false, false, 8 * MiB, 0, 300},
	{3, 65536, 16, false, false, 8 * MiB, 5 * MiB + 512, 300},
	{2, 65536, 16, false, false, 8 * MiB, 0, 300},
	{2, 4096, 16, false, false, 4 * MiB, 3 * MiB, 300},
	{3, 512, 1, false, false, 2 * MiB, MiB, 300},
	{3, 512, 64, false, false, 2 * MiB, 0, 300},
	{3, 4096, 64, false, true, 4 * MiB, 4 * MiB, 300},
	{3, 4096, 1, false, false, 4 * MiB + 1024, 0, 300},
	{3, 65536, 16, true, false, 8 * MiB, 6 * MiB, 300},
	{3, 16384, 4, true, false, 4 * MiB, 0, 300},
	{3, 65536, 16, true, false, 8 * MiB + 2560, 8 * MiB + 2560, 300},
	{2, 65536, 16, false, false, 8 * MiB + 1536, 4 * MiB + 512, 300},
	{3, 2 * MiB, 16, false, false, 16 * MiB, 9 * MiB, 120},
	{3, 2 * MiB, 64, true, false, 16 * MiB, 0, 120},
	{3, 2 * MiB, 1, true, true, 16 * MiB, 16 * MiB, 120},
	{3, 65536, 16, false, false, 8 * MiB, 5 * MiB + 512, 200, true},
	{3, 16384, 8, true, true, 4 * MiB, 2 * MiB, 200, true},
	{2, 512, 16, false, false, 2 * MiB, MiB, 200, true},
};

START_TEST(random_ops_match_shadow)
{
	const struct cfg *c = &cfgs[_i];

	printf("# config %d: compat %d cluster %u refcount_bits %d ext_l2 %d lazy %d size %llu backing %llu direct %d\n",
	       _i, c->compat, c->cluster_size, c->refcount_bits, c->extended_l2,
	       c->lazy, (unsigned long long)c->size,
	       (unsigned long long)c->backing_size, c->direct);
	run_random(c, test_seed());
}
END_TEST

/*
 * Random operations over images qemu-img made: compressed clusters (also
 * with extended L2), an internal snapshot sharing every cluster (COPIED
 * clear), a compressed overlay over a backing file.
 */
START_TEST(writes_over_qemu_made_images)
{
	struct cfg c = {3, 65536, 16, false, false, 4 * MiB, 0, 200};
	uint8_t *shadow = malloc(c.size), *data = malloc(c.size);
	struct fmt_image *img;
	unsigned int s = test_seed();
	int i;

	if (!have_qemu_img)
		return;
	ck_assert_ptr_nonnull(shadow);
	ck_assert_ptr_nonnull(data);
	tu_pattern(shadow, c.size, 0, 3);
	memset(shadow + MiB, 0, 300 * KiB); /* a hole in the middle */
	write_file("src.raw", shadow, c.size);
	switch (_i) {
	case 0:
		tu_sh("qemu-img convert -c -f raw -O qcow2 src.raw t.qcow2");
		/* A snapshot makes every cluster shared (COPIED cleared). */
		tu_sh("qemu-img snapshot -c snap1 t.qcow2");
		break;
	case 1:
		c.cluster_size = 32768;
		c.extended_l2 = true;
		tu_sh("qemu-img convert -c -f raw -O qcow2 -o extended_l2=on,cluster_size=32k src.raw t.qcow2");
		tu_sh("qemu-img snapshot -c snap1 t.qcow2");
		break;
	default:
		/* Overlay with compressed clusters only where it differs. */
		tu_sh("qemu-img create -q -f raw base.raw 3M");
		tu_sh("qemu-io -f raw -c 'write -P 0x33 0 3M' base.raw >/dev/null");
		tu_sh("qemu-img create -q -f qcow2 -b base.raw -F raw t.qcow2 4M");
		tu_sh("qemu-io -f qcow2 -c 'write -c -P 0x44 64k 64k' -c 'write -c -P 0x55 1M 128k' -c 'write -z 2M 64k' t.qcow2 >/dev/null");
		memset(shadow, 0x33, 3 * MiB);
		memset(shadow + 3 * MiB, 0, MiB);
		memset(shadow + 64 * KiB, 0x44, 64 * KiB);
		memset(shadow + MiB, 0x55, 128 * KiB);
		memset(shadow + 2 * MiB, 0, 64 * KiB);
		break;
	}
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	assert_reads_shadow(img, shadow);
	for (i = 0; i < c.ops; i++) {
		uint64_t off, len;
		unsigned int op = (unsigned int)rnd(&s, 10);

		rand_range(&s, &c, &off, &len);
		if (op < 7) {
			tu_pattern(data, len, off, (unsigned int)i + 9);
			ck_assert_int_eq(fmt_pwrite(img, data, len, off), 0);
			memcpy(shadow + off, data, len);
		} else if (op < 9) {
			ck_assert_int_eq(
				fmt_write_zeroes(img, off, len,
						 op == 8 ? FMT_ZERO_MAY_UNMAP
							 : 0),
				0);
			memset(shadow + off, 0, len);
		} else {
			ck_assert_int_eq(fmt_discard(img, off, len), 0);
			shadow_discard(&c, shadow, off, len);
		}
	}
	assert_reads_shadow(img, shadow);
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	assert_qemu_compare("t.qcow2", shadow, c.size);
	if (_i < 2) {
		/* The snapshot still holds the original data. */
		tu_sh("qemu-img snapshot -a snap1 t.qcow2");
		tu_sh("qemu-img compare -q -f qcow2 -F raw t.qcow2 src.raw");
		assert_qemu_check("t.qcow2");
	}
	free(shadow);
	free(data);
}
END_TEST

/* A large write over unallocated space is one allocation, one data write. */
START_TEST(sequential_write_allocates_contiguously)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = 32 * MiB};
	struct fmt_image *img;
	struct fmt_extent ext;
	uint8_t *buf = malloc(8 * MiB);

	ck_assert_ptr_nonnull(buf);
	tu_pattern(buf, 8 * MiB, 0, 5);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, 8 * MiB, 4 * MiB), 0);
	ck_assert_int_eq(fmt_block_status(img, 4 * MiB, 8 * MiB, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, 8 * MiB);
	ck_assert_int_ge(ext.host_off, 0);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	free(buf);
}
END_TEST

static uint64_t file_size_of(const char *name, uint64_t *allocated)
{
	struct stat st;

	ck_assert_int_eq(stat(name, &st), 0);
	if (allocated)
		*allocated = (uint64_t)st.st_blocks * 512;
	return (uint64_t)st.st_size;
}

/*
 * fmt_reserve(): the file is grown (and allocated) once by what is
 * announced, data spread over four L2 tables then needs no growth, and
 * close gives back what was not used.
 */
START_TEST(reserve_grows_once_and_close_trims)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = 4 * GiB};
	uint64_t before, reserved, alloc, i;
	struct fmt_image *img;
	uint8_t *buf = malloc(4 * MiB), *back = malloc(4 * MiB);

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(back);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	before = file_size_of("t.qcow2", NULL);
	ck_assert_int_eq(fmt_reserve(img, 16 * MiB), 0);
	reserved = file_size_of("t.qcow2", &alloc);
	ck_assert_uint_ge(reserved, before + 16 * MiB);
	ck_assert_uint_ge(alloc, 16 * MiB);
	/* 64 KiB clusters: one L2 table per 512 MiB, four of them here. */
	for (i = 0; i < 4; i++) {
		tu_pattern(buf, 4 * MiB, i * GiB, 11);
		ck_assert_int_eq(fmt_pwrite(img, buf, 4 * MiB, i * GiB + 64 * KiB), 0);
	}
	ck_assert_uint_eq(file_size_of("t.qcow2", NULL), reserved);
	fmt_close(img);
	ck_assert_uint_lt(file_size_of("t.qcow2", NULL), reserved);
	assert_qemu_check("t.qcow2");

	/* Read-only: nothing to reserve, nothing changes. */
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", 0, &img), 0);
	before = file_size_of("t.qcow2", NULL);
	ck_assert_int_eq(fmt_reserve(img, 64 * MiB), 0);
	ck_assert_uint_eq(file_size_of("t.qcow2", NULL), before);
	for (i = 0; i < 4; i++) {
		tu_pattern(buf, 4 * MiB, i * GiB, 11);
		ck_assert_int_eq(fmt_pread(img, back, 4 * MiB, i * GiB + 64 * KiB), 0);
		ck_assert_mem_eq(back, buf, 4 * MiB);
	}
	fmt_close(img);
	free(buf);
	free(back);
}
END_TEST

START_TEST(write_zeroes_keeps_or_unmaps_host_cluster)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = 4 * MiB};
	struct fmt_image *img;
	struct fmt_extent ext;
	static uint8_t buf[65536];
	int64_t host;

	memset(buf, 0xab, sizeof(buf));
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 65536), 0);
	ck_assert_int_eq(fmt_block_status(img, 0, 65536, &ext), 0);
	host = ext.host_off;
	ck_assert_int_eq(fmt_write_zeroes(img, 0, 65536, 0), 0);
	ck_assert_int_eq(fmt_block_status(img, 0, 65536, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_ZERO);
	ck_assert_int_eq(ext.host_off, host); /* preallocated zero cluster */
	ck_assert_int_eq(
		fmt_write_zeroes(img, 65536, 65536, FMT_ZERO_MAY_UNMAP), 0);
	ck_assert_int_eq(fmt_block_status(img, 65536, 65536, &ext), 0);
	ck_assert_int_ne(ext.state, FMT_DATA);
	ck_assert_int_eq(ext.host_off, -1);
	/* Writing into the preallocated zero cluster reuses it. */
	ck_assert_int_eq(fmt_pwrite(img, buf, 100, 10), 0);
	ck_assert_int_eq(fmt_block_status(img, 0, 65536, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_int_eq(ext.host_off, host);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	if (have_qemu_img)
		tu_sh("qemu-io -f qcow2 -c 'read -P 0 0 10' -c 'read -P 0xab 10 100' -c 'read -P 0 110 130962' t.qcow2 >/dev/null");
}
END_TEST

START_TEST(set_backing_rewrites_header)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = MiB,
				    .backing_file = "a.raw",
				    .backing_fmt = "raw"};
	struct fmt_create_opts r = {.format = "raw", .size = MiB};
	struct fmt_create_opts bq = {.format = "qcow2", .size = MiB};
	struct fmt_image *img;
	char *out;

	ck_assert_int_eq(fmt_create("a.raw", &r), 0);
	ck_assert_int_eq(fmt_create("b.qcow2", &bq), 0);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_str_eq(img->backing_name, "a.raw");
	ck_assert_int_eq(fmt_set_backing(img, "b.qcow2", "qcow2"), 0);
	ck_assert_str_eq(img->backing_name, "b.qcow2");
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	fmt_close(img);
	if (have_qemu_img) {
		out = tu_out("qemu-img info t.qcow2");
		ck_assert_ptr_nonnull(strstr(out, "backing file: b.qcow2\n"));
		ck_assert_ptr_nonnull(
			strstr(out, "backing file format: qcow2\n"));
		ck_assert_ptr_nonnull(strstr(out, "compat: 1.1\n"));
		free(out);
		assert_qemu_check("t.qcow2");
	}
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_str_eq(img->backing_name, "b.qcow2");
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	/* The feature name table extension survived the rewrite. */
	ck_assert_uint_eq(((struct qcow2 *)img->priv)->feature_names_len,
			  8 * 48);
	ck_assert_int_eq(fmt_set_backing(img, NULL, NULL), 0);
	ck_assert_ptr_null(img->backing_name);
	fmt_close(img);
	if (have_qemu_img) {
		out = tu_out("qemu-img info t.qcow2");
		ck_assert_ptr_null(strstr(out, "backing file"));
		free(out);
		assert_qemu_check("t.qcow2");
	}
}
END_TEST

START_TEST(create_info_matches_qemu)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 5 * MiB,
				    .cluster_size = 16384,
				    .refcount_bits = 4,
				    .extended_l2 = true,
				    .lazy_refcounts = true};
	struct fmt_create_opts v2 = {.format = "qcow2",
				     .size = MiB,
				     .compat = 2,
				     .refcount_bits = 8};
	char *out;

	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), -EEXIST);
	ck_assert_int_eq(fmt_create("v2.qcow2", &v2), -EINVAL);
	ck_assert_int_eq(access("v2.qcow2", F_OK), -1);
	v2.refcount_bits = 0;
	ck_assert_int_eq(fmt_create("v2.qcow2", &v2), 0);
	if (!have_qemu_img)
		return;
	out = tu_out("qemu-img info t.qcow2");
	ck_assert_ptr_nonnull(
		strstr(out, "virtual size: 5 MiB (5242880 bytes)\n"));
	ck_assert_ptr_nonnull(strstr(out, "cluster_size: 16384\n"));
	ck_assert_ptr_nonnull(strstr(out, "lazy refcounts: true\n"));
	ck_assert_ptr_nonnull(strstr(out, "refcount bits: 4\n"));
	ck_assert_ptr_nonnull(strstr(out, "extended l2: true\n"));
	free(out);
	out = tu_out("qemu-img info v2.qcow2");
	ck_assert_ptr_nonnull(strstr(out, "compat: 0.10\n"));
	free(out);
	assert_qemu_check("t.qcow2");
	assert_qemu_check("v2.qcow2");
	/* An empty image is byte for byte what qemu-img makes. */
	v2.compat = 3;
	v2.size = 0;
	ck_assert_int_eq(fmt_create("e.qcow2", &v2), 0);
	tu_sh("qemu-img create -q -f qcow2 q.qcow2 0 && cmp e.qcow2 q.qcow2");
	/* So is a default one, with a backing file, and a 100 GB one. */
	v2.size = 100000000000ull;
	ck_assert_int_eq(fmt_create("h.qcow2", &v2), 0);
	tu_sh("qemu-img create -q -f qcow2 qh.qcow2 100000000000 && cmp h.qcow2 qh.qcow2");
	v2.size = 0;
	v2.backing_file = "v2.qcow2";
	v2.backing_fmt = "qcow2";
	ck_assert_int_eq(fmt_create("b.qcow2", &v2), 0);
	tu_sh("qemu-img create -q -f qcow2 -b v2.qcow2 -F qcow2 qb.qcow2 && cmp b.qcow2 qb.qcow2");
}
END_TEST

/* A dirty image (lazy refcounts, killed writer) is repaired at RW open. */
START_TEST(dirty_image_refcounts_rebuilt)
{
	struct fmt_image *img;
	uint8_t buf[4096];
	char *out;

	if (!have_qemu_img)
		return;
	tu_sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4096 t.qcow2 4M");
	/* qemu-io dies with the dirty bit set and refcounts not written. */
	(void)system(
		"qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 2M 64k' -c 'sigraise 9' t.qcow2 >/dev/null 2>&1");
	out = tu_out("qemu-img info t.qcow2");
	ck_assert_ptr_nonnull(strstr(out, "corrupt: false"));
	free(out);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pread(img, buf, sizeof(buf), 2 * MiB), 0);
	ck_assert_uint_eq(buf[0], 0x6b);
	assert_our_check_clean(img);
	memset(buf, 0x11, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 3 * MiB), 0);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	tu_sh("qemu-io -f qcow2 -c 'read -P 0x5a 0 1M' -c 'read -P 0x6b 2M 64k' -c 'read -P 0x11 3M 4k' t.qcow2 >/dev/null");
}
END_TEST

/* Preallocated images: every cluster mapped, reads zeros, writes in place. */
START_TEST(create_preallocated)
{
	static const enum fmt_prealloc modes[] = {
		FMT_PREALLOC_METADATA, FMT_PREALLOC_FALLOC, FMT_PREALLOC_FULL};
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 3 * MiB + 512,
				    .cluster_size = 16384,
				    .extended_l2 = _i >= 3,
				    .refcount_bits = 2,
				    .prealloc = modes[_i % 3]};
	struct fmt_image *img;
	struct fmt_extent ext;
	uint8_t *zero = calloc(1, o.size), *buf = malloc(o.size);
	int64_t host;

	ck_assert_ptr_nonnull(zero);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fmt_create("p.qcow2", &o), 0);
	assert_qemu_check("p.qcow2");
	ck_assert_int_eq(fmt_open("p.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_block_status(img, 0, img->size, &ext), 0);
	ck_assert_int_eq(ext.state, FMT_DATA);
	ck_assert_uint_eq(ext.len, img->size);
	host = ext.host_off;
	assert_reads_shadow(img, zero);
	tu_pattern(buf, o.size, 0, 4);
	ck_assert_int_eq(fmt_pwrite(img, buf + 5000, 100000, 5000), 0);
	memcpy(zero + 5000, buf + 5000, 100000);
	ck_assert_int_eq(fmt_block_status(img, 0, img->size, &ext), 0);
	ck_assert_uint_eq(ext.len, img->size);
	ck_assert_int_eq(ext.host_off, host); /* written in place */
	assert_reads_shadow(img, zero);
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("p.qcow2");
	assert_qemu_compare("p.qcow2", zero, o.size);
	free(zero);
	free(buf);
}
END_TEST

START_TEST(refusals_have_exact_errors)
{
	struct fmt_create_opts r = {.format = "raw", .size = MiB};
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = MiB,
				    .compat = 2,
				    .backing_file = "b.raw",
				    .backing_fmt = "raw"};
	struct fmt_create_opts bad = {.format = "qcow2",
				      .size = MiB,
				      .cluster_size = 8192,
				      .extended_l2 = true};
	static uint8_t buf[4096];
	struct fmt_image *img;
	char name[1100];

	ck_assert_int_eq(fmt_create("x.qcow2", &bad), -EINVAL);
	ck_assert_str_eq(
		bc_error_get()->message,
		"x.qcow2: extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
	ck_assert_int_eq(access("x.qcow2", F_OK), -1);
	bad.cluster_size = 65536;
	bad.size = 1000;
	ck_assert_int_eq(fmt_create("x.qcow2", &bad), -EINVAL);
	ck_assert_str_eq(bc_error_get()->message,
			 "x.qcow2: image size must be a multiple of 512 bytes");

	ck_assert_int_eq(fmt_create("b.raw", &r), 0);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_discard(img, 0, 65536), -ENOTSUP);
	ck_assert_int_eq(bc_error_get()->code, ERR_UNSUPPORTED);
	ck_assert_str_eq(
		bc_error_get()->message,
		"t.qcow2: discard is not supported on qcow2 v2 images with a backing file");
	/* A long name fits in a 64 KiB header cluster. */
	memset(name, 'n', 1000);
	name[1000] = '\0';
	ck_assert_int_eq(fmt_set_backing(img, name, "raw"), 0);
	fmt_close(img);

	/* Without its backing opened, a partial write cannot copy-on-write. */
	ck_assert_int_eq(unlink("t.qcow2"), 0);
	o.compat = 3;
	o.cluster_size = 512;
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2",
				  FMT_OPEN_RDWR | FMT_OPEN_NO_BACKING, &img),
			 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, 100, 0), -ENOTSUP);
	ck_assert_str_eq(
		bc_error_get()->message,
		"t.qcow2: backing file not opened: cannot copy-on-write a partial cluster");
	ck_assert_int_eq(fmt_pwrite(img, buf, 1024, 512), 0);
	/* 512-byte header cluster: a 1000-byte name does not fit. */
	ck_assert_int_eq(fmt_set_backing(img, name, "raw"), -EINVAL);
	ck_assert_str_eq(
		bc_error_get()->message,
		"t.qcow2: backing file name and header extensions do not fit in the header cluster");
	ck_assert_str_eq(img->backing_name, "b.raw");
	fmt_close(img);
	assert_qemu_check("t.qcow2");
}
END_TEST

#define NTHREADS 4
#define SEG	 3000u /* bytes per segment; thread t owns segments k % 4 == t */

struct thr {
	struct fmt_image *img;
	uint8_t *shadow;
	unsigned int seed;
	int id;
	int failed;
};

static void *thread_ops(void *arg)
{
	struct thr *t = arg;
	uint64_t nseg = t->img->size / SEG;
	uint8_t buf[SEG], rd[SEG];
	int i;

	for (i = 0; i < 300 && !t->failed; i++) {
		uint64_t k = rnd(&t->seed, nseg / NTHREADS) * NTHREADS +
			     (uint64_t)t->id;
		uint64_t a = rnd(&t->seed, SEG), b = rnd(&t->seed, SEG);
		uint64_t lo = BC_MIN(a, b), len = BC_MAX(a, b) - lo + 1;
		uint64_t off = k * SEG + lo;

		if (off + len > t->img->size)
			continue;
		if (rnd(&t->seed, 4)) {
			tu_pattern(buf, len, off,
				   (unsigned int)(i + 31 * t->id));
			if (fmt_pwrite(t->img, buf, len, off))
				t->failed = 1;
			memcpy(t->shadow + off, buf, len);
		} else {
			if (fmt_pread(t->img, rd, SEG, k * SEG) ||
			    memcmp(rd, t->shadow + k * SEG, SEG))
				t->failed = 2;
		}
	}
	return NULL;
}

/* Concurrent writers and readers on one image, sharing clusters. */
START_TEST(concurrent_writes_and_reads)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 4 * MiB,
				    .cluster_size = 4096,
				    .extended_l2 = false,
				    .backing_file = "base.raw",
				    .backing_fmt = "raw"};
	uint8_t *shadow = malloc(o.size);
	struct thr th[NTHREADS];
	pthread_t tid[NTHREADS];
	struct fmt_image *img;
	unsigned int seed = test_seed();
	int i;

	ck_assert_ptr_nonnull(shadow);
	tu_pattern(shadow, o.size, 0, 12);
	write_file("base.raw", shadow, o.size);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	for (i = 0; i < NTHREADS; i++) {
		th[i] = (struct thr){img, shadow, seed + (unsigned int)i, i, 0};
		ck_assert_int_eq(
			pthread_create(&tid[i], NULL, thread_ops, &th[i]), 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		ck_assert_int_eq(pthread_join(tid[i], NULL), 0);
		ck_assert_int_eq(th[i].failed, 0);
	}
	assert_reads_shadow(img, shadow);
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	assert_qemu_compare("t.qcow2", shadow, o.size);
	free(shadow);
}
END_TEST

/*
 * Autoclear bits are cleared at the first write, not at open: an image
 * with a persistent bitmap opened read-write but not written stays as it
 * was; after a write QEMU sees the bitmaps as inconsistent.
 */
/*
 * A bitmap made by qemu-img survives our writes: still consistent (the
 * autoclear bit kept), recording the write, no cluster leaked.
 */
START_TEST(bitmaps_kept_at_first_write)
{
	struct fmt_image *img;
	uint8_t buf[512];
	char *out;

	if (!have_qemu_img)
		return;
	memset(buf, 3, sizeof(buf));
	tu_sh("qemu-img create -q -f qcow2 t.qcow2 1M && qemu-img bitmap --add t.qcow2 bm0");
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	out = tu_out("qemu-img info t.qcow2 2>&1");
	ck_assert_ptr_nonnull(strstr(out, "name: bm0"));
	ck_assert_ptr_null(strstr(out, "inconsistent"));
	ck_assert_ptr_null(strstr(out, "in-use"));
	free(out);
}
END_TEST

/* Our own writer dying with lazy refcounts: reopened read-write, repaired. */
START_TEST(killed_lazy_writer_leaves_repairable_image)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 4 * MiB,
				    .cluster_size = 4096,
				    .lazy_refcounts = true};
	static uint8_t buf[65536];
	struct fmt_image *img;
	char *out;
	pid_t pid;
	int st;

	memset(buf, 0x77, sizeof(buf));
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* Metadata is written back: a flush makes the write stay. */
		if (fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img) ||
		    fmt_pwrite(img, buf, sizeof(buf), 100000) ||
		    fmt_flush(img))
			_exit(1);
		_exit(0); /* no close: the dirty bit stays */
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (have_qemu_img) {
		out = tu_out("qemu-img info t.qcow2");
		ck_assert_ptr_nonnull(strstr(out, "lazy refcounts: true"));
		free(out);
	}
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", 0, &img), 0);
	ck_assert(((struct qcow2 *)img->priv)->hdr.incompatible_features &
		  QCOW2_INCOMPAT_DIRTY);
	fmt_close(img);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert(!(((struct qcow2 *)img->priv)->hdr.incompatible_features &
		    QCOW2_INCOMPAT_DIRTY));
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	if (have_qemu_img)
		tu_sh("qemu-io -f qcow2 -c 'read -P 0x77 100000 65536' -c 'read -P 0 0 100000' t.qcow2 >/dev/null");
}
END_TEST

/* Host offset of the cluster mapping guest offset @off (-1: none). */
static int64_t host_of(struct fmt_image *img, uint64_t off)
{
	struct fmt_extent ext;

	ck_assert_int_eq(fmt_block_status(img, off, 4096, &ext), 0);
	return ext.state == FMT_DATA ? ext.host_off : -1;
}

/*
 * Write-back metadata: an allocating write changes nothing on disk in
 * the L2 table until a flush; a cluster that lost its reference is not
 * handed out again before the flush wrote the change; close trims the
 * file grown ahead.
 */
START_TEST(frees_wait_for_the_l2_write_back)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 4 * MiB,
				    .cluster_size = 4096};
	static uint8_t buf[4096];
	struct fmt_image *img;
	struct stat st;
	int64_t x, y;

	memset(buf, 0x5a, sizeof(buf));
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, 4096, 0), 0);
	if (have_qemu_img) {
		/* Not flushed: the L2 entry is only in the cache. */
		tu_sh("qemu-io -f qcow2 -r -U -c 'read -P 0 0 4096' t.qcow2 >/dev/null");
	}
	ck_assert_int_eq(fmt_flush(img), 0);
	if (have_qemu_img)
		tu_sh("qemu-io -f qcow2 -r -U -c 'read -P 0x5a 0 4096' t.qcow2 >/dev/null");
	x = host_of(img, 0);
	ck_assert_int_gt(x, 0);
	/* The file grew ahead of the allocation. */
	ck_assert_int_eq(stat("t.qcow2", &st), 0);
	ck_assert_int_ge(st.st_size, x + (int64_t)MiB);
	ck_assert_int_eq(fmt_write_zeroes(img, 0, 4096, FMT_ZERO_MAY_UNMAP), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, 4096, 65536), 0);
	y = host_of(img, 65536);
	ck_assert_int_gt(y, 0);
	ck_assert_int_ne(y, x); /* x is still referenced on disk */
	ck_assert_int_eq(fmt_flush(img), 0);
	ck_assert_int_eq(fmt_pwrite(img, buf, 4096, 131072), 0);
	ck_assert_int_eq(host_of(img, 131072), x); /* free now */
	fmt_close(img);
	ck_assert_int_eq(stat("t.qcow2", &st), 0);
	ck_assert_int_eq(st.st_size, BC_MAX(x, y) + 4096);
	assert_qemu_check("t.qcow2");
	if (have_qemu_img)
		tu_sh("qemu-io -f qcow2 -c 'read -P 0 0 4096' -c 'read -P 0x5a 65536 4096' -c 'read -P 0x5a 131072 4096' t.qcow2 >/dev/null");
}
END_TEST

/*
 * More dirty L2 tables than the cache holds: evicted tables reach the file
 * (after their refcounts), so the image on disk is consistent at every
 * moment and the first writes are readable by another program before any
 * flush. 512-byte clusters: one L2 table maps 32 KiB, the cache holds 256.
 */
START_TEST(evicted_l2_tables_are_written_in_order)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = 16 * MiB,
				    .cluster_size = 512,
				    .refcount_bits = 1}; /* no new refcount block */
	static uint8_t buf[512];
	struct fmt_image *img;
	uint64_t off;
	int ret;

	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	ck_assert_uint_lt(((struct qcow2 *)img->priv)->l2_cache.n, 512);
	/* Every L2 table exists and is on disk; then only data allocates. */
	memset(buf, 0xee, sizeof(buf));
	for (off = 0; off < 16 * MiB; off += 32768)
		ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), off + 4096),
				 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	for (off = 0; off < 16 * MiB; off += 32768) {
		memset(buf, (int)(off >> 15) | 1, sizeof(buf));
		ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), off), 0);
	}
	if (have_qemu_img) {
		/* 0: clean, 3: leaks only (refcounts ahead of the tables). */
		ret = system("qemu-img check -q -U t.qcow2 >/dev/null 2>&1");
		ck_assert(WEXITSTATUS(ret) == 0 || WEXITSTATUS(ret) == 3);
		tu_sh("qemu-io -f qcow2 -r -U -c 'read -P 1 0 512' -c 'read -P 3 65536 512' t.qcow2 >/dev/null");
	}
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	if (have_qemu_img)
		tu_sh("qemu-io -f qcow2 -c 'read -P 0xff 16744448 512' t.qcow2 >/dev/null");
}
END_TEST

/*
 * A new L2 table costs no sync of its own: it is written back with the
 * others at the flush, and its L1 entry after them (refcounts, sync, L2
 * tables, sync, L1, sync). Before the flush the image on disk is
 * consistent (leaks at most) and afterwards it reads every write.
 */
START_TEST(new_l2_tables_linked_at_flush)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = 4 * GiB};
	static uint8_t buf[64 * KiB];
	struct fmt_image *img;
	struct qcow2 *q;
	uint64_t i, syncs;
	int ret;

	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	q = img->priv;
	/* The first write marks the image (feature bits): not counted. */
	memset(buf, 0x11, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_flush(img), 0);
	syncs = q->syncs;
	/* Seven more tables (one per 512 MiB). */
	for (i = 1; i < 8; i++) {
		memset(buf, (int)(0x11 * (i + 1)), sizeof(buf));
		ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf),
					    i * 512 * MiB + 64 * KiB),
				 0);
	}
	ck_assert_uint_eq(q->syncs, syncs);
	if (have_qemu_img) {
		/* 0: clean, 3: leaks only (counted, not yet linked). */
		ret = system("qemu-img check -q -U t.qcow2 >/dev/null 2>&1");
		ck_assert(WEXITSTATUS(ret) == 0 || WEXITSTATUS(ret) == 3);
	}
	ck_assert_int_eq(fmt_flush(img), 0);
	ck_assert_uint_eq(q->syncs, syncs + 3);
	if (have_qemu_img) {
		/* Read by another process while still open: on disk. */
		tu_sh("qemu-io -f qcow2 -r -U -c 'read -P 0x22 536936448 65536' "
		      "-c 'read -P 0x88 3758161920 65536' t.qcow2 >/dev/null");
		ret = system("qemu-img check -q -U t.qcow2 >/dev/null 2>&1");
		ck_assert_int_eq(WEXITSTATUS(ret), 0);
	}
	fmt_close(img);
	assert_qemu_check("t.qcow2");
}
END_TEST

/*
 * map_for_overwrite: whole clusters get a contiguous host run (fresh, or
 * in place for clusters already ours), the caller writes the data
 * straight to the file, and the image reads it back and passes qemu-img
 * check; partial clusters are refused (-ENOTSUP).
 */
static void overwrite_mapped(struct fmt_image *img, uint64_t off,
			     uint64_t len, uint8_t *shadow, uint8_t seed)
{
	uint64_t done = 0;

	while (done < len) {
		struct fmt_extent ext;

		ck_assert_int_eq(fmt_map_for_overwrite(img, off + done,
						       len - done, &ext), 0);
		ck_assert_int_eq(ext.state, FMT_DATA);
		tu_pattern(shadow + off + done, ext.len, off + done, seed);
		ck_assert_int_eq(fmt_pwrite_file(img->fd, shadow + off + done,
						 ext.len, (uint64_t)ext.host_off),
				 0);
		done += ext.len;
	}
}

START_TEST(map_for_overwrite_maps_whole_clusters)
{
	struct fmt_create_opts o = {.format = "qcow2", .size = 8 * MiB,
				    .extended_l2 = _i == 1,
				    .cluster_size = _i == 2 ? 4096 : 0};
	struct fmt_image *img;
	struct fmt_extent ext;
	uint8_t *shadow = calloc(1, 8 * MiB);
	static uint8_t small[4096];
	int64_t first_host;

	ck_assert_ptr_nonnull(shadow);
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	/* A partial cluster is not mapped. */
	ck_assert_int_eq(fmt_map_for_overwrite(img, 512, 65536, &ext), -ENOTSUP);
	/* Existing data, a zero cluster and a compressed-free fresh range. */
	memset(small, 0x5a, sizeof(small));
	ck_assert_int_eq(fmt_pwrite(img, small, sizeof(small), 1 * MiB + 100), 0);
	memcpy(shadow + 1 * MiB + 100, small, sizeof(small));
	ck_assert_int_eq(fmt_write_zeroes(img, 3 * MiB, 131072, 0), 0);
	overwrite_mapped(img, 1 * MiB, 3 * MiB, shadow, 9);
	ck_assert_int_eq(fmt_map_for_overwrite(img, 1 * MiB, 65536, &ext), 0);
	first_host = ext.host_off; /* ours now: mapped in place */
	ck_assert_int_eq(fmt_map_for_overwrite(img, 1 * MiB, 65536, &ext), 0);
	ck_assert_int_eq(ext.host_off, first_host);
	overwrite_mapped(img, 6 * MiB, 2 * MiB, shadow, 3);
	assert_reads_shadow(img, shadow);
	assert_our_check_clean(img);
	fmt_close(img);
	assert_qemu_check("t.qcow2");
	assert_qemu_compare("t.qcow2", shadow, 8 * MiB);
	free(shadow);
}
END_TEST

static Suite *write_suite(void)
{
	Suite *s = suite_create("qcow2-write");
	TCase *tc = tcase_create("random");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, random_ops_match_shadow, 0,
			    (int)BC_ARRAY_SIZE(cfgs));
	tcase_add_loop_test(tc, writes_over_qemu_made_images, 0, 3);
	tcase_add_test(tc, concurrent_writes_and_reads);
	suite_add_tcase(s, tc);

	tc = tcase_create("behaviour");
	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, sequential_write_allocates_contiguously);
	tcase_add_test(tc, reserve_grows_once_and_close_trims);
	tcase_add_loop_test(tc, map_for_overwrite_maps_whole_clusters, 0, 3);
	tcase_add_test(tc, write_zeroes_keeps_or_unmaps_host_cluster);
	tcase_add_test(tc, set_backing_rewrites_header);
	tcase_add_test(tc, create_info_matches_qemu);
	tcase_add_loop_test(tc, create_preallocated, 0, 6);
	tcase_add_test(tc, dirty_image_refcounts_rebuilt);
	tcase_add_test(tc, refusals_have_exact_errors);
	tcase_add_test(tc, bitmaps_kept_at_first_write);
	tcase_add_test(tc, killed_lazy_writer_leaves_repairable_image);
	tcase_add_test(tc, frees_wait_for_the_l2_write_back);
	tcase_add_test(tc, evicted_l2_tables_are_written_in_order);
	tcase_add_test(tc, new_l2_tables_linked_at_flush);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	return bc_check_run(write_suite());
}
