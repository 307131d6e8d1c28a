/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Scratch directories of the Check tests, made and removed one way: under
 * $BC_TEST_TMPDIR (meson points it into the build tree; made when
 * missing), or /tmp when it is unset, empty or not writable.
 */
#ifndef BC_TESTS_SCRATCH_H
#define BC_TESTS_SCRATCH_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* The tests' scratch base (no Check call: usable outside a test too). */
static inline const char *scratch_parent(void)
{
	const char *parent = getenv("BC_TEST_TMPDIR");

	if (parent && *parent)
		(void)mkdir(parent, 0755);
	if (!parent || !*parent || access(parent, W_OK) != 0)
		parent = "/tmp";
	return parent;
}

/*
 * A new directory "<parent>/<prefix>XXXXXX" into @out (@size bytes);
 * @parent NULL: the tests' scratch base. Asserts that it was made.
 */
static inline void scratch_dir(char *out, size_t size, const char *parent,
			       const char *prefix)
{
	if (!parent)
		parent = scratch_parent();
	ck_assert_int_lt(snprintf(out, size, "%s/%sXXXXXX", parent, prefix),
			 (int)size);
	ck_assert_ptr_nonnull(mkdtemp(out));
}

static inline int scratch_remove_one(const char *path, const struct stat *st,
				     int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes @dir and everything below it, following no symbolic link. */
static inline void scratch_remove(const char *dir)
{
	if (dir[0])
		(void)nftw(dir, scratch_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* BC_TESTS_SCRATCH_H */
