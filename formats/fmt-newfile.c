/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * New image files published atomically (see fmt-newfile.h for the
 * contract and the choice of O_TMPFILE with a named fallback).
 *
 * Why linkat() and renameat2(RENAME_NOREPLACE), never rename(): a plain
 * rename replaces whatever holds the name by then, and a caller that did
 * not ask for it must never lose a file because two creations raced.
 */
#include "fmt-newfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/common/error.h"

/* Attempts at a free temporary name before giving up (-EEXIST). */
#define NAMED_TRIES 64

static void record(const char *path, const char *what, int err)
{
	char eb[128];

	bc_error_set(bc_errno_to_code(err), err, "%s: %s: %s", path, what,
		     strerror_r(err, eb, sizeof(eb)));
}

/* Split @path into its directory (opened) and last component (copied). */
static int open_dir(const char *path, struct fmt_newfile *nf)
{
	const char *slash = strrchr(path, '/');
	char *dir;

	if (!slash) {
		dir = strdup(".");
		nf->name = strdup(path);
	} else {
		/* "/x" lives in "/", "a/b/x" in "a/b". */
		dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
		nf->name = strdup(slash + 1);
	}
	if (!dir || !nf->name) {
		free(dir);
		return -ENOMEM;
	}
	if (!nf->name[0]) {
		free(dir);
		return -EISDIR;
	}
	nf->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	return nf->dirfd < 0 ? -errno : 0;
}

/* ".NAME.XXXXXX" with six random characters, created O_EXCL. */
static int open_named(struct fmt_newfile *nf)
{
	static const char set[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	size_t len = strlen(nf->name) + 9;
	int i, k, err = EEXIST;

	nf->tmpname = malloc(len);
	if (!nf->tmpname)
		return -ENOMEM;
	for (i = 0; i < NAMED_TRIES; i++) {
		unsigned char r[6];

		/* Up to 256 bytes never come back short. */
		if (getrandom(r, sizeof(r), 0) < 0) {
			err = errno;
			break;
		}
		(void)snprintf(nf->tmpname, len, ".%s.", nf->name);
		for (k = 0; k < 6; k++)
			nf->tmpname[len - 7 + k] =
				set[r[k] % (sizeof(set) - 1)];
		nf->tmpname[len - 1] = '\0';
		nf->fd = openat(nf->dirfd, nf->tmpname,
				O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (nf->fd >= 0)
			return 0;
		err = errno;
		if (err != EEXIST)
			break;
	}
	/* Not ours: abandoning must not unlink a file of that name. */
	free(nf->tmpname);
	nf->tmpname = NULL;
	return -err;
}

int fmt_newfile_open(const char *path, bool named, struct fmt_newfile *nf)
{
	int ret;

	*nf = (struct fmt_newfile){.fd = -1, .dirfd = -1, .path = path};
	ret = open_dir(path, nf);
	/* An unnamed file is linked through /proc (link_unnamed): without
	 * /proc it could not be named at all. */
	if (!named && access("/proc/self/fd", F_OK) != 0)
		named = true;
	if (ret == 0 && !named) {
		nf->fd = openat(nf->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC,
				0644);
		/* EOPNOTSUPP: not on this filesystem; EISDIR: not in this
		 * kernel (it sees O_DIRECTORY). Anything else is an error. */
		if (nf->fd < 0 && errno != EOPNOTSUPP && errno != EISDIR)
			ret = -errno;
	}
	if (ret == 0 && nf->fd < 0)
		ret = open_named(nf);
	if (ret < 0) {
		fmt_newfile_abandon(nf);
		record(path, "cannot create", -ret);
	}
	return ret;
}

/*
 * Give the unnamed file its name; never replaces (linkat: -EEXIST).
 * Through /proc/self/fd, as open(2) documents for O_TMPFILE:
 * linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH.
 */
static int link_unnamed(struct fmt_newfile *nf)
{
	char proc[64];

	(void)snprintf(proc, sizeof(proc), "/proc/self/fd/%d", nf->fd);
	if (linkat(AT_FDCWD, proc, nf->dirfd, nf->name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	return 0;
}

/* Move the named temporary to its name; never replaces. */
static int rename_named(struct fmt_newfile *nf)
{
	int ret;

	if (renameat2(nf->dirfd, nf->tmpname, nf->dirfd, nf->name,
		      RENAME_NOREPLACE) == 0)
		goto out_forget_tmp;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* The filesystem cannot refuse in a rename: link, then unlink. */
	if (linkat(nf->dirfd, nf->tmpname, nf->dirfd, nf->name, 0) < 0)
		return -errno;
	ret = unlinkat(nf->dirfd, nf->tmpname, 0) < 0 ? -errno : 0;
	if (ret < 0) {
		/* Published, with a second name left: undo the publication. */
		(void)unlinkat(nf->dirfd, nf->name, 0);
		return ret;
	}
out_forget_tmp:
	free(nf->tmpname);
	nf->tmpname = NULL;
	return 0;
}

/* Remove the published name if it is still our file (after a failure). */
static void unpublish(struct fmt_newfile *nf)
{
	struct stat a, b;

	if (fstat(nf->fd, &a) == 0 &&
	    fstatat(nf->dirfd, nf->name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		(void)unlinkat(nf->dirfd, nf->name, 0);
}

int fmt_newfile_publish(struct fmt_newfile *nf)
{
	int ret;

	if (fsync(nf->fd) < 0) {
		ret = -errno;
		record(nf->path, "sync", -ret);
		goto err_abandon;
	}
	ret = nf->tmpname ? rename_named(nf) : link_unnamed(nf);
	if (ret == -EEXIST) {
		bc_error_set(ERR_EXISTS, EEXIST, "%s: file exists",
			     nf->path);
		goto err_abandon;
	}
	if (ret < 0) {
		record(nf->path, "cannot create", -ret);
		goto err_abandon;
	}
	/* The name is durable only once its directory is. */
	if (fsync(nf->dirfd) < 0) {
		ret = -errno;
		record(nf->path, "sync of the directory", -ret);
		unpublish(nf);
		goto err_abandon;
	}
	/* Data and name are durable: closing cannot lose anything now, and
	 * with no temporary name left, abandoning only releases @nf. */
	fmt_newfile_abandon(nf);
	return 0;

err_abandon:
	fmt_newfile_abandon(nf);
	return ret;
}

void fmt_newfile_abandon(struct fmt_newfile *nf)
{
	if (nf->tmpname && nf->dirfd >= 0)
		(void)unlinkat(nf->dirfd, nf->tmpname, 0);
	if (nf->fd >= 0)
		(void)close(nf->fd);
	if (nf->dirfd >= 0)
		(void)close(nf->dirfd);
	free(nf->tmpname);
	free(nf->name);
	nf->fd = nf->dirfd = -1;
	nf->tmpname = nf->name = NULL;
}
