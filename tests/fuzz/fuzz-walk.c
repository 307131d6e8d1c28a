/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the L1/L2/refcount walk. The input is opened as a
 * qcow2 image (this layer only), then block status over the whole disk
 * and reads of what it maps (fuzz-util.h bounds both).
 */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write_input(data, size);
	struct fmt_image *img;
	struct fmt_info info;

	if (fmt_open(path, "qcow2", FMT_OPEN_NO_BACKING, &img) < 0)
		return 0;
	(void)fmt_get_info(img, &info);
	fuzz_map_and_read(img, false, 4096, 1u << 20);
	fmt_close(img);
	return 0;
}
