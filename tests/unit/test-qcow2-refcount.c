/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for qcow2 refcounts: entry get/set for every width (bit
 * packing of sub-byte widths as qemu-img writes it, byte boundaries,
 * maximum values), refcount update limits, cluster allocation and
 * freeing, refcount table growth with a tiny cluster size, and check()
 * findings on images with leaked and missing references.
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
#include "formats/qcow2.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define MiB (1024u * 1024u)

static int have_qemu_img;

static struct fmt_image *create_open(uint64_t size, uint32_t cs, int rb)
{
	struct fmt_create_opts o = {.format = "qcow2",
				    .size = size,
				    .cluster_size = cs,
				    .refcount_bits = rb};
	struct fmt_image *img = NULL;

	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	return img;
}

START_TEST(get_set_every_width)
{
	uint8_t block[512];
	uint32_t order;

	for (order = 0; order <= 6; order++) {
		uint64_t n = sizeof(block) * 8 >> order, i;
		uint64_t max =
			order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;

		memset(block, 0, sizeof(block));
		for (i = 0; i < n; i++)
			qcow2_refblock_set(block, order, i,
					   (i * 0x9e3779b97f4a7c15ull) & max);
		for (i = 0; i < n; i++)
			ck_assert_uint_eq(qcow2_refblock_get(block, order, i),
					  (i * 0x9e3779b97f4a7c15ull) & max);
		/* Max value, then 0, leave the neighbours alone. */
		qcow2_refblock_set(block, order, 5, max);
		ck_assert_uint_eq(qcow2_refblock_get(block, order, 5), max);
		ck_assert_uint_eq(qcow2_refblock_get(block, order, 4),
				  (4 * 0x9e3779b97f4a7c15ull) & max);
		ck_assert_uint_eq(qcow2_refblock_get(block, order, 6),
				  (6 * 0x9e3779b97f4a7c15ull) & max);
		qcow2_refblock_set(block, order, 5, 0);
		ck_assert_uint_eq(qcow2_refblock_get(block, order, 5), 0);
	}
}
END_TEST

START_TEST(sub_byte_packing_is_lsb_first)
{
	uint8_t b[16];

	memset(b, 0, sizeof(b));
	qcow2_refblock_set(b, 0, 0, 1);
	qcow2_refblock_set(b, 0, 7, 1);
	qcow2_refblock_set(b, 0, 8, 1);
	ck_assert_uint_eq(b[0], 0x81);
	ck_assert_uint_eq(b[1], 0x01);
	memset(b, 0, sizeof(b));
	qcow2_refblock_set(b, 1, 3, 2);
	qcow2_refblock_set(b, 1, 4, 3);
	ck_assert_uint_eq(b[0], 0x80);
	ck_assert_uint_eq(b[1], 0x03);
	memset(b, 0, sizeof(b));
	qcow2_refblock_set(b, 2, 0, 1);
	qcow2_refblock_set(b, 2, 1, 0xf);
	qcow2_refblock_set(b, 2, 2, 0x3);
	ck_assert_uint_eq(b[0], 0xf1);
	ck_assert_uint_eq(b[1], 0x03);
	memset(b, 0, sizeof(b));
	qcow2_refblock_set(b, 4, 1, 0x1234);
	ck_assert_uint_eq(b[2], 0x12);
	ck_assert_uint_eq(b[3], 0x34);
	qcow2_refblock_set(b, 5, 1, 0xa1b2c3d4u);
	ck_assert_uint_eq(b[4], 0xa1);
	ck_assert_uint_eq(b[7], 0xd4);
	qcow2_refblock_set(b, 6, 1, 0x0102030405060708ull);
	ck_assert_uint_eq(b[8], 0x01);
	ck_assert_uint_eq(b[15], 0x08);
}
END_TEST

/* qemu-img's 1- and 4-bit refcount blocks decode as 1 for its 4 clusters. */
START_TEST(reads_qemu_sub_byte_refblocks)
{
	static const char *const widths[] = {"1", "2", "4", "8", "32", "64"};
	size_t w;

	if (!have_qemu_img)
		return;
	for (w = 0; w < BC_ARRAY_SIZE(widths); w++) {
		struct fmt_image *img;
		struct qcow2 *q;
		uint64_t c, rc;

		tu_sh("rm -f q.qcow2 && qemu-img create -q -f qcow2 -o refcount_bits=%s,cluster_size=512 q.qcow2 1M",
		      widths[w]);
		ck_assert_int_eq(fmt_open("q.qcow2", "qcow2", 0, &img), 0);
		q = img->priv;
		ck_assert_uint_eq(q->refcount_bits,
				  strtoul(widths[w], NULL, 10));
		pthread_mutex_lock(&q->lock);
		for (c = 0; c < 8; c++) {
			ck_assert_int_eq(qcow2_get_refcount_locked(q, c, &rc),
					 0);
			ck_assert_uint_eq(rc, c < 4 ? 1 : 0);
		}
		pthread_mutex_unlock(&q->lock);
		fmt_close(img);
	}
}
END_TEST

START_TEST(update_overflow_and_underflow_refused)
{
	struct fmt_image *img = create_open(MiB, 4096, 1);
	struct qcow2 *q = img->priv;
	uint64_t rc;

	pthread_mutex_lock(&q->lock);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 0, 4096, 1), -EUCLEAN);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	ck_assert_int_eq(qcow2_get_refcount_locked(q, 0, &rc), 0);
	ck_assert_uint_eq(rc, 1);
	/* A range failing half-way changes nothing. */
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 0, 40 * 4096, -1),
			 -EUCLEAN);
	ck_assert_int_eq(qcow2_get_refcount_locked(q, 0, &rc), 0);
	ck_assert_uint_eq(rc, 1);
	pthread_mutex_unlock(&q->lock);
	fmt_close(img);

	ck_assert_int_eq(unlink("t.qcow2"), 0);
	img = create_open(MiB, 4096, 64);
	q = img->priv;
	pthread_mutex_lock(&q->lock);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 8192, 1, 1000), 0);
	ck_assert_int_eq(qcow2_get_refcount_locked(q, 2, &rc), 0);
	ck_assert_uint_eq(rc, 1001);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 8192, 1, -1000), 0);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 9000, 1, INT64_MAX),
			 0);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 9000, 1, INT64_MAX),
			 0);
	ck_assert_int_eq(qcow2_get_refcount_locked(q, 2, &rc), 0);
	ck_assert_uint_eq(rc, UINT64_MAX);
	ck_assert_int_eq(qcow2_update_refcount_locked(q, 9000, 1, 1), -EUCLEAN);
	pthread_mutex_unlock(&q->lock);
	fmt_close(img);
}
END_TEST

START_TEST(alloc_is_first_fit_and_free_reuses)
{
	struct fmt_image *img = create_open(4 * MiB, 4096, 16);
	struct qcow2 *q = img->priv;
	int64_t a, b, c;
	uint64_t rc;

	pthread_mutex_lock(&q->lock);
	a = qcow2_alloc_clusters_locked(q, 3);
	ck_assert_int_gt(a, 0);
	ck_assert_int_eq(a % 4096, 0);
	b = qcow2_alloc_clusters_locked(q, 1);
	ck_assert_int_eq(b, a + 3 * 4096);
	ck_assert_int_eq(
		qcow2_get_refcount_locked(q, (uint64_t)a / 4096 + 1, &rc), 0);
	ck_assert_uint_eq(rc, 1);
	ck_assert_int_eq(qcow2_free_clusters_locked(q, (uint64_t)a, 3 * 4096),
			 0);
	ck_assert_int_eq(
		qcow2_get_refcount_locked(q, (uint64_t)a / 4096 + 1, &rc), 0);
	ck_assert_uint_eq(rc, 0);
	/* Too big for the hole: after b. */
	c = qcow2_alloc_clusters_locked(q, 4);
	ck_assert_int_eq(c, b + 4096);
	/* Fits the hole: first fit. */
	c = qcow2_alloc_clusters_locked(q, 2);
	ck_assert_int_eq(c, a);
	ck_assert_int_eq(qcow2_free_clusters_locked(q, (uint64_t)c, 2 * 4096),
			 0);
	ck_assert_int_eq(qcow2_free_clusters_locked(q, (uint64_t)b, 5 * 4096),
			 0);
	pthread_mutex_unlock(&q->lock);
	fmt_close(img);
	if (have_qemu_img)
		tu_sh("qemu-img check -q t.qcow2");
}
END_TEST

/* 512-byte clusters, 64-bit refcounts: one table cluster covers 2 MiB. */
START_TEST(refcount_table_grows)
{
	struct fmt_image *img = create_open(32 * MiB, 512, 64);
	struct qcow2 *q = img->priv;
	uint64_t old_off = q->hdr.refcount_table_offset;
	uint8_t *buf = malloc(8 * MiB), *rd = malloc(8 * MiB);
	struct fmt_check_report rep;
	char *out;

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(rd);
	ck_assert_uint_eq(q->hdr.refcount_table_clusters, 1);
	tu_pattern(buf, 8 * MiB, 0, 1);
	/* One big write, then small scattered ones. */
	ck_assert_int_eq(fmt_pwrite(img, buf, 3 * MiB, 0), 0);
	ck_assert_uint_gt(q->hdr.refcount_table_clusters, 1);
	ck_assert_uint_ne(q->hdr.refcount_table_offset, old_off);
	ck_assert_int_eq(fmt_pwrite(img, buf + 3 * MiB, 3 * MiB, 9 * MiB), 0);
	ck_assert_int_eq(fmt_pread(img, rd, 3 * MiB, 9 * MiB), 0);
	ck_assert_mem_eq(rd, buf + 3 * MiB, 3 * MiB);
	/* 16384 clusters at once: 256 new refcount blocks for one run. */
	ck_assert_int_eq(fmt_pwrite(img, buf, 8 * MiB, 16 * MiB + 100), 0);
	ck_assert_int_eq(fmt_pread(img, rd, 8 * MiB, 16 * MiB + 100), 0);
	ck_assert_mem_eq(rd, buf, 8 * MiB);
	ck_assert_int_eq(fmt_check(img, &rep), 0);
	ck_assert_uint_eq(rep.corruptions, 0);
	ck_assert_uint_eq(rep.leaks, 0);
	fmt_close(img);
	if (have_qemu_img) {
		tu_sh("qemu-img check -q t.qcow2");
		out = tu_out(
			"qemu-io -f qcow2 -c 'read -P 0 3M 6M' t.qcow2 | grep -c '^read'");
		ck_assert_str_eq(out, "1\n");
		free(out);
	}
	free(buf);
	free(rd);
}
END_TEST

/* check() agrees with qemu-img check on leaks and corruptions. */
START_TEST(check_finds_leaks_and_corruption)
{
	struct fmt_image *img = create_open(4 * MiB, 65536, 16);
	struct qcow2 *q = img->priv;
	struct fmt_check_report rep;
	uint8_t buf[512];
	int64_t a;
	int ret;

	memset(buf, 1, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_check(img, &rep), 0);
	ck_assert_uint_eq(rep.corruptions + rep.leaks, 0);
	ck_assert_uint_eq(rep.allocated_clusters, 1);
	ck_assert_uint_eq(rep.total_clusters, 64);
	/* Two leaked clusters. */
	pthread_mutex_lock(&q->lock);
	a = qcow2_alloc_clusters_locked(q, 2);
	pthread_mutex_unlock(&q->lock);
	ck_assert_int_gt(a, 0);
	ck_assert_int_eq(fmt_check(img, &rep), 0);
	ck_assert_uint_eq(rep.leaks, 2);
	ck_assert_uint_eq(rep.corruptions, 0);
	ck_assert_uint_eq(rep.image_end_offset, (uint64_t)a + 2 * 65536);
	fmt_close(img);
	if (have_qemu_img) {
		ret = system("qemu-img check t.qcow2 >out.txt 2>&1");
		ck_assert_int_eq(WEXITSTATUS(ret), 3);
		tu_sh("grep -q '2 leaked clusters were found' out.txt");
	}
	/* The data cluster's refcount dropped to 0: corruption. */
	ck_assert_int_eq(fmt_open("t.qcow2", "qcow2", FMT_OPEN_RDWR, &img), 0);
	q = img->priv;
	pthread_mutex_lock(&q->lock);
	ck_assert_int_eq(
		qcow2_update_refcount_locked(q, (uint64_t)a, 2 * 65536, -1), 0);
	ck_assert_int_eq(qcow2_update_refcount_locked(
				 q, q->l1[0] & QCOW2_L1E_OFFSET_MASK, 1, -1),
			 0);
	pthread_mutex_unlock(&q->lock);
	ck_assert_int_eq(fmt_check(img, &rep), 0);
	ck_assert_uint_eq(rep.leaks, 0);
	/* refcount 0 < 1 reference, and the L1 COPIED flag disagrees. */
	ck_assert_uint_eq(rep.corruptions, 2);
	fmt_close(img);
	if (have_qemu_img) {
		ret = system("qemu-img check t.qcow2 >out.txt 2>&1");
		ck_assert_int_eq(WEXITSTATUS(ret), 2);
		tu_sh("grep -q '^2 errors were found' out.txt");
	}
}
END_TEST

/* Value of "key": N in qemu-img check's JSON; 0 when absent. */
static uint64_t json_num(const char *out, const char *key)
{
	char pat[64];
	const char *p;

	(void)snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(out, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

static void assert_check_agrees(const char *name)
{
	struct fmt_image *img;
	struct fmt_check_report rep;
	char *out;

	ck_assert_int_eq(fmt_open(name, "qcow2", FMT_OPEN_NO_BACKING, &img), 0);
	ck_assert_int_eq(fmt_check(img, &rep), 0);
	fmt_close(img);
	/* qemu-img check exits non-zero on findings: keep its output. */
	out = tu_out(
		"qemu-img check --output=json -f qcow2 '%s' 2>/dev/null; true",
		name);
	ck_assert_msg(
		rep.corruptions == json_num(out, "corruptions") &&
			rep.leaks == json_num(out, "leaks") &&
			rep.allocated_clusters ==
				json_num(out, "allocated-clusters") &&
			rep.total_clusters == json_num(out, "total-clusters") &&
			rep.fragmented_clusters ==
				json_num(out, "fragmented-clusters") &&
			rep.compressed_clusters ==
				json_num(out, "compressed-clusters") &&
			rep.image_end_offset ==
				json_num(out, "image-end-offset"),
		"%s: ours corruptions %llu leaks %llu alloc %llu total %llu frag %llu comp %llu end %llu; qemu-img: %s",
		name, (unsigned long long)rep.corruptions,
		(unsigned long long)rep.leaks,
		(unsigned long long)rep.allocated_clusters,
		(unsigned long long)rep.total_clusters,
		(unsigned long long)rep.fragmented_clusters,
		(unsigned long long)rep.compressed_clusters,
		(unsigned long long)rep.image_end_offset, out);
	free(out);
}

/* Set the 16-bit refcount of cluster @c (python: no hex editor needed). */
static void poke_refcount(const char *name, unsigned int c, unsigned int v)
{
	tu_sh("python3 -c \"import struct;d=open('%s','r+b');h=d.read(104);"
	      "cs=1<<struct.unpack('>I',h[20:24])[0];"
	      "rt=struct.unpack('>Q',h[48:56])[0];epb=cs*8//16;"
	      "d.seek(rt+8*(%u//epb));rb=struct.unpack('>Q',d.read(8))[0];"
	      "d.seek(rb+2*(%u%%epb));d.write(struct.pack('>H',%u))\"",
	      name, c, c, v);
}

/* Set L2 entry @idx of the first L2 table. */
static void poke_l2(const char *name, unsigned int idx, const char *val)
{
	tu_sh("python3 -c \"import struct;d=open('%s','r+b');h=d.read(104);"
	      "d.seek(struct.unpack('>Q',h[40:48])[0]);"
	      "l2=struct.unpack('>Q',d.read(8))[0]&0x00fffffffffffe00;"
	      "d.seek(l2+8*%u);d.write(struct.pack('>Q',%s))\"",
	      name, idx, val);
}

START_TEST(check_agrees_with_qemu_img)
{
	if (!have_qemu_img || system("python3 -c 1") != 0)
		return;
	tu_sh("qemu-img create -q -f qcow2 a.qcow2 64M");
	assert_check_agrees("a.qcow2");
	tu_sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 5M 100k' -c 'write -z 0 64k' -c 'write -P 3 20M 64k' a.qcow2 >/dev/null");
	assert_check_agrees("a.qcow2");
	tu_sh("qemu-img snapshot -c s1 a.qcow2");
	tu_sh("qemu-io -f qcow2 -c 'write -P 9 0 200k' a.qcow2 >/dev/null");
	assert_check_agrees("a.qcow2");
	tu_sh("head -c 3M /dev/urandom >r.raw && qemu-img convert -q -c -f raw -O qcow2 r.raw c.qcow2");
	assert_check_agrees("c.qcow2");
	tu_sh("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k e.qcow2 64M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 1 0 5k' -c 'write -P 2 1M 300k' -c 'write -z 3M 8k' e.qcow2 >/dev/null");
	assert_check_agrees("e.qcow2");
	tu_sh("qemu-img create -q -f qcow2 b.qcow2 64M && qemu-img bitmap --add b.qcow2 bm0");
	tu_sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' b.qcow2 >/dev/null");
	assert_check_agrees("b.qcow2");
	tu_sh("qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 64M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 1 7M 1M' v2.qcow2 >/dev/null");
	assert_check_agrees("v2.qcow2");
	/* Leak, refcount too low, too high, unaligned and far-away entries. */
	tu_sh("cp a.qcow2 x1.qcow2 && cp a.qcow2 x2.qcow2 && cp v2.qcow2 x3.qcow2 && cp v2.qcow2 x4.qcow2");
	poke_refcount("x1.qcow2", 5, 3);
	assert_check_agrees("x1.qcow2");
	poke_refcount("x2.qcow2", 5, 0);
	assert_check_agrees("x2.qcow2");
	poke_l2("x3.qcow2", 3, "0x8000000100000000");
	assert_check_agrees("x3.qcow2");
	poke_l2("x4.qcow2", 3, "0x8000000000030200");
	assert_check_agrees("x4.qcow2");
	poke_refcount("c.qcow2", 5, 0);
	assert_check_agrees("c.qcow2");
	/* A truncated file: references past its end. */
	tu_sh("cp a.qcow2 t1.qcow2 && truncate -s 1900000 t1.qcow2");
	assert_check_agrees("t1.qcow2");
}
END_TEST

/* Refcount blocks must be cluster aligned and inside the file. */
START_TEST(load_rejects_bad_refblock_offsets)
{
	static const char *const bad[] = {"0x20200", "0x7fff0000"};
	struct fmt_create_opts o = {.format = "qcow2", .size = MiB};
	struct fmt_image *img = NULL;
	char msg[256];
	size_t i;

	if (system("python3 -c 1") != 0)
		return;
	ck_assert_int_eq(fmt_create("t.qcow2", &o), 0);
	for (i = 0; i < BC_ARRAY_SIZE(bad); i++) {
		tu_sh("cp t.qcow2 b.qcow2 && python3 -c \"import struct;"
		      "d=open('b.qcow2','r+b');d.seek(65536);"
		      "d.write(struct.pack('>Q',%s))\"",
		      bad[i]);
		ck_assert_int_eq(fmt_open("b.qcow2", "qcow2", 0, &img),
				 -EUCLEAN);
		ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
		(void)snprintf(
			msg, sizeof(msg),
			"b.qcow2: refcount block 0 at offset %s is invalid",
			bad[i]);
		ck_assert_str_eq(bc_error_get()->message, msg);
	}
}
END_TEST

static Suite *refcount_suite(void)
{
	Suite *s = suite_create("qcow2-refcount");
	TCase *tc = tcase_create("entries");

	tcase_add_test(tc, get_set_every_width);
	tcase_add_test(tc, sub_byte_packing_is_lsb_first);
	suite_add_tcase(s, tc);

	tc = tcase_create("image");
	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, reads_qemu_sub_byte_refblocks);
	tcase_add_test(tc, update_overflow_and_underflow_refused);
	tcase_add_test(tc, alloc_is_first_fit_and_free_reuses);
	tcase_add_test(tc, refcount_table_grows);
	tcase_add_test(tc, load_rejects_bad_refblock_offsets);
	tcase_add_test(tc, check_finds_leaks_and_corruption);
	tcase_add_test(tc, check_agrees_with_qemu_img);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	return bc_check_run(refcount_suite());
}
