/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fmt_io_map() on qcow2 (formats/qcow2-write.c): which guest ranges an
 * asynchronous request may read or write straight from the file, with
 * qemu-img and qemu-io making the images and `qemu-img map` saying where
 * the data is. Only data this layer holds maps for a read; a write maps
 * as an in-place overwrite of clusters the image owns or as whole
 * clusters given new ones (linked at unmap, freed if the I/O failed); a
 * mapped range stays registered: a request that would change its mapping
 * waits for fmt_io_unmap(), and a conflicting request in flight makes the
 * map decline rather than wait.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "formats/fmt.h"
#include "formats/qcow2.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

static struct fmt_image *open_img(const char *path, unsigned int flags)
{
	struct fmt_image *img = NULL;
	int ret = fmt_open(path, "qcow2", flags | FMT_OPEN_NO_BACKING, &img);

	ck_assert_msg(ret == 0, "open %s: %d %s", path, ret,
		      bc_error_get()->message);
	return img;
}

/* Host offset of guest byte @off in @path, from `qemu-img map`. */
static uint64_t qemu_host_offset(const char *path, uint64_t off)
{
	char *out = tu_out("qemu-img map --output=json '%s' | python3 -c '"
			   "import json,sys\n"
			   "for e in json.load(sys.stdin):\n"
			   "  if e[\"start\"] <= %llu < e[\"start\"] + e[\"length\"]:\n"
			   "    print(e.get(\"offset\", -1) + %llu - e[\"start\"] if \"offset\" in e else -1)'",
			   path, (unsigned long long)off, (unsigned long long)off);
	long long v = strtoll(out, NULL, 10);

	free(out);
	ck_assert_msg(v >= 0, "qemu-img map: guest %llu of %s has no host offset",
		      (unsigned long long)off, path);
	return (uint64_t)v;
}

/* The bytes at @host of the mapped file equal @byte over @len. */
static void assert_file_bytes(int fd, uint64_t host, uint64_t len, int byte)
{
	uint8_t *buf = malloc(len);
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, len, (off_t)host), (ssize_t)len);
	for (i = 0; i < len; i++)
		ck_assert_msg(buf[i] == byte, "host byte %llu is 0x%02x, want 0x%02x",
			      (unsigned long long)(host + i), buf[i], byte);
	free(buf);
}

START_TEST(read_maps_only_data_this_layer_holds)
{
	struct fmt_io_map map;
	struct fmt_image *img;

	/* 64 KiB clusters: data at [0, 128K), a zero cluster at 256K,
	 * compressed data in a second image, the rest unallocated. */
	tu_sh("qemu-img create -q -f qcow2 t.qcow2 4M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -z 256k 64k' t.qcow2 >/dev/null");
	img = open_img("t.qcow2", 0);

	ck_assert_int_eq(fmt_io_map(img, false, 4096, 8192, &map), 0);
	ck_assert_int_eq(map.fd, img->fd);
	ck_assert_uint_eq(map.host_off, qemu_host_offset("t.qcow2", 4096));
	assert_file_bytes(map.fd, map.host_off, 8192, 0x11);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);

	/* Two clusters, contiguous on the host (written in one go). */
	ck_assert_int_eq(fmt_io_map(img, false, 0, 128 * KiB, &map), 0);
	ck_assert_uint_eq(map.host_off, qemu_host_offset("t.qcow2", 0));
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);

	/* Unallocated, zero, and data running into unallocated: the driver's. */
	ck_assert_int_eq(fmt_io_map(img, false, 1 * MiB, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, false, 256 * KiB, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, false, 124 * KiB, 8192, &map), -ENOTSUP);
	/* Past the end: refused before the driver. */
	ck_assert_int_eq(fmt_io_map(img, false, 4 * MiB - 4096, 8192, &map), -ENOTSUP);
	fmt_close(img);

	tu_sh("qemu-img convert -q -c -O qcow2 t.qcow2 c.qcow2");
	img = open_img("c.qcow2", 0);
	ck_assert_int_eq(fmt_io_map(img, false, 0, 4096, &map), -ENOTSUP);
	fmt_close(img);
	ck_assert_int_eq(bc_error_get()->code, 0);
}
END_TEST

START_TEST(write_maps_only_in_place_overwrites)
{
	struct fmt_io_map map;
	struct fmt_image *img;
	uint8_t buf[4096];

	tu_sh("qemu-img create -q -f qcow2 t.qcow2 4M");
	/* Guest clusters 1M and 1M+64K apart on the host (2M between). */
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -P 0x22 1M 64k' "
	      "-c 'write -P 0x22 2M 64k' -c 'write -P 0x22 1088k 64k' "
	      "-c 'write -z 256k 64k' t.qcow2 >/dev/null");
	img = open_img("t.qcow2", FMT_OPEN_RDWR);
	/* The image's first write goes through the driver (header bits). */
	ck_assert_int_eq(fmt_io_map(img, true, 0, 4096, &map), -ENOTSUP);
	memset(buf, 0x33, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 8192), 0);

	ck_assert_int_eq(fmt_io_map(img, true, 4096, 4096, &map), 0);
	ck_assert_uint_eq(map.host_off, qemu_host_offset("t.qcow2", 4096));
	ck_assert_int_eq(pwrite(map.fd, buf, sizeof(buf), (off_t)map.host_off), 4096);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	/* Across two clusters that are contiguous on the host. */
	ck_assert_int_eq(fmt_io_map(img, true, 60 * KiB, 8192, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);

	/* Part of a cluster needing allocation or copy-on-write, a mix of
	 * owned and new clusters, and clusters apart on the host. */
	ck_assert_int_eq(fmt_io_map(img, true, 3 * MiB, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, true, 256 * KiB, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, true, 124 * KiB, 8192, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, true, 64 * KiB, 128 * KiB, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, true, 1 * MiB, 4096, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	ck_assert_int_eq(fmt_io_map(img, true, 1 * MiB + 60 * KiB, 8192, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	ck_assert_int_eq(bc_error_get()->code, 0);

	/* What went to the file through the mapping is the guest's data. */
	tu_sh("qemu-io -f qcow2 -c 'read -P 0x11 0 4k' -c 'read -P 0x33 4k 8k' "
	      "-c 'read -P 0x11 12k 116k' t.qcow2 >/dev/null");
	tu_sh("qemu-img check -q t.qcow2");
	tu_sh("qemu-img check -q t.qcow2");

	/* Read-only: refused before the driver. */
	img = open_img("t.qcow2", 0);
	ck_assert_int_eq(fmt_io_map(img, true, 0, 4096, &map), -ENOTSUP);
	fmt_close(img);
}
END_TEST

/* Extended L2: a write maps only where the subclusters hold data already. */
START_TEST(write_maps_allocated_subclusters_only)
{
	struct fmt_io_map map;
	struct fmt_image *img;
	uint8_t buf[4096];

	/* 64 KiB clusters, 2 KiB subclusters: [0, 8K) of cluster 0 written. */
	tu_sh("qemu-img create -q -f qcow2 -o extended_l2=on t.qcow2 4M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 8k' t.qcow2 >/dev/null");
	img = open_img("t.qcow2", FMT_OPEN_RDWR);
	memset(buf, 0x44, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_io_map(img, true, 4096, 4096, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	/* Subclusters without data need their allocation bit set. */
	ck_assert_int_eq(fmt_io_map(img, true, 8192, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, false, 8192, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_io_map(img, false, 0, 8192, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	fmt_close(img);
	tu_sh("qemu-img check -q t.qcow2");
}
END_TEST

/* A bitmap added to an image already written records the mapped writes too. */
START_TEST(bitmap_added_later_records_mapped_writes)
{
	struct fmt_io_map map;
	struct fmt_image *img;
	uint8_t buf[4096], *bits = NULL;
	uint64_t nbits = 0;
	uint32_t gbits = 0;

	tu_sh("qemu-img create -q -f qcow2 t.qcow2 4M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 1M' t.qcow2 >/dev/null");
	img = open_img("t.qcow2", FMT_OPEN_RDWR);
	memset(buf, 0x22, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_io_map(img, true, 64 * KiB, 4096, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	ck_assert_int_eq(fmt_bitmap_change(img, &(struct fmt_bitmap_change){
		.verb = FMT_BITMAP_ADD, .name = "b", .granularity = 64 * KiB }), 0);
	/* The next write goes through the driver, which starts tracking. */
	ck_assert_int_eq(fmt_io_map(img, true, 128 * KiB, 4096, &map), -ENOTSUP);
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(fmt_io_map(img, true, 192 * KiB, 4096, &map), 0);
	ck_assert_int_eq(pwrite(map.fd, buf, sizeof(buf), (off_t)map.host_off), 4096);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	fmt_close(img);

	img = open_img("t.qcow2", 0);
	ck_assert_int_eq(fmt_bitmap_read(img, "b", &bits, &nbits, &gbits), 0);
	ck_assert_uint_eq(gbits, 16);
	ck_assert_uint_eq(nbits, 64);
	ck_assert_msg(bits[0] & 1, "the driver's write at 0 is not recorded");
	ck_assert_msg(bits[0] & 8, "the mapped write at 192K is not recorded");
	ck_assert_msg(!(bits[0] & 2), "granule 64K recorded: written before the bitmap");
	free(bits);
	fmt_close(img);
	tu_sh("qemu-img check -q t.qcow2");
}
END_TEST

struct reader {
	struct fmt_image *img;
	atomic_bool done;
	int ret;
	uint8_t buf[4096];
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->ret = fmt_pread(r->img, r->buf, sizeof(r->buf), 1 * MiB);
	atomic_store(&r->done, true);
	return NULL;
}

/* Whole clusters the image does not own get new ones, linked at unmap. */
START_TEST(write_of_whole_clusters_allocates)
{
	struct reader rdr = { .done = false };
	struct fmt_io_map map, rd;
	struct fmt_image *img;
	pthread_t tid;
	uint8_t *buf = malloc(128 * KiB);

	ck_assert_ptr_nonnull(buf);
	tu_sh("qemu-img create -q -f qcow2 base.qcow2 4M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 4M' base.qcow2 >/dev/null");
	tu_sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x22 0 64k' -c 'write -z 512k 64k' "
	      "t.qcow2 >/dev/null");
	img = open_img("t.qcow2", FMT_OPEN_RDWR);
	memset(buf, 0x33, 128 * KiB);
	ck_assert_int_eq(fmt_pwrite(img, buf, 4096, 0), 0);

	/* Two unallocated clusters: one run of new clusters. While it is
	 * in flight a read of the range waits (it must not read the backing
	 * file's data under the write). */
	ck_assert_int_eq(fmt_io_map(img, true, 1 * MiB, 128 * KiB, &map), 0);
	rdr.img = img;
	ck_assert_int_eq(pthread_create(&tid, NULL, reader_main, &rdr), 0);
	usleep(200 * 1000);
	ck_assert_msg(!atomic_load(&rdr.done), "a read saw a range being allocated");
	ck_assert_int_eq(pwrite(map.fd, buf, 128 * KiB, (off_t)map.host_off),
			 (ssize_t)(128 * KiB));
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	ck_assert_int_eq(pthread_join(tid, NULL), 0);
	ck_assert_int_eq(rdr.ret, 0);
	ck_assert_int_eq(rdr.buf[0], 0x33);
	ck_assert_int_eq(rdr.buf[4095], 0x33);
	ck_assert_int_eq(fmt_io_map(img, false, 1 * MiB, 128 * KiB, &rd), 0);
	ck_assert_uint_eq(rd.host_off, map.host_off);
	ck_assert_int_eq(fmt_io_unmap(img, &rd, 0), 0);

	/* A zero cluster is replaced whole. */
	ck_assert_int_eq(fmt_io_map(img, true, 512 * KiB, 64 * KiB, &map), 0);
	ck_assert_int_eq(pwrite(map.fd, buf, 64 * KiB, (off_t)map.host_off),
			 (ssize_t)(64 * KiB));
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);

	/* A failed write links nothing and frees its clusters. */
	ck_assert_int_eq(fmt_io_map(img, true, 2 * MiB, 64 * KiB, &map), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, -EIO), -EIO);
	ck_assert_int_eq(fmt_flush(img), 0);
	fmt_close(img);
	free(buf);

	tu_sh("qemu-io -f qcow2 -c 'read -P 0x33 0 4k' -c 'read -P 0x22 4k 60k' "
	      "-c 'read -P 0x33 512k 64k' -c 'read -P 0x33 1M 128k' "
	      "-c 'read -P 0x11 2M 64k' t.qcow2 >/dev/null");
	/* Nothing leaked by the failed one: check exits 0, not 3. */
	tu_sh("qemu-img check -q t.qcow2");
	tu_sh("test \"$(qemu-img map --output=json t.qcow2 | python3 -c '"
	      "import json,sys; print(sum(e[\"length\"] for e in json.load(sys.stdin) "
	      "if e[\"depth\"] == 0 and e[\"data\"]))')\" = %llu", 256 * KiB);
}
END_TEST

struct discarder {
	struct fmt_image *img;
	atomic_bool done;
	int ret;
};

static void *discard_main(void *arg)
{
	struct discarder *d = arg;

	d->ret = fmt_discard(d->img, 0, 64 * KiB);
	atomic_store(&d->done, true);
	return NULL;
}

START_TEST(mapped_range_holds_off_remapping)
{
	struct discarder d = { .done = false };
	struct fmt_io_map map, other;
	struct qcow2_req excl;
	struct fmt_image *img;
	struct qcow2 *q;
	uint8_t buf[4096];
	pthread_t tid;

	tu_sh("qemu-img create -q -f qcow2 t.qcow2 4M");
	tu_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 128k' t.qcow2 >/dev/null");
	img = open_img("t.qcow2", FMT_OPEN_RDWR);
	q = img->priv;
	memset(buf, 0x55, sizeof(buf));
	ck_assert_int_eq(fmt_pwrite(img, buf, sizeof(buf), 64 * KiB), 0);

	/* A discard of a mapped cluster waits until the I/O is done. */
	ck_assert_int_eq(fmt_io_map(img, true, 0, 4096, &map), 0);
	d.img = img;
	ck_assert_int_eq(pthread_create(&tid, NULL, discard_main, &d), 0);
	usleep(200 * 1000);
	ck_assert_msg(!atomic_load(&d.done), "the discard freed a cluster still mapped");
	ck_assert_int_eq(pwrite(map.fd, buf, sizeof(buf), (off_t)map.host_off), 4096);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	ck_assert_int_eq(pthread_join(tid, NULL), 0);
	ck_assert_int_eq(d.ret, 0);

	/* A conflicting request in flight: the map declines, never waits. */
	pthread_mutex_lock(&q->lock);
	qcow2_req_add_locked(q, &excl, 64 * KiB, 128 * KiB, true);
	pthread_mutex_unlock(&q->lock);
	ck_assert_int_eq(fmt_io_map(img, false, 64 * KiB, 4096, &other), -EAGAIN);
	ck_assert_int_eq(fmt_io_map(img, true, 64 * KiB, 4096, &other), -EAGAIN);
	pthread_mutex_lock(&q->lock);
	qcow2_req_remove_locked(q, &excl);
	pthread_mutex_unlock(&q->lock);
	/* Shared mappings of one range go side by side. */
	ck_assert_int_eq(fmt_io_map(img, false, 64 * KiB, 4096, &map), 0);
	ck_assert_int_eq(fmt_io_map(img, true, 64 * KiB, 4096, &other), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &other, 0), 0);
	ck_assert_int_eq(fmt_io_unmap(img, &map, 0), 0);
	fmt_close(img);
	tu_sh("qemu-io -f qcow2 -c 'read -P 0 0 64k' -c 'read -P 0x55 64k 4k' t.qcow2 >/dev/null");
	tu_sh("qemu-img check -q t.qcow2");
}
END_TEST

static Suite *io_map_suite(void)
{
	Suite *s = suite_create("qcow2-io-map");
	TCase *tc = tcase_create("io-map");

	tu_add_fixtures(tc);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, read_maps_only_data_this_layer_holds);
	tcase_add_test(tc, write_maps_only_in_place_overwrites);
	tcase_add_test(tc, write_maps_allocated_subclusters_only);
	tcase_add_test(tc, write_of_whole_clusters_allocates);
	tcase_add_test(tc, bitmap_added_later_records_mapped_writes);
	tcase_add_test(tc, mapped_range_holds_off_remapping);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(io_map_suite());
}
