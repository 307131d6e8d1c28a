/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for qcow2 header parsing and validation (formats/qcow2.c):
 * headers built in memory, each invalid field checked for the exact
 * return code and message (docs/qcow2.md §3, QEMU iotest 080).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check-main.h"
#include "formats/qcow2.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

/* The layout every test starts from: 64 KiB clusters, 1 GiB, v3. */
#define CB    16u
#define CS    (1u << CB)
#define FSIZE (4ull * CS) /* header, reftable, refblock, L1 */
#define NAME  "img.qcow2"

static uint8_t hb[CS];
static size_t ext_off; /* where add_ext() puts the next extension */

static void put32(size_t off, uint32_t v)
{
	bc_put_be32(hb + off, v);
}

static void put64(size_t off, uint64_t v)
{
	bc_put_be64(hb + off, v);
}

/* A valid header of @version with no extensions. */
static void build(uint32_t version)
{
	memset(hb, 0, sizeof(hb));
	put32(0, QCOW2_MAGIC);
	put32(4, version);
	put32(20, CB);
	put64(24, 1ull << 30); /* 2 L1 entries of 512 MiB each */
	put32(36, 2);	       /* l1_size */
	put64(40, 3ull * CS);  /* l1_table_offset */
	put64(48, CS);	       /* refcount_table_offset */
	put32(56, 1);	       /* refcount_table_clusters */
	if (version >= 3) {
		put32(96, 4);	 /* refcount_order */
		put32(100, 104); /* header_length */
		ext_off = 104;
	} else {
		ext_off = 72;
	}
}

/* Append a header extension (padded to 8) at ext_off. */
static void add_ext(uint32_t type, const void *data, uint32_t len)
{
	put32(ext_off, type);
	put32(ext_off + 4, len);
	memcpy(hb + ext_off + 8, data, len);
	ext_off += 8 + bc_align_up(len, 8);
}

static void set_backing(uint64_t off, const char *name)
{
	size_t n = strlen(name);

	put64(8, off);
	put32(16, (uint32_t)n);
	memcpy(hb + off, name, n);
}

static int parse(struct qcow2_header *h)
{
	bc_error_reset();
	return qcow2_parse_header(NAME, hb, sizeof(hb), FSIZE, h);
}

/* The parse fails with @ret, the matching ERR_* and "img.qcow2: @msg". */
static void expect_fail(int ret, const char *msg)
{
	struct qcow2_header h;
	char full[1100];

	ck_assert_int_eq(parse(&h), ret);
	ck_assert_int_eq(bc_error_get()->code, ret == -ENOTSUP
							? ERR_UNSUPPORTED
							: ERR_IMAGE_CORRUPT);
	(void)snprintf(full, sizeof(full), "%s: %s", NAME, msg);
	ck_assert_str_eq(bc_error_get()->message, full);
}

/* --- valid headers --- */

START_TEST(valid_v3)
{
	struct qcow2_header h;

	build(3);
	ck_assert_int_eq(parse(&h), 0);
	ck_assert_uint_eq(h.version, 3);
	ck_assert_uint_eq(h.cluster_bits, CB);
	ck_assert_uint_eq(h.size, 1ull << 30);
	ck_assert_uint_eq(h.l1_size, 2);
	ck_assert_uint_eq(h.l1_table_offset, 3ull * CS);
	ck_assert_uint_eq(h.refcount_table_offset, CS);
	ck_assert_uint_eq(h.refcount_order, 4);
	ck_assert_uint_eq(h.header_length, 104);
	ck_assert_uint_eq(h.compression_type, 0);
}
END_TEST

START_TEST(valid_v2_defaults)
{
	struct qcow2_header h;

	/* In v2 the extension area starts at byte 72. */
	build(2);
	put64(72, ~0ull);
	ck_assert_int_eq(parse(&h), -EUCLEAN); /* 0xffffffff: too large */
	build(2);
	ck_assert_int_eq(parse(&h), 0);
	ck_assert_uint_eq(h.version, 2);
	ck_assert_uint_eq(h.refcount_order, 4);
	ck_assert_uint_eq(h.header_length, 72);
	ck_assert_uint_eq(h.incompatible_features, 0);
}
END_TEST

START_TEST(valid_extensions_and_backing)
{
	struct qcow2_header h;
	struct qcow2_exts e;
	uint8_t feat[96] = {0};

	build(3);
	add_ext(QCOW2_EXT_BACKING_FMT, "qcow2", 5);
	feat[0] = 0;
	feat[1] = 0;
	memcpy(feat + 2, "dirty bit", 9);
	feat[48] = 1;
	feat[49] = 0;
	memcpy(feat + 50, "lazy refcounts", 14);
	add_ext(QCOW2_EXT_FEATURE_NAME, feat, sizeof(feat));
	add_ext(0x12345678, "unknown", 7); /* ignored */
	set_backing(512, "../base image.qcow2");
	bc_error_reset();
	ck_assert_int_eq(
		qcow2_parse_header_ext(NAME, hb, sizeof(hb), FSIZE, &h, &e), 0);
	ck_assert_str_eq(e.backing_name, "../base image.qcow2");
	ck_assert_str_eq(e.backing_fmt, "qcow2");
	ck_assert_uint_eq(e.feature_table_len, 96);
	ck_assert_mem_eq(e.feature_table + 2, "dirty bit", 9);
	ck_assert_uint_eq(e.ext_end, ext_off + 8); /* past the end marker */
	ck_assert(!e.has_bitmaps);
	qcow2_exts_free(&e);
	ck_assert_ptr_null(e.backing_name);
}
END_TEST

START_TEST(valid_v2_old_style_backing)
{
	struct qcow2_header h;
	struct qcow2_exts e;

	/* Old QEMU: the name right after the 72-byte header. */
	build(2);
	set_backing(72, "base.img");
	ck_assert_int_eq(
		qcow2_parse_header_ext(NAME, hb, sizeof(hb), FSIZE, &h, &e), 0);
	ck_assert_str_eq(e.backing_name, "base.img");
	ck_assert_ptr_null(e.backing_fmt);
	qcow2_exts_free(&e);
}
END_TEST

START_TEST(valid_extended_l2_and_refcount_widths)
{
	struct qcow2_header h;
	uint32_t order;

	build(3);
	put64(72, QCOW2_INCOMPAT_EXTL2);
	put32(36, 4); /* 16-byte entries: 256 MiB per L1 entry */
	ck_assert_int_eq(parse(&h), 0);
	for (order = 0; order <= 6; order++) {
		build(3);
		put32(96, order);
		ck_assert_int_eq(parse(&h), 0);
		ck_assert_uint_eq(h.refcount_order, order);
	}
	/* Dirty, corrupt and lazy refcounts parse; open decides. */
	build(3);
	put64(72, QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
	put64(80, QCOW2_COMPAT_LAZY_REFCOUNTS);
	put64(88, 1ull << 40); /* unknown autoclear bits are allowed */
	ck_assert_int_eq(parse(&h), 0);
}
END_TEST

/* --- basic fields --- */

START_TEST(bad_magic)
{
	build(3);
	hb[3] = 0xfc;
	expect_fail(-EUCLEAN, "not a qcow2 image (bad magic)");
}
END_TEST

START_TEST(version_1_and_4)
{
	build(3);
	put32(4, 1);
	expect_fail(-ENOTSUP, "unsupported qcow2 version 1");
	put32(4, 4);
	expect_fail(-ENOTSUP, "unsupported qcow2 version 4");
}
END_TEST

START_TEST(file_too_short)
{
	struct qcow2_header h;

	build(3);
	bc_error_reset();
	ck_assert_int_eq(qcow2_parse_header(NAME, hb, 100, 100, &h), -EUCLEAN);
	ck_assert_str_eq(bc_error_get()->message,
			 NAME ": file too short for a qcow2 header");
	ck_assert_int_eq(qcow2_parse_header(NAME, hb, 4, 4, &h), -EUCLEAN);
}
END_TEST

START_TEST(cluster_bits_8_and_22)
{
	build(3);
	put32(20, 8);
	expect_fail(-EUCLEAN, "Invalid cluster size: 2^8");
	put32(20, 22);
	expect_fail(-ENOTSUP, "Unsupported cluster size: 2^22");
}
END_TEST

START_TEST(extended_l2_needs_16k_clusters)
{
	build(3);
	put64(72, QCOW2_INCOMPAT_EXTL2);
	put32(20, 13);
	put32(36, 1u << 16);
	expect_fail(
		-EUCLEAN,
		"Extended L2 entries need a cluster size of at least 16 KiB");
}
END_TEST

START_TEST(header_length_checks)
{
	build(3);
	put32(100, 96);
	expect_fail(-EUCLEAN, "qcow2 header too short");
	put32(100, 108);
	expect_fail(-EUCLEAN, "qcow2 header length 108 not a multiple of 8");
	put32(100, CS + 8);
	expect_fail(-EUCLEAN, "qcow2 header exceeds cluster size");
}
END_TEST

START_TEST(header_exceeds_small_cluster)
{
	/* 512-byte clusters: a 520-byte header does not fit (iotest 080). */
	build(3);
	put32(20, 9);
	put32(100, 520);
	expect_fail(-EUCLEAN, "qcow2 header exceeds cluster size");
}
END_TEST

START_TEST(header_exceeds_file)
{
	struct qcow2_header h;

	build(3);
	put32(100, 4096);
	bc_error_reset();
	ck_assert_int_eq(qcow2_parse_header(NAME, hb, 2048, FSIZE, &h),
			 -EUCLEAN);
	ck_assert_str_eq(bc_error_get()->message,
			 NAME ": qcow2 header exceeds end of file");
}
END_TEST

/* --- L1 table and virtual size --- */

START_TEST(l1_too_small)
{
	build(3);
	put32(36, 1);
	expect_fail(-EUCLEAN, "L1 table is too small");
	build(3);
	put64(24, (1ull << 30) + 1); /* one byte into a third entry's range */
	expect_fail(-EUCLEAN, "L1 table is too small");
}
END_TEST

START_TEST(l1_offset_invalid)
{
	build(3);
	put64(40, 3ull * CS + 512);
	expect_fail(-EUCLEAN, "Invalid L1 table offset");
	put64(40, FSIZE); /* beyond the end of the file */
	expect_fail(-EUCLEAN, "Invalid L1 table offset");
	put64(40, 0); /* overlaps the header */
	expect_fail(-EUCLEAN, "Invalid L1 table offset");
	put64(40, ~0ull << CB); /* offset + size overflows */
	expect_fail(-EUCLEAN, "Invalid L1 table offset");
}
END_TEST

START_TEST(l1_too_large)
{
	build(3);
	put32(36, QCOW2_MAX_L1_BYTES / 8 + 1);
	expect_fail(-EUCLEAN, "Active L1 table too large");
}
END_TEST

START_TEST(empty_image_l1)
{
	struct qcow2_header h;

	/* Size 0: no L1 entries; the offset need not lie inside the file. */
	build(3);
	put64(24, 0);
	put32(36, 0);
	put64(40, FSIZE);
	ck_assert_int_eq(parse(&h), 0);
	put64(40, FSIZE + 8);
	expect_fail(-EUCLEAN, "Invalid L1 table offset");
}
END_TEST

START_TEST(size_overflow)
{
	build(3);
	put64(24, ~0ull);
	expect_fail(-EUCLEAN, "Image is too big");
	put64(24, 1ull << 63);
	expect_fail(-EUCLEAN, "Image is too big");
	/* 512-byte clusters address 32 KiB per L1 entry: 1 TiB needs too many. */
	build(3);
	put32(20, 9);
	put64(24, 1ull << 40);
	put64(40, 3ull * 512);
	put64(48, 512);
	expect_fail(-EUCLEAN, "Image is too big");
}
END_TEST

/* --- refcount and snapshot tables --- */

START_TEST(refcount_table_checks)
{
	build(3);
	put32(56, 0);
	expect_fail(-EUCLEAN, "Image does not contain a reference count table");
	put32(56, QCOW2_MAX_REFTABLE_BYTES / CS + 1);
	expect_fail(-EUCLEAN, "Reference count table too large");
	put32(56, 1);
	put64(48, FSIZE);
	expect_fail(-EUCLEAN, "Invalid reference count table offset");
	put64(48, CS + 8);
	expect_fail(-EUCLEAN, "Invalid reference count table offset");
	put64(48, 0);
	expect_fail(-EUCLEAN, "Invalid reference count table offset");
	put64(48, ~0ull << CB);
	expect_fail(-EUCLEAN, "Invalid reference count table offset");
}
END_TEST

START_TEST(refcount_order_7)
{
	build(3);
	put32(96, 7);
	expect_fail(
		-EUCLEAN,
		"Reference count entry width too large; may not exceed 64 bits");
}
END_TEST

START_TEST(snapshot_table_checks)
{
	struct qcow2_header h;

	build(3);
	put32(60, QCOW2_MAX_SNAPSHOTS + 1);
	expect_fail(-EUCLEAN, "Too many snapshots");
	put32(60, 1);
	put64(64, 2ull * CS + 8);
	expect_fail(-EUCLEAN, "Invalid snapshot table offset");
	put64(64, FSIZE);
	expect_fail(-EUCLEAN, "Invalid snapshot table offset");
	put64(64, 0);
	expect_fail(-EUCLEAN, "Invalid snapshot table offset");
	put64(64, 2ull * CS);
	ck_assert_int_eq(parse(&h), 0);
	/* 4000 snapshots of at least 40 bytes do not fit before EOF. */
	put32(60, 4000);
	expect_fail(-EUCLEAN, "Invalid snapshot table offset");
}
END_TEST

START_TEST(tables_overlap)
{
	build(3);
	put64(40, CS); /* L1 on the refcount table */
	expect_fail(-EUCLEAN, "L1 table overlaps the reference count table");
	build(3);
	put32(60, 1);
	put64(64, 3ull * CS);
	expect_fail(-EUCLEAN, "Snapshot table overlaps the L1 table");
}
END_TEST

/* --- backing file --- */

START_TEST(backing_name_checks)
{
	char longname[1100];

	memset(longname, 'a', 1024);
	longname[1024] = '\0';
	build(3);
	set_backing(512, longname);
	expect_fail(-EUCLEAN, "Backing file name too long");

	build(3);
	put64(8, CS + 8);
	put32(16, 4);
	expect_fail(-EUCLEAN, "Invalid backing file offset");

	build(3);
	put64(8, 64); /* inside the header */
	put32(16, 4);
	expect_fail(-EUCLEAN, "Invalid backing file offset");

	build(3);
	put64(8, CS - 10); /* name would cross the end of cluster 0 */
	put32(16, 20);
	expect_fail(-EUCLEAN, "Backing file name too long");

	build(3);
	set_backing(512, "abc");
	hb[513] = 0;
	expect_fail(-EUCLEAN, "Invalid backing file name");
}
END_TEST

/* --- extensions --- */

START_TEST(extension_too_large)
{
	build(3);
	put32(104, 0x12345678);
	put32(108, CS - 104 - 8 + 1);
	expect_fail(
		-EUCLEAN,
		"Header extension too large (type 0x12345678, length 65425)");
}
END_TEST

START_TEST(extension_bounded_by_backing_name)
{
	build(3);
	add_ext(QCOW2_EXT_BACKING_FMT, "raw", 3);
	set_backing(114, "base"); /* the extension's data reaches 115 */
	expect_fail(-EUCLEAN,
		    "Header extension too large (type 0xe2792aca, length 3)");
}
END_TEST

START_TEST(extension_duplicate)
{
	build(3);
	add_ext(QCOW2_EXT_BACKING_FMT, "raw", 3);
	add_ext(QCOW2_EXT_BACKING_FMT, "qcow2", 5);
	expect_fail(-EUCLEAN, "Duplicate header extension 0xe2792aca");
}
END_TEST

START_TEST(extension_bad_lengths)
{
	uint8_t z[64] = {0};

	build(3);
	add_ext(QCOW2_EXT_FEATURE_NAME, z, 50);
	expect_fail(-EUCLEAN, "Invalid feature name table length 50");
	build(3);
	add_ext(QCOW2_EXT_BITMAPS, z, 16);
	expect_fail(-EUCLEAN, "Invalid bitmaps extension length 16");
	build(3);
	add_ext(QCOW2_EXT_BACKING_FMT, "ra\0w", 4);
	expect_fail(-EUCLEAN, "Invalid backing format name");
}
END_TEST

/* --- unsupported features --- */

START_TEST(encryption_refused)
{
	uint8_t fde[16] = {0};

	build(3);
	put32(32, 1);
	expect_fail(-ENOTSUP, "AES-encrypted images are not supported");
	put32(32, 2);
	expect_fail(-ENOTSUP, "LUKS-encrypted images are not supported");
	put32(32, 3);
	expect_fail(-ENOTSUP, "unsupported encryption method 3");
	build(3);
	add_ext(QCOW2_EXT_CRYPTO, fde, sizeof(fde));
	expect_fail(
		-ENOTSUP,
		"encryption header extension present; encrypted images are not supported");
}
END_TEST

START_TEST(unknown_incompatible_bits)
{
	uint8_t feat[144] = {0};

	build(3);
	put64(72, (1ull << 5) | (1ull << 40));
	expect_fail(
		-ENOTSUP,
		"unsupported qcow2 feature(s): unknown incompatible feature bits 0x10000000020");
	/* Named from the feature table when it has them. */
	feat[0] = 0;
	feat[1] = 5;
	memcpy(feat + 2, "fancy feature", 13);
	feat[48] = 1; /* a compatible bit 40: not an incompatible name */
	feat[49] = 40;
	memcpy(feat + 50, "wrong type", 10);
	feat[96] = 0;
	feat[97] = 0;
	memcpy(feat + 98, "dirty bit", 9);
	add_ext(QCOW2_EXT_FEATURE_NAME, feat, sizeof(feat));
	expect_fail(
		-ENOTSUP,
		"unsupported qcow2 feature(s): fancy feature, unknown incompatible feature bits 0x10000000000");
	put64(72, 1ull << 5);
	expect_fail(-ENOTSUP, "unsupported qcow2 feature(s): fancy feature");
}
END_TEST

START_TEST(external_data_file_refused)
{
	build(3);
	put64(72, QCOW2_INCOMPAT_DATA_FILE);
	expect_fail(-ENOTSUP, "external data files are not supported");
	build(3);
	add_ext(QCOW2_EXT_DATA_FILE, "data.raw", 8);
	expect_fail(-ENOTSUP, "external data files are not supported");
}
END_TEST

START_TEST(compression_type_checks)
{
	build(3);
	put32(100, 112);
	put64(72, QCOW2_INCOMPAT_COMPRESSION);
	hb[104] = 1;
	expect_fail(-ENOTSUP, "zstd compression is not supported");
	hb[104] = 7;
	expect_fail(-ENOTSUP, "unsupported compression type 7");
	hb[104] = 0;
	expect_fail(
		-EUCLEAN,
		"compression type feature bit set with zlib compression type");
	put64(72, 0);
	hb[104] = 1;
	expect_fail(
		-EUCLEAN,
		"compression type 1 without the compression type feature bit");
	/* Field absent with a 104-byte header: byte 104 is not read. */
	put32(100, 104);
	{
		struct qcow2_header h;

		ck_assert_int_eq(parse(&h), 0);
		ck_assert_uint_eq(h.compression_type, 0);
	}
}
END_TEST

static Suite *header_suite(void)
{
	Suite *s = suite_create("qcow2-header");
	TCase *tc = tcase_create("valid");

	tcase_add_test(tc, valid_v3);
	tcase_add_test(tc, valid_v2_defaults);
	tcase_add_test(tc, valid_extensions_and_backing);
	tcase_add_test(tc, valid_v2_old_style_backing);
	tcase_add_test(tc, valid_extended_l2_and_refcount_widths);
	suite_add_tcase(s, tc);

	tc = tcase_create("fields");
	tcase_add_test(tc, bad_magic);
	tcase_add_test(tc, version_1_and_4);
	tcase_add_test(tc, file_too_short);
	tcase_add_test(tc, cluster_bits_8_and_22);
	tcase_add_test(tc, extended_l2_needs_16k_clusters);
	tcase_add_test(tc, header_length_checks);
	tcase_add_test(tc, header_exceeds_small_cluster);
	tcase_add_test(tc, header_exceeds_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("tables");
	tcase_add_test(tc, l1_too_small);
	tcase_add_test(tc, l1_offset_invalid);
	tcase_add_test(tc, l1_too_large);
	tcase_add_test(tc, empty_image_l1);
	tcase_add_test(tc, size_overflow);
	tcase_add_test(tc, refcount_table_checks);
	tcase_add_test(tc, refcount_order_7);
	tcase_add_test(tc, snapshot_table_checks);
	tcase_add_test(tc, tables_overlap);
	suite_add_tcase(s, tc);

	tc = tcase_create("extensions");
	tcase_add_test(tc, backing_name_checks);
	tcase_add_test(tc, extension_too_large);
	tcase_add_test(tc, extension_bounded_by_backing_name);
	tcase_add_test(tc, extension_duplicate);
	tcase_add_test(tc, extension_bad_lengths);
	suite_add_tcase(s, tc);

	tc = tcase_create("unsupported");
	tcase_add_test(tc, encryption_refused);
	tcase_add_test(tc, unknown_incompatible_bits);
	tcase_add_test(tc, external_data_file_refused);
	tcase_add_test(tc, compression_type_checks);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(header_suite());
}
