/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the atomic publication of new images
 * (formats/fmt-newfile.c) and for fmt_create() built on it: the name
 * appears only when the image is complete, an existing file is never
 * replaced, the temporary file is gone after every failure, a process
 * killed before publishing leaves nothing, and the exact messages. Both
 * the unnamed (O_TMPFILE) path and the named fallback are run.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fmt-testutil.h"
#include "formats/fmt-newfile.h"
#include "formats/fmt.h"
#include "lib/common/error.h"
#include "tests/check-main.h"

/* Every entry of the CWD but . and .., sorted, space-separated. */
static char *listing(void)
{
	return tu_out("ls -A | tr '\\n' ' '");
}

static void assert_listing(const char *want)
{
	char *got = listing();

	ck_assert_str_eq(got, want);
	free(got);
}

static void write_all(int fd, const char *s)
{
	ck_assert_int_eq(pwrite(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

static void assert_content(const char *path, const char *want)
{
	char buf[64] = {0};
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), (ssize_t)strlen(want));
	ck_assert_str_eq(buf, want);
	ck_assert_int_eq(close(fd), 0);
}

/* _i: 0 = unnamed (O_TMPFILE), 1 = named temporary. */
START_TEST(name_appears_only_when_published)
{
	struct fmt_newfile nf;
	struct stat st;
	mode_t mask = umask(022);

	tu_sh("mkdir d");
	ck_assert_int_eq(fmt_newfile_open("d/x.img", _i, &nf), 0);
	ck_assert_int_ge(nf.fd, 0);
	write_all(nf.fd, "image");
	ck_assert_int_eq(chdir("d"), 0);
	if (_i) {
		/* ".x.img." and six characters from [A-Za-z0-9]. */
		ck_assert_ptr_nonnull(nf.tmpname);
		ck_assert_uint_eq(strlen(nf.tmpname), strlen(".x.img.") + 6);
		ck_assert_int_eq(strncmp(nf.tmpname, ".x.img.", 7), 0);
		ck_assert_uint_eq(
			strspn(nf.tmpname + 7,
			       "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			       "abcdefghijklmnopqrstuvwxyz0123456789"),
			6);
		assert_content(nf.tmpname, "image");
	} else {
		/* This filesystem (ext4, tmpfs, xfs, btrfs) has O_TMPFILE. */
		ck_assert_ptr_null(nf.tmpname);
		assert_listing("");
	}
	ck_assert_int_eq(access("x.img", F_OK), -1);
	ck_assert_int_eq(fmt_newfile_publish(&nf), 0);
	ck_assert_int_eq(nf.fd, -1);
	ck_assert_int_eq(nf.dirfd, -1);
	ck_assert_ptr_null(nf.tmpname);
	ck_assert_ptr_null(nf.name);
	assert_listing("x.img ");
	assert_content("x.img", "image");
	ck_assert_int_eq(stat("x.img", &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0644);
	ck_assert_uint_eq(st.st_nlink, 1);
	umask(mask);
}
END_TEST

/* The name taken between open and publish: whatever holds it stays. */
START_TEST(existing_name_is_never_replaced)
{
	static const char *const squatters[] = {
		"echo precious > x.img", "ln -s nowhere x.img", "mkdir x.img",
		": > x.img", /* even an empty file */
	};
	struct fmt_newfile nf;
	size_t k;

	for (k = 0; k < sizeof(squatters) / sizeof(squatters[0]); k++) {
		bc_error_reset();
		ck_assert_int_eq(fmt_newfile_open("x.img", _i, &nf), 0);
		write_all(nf.fd, "new image");
		tu_sh("%s", squatters[k]);
		ck_assert_int_eq(fmt_newfile_publish(&nf), -EEXIST);
		ck_assert_int_eq(bc_error_get()->code, ERR_EXISTS);
		ck_assert_int_eq(bc_error_get()->sys_errno, EEXIST);
		ck_assert_str_eq(bc_error_get()->message, "x.img: file exists");
		ck_assert_int_eq(nf.fd, -1);
		/* Nothing of ours left: no temporary, no second name. */
		assert_listing("x.img ");
		if (k == 0)
			assert_content("x.img", "precious\n");
		tu_sh("rm -rf x.img");
	}
	ck_assert_int_eq(access("nowhere", F_OK), -1);
}
END_TEST

START_TEST(abandon_removes_the_temporary)
{
	struct fmt_newfile nf;

	ck_assert_int_eq(fmt_newfile_open("x.img", _i, &nf), 0);
	write_all(nf.fd, "half an image");
	fmt_newfile_abandon(&nf);
	assert_listing("");
	/* A second abandon is a no-op. */
	fmt_newfile_abandon(&nf);
	ck_assert_int_eq(nf.fd, -1);
}
END_TEST

/* SIGKILL before publishing: unnamed leaves nothing; named leaves only
 * its hidden temporary, never the name. */
START_TEST(kill_before_publish_leaves_no_name)
{
	struct fmt_newfile nf;
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (fmt_newfile_open("x.img", _i, &nf) == 0) {
			write_all(nf.fd, "half an image");
			(void)raise(SIGKILL);
		}
		_exit(1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ck_assert_int_eq(access("x.img", F_OK), -1);
	if (_i) {
		char *l = listing();

		ck_assert_int_eq(strncmp(l, ".x.img.", 7), 0);
		ck_assert_uint_eq(strlen(l), strlen(".x.img.XXXXXX "));
		free(l);
	} else {
		assert_listing("");
	}
}
END_TEST

START_TEST(open_errors_name_the_path)
{
	struct fmt_newfile nf;

	ck_assert_int_eq(fmt_newfile_open("nodir/x.img", _i, &nf), -ENOENT);
	ck_assert_int_eq(bc_error_get()->code, ERR_NO_SUCH_FILE);
	ck_assert_str_eq(
		bc_error_get()->message,
		"nodir/x.img: cannot create: No such file or directory");
	ck_assert_int_eq(nf.fd, -1);
	ck_assert_int_eq(nf.dirfd, -1);
	ck_assert_int_eq(fmt_newfile_open("x.img/", _i, &nf), -EISDIR);
	ck_assert_str_eq(bc_error_get()->message,
			 "x.img/: cannot create: Is a directory");
	tu_sh("touch f");
	ck_assert_int_eq(fmt_newfile_open("f/x.img", _i, &nf), -ENOTDIR);
	ck_assert_str_eq(bc_error_get()->message,
			 "f/x.img: cannot create: Not a directory");
	assert_listing("f ");
}
END_TEST

/* fmt_create: a complete image or nothing, also when writing it fails. */
START_TEST(create_failure_leaves_nothing)
{
	struct fmt_create_opts q = {.format = "qcow2",
				    .size = 8u << 20,
				    .prealloc = FMT_PREALLOC_FULL};
	struct fmt_create_opts r = {.format = "raw",
				    .size = 8u << 20,
				    .prealloc = FMT_PREALLOC_FULL};
	struct rlimit lim, old;

	/* Writes past 1 MiB fail with EFBIG (SIGXFSZ ignored). */
	ck_assert_ptr_ne(signal(SIGXFSZ, SIG_IGN), SIG_ERR);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1u << 20;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	ck_assert_int_eq(fmt_create("q.qcow2", &q), -EFBIG);
	ck_assert_str_eq(bc_error_get()->message,
			 "q.qcow2: cannot write the new image");
	ck_assert_int_eq(fmt_create("r.raw", &r), -EFBIG);
	ck_assert_str_eq(bc_error_get()->message,
			 "r.raw: truncate: File too large");
	/* A write to the unnamed file names the image, not "/.../#123
	 * (deleted)" as /proc would. */
	{
		struct fmt_newfile nf;

		ck_assert_int_eq(fmt_newfile_open("w.raw", false, &nf), 0);
		ck_assert_int_eq(
			fmt_pwrite_file_as(nf.fd, "w.raw", "x", 1, 2u << 20),
			-EFBIG);
		ck_assert_str_eq(
			bc_error_get()->message,
			"w.raw: write failed at offset 2097152: File too large");
		fmt_newfile_abandon(&nf);
	}
	/* Bad options are found after the file is opened: still nothing. */
	q.prealloc = FMT_PREALLOC_OFF;
	q.cluster_size = 3000;
	ck_assert_int_eq(fmt_create("c.qcow2", &q), -EINVAL);
	assert_listing("");
	q.cluster_size = 0;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(fmt_create("ok.qcow2", &q), 0);
	assert_listing("ok.qcow2 ");
	free(tu_out("qemu-img check ok.qcow2 >/dev/null"));
}
END_TEST

/*
 * Whether the scratch filesystem gives unnamed files: O_TMPFILE, and
 * /proc to name them through (fmt_newfile_open falls back to a named
 * temporary otherwise, which the unnamed cases would take for a bug).
 * Returns 1, or 0 with the reason in @why; exits the program (TAP "Bail
 * out!") when the probe itself fails any other way. Runs before Check
 * does: no ck_assert here.
 */
static int has_unnamed_files(char *why, size_t n)
{
	char dir[4096];
	int fd, err;

	if (access("/proc/self/fd", F_OK) != 0) {
		snprintf(why, n, "no /proc/self/fd to name an unnamed file");
		return 0;
	}
	snprintf(dir, sizeof(dir), "%s/probe-XXXXXX", scratch_parent());
	if (!mkdtemp(dir)) {
		printf("Bail out! %s: %s\n", dir, strerror(errno));
		exit(EXIT_FAILURE);
	}
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	err = errno;
	if (fd >= 0)
		(void)close(fd);
	(void)rmdir(dir);
	if (fd >= 0)
		return 1;
	/* What fmt_newfile_open() takes for "not on this filesystem". */
	if (err == EOPNOTSUPP || err == EISDIR) {
		snprintf(why, n, "%s: no O_TMPFILE (%s)", scratch_parent(),
			 strerror(err));
		return 0;
	}
	printf("Bail out! %s: open(O_TMPFILE) failed: %s\n", dir,
	       strerror(err));
	exit(EXIT_FAILURE);
}

static Suite *newfile_suite(void)
{
	Suite *s = suite_create("fmt-newfile");
	TCase *tc = tcase_create("publish");
	char why[1024]; /* a TAP comment: a long path may be cut */
	int first = 0;	/* the first path run: 0 unnamed, 1 named */

	if (!has_unnamed_files(why, sizeof(why))) {
		printf("# %s: the unnamed cases are skipped\n", why);
		first = 1;
	}
	tu_add_fixtures(tc);
	tcase_add_loop_test(tc, name_appears_only_when_published, first, 2);
	tcase_add_loop_test(tc, existing_name_is_never_replaced, first, 2);
	tcase_add_loop_test(tc, abandon_removes_the_temporary, first, 2);
	tcase_add_loop_test(tc, kill_before_publish_leaves_no_name, first, 2);
	tcase_add_loop_test(tc, open_errors_name_the_path, first, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("create");
	tu_add_fixtures(tc);
	tcase_add_test(tc, create_failure_leaves_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return bc_check_run(newfile_suite());
}
