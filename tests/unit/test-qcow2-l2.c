/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for qcow2 mapping and reads (formats/qcow2-l2.c,
 * qcow2-compress.c, the read side of qcow2.c): L2 entry decoding on a
 * hand-built state, then images written by qemu-img/qemu-io read back
 * through our driver and compared byte for byte with `qemu-img convert
 * -O raw`, and block status compared with `qemu-img map --output=json`.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "formats/qcow2.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#include "fmt-testutil.h"

/* --- entry decoding on a hand-built state ------------------------------ */

static char fake_name[] = "img.qcow2";
static struct fmt_image fake_img = {.filename = fake_name};

static struct qcow2 make_q(uint32_t cluster_bits, bool ext, uint32_t version)
{
	struct qcow2 q;

	memset(&q, 0, sizeof(q));
	q.img = &fake_img;
	q.hdr.version = version;
	q.cluster_bits = cluster_bits;
	q.cluster_size = 1ull << cluster_bits;
	q.extended_l2 = ext;
	q.l2_entry_size = ext ? 16 : 8;
	q.l2_bits = cluster_bits - (ext ? 4 : 3);
	q.subcluster_bits = cluster_bits - (ext ? 5 : 0);
	q.csize_shift = 62 - (cluster_bits - 8);
	q.csize_mask = (1ull << (cluster_bits - 8)) - 1;
	q.file_size = 1ull << 40;
	return q;
}

static struct qcow2_l2_entry ent(uint64_t raw, uint64_t bitmap)
{
	struct qcow2_l2_entry e = {.raw = raw, .bitmap = bitmap};

	return e;
}

/* Classify and expect success with @type (and @host when not ~0). */
static void expect_type(struct qcow2 *q, struct qcow2_l2_entry e, uint64_t off,
			enum qcow2_cluster_type type, uint64_t host)
{
	enum qcow2_cluster_type t;
	uint64_t h = 0;

	ck_assert_int_eq(qcow2_l2_classify(q, e, off, &t, &h), 0);
	ck_assert_int_eq(t, type);
	if (host != ~0ull)
		ck_assert_uint_eq(h, host);
}

static void expect_corrupt(struct qcow2 *q, struct qcow2_l2_entry e,
			   uint64_t off, const char *msg)
{
	enum qcow2_cluster_type t;
	uint64_t h;

	bc_error_reset();
	ck_assert_int_eq(qcow2_l2_classify(q, e, off, &t, &h), -EUCLEAN);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	ck_assert_str_eq(bc_error_get()->message, msg);
}

START_TEST(standard_entries)
{
	struct qcow2 q = make_q(16, false, 3);

	expect_type(&q, ent(0, 0), 0x1234, QCOW2_CLUSTER_UNALLOCATED, ~0ull);
	/* COPIED with offset 0 is still unallocated (no data file). */
	expect_type(&q, ent(QCOW2_OFLAG_COPIED, 0), 0,
		    QCOW2_CLUSTER_UNALLOCATED, ~0ull);
	expect_type(&q, ent(QCOW2_OFLAG_COPIED | 0x50000, 0), 0x31234,
		    QCOW2_CLUSTER_NORMAL, 0x51234);
	expect_type(&q, ent(0x50000, 0), 0x30000, QCOW2_CLUSTER_NORMAL,
		    0x50000);
	expect_type(&q, ent(QCOW2_OFLAG_ZERO, 0), 0, QCOW2_CLUSTER_ZERO_PLAIN,
		    ~0ull);
	expect_type(&q, ent(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO | 0x70000, 0),
		    0x10, QCOW2_CLUSTER_ZERO_ALLOC, 0x70010);
	/* Largest host offset the 56-bit field holds. */
	q.file_size = 1ull << 57;
	expect_type(&q, ent(0x00ffffffffff0000ull, 0), 0, QCOW2_CLUSTER_NORMAL,
		    0x00ffffffffff0000ull);
}
END_TEST

START_TEST(standard_entries_invalid)
{
	struct qcow2 q = make_q(16, false, 3);
	struct qcow2 q2 = make_q(16, false, 2);

	expect_corrupt(
		&q, ent(0x50000 | (1ull << 5), 0), 0x20000,
		"img.qcow2: L2 entry 0x0000000000050020 has reserved bits set (guest offset 0x20000)");
	expect_corrupt(
		&q, ent(0x50000 | (1ull << 56), 0), 0,
		"img.qcow2: L2 entry 0x0100000000050000 has reserved bits set (guest offset 0x0)");
	expect_corrupt(
		&q, ent(0x50200, 0), 0x10000,
		"img.qcow2: cluster offset 0x50200 unaligned (guest offset 0x10000)");
	q.file_size = 0x50000;
	expect_corrupt(
		&q, ent(0x50000, 0), 0,
		"img.qcow2: cluster offset 0x50000 beyond end of file (guest offset 0x0)");
	/* The zero flag does not exist in v2. */
	expect_corrupt(
		&q2, ent(QCOW2_OFLAG_ZERO, 0), 0,
		"img.qcow2: L2 entry 0x0000000000000001 has reserved bits set (guest offset 0x0)");
}
END_TEST

START_TEST(compressed_descriptors)
{
	static const uint32_t bits[] = {9, 12, 16, 21};
	size_t i;

	for (i = 0; i < BC_ARRAY_SIZE(bits); i++) {
		struct qcow2 q = make_q(bits[i], false, 3);
		uint32_t x = 62 - (bits[i] - 8);
		uint64_t max_sectors = 1ull << (bits[i] - 8);
		uint64_t off = 0x123456789ull, h, nb;
		uint64_t raw =
			QCOW2_OFLAG_COMPRESSED | ((max_sectors - 1) << x) | off;

		ck_assert_uint_eq(q.csize_shift, x);
		qcow2_compressed_desc(&q, raw, &h, &nb);
		ck_assert_uint_eq(h, off);
		/* All sectors, less the bytes before off in its sector. */
		ck_assert_uint_eq(nb, max_sectors * 512 - (off & 511));
		expect_type(&q, ent(raw, 0), 5, QCOW2_CLUSTER_COMPRESSED, off);

		raw = QCOW2_OFLAG_COMPRESSED | (1ull << x) | 0x200100;
		qcow2_compressed_desc(&q, raw, &h, &nb);
		ck_assert_uint_eq(h, 0x200100);
		ck_assert_uint_eq(nb, 2 * 512 - 0x100);
	}
}
END_TEST

START_TEST(compressed_invalid)
{
	struct qcow2 q = make_q(9, false, 3);
	struct qcow2 qe = make_q(16, true, 3);
	uint64_t raw;

	/* 512-byte clusters: offset field bits 56..60 must be zero. */
	raw = QCOW2_OFLAG_COMPRESSED | (1ull << 57);
	expect_corrupt(
		&q, ent(raw, 0), 0,
		"img.qcow2: invalid compressed cluster descriptor 0x4200000000000000 (guest offset 0x0)");
	q.file_size = 0x10000;
	raw = QCOW2_OFLAG_COMPRESSED | 0x10000;
	expect_corrupt(
		&q, ent(raw, 0), 0x200,
		"img.qcow2: compressed cluster at host offset 0x10000 beyond end of file (guest offset 0x200)");
	/* Compressed clusters have no subclusters: the bitmap is reserved. */
	raw = QCOW2_OFLAG_COMPRESSED | 0x10000;
	expect_type(&qe, ent(raw, 0), 0, QCOW2_CLUSTER_COMPRESSED, 0x10000);
	expect_corrupt(
		&qe, ent(raw, 1), 0,
		"img.qcow2: invalid compressed cluster descriptor 0x4000000000010000 (guest offset 0x0)");
}
END_TEST

START_TEST(extended_entries)
{
	struct qcow2 q = make_q(16, true, 3); /* 2 KiB subclusters */
	uint64_t host = QCOW2_OFLAG_COPIED | 0x90000;
	uint64_t bm = (1ull << 3) | (1ull << 4) | (1ull << (32 + 5));

	expect_type(&q, ent(host, bm), 3 * 2048 + 7, QCOW2_CLUSTER_NORMAL,
		    0x90000 + 3 * 2048 + 7);
	expect_type(&q, ent(host, bm), 4 * 2048, QCOW2_CLUSTER_NORMAL, ~0ull);
	expect_type(&q, ent(host, bm), 2 * 2048, QCOW2_CLUSTER_UNALLOCATED,
		    ~0ull);
	expect_type(&q, ent(host, bm), 5 * 2048, QCOW2_CLUSTER_ZERO_ALLOC,
		    0x90000 + 5 * 2048);
	expect_type(&q, ent(0, 1ull << (32 + 31)), 31 * 2048,
		    QCOW2_CLUSTER_ZERO_PLAIN, ~0ull);
	expect_type(&q, ent(0, 1ull << (32 + 31)), 30 * 2048,
		    QCOW2_CLUSTER_UNALLOCATED, ~0ull);
	expect_type(&q, ent(0, 0), 0, QCOW2_CLUSTER_UNALLOCATED, ~0ull);
}
END_TEST

START_TEST(extended_entries_invalid)
{
	struct qcow2 q = make_q(16, true, 3);

	expect_corrupt(
		&q, ent(0x90000, (1ull << 7) | (1ull << 39)), 0,
		"img.qcow2: subclusters both allocated and zero (bitmap 0x0000008000000080, guest offset 0x0)");
	expect_corrupt(
		&q, ent(0, 1), 0,
		"img.qcow2: allocated subclusters without a host cluster (bitmap 0x0000000000000001, guest offset 0x0)");
	/* Bit 0 (the zero flag of standard entries) is reserved here. */
	expect_corrupt(
		&q, ent(0x90001, 1), 0,
		"img.qcow2: L2 entry 0x0000000000090001 has reserved bits set (guest offset 0x0)");
}
END_TEST

/* --- images written by qemu ------------------------------------------- */

static struct fmt_image *open_img(const char *path, unsigned int flags)
{
	struct fmt_image *img = NULL;
	int ret = fmt_open(path, "qcow2", flags, &img);

	if (ret < 0)
		ck_abort_msg("fmt_open %s: %d %s", path, ret,
			     bc_error_get()->message);
	return img;
}

/*
 * The guest view of @img equals qemu-img convert's: read whole, then in
 * odd-sized pieces that start and end inside clusters.
 */
static void assert_reads_match(struct fmt_image *img, const char *path)
{
	uint8_t *want, *got;
	size_t len, off, step = 77777;

	tu_sh("rm -f conv.raw && qemu-img convert -O raw '%s' conv.raw", path);
	want = tu_read_file("conv.raw", &len);
	ck_assert_uint_eq(len, img->size);
	got = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(got);
	memset(got, 0xa5, len);
	ck_assert_int_eq(fmt_pread(img, got, len, 0), 0);
	ck_assert(memcmp(got, want, len) == 0);
	memset(got, 0xa5, len);
	for (off = 0; off < len; off += step) {
		size_t n = BC_MIN(step, len - off);

		ck_assert_int_eq(fmt_pread(img, got + off, n, off), 0);
	}
	ck_assert(memcmp(got, want, len) == 0);
	free(got);
	free(want);
}

/*
 * Block status of this layer against qemu-img map at 512-byte
 * granularity: state and (where valid) host offset. qemu-img reports an
 * offset for unallocated subclusters that have a host cluster; a read
 * does not use it, so it is ignored. Also checks that our runs are
 * maximal: neighbours always differ.
 */
static void assert_status_matches(struct fmt_image *img, const char *path)
{
	uint64_t units = (img->size + 511) / 512, off, u;
	int *st_q = calloc(units + 1, sizeof(int));
	int64_t *off_q = calloc(units + 1, sizeof(int64_t));
	char *json = tu_out("qemu-img map --output=json -f qcow2 '%s'", path);
	char *line = json;
	struct fmt_extent prev = {0};

	ck_assert_ptr_nonnull(st_q);
	ck_assert_ptr_nonnull(off_q);
	while ((line = strstr(line, "{ \"start\""))) {
		unsigned long long start, length;
		long long hoff = -1;
		int depth;
		char present[8], zero[8], data[8];
		const char *o;

		ck_assert_int_eq(
			sscanf(line,
			       "{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %7[a-z], \"zero\": %7[a-z], \"data\": %7[a-z]",
			       &start, &length, &depth, present, zero, data),
			6);
		o = strstr(line, "\"offset\": ");
		if (o && o < strchr(line, '}'))
			hoff = atoll(o + 10);
		for (u = start / 512; u < (start + length + 511) / 512; u++) {
			int s = !strcmp(data, "true")	   ? FMT_DATA
				: !strcmp(present, "true") ? FMT_ZERO
							   : FMT_UNALLOC;

			st_q[u] = s;
			off_q[u] = s == FMT_UNALLOC || hoff < 0
					   ? -1
					   : hoff + (int64_t)(u * 512 - start);
		}
		line++;
	}
	for (off = 0; off < img->size;) {
		struct fmt_extent e;

		ck_assert_int_eq(
			fmt_block_status(img, off, img->size - off, &e), 0);
		ck_assert_uint_gt(e.len, 0);
		if (off) {
			/* Maximal runs: a neighbour that could merge is a bug. */
			bool same = prev.state == e.state &&
				    prev.compressed == e.compressed &&
				    ((prev.host_off < 0 && e.host_off < 0) ||
				     (prev.host_off >= 0 &&
				      prev.host_off + (int64_t)prev.len ==
					      e.host_off));
			ck_assert_msg(!same, "split run at %llu",
				      (unsigned long long)off);
		}
		for (u = off / 512; u < (off + e.len + 511) / 512; u++) {
			ck_assert_msg(st_q[u] == (int)e.state,
				      "state at %llu: ours %d, qemu %d",
				      (unsigned long long)(u * 512), e.state,
				      st_q[u]);
			if (e.state != FMT_UNALLOC)
				ck_assert_msg(
					off_q[u] ==
						(e.host_off < 0
							 ? -1
							 : e.host_off +
								   (int64_t)(u * 512 -
									     off)),
					"offset at %llu",
					(unsigned long long)(u * 512));
		}
		ck_assert_int_eq(e.compressed,
				 e.state == FMT_DATA && e.host_off < 0);
		prev = e;
		off += e.len;
	}
	free(json);
	free(st_q);
	free(off_q);
}

/* Both checks on a single-layer image. */
static void check_image(const char *path)
{
	struct fmt_image *img = open_img(path, FMT_OPEN_NO_BACKING);

	assert_reads_match(img, path);
	assert_status_matches(img, path);
	fmt_close(img);
}

/* qemu-io writes on a fresh image: data, partial clusters, zeros, discards. */
static void make_mixed(const char *path, const char *opts, const char *size)
{
	tu_sh("qemu-img create -q -f qcow2 -o %s '%s' %s", opts, path, size);
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 100k 10k' "
	      "-c 'write -P 0x33 1M 1M' -c 'write -P 0x44 3145985 4096' "
	      "-c 'write -P 0x55 5000000 200000' '%s' >/dev/null",
	      path);
}

START_TEST(read_v2)
{
	make_mixed("v2.qcow2", "compat=0.10", "8M");
	check_image("v2.qcow2");
}
END_TEST

static void v3_cluster(const char *cs)
{
	char opts[128];

	(void)snprintf(opts, sizeof(opts), "cluster_size=%s", cs);
	make_mixed("v3.qcow2", opts, "8M");
	/* Zero clusters, with and without their host cluster, and a discard. */
	tu_sh("qemu-io -f qcow2 -c 'write -z 1M 256k' -c 'write -z -u 1536k 128k' "
	      "-c 'discard 0 32k' -c 'write -z 6M 1M' v3.qcow2 >/dev/null");
	check_image("v3.qcow2");
}

START_TEST(read_v3_512)
{
	v3_cluster("512");
}
END_TEST

START_TEST(read_v3_4k)
{
	v3_cluster("4k");
}
END_TEST

START_TEST(read_v3_64k)
{
	v3_cluster("64k");
}
END_TEST

START_TEST(read_v3_2m)
{
	v3_cluster("2M");
}
END_TEST

START_TEST(read_refcount_widths)
{
	static const char *const widths[] = {"1", "8", "64"};
	size_t i;

	for (i = 0; i < BC_ARRAY_SIZE(widths); i++) {
		char opts[64];

		(void)snprintf(opts, sizeof(opts), "refcount_bits=%s",
			       widths[i]);
		tu_sh("rm -f r.qcow2");
		make_mixed("r.qcow2", opts, "8M");
		check_image("r.qcow2");
	}
}
END_TEST

START_TEST(read_preallocated_metadata)
{
	tu_sh("qemu-img create -q -f qcow2 -o preallocation=metadata pre.qcow2 4M && "
	      "qemu-io -f qcow2 -c 'write -P 7 64k 64k' pre.qcow2 >/dev/null");
	check_image("pre.qcow2");
}
END_TEST

static void compressed(const char *cs, const char *extra)
{
	tu_sh("qemu-img create -q -f raw src.raw 6M && "
	      "qemu-io -f raw -c 'write -P 0x61 0 1M' -c 'write -P 0x62 1536k 100k' "
	      "-c 'write -P 0x63 4M 2M' src.raw >/dev/null && "
	      "head -c 300000 /dev/urandom | dd of=src.raw bs=1 seek=2500000 conv=notrunc status=none");
	tu_sh("rm -f c.qcow2 && qemu-img convert -c -O qcow2 -o cluster_size=%s%s src.raw c.qcow2",
	      cs, extra);
	/* Plain data written over part of the compressed clusters. */
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x64 4096k 8k' c.qcow2 >/dev/null");
	check_image("c.qcow2");
}

START_TEST(read_compressed_512)
{
	compressed("512", "");
}
END_TEST

START_TEST(read_compressed_4k)
{
	compressed("4k", "");
}
END_TEST

START_TEST(read_compressed_64k)
{
	compressed("64k", "");
}
END_TEST

START_TEST(read_compressed_2m)
{
	compressed("2M", "");
}
END_TEST

START_TEST(read_compressed_extended_l2)
{
	compressed("64k", ",extended_l2=on");
}
END_TEST

static void extended(const char *cs)
{
	tu_sh("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=%s e.qcow2 8M",
	      cs);
	/* Partial subclusters, zeroed and discarded subclusters. */
	tu_sh("qemu-io -f qcow2 -c 'write -P 1 0 4k' -c 'write -z 8k 4k' "
	      "-c 'write -P 2 64k 64k' -c 'write -P 3 200000 3000' "
	      "-c 'write -z 128k 64k' -c 'discard 128k 32k' "
	      "-c 'write -P 4 1M 1M' -c 'write -z -u 1280k 64k' "
	      "-c 'write -P 5 7340000 30000' e.qcow2 >/dev/null");
	check_image("e.qcow2");
}

START_TEST(read_extended_l2_16k)
{
	extended("16k");
}
END_TEST

START_TEST(read_extended_l2_64k)
{
	extended("64k");
}
END_TEST

START_TEST(read_extended_l2_2m)
{
	extended("2M");
}
END_TEST

/* Internal snapshots and persistent bitmaps do not disturb the active view. */
START_TEST(read_snapshots_and_bitmaps)
{
	make_mixed("s.qcow2", "cluster_size=64k", "8M");
	tu_sh("qemu-img snapshot -c snap1 s.qcow2 && "
	      "qemu-io -f qcow2 -c 'write -P 0x77 1M 64k' -c 'write -z 1200k 64k' "
	      "s.qcow2 >/dev/null && qemu-img snapshot -c snap2 s.qcow2 && "
	      "qemu-img bitmap --add s.qcow2 b0 && "
	      "qemu-io -f qcow2 -c 'write -P 0x78 2M 64k' s.qcow2 >/dev/null");
	check_image("s.qcow2");
}
END_TEST

/* Chain reads: our layer asks the backing only where it allocates nothing. */
START_TEST(read_with_backing)
{
	struct fmt_image *img;

	tu_sh("qemu-img create -q -f qcow2 base.qcow2 4M && "
	      "qemu-io -f qcow2 -c 'write -P 0xb1 0 4M' base.qcow2 >/dev/null");
	/* Zero clusters hide the backing; unallocated ones show it. */
	tu_sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 6M && "
	      "qemu-io -f qcow2 -c 'write -P 0xc1 64k 10k' -c 'write -z 1M 128k' "
	      "-c 'write -P 0xc2 3M 2M' top.qcow2 >/dev/null");
	img = open_img("top.qcow2", 0);
	ck_assert_str_eq(img->backing_name, "base.qcow2");
	ck_assert_str_eq(img->backing_fmt, "qcow2");
	assert_reads_match(img, "top.qcow2");
	tu_assert_map_matches(img, "top.qcow2", "qcow2");
	fmt_close(img);

	/* Extended L2 over a backing: unallocated subclusters read it. */
	tu_sh("qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 "
	      "etop.qcow2 4M && qemu-io -f qcow2 -c 'write -P 0xd1 70000 5000' "
	      "-c 'write -z 200k 4k' etop.qcow2 >/dev/null");
	img = open_img("etop.qcow2", 0);
	assert_reads_match(img, "etop.qcow2");
	fmt_close(img);

	/* v2 overlay over a raw backing without a recorded format. */
	tu_sh("qemu-img create -q -f raw base.raw 1M && "
	      "qemu-io -f raw -c 'write -P 0xe1 0 1M' base.raw >/dev/null && "
	      "qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw v2top.qcow2 2M && "
	      "qemu-io -f qcow2 -c 'write -P 0xe2 512k 4k' v2top.qcow2 >/dev/null");
	img = open_img("v2top.qcow2", 0);
	ck_assert_str_eq(img->backing_fmt, "raw");
	assert_reads_match(img, "v2top.qcow2");
	fmt_close(img);
}
END_TEST

/*
 * O_DIRECT: aligned reads go straight to the file; unaligned ones (and
 * metadata, compressed data) through bounce buffers.
 */
static void direct_reads(const char *path)
{
	struct fmt_image *img =
		open_img(path, FMT_OPEN_DIRECT | FMT_OPEN_NO_BACKING);
	uint8_t *want, *got;
	void *p;
	size_t len;

	ck_assert_uint_gt(img->request_align, 1);
	tu_sh("rm -f conv.raw && qemu-img convert -O raw '%s' conv.raw", path);
	want = tu_read_file("conv.raw", &len);
	ck_assert_uint_eq(len, img->size);
	ck_assert_int_eq(posix_memalign(&p, 4096, len + 4096), 0);
	got = p;
	ck_assert_int_eq(fmt_pread(img, got, len, 0), 0);
	ck_assert(memcmp(got, want, len) == 0);
	memset(got, 0, len);
	ck_assert_int_eq(fmt_pread(img, got + 1, 1000000, 1000), 0);
	ck_assert(memcmp(got + 1, want + 1000, 1000000) == 0);
	free(got);
	free(want);
	fmt_close(img);
}

START_TEST(read_direct)
{
	make_mixed("m.qcow2", "cluster_size=512", "8M");
	direct_reads("m.qcow2");
	extended("64k");
	direct_reads("e.qcow2");
	tu_sh("qemu-img convert -c -O qcow2 m.qcow2 c.qcow2");
	direct_reads("c.qcow2");
}
END_TEST

START_TEST(coalesced_runs_and_l2_cache)
{
	struct fmt_image *img;
	struct fmt_extent e;
	struct qcow2 *q;
	uint8_t *buf;
	uint64_t off, tables;

	/* One contiguous allocation: one run for the whole write. */
	tu_sh("qemu-img create -q -f qcow2 big.qcow2 16M && "
	      "qemu-io -f qcow2 -c 'write -P 9 0 12M' big.qcow2 >/dev/null");
	img = open_img("big.qcow2", FMT_OPEN_NO_BACKING);
	ck_assert_int_eq(fmt_block_status(img, 0, img->size, &e), 0);
	ck_assert_int_eq(e.state, FMT_DATA);
	ck_assert_uint_eq(e.len, 12u << 20);
	fmt_close(img);

	/*
	 * One call visits at most QCOW2_MAP_MAX_ENTRIES entries: 65536
	 * contiguous 2 MiB clusters (sparse file) come in two halves.
	 */
	tu_sh("qemu-img create -q -f qcow2 -o preallocation=metadata,cluster_size=2M "
	      "huge.qcow2 128G");
	img = open_img("huge.qcow2", FMT_OPEN_NO_BACKING);
	ck_assert_int_eq(fmt_block_status(img, 0, img->size, &e), 0);
	ck_assert_int_eq(e.state, FMT_DATA);
	ck_assert_uint_eq(e.len, (uint64_t)QCOW2_MAP_MAX_ENTRIES << 21);
	off = (uint64_t)e.host_off;
	ck_assert_int_eq(fmt_block_status(img, e.len, img->size - e.len, &e),
			 0);
	ck_assert_int_eq(e.state, FMT_DATA);
	ck_assert_uint_eq(e.len, 64ull << 30);
	ck_assert_uint_eq((uint64_t)e.host_off, off + (64ull << 30));
	fmt_close(img);
	tu_sh("rm -f huge.qcow2");

	/* 512-byte clusters: an L2 table maps 32 KiB; 1 MiB needs 32 tables. */
	tu_sh("qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 1M && "
	      "qemu-io -f qcow2 -c 'write -P 9 0 1M' small.qcow2 >/dev/null");
	img = open_img("small.qcow2", FMT_OPEN_NO_BACKING);
	q = img->priv;
	buf = malloc(4096);
	ck_assert_ptr_nonnull(buf);
	for (off = 0; off < img->size; off += 4096)
		ck_assert_int_eq(fmt_pread(img, buf, 4096, off), 0);
	tables = q->l2_loads;
	ck_assert_uint_eq(tables, 32);
	/* Re-reading the last 16 tables' range hits the cache. */
	for (off = img->size / 2; off < img->size; off += 4096)
		ck_assert_int_eq(fmt_pread(img, buf, 4096, off), 0);
	ck_assert_uint_eq(q->l2_loads, tables);
	free(buf);
	fmt_close(img);
}
END_TEST

/* Reads smaller than a compressed cluster inflate it once. */
START_TEST(compressed_cluster_cache)
{
	struct fmt_image *img;
	struct qcow2 *q;
	uint8_t *want, *got;
	size_t len, off;

	tu_sh("qemu-img create -q -f raw s.raw 4M && "
	      "qemu-io -f raw -c 'write -P 0x71 0 3M' -c 'write -P 0x72 3M 1M' "
	      "s.raw >/dev/null && "
	      "qemu-img convert -c -O qcow2 -o cluster_size=2M s.raw z.qcow2");
	want = tu_read_file("s.raw", &len);
	img = open_img("z.qcow2", FMT_OPEN_NO_BACKING);
	q = img->priv;
	got = malloc(len);
	ck_assert_ptr_nonnull(got);
	for (off = 0; off < len; off += 65536)
		ck_assert_int_eq(fmt_pread(img, got + off, 65536, off), 0);
	ck_assert(memcmp(got, want, len) == 0);
	ck_assert_uint_eq(q->cc_inflates, 2);
	/* Both clusters stay cached; a third one would evict the older. */
	ck_assert_int_eq(fmt_pread(img, got, 4096, 0), 0);
	ck_assert_uint_eq(q->cc_inflates, 2);
	free(got);
	free(want);
	fmt_close(img);
}
END_TEST

struct reader {
	struct fmt_image *img;
	const uint8_t *want;
	size_t len;
	unsigned int seed;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(65536);
	int i;

	if (!buf) {
		r->bad = -1;
		return NULL;
	}
	for (i = 0; i < 1500 && !r->bad; i++) {
		size_t off = (size_t)rand_r(&r->seed) % r->len;
		size_t n = 1 + (size_t)rand_r(&r->seed) % 65536;

		if (n > r->len - off)
			n = r->len - off;
		if (fmt_pread(r->img, buf, n, off) < 0 ||
		    memcmp(buf, r->want + off, n))
			r->bad = i + 1;
	}
	free(buf);
	return NULL;
}

/*
 * Concurrent readers on one image: 512-byte clusters (128 L2 tables
 * through 16 cache slots), compressed and plain data, zero clusters.
 */
START_TEST(concurrent_reads)
{
	struct fmt_image *img;
	struct reader r[4];
	pthread_t th[4];
	uint8_t *want;
	size_t len;
	int i;

	tu_sh("qemu-img create -q -f raw s.raw 4M && "
	      "qemu-io -f raw -c 'write -P 0x41 0 2M' -c 'write -P 0x42 3M 512k' "
	      "s.raw >/dev/null && "
	      "qemu-img convert -c -O qcow2 -o cluster_size=512 s.raw p.qcow2 && "
	      "qemu-io -f qcow2 -c 'write -P 0x43 1M 1M' -c 'write -z 1536k 4k' "
	      "-c 'write -P 0x44 2500k 100k' p.qcow2 >/dev/null && "
	      "qemu-img convert -O raw p.qcow2 conv.raw");
	want = tu_read_file("conv.raw", &len);
	img = open_img("p.qcow2", FMT_OPEN_NO_BACKING);
	for (i = 0; i < 4; i++) {
		r[i] = (struct reader){.img = img,
				       .want = want,
				       .len = len,
				       .seed = 1234u + (unsigned int)i};
		ck_assert_int_eq(
			pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		ck_assert_msg(r[i].bad == 0, "reader %d failed at read %d", i,
			      r[i].bad);
	}
	fmt_close(img);
	free(want);
}
END_TEST

/* --- flags and corruption ---------------------------------------------- */

/* Overwrite bytes of @path at @off with the hex string @hex ("0a1b..."). */
static void poke(const char *path, uint64_t off, const char *hex)
{
	uint8_t bytes[64];
	size_t i, n = strlen(hex) / 2;
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_le(n, sizeof(bytes));
	for (i = 0; i < n; i++) {
		unsigned int v;

		ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		bytes[i] = (uint8_t)v;
	}
	ck_assert_int_eq(fmt_pwrite_file(fd, bytes, n, off), 0);
	close(fd);
}

START_TEST(corrupt_bit_read_only)
{
	struct fmt_image *img = NULL;

	tu_sh("qemu-img create -q -f qcow2 c.qcow2 1M && "
	      "qemu-io -f qcow2 -c 'write -P 3 0 64k' c.qcow2 >/dev/null");
	poke("c.qcow2", 72, "0000000000000002");
	bc_error_reset();
	ck_assert_int_eq(fmt_open("c.qcow2", "qcow2", FMT_OPEN_RDWR, &img),
			 -EUCLEAN);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	ck_assert_str_eq(
		bc_error_get()->message,
		"c.qcow2: image is marked corrupt; cannot be opened read/write");
	img = open_img("c.qcow2", FMT_OPEN_NO_BACKING);
	assert_reads_match(img, "c.qcow2");
	fmt_close(img);
}
END_TEST

START_TEST(dirty_bit_read_only)
{
	struct fmt_image *img;
	struct fmt_info info;

	tu_sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 1M && "
	      "qemu-io -f qcow2 -c 'write -P 3 0 64k' d.qcow2 >/dev/null");
	poke("d.qcow2", 72, "0000000000000001");
	img = open_img("d.qcow2", FMT_OPEN_NO_BACKING);
	ck_assert_int_eq(fmt_get_info(img, &info), 0);
	ck_assert(info.dirty);
	ck_assert(info.lazy_refcounts);
	ck_assert(!info.corrupt);
	ck_assert_str_eq(info.format, "qcow2");
	ck_assert_int_eq(info.version, 3);
	ck_assert_uint_eq(info.cluster_size, 65536);
	ck_assert_int_eq(info.refcount_bits, 16);
	ck_assert_uint_eq(info.virtual_size, 1u << 20);
	ck_assert_uint_gt(info.actual_size, 0);
	assert_reads_match(img, "d.qcow2");
	fmt_close(img);
}
END_TEST

START_TEST(unsupported_feature_at_open)
{
	struct fmt_image *img = NULL;

	tu_sh("qemu-img create -q -f qcow2 u.qcow2 1M");
	poke("u.qcow2", 72, "0000000000000100"); /* bit 8 */
	bc_error_reset();
	ck_assert_int_eq(
		fmt_open("u.qcow2", "qcow2", FMT_OPEN_NO_BACKING, &img),
		-ENOTSUP);
	ck_assert_int_eq(bc_error_get()->code, ERR_UNSUPPORTED);
	ck_assert_str_eq(
		bc_error_get()->message,
		"u.qcow2: unsupported qcow2 feature(s): unknown incompatible feature bits 0x100");
}
END_TEST

/* Host offset of the first L2 table of a fresh 64 KiB-cluster image. */
static uint64_t first_l2(const char *path)
{
	struct fmt_image *img = open_img(path, FMT_OPEN_NO_BACKING);
	struct qcow2 *q = img->priv;
	uint64_t l2 = q->l1[0] & QCOW2_L1E_OFFSET_MASK;

	fmt_close(img);
	ck_assert_uint_ne(l2, 0);
	return l2;
}

START_TEST(corrupt_tables)
{
	struct fmt_image *img = NULL;
	uint8_t buf[512];
	uint64_t l2;

	tu_sh("qemu-img create -q -f qcow2 k.qcow2 1M && "
	      "qemu-io -f qcow2 -c 'write -P 3 0 128k' k.qcow2 >/dev/null");
	l2 = first_l2("k.qcow2");

	/* L1 entry with a reserved bit: refused at open. */
	tu_sh("cp k.qcow2 l1.qcow2");
	poke("l1.qcow2", 0x30000, "0100000000000000");
	bc_error_reset();
	ck_assert_int_eq(
		fmt_open("l1.qcow2", "qcow2", FMT_OPEN_NO_BACKING, &img),
		-EUCLEAN);
	ck_assert_str_eq(
		bc_error_get()->message,
		"l1.qcow2: L1 entry 0 has reserved bits set (0x0100000000000000)");

	/* L2 entry with an unaligned host offset: refused when read. */
	tu_sh("cp k.qcow2 l2.qcow2");
	poke("l2.qcow2", l2 + 8, "8000000000050200");
	img = open_img("l2.qcow2", FMT_OPEN_NO_BACKING);
	ck_assert_int_eq(fmt_pread(img, buf, 512, 0), 0);
	bc_error_reset();
	ck_assert_int_eq(fmt_pread(img, buf, 512, 65536 + 512), -EUCLEAN);
	ck_assert_str_eq(
		bc_error_get()->message,
		"l2.qcow2: cluster offset 0x50200 unaligned (guest offset 0x10200)");
	fmt_close(img);

	/* L1 pointing beyond the end of the file. */
	tu_sh("cp k.qcow2 l1b.qcow2");
	poke("l1b.qcow2", 0x30000, "8000000100000000");
	img = open_img("l1b.qcow2", FMT_OPEN_NO_BACKING);
	bc_error_reset();
	ck_assert_int_eq(fmt_pread(img, buf, 512, 0), -EUCLEAN);
	ck_assert_str_eq(
		bc_error_get()->message,
		"l1b.qcow2: L2 table offset 0x100000000 beyond end of file");
	fmt_close(img);
}
END_TEST

START_TEST(corrupt_compressed_data)
{
	struct fmt_image *img;
	struct qcow2 *q;
	struct qcow2_mapping m;
	uint8_t *buf;

	tu_sh("qemu-img create -q -f raw s.raw 1M && "
	      "qemu-io -f raw -c 'write -P 0x61 0 1M' s.raw >/dev/null && "
	      "qemu-img convert -c -O qcow2 s.raw z.qcow2");
	img = open_img("z.qcow2", FMT_OPEN_NO_BACKING);
	q = img->priv;
	pthread_mutex_lock(&q->lock);
	ck_assert_int_eq(qcow2_map_ext_locked(q, 0, img->size, &m), 0);
	pthread_mutex_unlock(&q->lock);
	ck_assert_int_eq(m.type, QCOW2_CLUSTER_COMPRESSED);
	ck_assert_uint_eq(m.run, 65536);
	fmt_close(img);
	/* Garble the deflate stream: a stored-block header that lies. */
	poke("z.qcow2", m.host_off, "ffffffffffffffff");
	img = open_img("z.qcow2", FMT_OPEN_NO_BACKING);
	buf = malloc(65536);
	ck_assert_ptr_nonnull(buf);
	bc_error_reset();
	ck_assert_int_eq(fmt_pread(img, buf, 4096, 0), -EUCLEAN);
	ck_assert_int_eq(bc_error_get()->code, ERR_IMAGE_CORRUPT);
	{
		char want[256];

		(void)snprintf(
			want, sizeof(want),
			"z.qcow2: compressed cluster at host offset 0x%llx does not decompress to one cluster",
			(unsigned long long)m.host_off);
		ck_assert_str_eq(bc_error_get()->message, want);
	}
	/* The other clusters still read. */
	ck_assert_int_eq(fmt_pread(img, buf, 65536, 65536), 0);
	ck_assert_uint_eq(buf[0], 0x61);
	free(buf);
	fmt_close(img);
}
END_TEST

/*
 * Random byte damage in the metadata of real images: open, read and
 * block status must fail cleanly (invalid or unsupported), never crash
 * or read out of bounds (run under ASan). Fixed seed: reproducible.
 */
START_TEST(fuzzed_metadata_fails_cleanly)
{
	unsigned int seed = 20261127;
	uint8_t *bytes, *buf;
	int it, opened = 0;
	size_t len;

	tu_sh("qemu-img create -q -f raw s.raw 2M && "
	      "qemu-io -f raw -c 'write -P 0x41 0 1M' s.raw >/dev/null && "
	      "qemu-img convert -c -O qcow2 -o cluster_size=4k s.raw f.qcow2 && "
	      "qemu-io -f qcow2 -c 'write -P 0x43 512k 64k' -c 'write -z 1M 64k' "
	      "f.qcow2 >/dev/null && "
	      "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k e.qcow2 2M && "
	      "qemu-io -f qcow2 -c 'write -P 1 0 5k' -c 'write -z 64k 8k' "
	      "e.qcow2 >/dev/null");
	buf = malloc(1 << 20);
	ck_assert_ptr_nonnull(buf);
	for (it = 0; it < 600; it++) {
		const char *src = it % 2 ? "e.qcow2" : "f.qcow2";
		/* Header, tables and the first L2 tables; the header often. */
		size_t meta = it % 3 == 0 ? 512
			      : it % 2	  ? 6 * 16384
					  : 10 * 4096;
		struct fmt_image *img = NULL;
		int i, n, ret, fd;
		uint64_t off;

		bytes = tu_read_file(src, &len);
		n = 1 + rand_r(&seed) % 8;
		for (i = 0; i < n; i++) {
			size_t at = (size_t)rand_r(&seed) % BC_MIN(meta, len);

			bytes[at] = (uint8_t)rand_r(&seed);
		}
		fd = open("fz.qcow2", O_WRONLY | O_CREAT | O_TRUNC, 0644);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(fmt_pwrite_file(fd, bytes, len, 0), 0);
		close(fd);
		free(bytes);

		ret = fmt_open("fz.qcow2", "qcow2", FMT_OPEN_NO_BACKING, &img);
		ck_assert_msg(ret == 0 || ret == -EUCLEAN || ret == -ENOTSUP,
			      "iteration %d: open returned %d (%s)", it, ret,
			      bc_error_get()->message);
		if (ret < 0)
			continue;
		opened++;
		ret = fmt_pread(img, buf, (size_t)BC_MIN(img->size, 1u << 20),
				0);
		ck_assert_msg(ret == 0 || ret == -EUCLEAN,
			      "iteration %d: read returned %d (%s)", it, ret,
			      bc_error_get()->message);
		for (off = 0, i = 0; off < img->size && i < 200; i++) {
			struct fmt_extent e;

			ret = fmt_block_status(img, off, img->size - off, &e);
			ck_assert_msg(ret == 0 || ret == -EUCLEAN,
				      "iteration %d: status returned %d", it,
				      ret);
			if (ret < 0)
				break;
			off += e.len;
		}
		fmt_close(img);
	}
	/* Much damage lands in data or unused bytes: many still open. */
	ck_assert_int_gt(opened, 100);
	free(buf);
}
END_TEST

static Suite *l2_suite(void)
{
	Suite *s = suite_create("qcow2-l2");
	TCase *tc = tcase_create("entries");

	tcase_add_test(tc, standard_entries);
	tcase_add_test(tc, standard_entries_invalid);
	tcase_add_test(tc, compressed_descriptors);
	tcase_add_test(tc, compressed_invalid);
	tcase_add_test(tc, extended_entries);
	tcase_add_test(tc, extended_entries_invalid);
	suite_add_tcase(s, tc);

	/* The image tests need qemu-img and qemu-io as the oracle. */
	if (system("qemu-img --version >/dev/null 2>&1 && "
		   "qemu-io --version >/dev/null 2>&1")) {
		printf("# qemu-img/qemu-io not found: image tests skipped\n");
		return s;
	}

	tc = tcase_create("reads");
	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, read_v2);
	tcase_add_test(tc, read_v3_512);
	tcase_add_test(tc, read_v3_4k);
	tcase_add_test(tc, read_v3_64k);
	tcase_add_test(tc, read_v3_2m);
	tcase_add_test(tc, read_refcount_widths);
	tcase_add_test(tc, read_preallocated_metadata);
	tcase_add_test(tc, read_compressed_512);
	tcase_add_test(tc, read_compressed_4k);
	tcase_add_test(tc, read_compressed_64k);
	tcase_add_test(tc, read_compressed_2m);
	tcase_add_test(tc, read_compressed_extended_l2);
	tcase_add_test(tc, read_extended_l2_16k);
	tcase_add_test(tc, read_extended_l2_64k);
	tcase_add_test(tc, read_extended_l2_2m);
	tcase_add_test(tc, read_snapshots_and_bitmaps);
	tcase_add_test(tc, read_with_backing);
	tcase_add_test(tc, read_direct);
	tcase_add_test(tc, compressed_cluster_cache);
	tcase_add_test(tc, concurrent_reads);
	tcase_add_test(tc, coalesced_runs_and_l2_cache);
	suite_add_tcase(s, tc);

	tc = tcase_create("flags");
	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, corrupt_bit_read_only);
	tcase_add_test(tc, dirty_bit_read_only);
	tcase_add_test(tc, unsupported_feature_at_open);
	tcase_add_test(tc, corrupt_tables);
	tcase_add_test(tc, corrupt_compressed_data);
	tcase_add_test(tc, fuzzed_metadata_fails_cleanly);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(l2_suite());
}
