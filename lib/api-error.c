/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Public wrapper: the thread's error record. The layers below lib/ record
 * errors in lib/common/error.h's struct error_record with ERR_* codes and
 * never see the public header; this file checks that both name the same
 * codes and the same layout, so the record is handed out as it is.
 */
#include "lib/blockcopy.h"

#include <stddef.h>

#include "lib/api-internal.h"
#include "lib/common/error.h"

#define SAME_CODE(name) API_SAME_VALUE(ERR_##name, BC_ERR_##name)
SAME_CODE(OK);
SAME_CODE(INTERNAL);
SAME_CODE(NO_MEMORY);
SAME_CODE(INVALID_ARG);
SAME_CODE(OPERATION_INVALID);
SAME_CODE(BLOCK_COPY_ACTIVE);
SAME_CODE(NO_SUCH_FILE);
SAME_CODE(EXISTS);
SAME_CODE(IO);
SAME_CODE(NO_SPACE);
SAME_CODE(IMAGE_CORRUPT);
SAME_CODE(UNSUPPORTED);

API_SAME_VALUE(ERROR_MESSAGE_MAX, BC_ERROR_MESSAGE_MAX);
_Static_assert(sizeof(struct error_record) == sizeof(bc_error), "record size");
_Static_assert(offsetof(struct error_record, code) == offsetof(bc_error, code),
	       "code offset");
_Static_assert(offsetof(struct error_record, sys_errno) ==
		       offsetof(bc_error, sys_errno),
	       "sys_errno offset");
_Static_assert(offsetof(struct error_record, message) ==
		       offsetof(bc_error, message),
	       "message offset");

const bc_error *bc_last_error(void)
{
	return (const bc_error *)(const void *)bc_error_get();
}
