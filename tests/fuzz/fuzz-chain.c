/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: chain opening with a fuzzed overlay over a fixed
 * small backing. The scratch directory holds "backing.qcow2" (qcow2,
 * 1 MiB, 4 KiB clusters, data at two places, made once with the formats
 * layer itself); the input is "input.img" beside it, opened with its
 * format probed, its chain opened, then block status across the chain
 * and reads (fuzz-util.h bounds both).
 */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void make_backing(void)
{
	struct fmt_create_opts co = {
		.format = "qcow2", .size = 1u << 20, .cluster_size = 4096,
	};
	static uint8_t buf[8192];
	struct fmt_image *img;

	memset(buf, 0x5a, sizeof(buf));
	if (fmt_create(fuzz_path("backing.qcow2"), &co) < 0 ||
	    fmt_open(fuzz_path("backing.qcow2"), "qcow2", FMT_OPEN_RDWR, &img) < 0)
		abort();
	if (fmt_pwrite(img, buf, sizeof(buf), 0) < 0 ||
	    fmt_pwrite(img, buf, 4096, (1u << 20) - 4096) < 0 ||
	    fmt_flush(img) < 0)
		abort();
	fmt_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int have_backing;
	struct fmt_image *img;
	const char *path;

	if (!have_backing) {
		make_backing();
		have_backing = 1;
	}
	path = fuzz_write_input(data, size);
	if (fmt_open(path, NULL, 0, &img) < 0)
		return 0;
	fuzz_map_and_read(img, true, 4096, 1u << 20);
	fmt_close(img);
	return 0;
}
