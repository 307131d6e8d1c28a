/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/blockcopy.h compiles alone, first, as strict ISO C (-std=c99
 * -pedantic -Werror): it carries every include it needs.
 */
#include "blockcopy.h"

int main(void)
{
	bc_block_job_info info = { 0 };
	bc_block_job_stats stats = { 0 };
	bc_block_copy_params params = { 0 };

	(void)info;
	(void)stats;
	(void)params;
	return BC_BLOCK_REBASE_COPY == (1u << 3) ? 0 : 1;
}
