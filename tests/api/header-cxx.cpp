/* SPDX-License-Identifier: LGPL-2.1-or-later */
// lib/blockcopy.h compiles as C++ and links against the library
// (extern "C" linkage).
#include "blockcopy.h"

int main()
{
	const bc_error *e = bc_last_error();
	return e && e->code == BC_ERR_OK ? 0 : 1;
}
