/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: fmt_check on the input opened as a qcow2 image for
 * checking (FMT_OPEN_CHECK: damage below the header is counted, not
 * refused at open). The oracles are ASan, UBSan and the formats
 * layer's own asserts.
 */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write_input(data, size);
	struct fmt_check_report rep;
	struct fmt_image *img;

	if (fmt_open(path, "qcow2", FMT_OPEN_NO_BACKING | FMT_OPEN_CHECK,
		     &img) < 0)
		return 0;
	memset(&rep, 0, sizeof(rep));
	(void)fmt_check(img, &rep);
	fmt_close(img);
	return 0;
}
