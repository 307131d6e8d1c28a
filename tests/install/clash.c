/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program with functions named like blockcopy's internal ones: it must
 * link against the installed library, shared or static, without a
 * "multiple definition" error, because the library defines only bc_*.
 */
#include <blockcopy.h>

#include <stdio.h>

int job_ref(void);
int disk_open(void);
int engine_new(void);
int fmt_open(void);

int job_ref(void) { return 1; }
int disk_open(void) { return 2; }
int engine_new(void) { return 3; }
int fmt_open(void) { return 4; }

int main(void)
{
	bc_engine *eng = bc_engine_new(0);

	if (!eng) {
		fprintf(stderr, "clash: %s\n", bc_last_error()->message);
		return 1;
	}
	bc_engine_free(eng);
	if (job_ref() + disk_open() + engine_new() + fmt_open() != 10)
		return 1;
	printf("clash: ok\n");
	return 0;
}
