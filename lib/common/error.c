/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thread-local error record. See error.h for the discipline.
 */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local struct error_record tls_error;

void bc_error_reset(void)
{
	tls_error.code = 0;
	tls_error.sys_errno = 0;
	tls_error.message[0] = '\0';
}

__attribute__((format(printf, 3, 0))) static void vset(int code, int sys_errno,
						       const char *fmt, va_list ap)
{
	tls_error.code = code;
	tls_error.sys_errno = sys_errno;
	(void)vsnprintf(tls_error.message, sizeof(tls_error.message), fmt, ap);
}

void bc_error_set(int code, int sys_errno, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(code, sys_errno, fmt, ap);
	va_end(ap);
}

void bc_error_set_default(int code, int sys_errno, const char *fmt, ...)
{
	va_list ap;

	if (tls_error.code)
		return;
	va_start(ap, fmt);
	vset(code, sys_errno, fmt, ap);
	va_end(ap);
}

int bc_error_is_set(void)
{
	return tls_error.code != 0;
}

int bc_errno_to_code(int err)
{
	switch (err) {
	case 0:
		return ERR_OK;
	case ENOMEM:
		return ERR_NO_MEMORY;
	case ENOENT:
		return ERR_NO_SUCH_FILE;
	case EEXIST:
		return ERR_EXISTS;
	case ENOSPC:
	case EDQUOT:
		return ERR_NO_SPACE;
	case EINVAL:
		return ERR_INVALID_ARG;
	case ENOTSUP:
		return ERR_UNSUPPORTED;
	case EUCLEAN:
	case ELOOP:
		return ERR_IMAGE_CORRUPT;
	case EBUSY:
		return ERR_BLOCK_COPY_ACTIVE;
	case EPERM:
	case EROFS:
	case EALREADY:
		return ERR_OPERATION_INVALID;
	default:
		return ERR_IO;
	}
}

const struct error_record *bc_error_get(void)
{
	return &tls_error;
}

int bc_fail(int code, int sys_errno, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(code, sys_errno, fmt, ap);
	va_end(ap);
	return -1;
}

int bc_fail_errno(int neg_errno)
{
	char buf[256];
	int err = -neg_errno;

	if (!tls_error.code) {
		const char *s = strerror_r(err, buf, sizeof(buf));

		bc_error_set(bc_errno_to_code(err), err, "%s", s);
	}
	return -1;
}
