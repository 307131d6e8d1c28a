/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the qcow2 header and header-extension parser
 * (qcow2_parse_header_ext) on the input as cluster 0 of a file of the
 * input's size, and of a file much longer than the input.
 */
#include <stdint.h>
#include <stdlib.h>

#include "formats/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_header hdr;
	struct qcow2_exts exts;

	if (qcow2_parse_header_ext("fuzz", data, size, size, &hdr, &exts) == 0)
		qcow2_exts_free(&exts);
	/* Tables may lie beyond the cluster the parser sees. */
	if (qcow2_parse_header_ext("fuzz", data, size, 1ull << 40, &hdr,
				   &exts) == 0)
		qcow2_exts_free(&exts);
	return 0;
}
