/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fixtures for the API tests (see helpers.h).
 */
#include "tests/api/helpers.h"

#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "formats/fmt.h"
#include "tests/scratch.h"

static void on_event(bc_engine *eng, bc_disk *disk, const char *path,
		     int type, int status, void *opaque)
{
	struct fx *fx = opaque;

	(void)eng;
	(void)disk;
	ck_assert_int_lt(fx->nevents, FX_MAX_EVENTS);
	fx->events[fx->nevents].type = type;
	fx->events[fx->nevents].status = status;
	snprintf(fx->events[fx->nevents].path, PATH_MAX, "%s", path);
	fx->nevents++;
	if (status == BC_BLOCK_JOB_FAILED || status == BC_BLOCK_JOB_PAUSED)
		fx->last_err = *bc_last_error();
}

void fx_setup(struct fx *fx)
{
	memset(fx, 0, sizeof(*fx));
	scratch_dir(fx->dir, sizeof(fx->dir), NULL, "bc-api-");
	fx->eng = bc_engine_new(0);
	ck_assert_ptr_nonnull(fx->eng);
	ck_assert_int_ge(bc_engine_event_register(fx->eng, on_event, fx), 0);
	fx->shadow = calloc(1, FX_SIZE);
	ck_assert_ptr_nonnull(fx->shadow);
}

void fx_teardown(struct fx *fx)
{
	int i;

	if (fx->disk) {
		bc_block_job_info info;

		if (bc_get_block_job_info(fx->disk, &info, 0) == 1)
			(void)bc_block_job_abort(fx->disk, 0);
		(void)bc_disk_close(fx->disk);
	}
	bc_engine_free(fx->eng);
	scratch_remove(fx->dir);
	for (i = 0; i < fx->nlayers; i++)
		free(fx->layers[i]);
	free(fx->shadow);
}

/* Outside struct fx so the compiler sees it never overlaps fx->dir. */
static char scratch[8][PATH_MAX];
static unsigned int scratch_next;

const char *fx_path(struct fx *fx, const char *name)
{
	char *p = scratch[scratch_next++ % 8];

	ck_assert_int_lt(snprintf(p, PATH_MAX, "%s/%s", fx->dir, name), PATH_MAX);
	return p;
}

const char *fx_fmt(struct fx *fx, const char *fmt, ...)
{
	char *p = scratch[scratch_next++ % 8];
	va_list ap;

	(void)fx;

	va_start(ap, fmt);
	vsnprintf(p, PATH_MAX, fmt, ap);
	va_end(ap);
	return p;
}

static void image_write(struct fmt_image *img, uint8_t *shadow, uint64_t off,
			uint64_t len, uint8_t byte)
{
	uint8_t *buf = malloc(len);
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(byte + (i >> 12));
	ck_assert_int_eq(fmt_pwrite(img, buf, len, off), 0);
	memcpy(shadow + off, buf, len);
	free(buf);
}

/*
 * Layer k writes a few MiB in different places, unaligned edges included,
 * and the top zeroes a range its backing holds: a pull or a full copy has
 * data at every depth to move, and a zero that must not become the
 * backing's data.
 */
void fx_open_chain(struct fx *fx, int n)
{
	fx_open_chain_with(fx, n, 0, 0);
}

void fx_open_chain_with(struct fx *fx, int n, uint32_t cluster_size,
			unsigned int disk_flags)
{
	int k;

	ck_assert_int_le(n, FX_MAX_LAYERS);
	for (k = 0; k < n; k++) {
		struct fmt_create_opts co = { .format = "qcow2", .size = FX_SIZE,
					      .cluster_size = cluster_size };
		char name[64], prev[64];
		struct fmt_image *img;

		snprintf(name, sizeof(name), "layer%d.qcow2", k);
		snprintf(prev, sizeof(prev), "layer%d.qcow2", k - 1);
		if (k > 0) {
			co.backing_file = prev;
			co.backing_fmt = "qcow2";
		}
		ck_assert_int_gt(asprintf(&fx->layers[k], "%s/%s", fx->dir, name), 0);
		ck_assert_int_eq(fmt_create(fx->layers[k], &co), 0);
		ck_assert_int_eq(fmt_open(fx->layers[k], "qcow2", FMT_OPEN_RDWR, &img), 0);
		if (k == 0) {
			image_write(img, fx->shadow, 0, 3u << 20, 0x10);
			image_write(img, fx->shadow, 6u << 20, 1u << 20, 0x30);
		} else if (k == 1) {
			image_write(img, fx->shadow, (2u << 20) + 4097, 2u << 20, 0x50);
		} else {
			image_write(img, fx->shadow, 65536 * 3 + 100, 200000, 0x70);
			image_write(img, fx->shadow, 5u << 20, 65536, 0x90);
			ck_assert_int_eq(fmt_write_zeroes(img, 6u << 20, 131072, 0), 0);
			memset(fx->shadow + (6u << 20), 0, 131072);
		}
		ck_assert_int_eq(fmt_flush(img), 0);
		fmt_close(img);
	}
	fx->nlayers = n;
	fx->top = fx->layers[n - 1];
	fx->disk = bc_disk_open(fx->eng, fx->top, "qcow2", disk_flags);
	ck_assert_msg(fx->disk, "bc_disk_open: %s", bc_last_error()->message);
}

void fx_close_disk(struct fx *fx)
{
	ck_assert_int_eq(bc_disk_close(fx->disk), 0);
	fx->disk = NULL;
}

void fx_expect_event(struct fx *fx, int type, int status)
{
	time_t deadline = time(NULL) + 30;

	while (fx->consumed == fx->nevents) {
		ck_assert_msg(time(NULL) < deadline,
			      "no event within 30 s (expected type %d status %d)",
			      type, status);
		ck_assert_int_ge(bc_engine_dispatch(fx->eng, 200), 0);
	}
	ck_assert_int_eq(fx->events[fx->consumed].type, type);
	ck_assert_int_eq(fx->events[fx->consumed].status, status);
	fx->consumed++;
}

bool fx_mirroring_within(struct fx *fx, int ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int i;

		for (i = fx->consumed; i < fx->nevents; i++) {
			if (fx->events[i].status == BC_BLOCK_JOB_MIRRORING)
				return true;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 +
			    (t.tv_nsec - t0.tv_nsec) / 1000000 > ms)
			return false;
		ck_assert_int_ge(bc_engine_dispatch(fx->eng, 50), 0);
	}
}

void fx_guest_write(struct fx *fx, uint64_t off, uint64_t len, uint8_t byte)
{
	uint8_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	memset(buf, byte, len);
	ck_assert_int_eq(bc_disk_pwrite(fx->disk, buf, len, off), (ssize_t)len);
	memcpy(fx->shadow + off, buf, len);
	free(buf);
}

static void assert_same(const uint8_t *got, const uint8_t *want, const char *what)
{
	size_t i;

	for (i = 0; i < FX_SIZE; i++) {
		if (got[i] != want[i])
			ck_abort_msg("%s differs from the shadow at offset %zu: 0x%02x, expected 0x%02x",
				     what, i, got[i], want[i]);
	}
}

void fx_check_disk_equals_shadow(struct fx *fx)
{
	uint8_t *buf = malloc(FX_SIZE);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(bc_disk_pread(fx->disk, buf, FX_SIZE, 0), FX_SIZE);
	assert_same(buf, fx->shadow, "disk");
	free(buf);
}

static uint8_t *read_image(const char *path, const char *format)
{
	struct fmt_image *img;
	uint8_t *buf = malloc(FX_SIZE);

	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(fmt_open(path, format, 0, &img) == 0, "open %s: %s", path,
		      bc_last_error()->message);
	ck_assert_uint_eq(img->size, FX_SIZE);
	ck_assert_int_eq(fmt_pread(img, buf, FX_SIZE, 0), 0);
	fmt_close(img);
	return buf;
}

void fx_check_image_equals_shadow(struct fx *fx, const char *path,
				  const char *format)
{
	uint8_t *buf = read_image(path, format);

	assert_same(buf, fx->shadow, path);
	free(buf);
}

bool fx_image_matches_shadow(struct fx *fx, const char *path,
			     const char *format)
{
	uint8_t *buf = read_image(path, format);
	bool same = memcmp(buf, fx->shadow, FX_SIZE) == 0;

	free(buf);
	return same;
}

bool fx_dir_can_direct(struct fx *fx)
{
	int fd = open(fx_path(fx, "probe"), O_CREAT | O_RDWR | O_DIRECT, 0600);

	if (fd < 0)
		return false;
	close(fd);
	unlink(fx_path(fx, "probe"));
	return true;
}
