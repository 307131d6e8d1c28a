/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thread-local error record shared by every layer.
 *
 * Internal code (formats, engine) returns 0 or -errno and records the
 * human detail once, where it is detected, with bc_error_set(); outer
 * layers never overwrite a recorded detail (bc_error_set_default()).
 * Public API calls reset the record on entry and return -1/NULL with it
 * filled (bc_fail*).
 */
#ifndef BC_LIB_COMMON_ERROR_H
#define BC_LIB_COMMON_ERROR_H

/*
 * Error codes, recorded in error_record.code. They are the public
 * ERR_* codes (lib/api-error.c asserts that each value equals its
 * public twin), named here so that no layer below lib/ needs the public
 * header.
 */
enum error_code {
	ERR_OK = 0,
	ERR_INTERNAL = 1,
	ERR_NO_MEMORY = 2,
	ERR_INVALID_ARG = 3,
	ERR_OPERATION_INVALID = 4,
	ERR_BLOCK_COPY_ACTIVE = 5,
	ERR_NO_SUCH_FILE = 6,
	ERR_EXISTS = 7,
	ERR_IO = 8,
	ERR_NO_SPACE = 9,
	ERR_IMAGE_CORRUPT = 10,
	ERR_UNSUPPORTED = 11,
};

#define ERROR_MESSAGE_MAX 1024

/* One thread's error record; laid out as the public bc_error (asserted in lib/). */
struct error_record {
	int code;      /* ERR_* */
	int sys_errno; /* errno behind the failure, 0 if none */
	char message[ERROR_MESSAGE_MAX];
};

/* Clears the calling thread's error record. */
void bc_error_reset(void);

/*
 * Records code, errno and a printf-style message in the calling thread's
 * record, replacing whatever was there.
 */
__attribute__((format(printf, 3, 4))) void bc_error_set(int code, int sys_errno,
							const char *fmt, ...);

/* Records the error only if none is recorded yet. */
__attribute__((format(printf, 3, 4))) void
bc_error_set_default(int code, int sys_errno, const char *fmt, ...);

/* The calling thread's record; never NULL (code 0 when none). */
const struct error_record *bc_error_get(void);

/* Maps an errno to an ERR_* code (ENOENT → NO_SUCH_FILE, ...). */
int bc_errno_to_code(int err);

/* Whether the calling thread has an error recorded. */
int bc_error_is_set(void);

/* bc_error_set() then return -1: the public API's failure return. */
__attribute__((format(printf, 3, 4))) int bc_fail(int code, int sys_errno,
						  const char *fmt, ...);

/*
 * Turns an internal -errno into the public -1, keeping a recorded detail
 * and otherwise recording one from the errno.
 */
int bc_fail_errno(int neg_errno);

#endif /* BC_LIB_COMMON_ERROR_H */
