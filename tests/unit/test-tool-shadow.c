/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the synthetic guest's shadow (tools/shadow.c): block
 * contents as a function of (seed, block, generation), checks of ranges
 * and of whole disks, generation 0 from a callback or from CRCs, and the
 * check at a switch: blocks saved after it, blocks in flight across it
 * (each byte before or after), too many rewrites counted unverifiable.
 * Every check is also shown to fail when one byte is wrong.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check-main.h"
#include "fmt-testutil.h"
#include "lib/blockcopy.h"
#include "lib/common/util.h"
#include "tools/shadow.h"

#define DISK_SIZE (64u * 1024 + 100) /* 17 blocks, the last one short */
#define NBLOCKS	  17u
#define SEED	  42u

static bc_engine *eng;
static bc_disk *disk;

/* Generation 0 of the demo kind: byte i of the disk is i * 7 + 1. */
static void initial_pattern(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i;

	(void)arg;
	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)((off + i) * 7 + 1);
}

/* A raw disk holding initial_pattern, open read-write. */
static void disk_setup(void)
{
	uint8_t *buf = malloc(DISK_SIZE);

	tu_setup();
	ck_assert_ptr_nonnull(buf);
	initial_pattern(NULL, 0, buf, DISK_SIZE);
	{
		FILE *f = fopen("d.raw", "wb");

		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite(buf, 1, DISK_SIZE, f), DISK_SIZE);
		ck_assert_int_eq(fclose(f), 0);
	}
	free(buf);
	eng = bc_engine_new(0);
	ck_assert_ptr_nonnull(eng);
	disk = bc_disk_open(eng, "d.raw", "raw", 0);
	ck_assert_ptr_nonnull(disk);
}

static void disk_teardown(void)
{
	ck_assert_int_eq(bc_disk_close(disk), 0);
	bc_engine_free(eng);
	tu_teardown();
}

/* Writes block @b's content in @state to the disk. */
static void put_block(const struct shadow *s, uint64_t b, uint32_t state)
{
	uint8_t buf[SHADOW_BLOCK];
	uint64_t off = b * SHADOW_BLOCK;
	size_t n = DISK_SIZE - off < SHADOW_BLOCK ? DISK_SIZE - off : SHADOW_BLOCK;

	ck_assert(shadow_fill(s, b, state, off, n, buf));
	ck_assert_int_eq(bc_disk_pwrite(disk, buf, n, off), (ssize_t)n);
}

/* Flips one byte of the disk at @off. */
static void corrupt(uint64_t off)
{
	uint8_t c;

	ck_assert_int_eq(bc_disk_pread(disk, &c, 1, off), 1);
	c ^= 0x40;
	ck_assert_int_eq(bc_disk_pwrite(disk, &c, 1, off), 1);
}

START_TEST(content_is_a_function_of_block_and_generation)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	struct shadow *t = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	static uint8_t a[SHADOW_BLOCK], b[SHADOW_BLOCK];
	uint8_t part[100];

	ck_assert(shadow_fill(s, 3, 5, 3 * SHADOW_BLOCK, SHADOW_BLOCK, a));
	ck_assert(shadow_fill(t, 3, 5, 3 * SHADOW_BLOCK, SHADOW_BLOCK, b));
	ck_assert_mem_eq(a, b, SHADOW_BLOCK);          /* deterministic */
	ck_assert(shadow_fill(s, 3, 6, 3 * SHADOW_BLOCK, SHADOW_BLOCK, b));
	ck_assert_int_ne(memcmp(a, b, SHADOW_BLOCK), 0); /* new generation */
	ck_assert(shadow_fill(s, 4, 5, 4 * SHADOW_BLOCK, SHADOW_BLOCK, b));
	ck_assert_int_ne(memcmp(a, b, SHADOW_BLOCK), 0); /* other block */
	/* Any sub-range, at any byte, is the same bytes. */
	ck_assert(shadow_fill(s, 3, 5, 3 * SHADOW_BLOCK + 1001, sizeof(part), part));
	ck_assert_mem_eq(part, a + 1001, sizeof(part));
	ck_assert(shadow_fill(s, 3, 5 | SHADOW_ZERO, 3 * SHADOW_BLOCK, 100, part));
	ck_assert(bc_is_zero(part, 100));
	ck_assert_uint_eq(shadow_next_gen(s, 3), 1);
	shadow_set(s, 3, 7 | SHADOW_ZERO, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	ck_assert_uint_eq(shadow_next_gen(s, 3), 8); /* zeros keep the count */
	shadow_free(s);
	shadow_free(t);
}
END_TEST

START_TEST(memory_is_a_few_bytes_per_block)
{
	ck_assert_uint_eq(shadow_footprint(8ull << 30, false), (8ull << 30) / 4096 * 9);
	ck_assert_uint_eq(shadow_footprint(8ull << 30, true), (8ull << 30) / 4096 * 13);
}
END_TEST

START_TEST(verify_finds_one_wrong_byte)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	char msg[256];

	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 0);
	put_block(s, 2, 1);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 1);
	ck_assert_str_eq(msg, "differs from what the guest wrote at offset 8192");
	shadow_set(s, 2, 1, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 0);
	put_block(s, 16, 3 | SHADOW_ZERO); /* the short last block */
	shadow_set(s, 16, 3 | SHADOW_ZERO, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 0);
	corrupt(16 * SHADOW_BLOCK + 99);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 1);
	ck_assert_str_eq(msg, "differs from what the guest wrote at offset 65635");
	shadow_free(s);
}
END_TEST

START_TEST(ranges_check_byte_by_byte)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	static uint8_t buf[2 * SHADOW_BLOCK];

	put_block(s, 5, 2);
	shadow_set(s, 5, 2, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	/* 4 KiB + 100 bytes straddling blocks 4, 5 and 6, unaligned. */
	ck_assert_int_eq(bc_disk_pread(disk, buf, SHADOW_BLOCK + 100, 5 * SHADOW_BLOCK - 50),
			 SHADOW_BLOCK + 100);
	ck_assert(shadow_can_check(s, 5 * SHADOW_BLOCK - 50, SHADOW_BLOCK + 100));
	ck_assert_uint_eq(shadow_check(s, 5 * SHADOW_BLOCK - 50, SHADOW_BLOCK + 100, buf), 0);
	buf[SHADOW_BLOCK + 60] ^= 1; /* in block 6 */
	ck_assert_uint_eq(shadow_check(s, 5 * SHADOW_BLOCK - 50, SHADOW_BLOCK + 100, buf),
			  5 * SHADOW_BLOCK - 50 + SHADOW_BLOCK + 60 + 1);
	shadow_free(s);
}
END_TEST

START_TEST(generation_zero_by_crc)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, NULL, NULL);
	char msg[256];

	ck_assert_int_eq(shadow_hash_initial(s, disk, msg, sizeof(msg)), 0);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 0);
	/* A partial block known only by its CRC cannot be checked in part. */
	ck_assert(!shadow_can_check(s, 100, 10));
	ck_assert(shadow_can_check(s, SHADOW_BLOCK, SHADOW_BLOCK));
	put_block(s, 1, 1);
	shadow_set(s, 1, 1, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	ck_assert(shadow_can_check(s, SHADOW_BLOCK + 100, 10));
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 0);
	corrupt(7 * SHADOW_BLOCK + 5);
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 1);
	ck_assert_str_eq(msg, "differs from what the guest wrote at offset 28672");
	shadow_free(s);
}
END_TEST

START_TEST(switch_keeps_the_content_at_the_switch)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	struct shadow_switch_stats st;
	char msg[256];

	/* Before the switch: block 2 gets generation 1, on the disk too. */
	put_block(s, 2, 1);
	shadow_set(s, 2, 1, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	/* After it: the guest (on the other image) writes block 2 and 3. */
	shadow_set(s, 2, 2, SHADOW_MARK_DONE, SHADOW_MARK_DONE);
	shadow_set(s, 3, 1, SHADOW_MARK_DONE, SHADOW_MARK_DONE);
	shadow_set(s, 3, 2, SHADOW_MARK_DONE, SHADOW_MARK_DONE);
	/* The disk here is the image left at the switch: unchanged. */
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(st.saved, 2);
	ck_assert_uint_eq(st.uncertain, 0);
	ck_assert_uint_eq(st.unverifiable, 0);
	/* It no longer matches the current states... */
	ck_assert_int_eq(shadow_verify(s, disk, false, NULL, msg, sizeof(msg)), 1);
	/* ...and a write reaching the left image after the switch is caught. */
	put_block(s, 3, 1);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 1);
	ck_assert_str_eq(msg, "differs from the content at the switch in 12288..16384");
	shadow_free(s);
}
END_TEST

START_TEST(in_flight_blocks_hold_before_or_after_byte_by_byte)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	struct shadow_switch_stats st;
	uint8_t half[SHADOW_BLOCK / 2];
	char msg[256];

	/* A write of block 4 in flight while the switch was in progress. */
	shadow_set(s, 4, 1, SHADOW_MARK_NONE, SHADOW_MARK_IN_PROGRESS);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(st.uncertain, 1); /* still the old content: fine */
	put_block(s, 4, 1);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	/* Half old, half new (an unaligned write and its complement). */
	ck_assert(shadow_fill(s, 4, 0, 4 * SHADOW_BLOCK, sizeof(half), half));
	ck_assert_int_eq(bc_disk_pwrite(disk, half, sizeof(half), 4 * SHADOW_BLOCK),
			 (ssize_t)sizeof(half));
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(st.uncertain, 1);
	/* A byte that is neither. */
	corrupt(4 * SHADOW_BLOCK + 3000);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 1);
	ck_assert_str_eq(msg, "differs from the content at the switch in block 16384..20480 (neither before nor after the write in flight)");
	shadow_free(s);
}
END_TEST

START_TEST(discard_in_flight_may_leave_zeros)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	struct shadow_switch_stats st;
	uint8_t zeros[SHADOW_BLOCK] = { 0 };
	char msg[256];

	/* The guest read back its old data, but the left image dropped it. */
	shadow_may_hold(s, 6, SHADOW_ZERO, SHADOW_MARK_IN_PROGRESS, SHADOW_MARK_DONE);
	ck_assert_int_eq(bc_disk_pwrite(disk, zeros, SHADOW_BLOCK, 6 * SHADOW_BLOCK),
			 SHADOW_BLOCK);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(st.uncertain, 1);
	/* Not outside the window. */
	shadow_may_hold(s, 7, SHADOW_ZERO, SHADOW_MARK_NONE, SHADOW_MARK_NONE);
	ck_assert_int_eq(bc_disk_pwrite(disk, zeros, SHADOW_BLOCK, 7 * SHADOW_BLOCK),
			 SHADOW_BLOCK);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 1);
	shadow_free(s);
}
END_TEST

START_TEST(too_many_rewrites_across_the_switch_are_counted)
{
	struct shadow *s = shadow_new(DISK_SIZE, SEED, initial_pattern, NULL);
	struct shadow_switch_stats st;
	char msg[256];
	uint32_t g;

	for (g = 1; g <= SHADOW_CANDIDATES_MAX; g++)
		shadow_set(s, 8, g, SHADOW_MARK_IN_PROGRESS, SHADOW_MARK_IN_PROGRESS);
	corrupt(8 * SHADOW_BLOCK);
	ck_assert_int_eq(shadow_verify(s, disk, true, &st, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(st.unverifiable, 1);
	ck_assert_uint_eq(st.uncertain, 0);
	shadow_free(s);
}
END_TEST

static Suite *shadow_suite(void)
{
	Suite *s = suite_create("tool-shadow");
	TCase *tc = tcase_create("content");

	tcase_add_test(tc, content_is_a_function_of_block_and_generation);
	tcase_add_test(tc, memory_is_a_few_bytes_per_block);
	suite_add_tcase(s, tc);
	tc = tcase_create("verify");
	tcase_add_unchecked_fixture(tc, tu_case_setup, tu_case_teardown);
	tcase_add_checked_fixture(tc, disk_setup, disk_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, verify_finds_one_wrong_byte);
	tcase_add_test(tc, ranges_check_byte_by_byte);
	tcase_add_test(tc, generation_zero_by_crc);
	tcase_add_test(tc, switch_keeps_the_content_at_the_switch);
	tcase_add_test(tc, in_flight_blocks_hold_before_or_after_byte_by_byte);
	tcase_add_test(tc, discard_in_flight_may_leave_zeros);
	tcase_add_test(tc, too_many_rewrites_across_the_switch_are_counted);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(shadow_suite());
}
