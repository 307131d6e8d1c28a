/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared by the libFuzzer harnesses: each input becomes a file that the
 * formats layer opens by path, in a per-process scratch directory that
 * is removed at exit. Only the harnesses include this.
 */
#ifndef BC_TESTS_FUZZ_FUZZ_UTIL_H
#define BC_TESTS_FUZZ_FUZZ_UTIL_H

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/fmt.h"

static char fuzz_dir[PATH_MAX];

static inline void fuzz_cleanup(void)
{
	char p[PATH_MAX + 32];

	snprintf(p, sizeof(p), "%s/input.img", fuzz_dir);
	(void)unlink(p);
	snprintf(p, sizeof(p), "%s/backing.qcow2", fuzz_dir);
	(void)unlink(p);
	(void)rmdir(fuzz_dir);
}

/* The scratch directory, made on the first call. */
static inline const char *fuzz_scratch(void)
{
	const char *tmp = getenv("TMPDIR");

	if (fuzz_dir[0])
		return fuzz_dir;
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/bc-fuzz-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fuzz_dir))
		abort();
	atexit(fuzz_cleanup);
	return fuzz_dir;
}

/* "<scratch>/<name>" in a static buffer. */
static inline const char *fuzz_path(const char *name)
{
	static char p[PATH_MAX + 64];

	snprintf(p, sizeof(p), "%s/%s", fuzz_scratch(), name);
	return p;
}

/* Write @data as the whole content of "<scratch>/input.img"; its path. */
static inline const char *fuzz_write_input(const uint8_t *data, size_t size)
{
	const char *path = fuzz_path("input.img");
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	size_t done = 0;

	if (fd < 0)
		abort();
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	close(fd);
	return path;
}

/*
 * Walk block status over the whole virtual disk and read what it maps:
 * every extent's first bytes (at most @read_cap bytes in all, 64 KiB per
 * extent) and at most @max_extents extents, so that a fuzzed 2^60-byte
 * disk costs what a small one does. @chain: across the backing chain.
 */
static inline void fuzz_map_and_read(struct fmt_image *img, bool chain,
			      unsigned int max_extents, uint64_t read_cap)
{
	static uint8_t buf[65536];
	uint64_t off = 0, read_total = 0;
	unsigned int n;

	for (n = 0; n < max_extents && off < img->size; n++) {
		struct fmt_extent ext;
		uint64_t len;
		int ret;

		ret = chain ? fmt_chain_block_status(img, off, img->size - off, &ext)
			    : fmt_block_status(img, off, img->size - off, &ext);
		if (ret < 0)
			break;
		if (ext.len == 0 || ext.len > img->size - off)
			abort(); /* the contract: len > 0, inside the disk */
		len = ext.len < sizeof(buf) ? ext.len : sizeof(buf);
		if (read_total + len <= read_cap) {
			(void)fmt_pread(img, buf, (size_t)len, off);
			read_total += len;
		}
		off += ext.len;
	}
	/* The last bytes of the disk too: reads near the end of the L1. */
	if (img->size >= 4096)
		(void)fmt_pread(img, buf, 4096, img->size - 4096);
}

#endif /* BC_TESTS_FUZZ_FUZZ_UTIL_H */
