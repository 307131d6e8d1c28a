/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared by lib/api-*.c: the argument checks every public call starts
 * with, in libvirt's wording. Each records the error and returns true
 * when the argument is bad; the caller returns its failure value.
 */
#ifndef BC_LIB_API_INTERNAL_H
#define BC_LIB_API_INTERNAL_H

#include <stdbool.h>

#include "lib/blockcopy.h"
#include "lib/common/error.h"

/*
 * The layers below lib/ name the public constants themselves (engine/
 * engine.h, lib/common/error.h): each pair is checked where lib/ maps it.
 */
#define API_SAME_VALUE(internal, public)                                     \
	_Static_assert((long long)(internal) == (long long)(public),          \
		       #internal " equals " #public)

static inline bool api_bad_flags(unsigned int flags, unsigned int mask,
				 const char *func)
{
	if (!(flags & ~mask))
		return false;
	bc_error_set(BC_ERR_INVALID_ARG, 0,
		     "unsupported flags (0x%x) in function %s", flags & ~mask,
		     func);
	return true;
}

static inline bool api_null(const void *arg, const char *name,
			    const char *func)
{
	if (arg)
		return false;
	bc_error_set(BC_ERR_INVALID_ARG, 0, "%s in %s must not be NULL", name,
		     func);
	return true;
}

#endif /* BC_LIB_API_INTERNAL_H */
