/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * New image files, published atomically under their name.
 *
 * An image is written in full where no one sees it, made durable, and
 * only then given its name, in one step that never replaces an existing
 * file; then the directory is synced so that the name survives a power
 * loss too. A crash at any instant leaves the name absent or naming a
 * complete image: never an empty file or a qcow2 without its header.
 *
 * Where the image is written: an unnamed file (O_TMPFILE) in the target's
 * directory, linked to its name with linkat(). A crash before the link
 * leaves nothing at all: the kernel frees an unnamed inode when its last
 * descriptor goes. Filesystems without O_TMPFILE (and systems without
 * /proc, through which the unnamed file is linked) get a named temporary,
 * ".NAME.XXXXXX" in the same directory (created O_EXCL), renamed to NAME
 * with renameat2(RENAME_NOREPLACE) (or linked and unlinked where rename
 * cannot refuse to replace); a crash there can leave that hidden name
 * behind, never a half-written NAME.
 *
 * Used by fmt_create() only; tests reach it directly.
 */
#ifndef BC_FORMATS_FMT_NEWFILE_H
#define BC_FORMATS_FMT_NEWFILE_H

#include <stdbool.h>

struct fmt_newfile {
	int fd;		  /* the new file, read-write; -1 when done */
	int dirfd;	  /* directory of the final name; -1 when done */
	char *name;	  /* last component of the final name (owned) */
	char *tmpname;	  /* named temporary (owned); NULL for O_TMPFILE */
	const char *path; /* final name as given, for messages */
};

/*
 * Open a new, empty file (mode 0644 less the umask) that will become
 * @path: unnamed where the filesystem allows, else (or with @named, which
 * tests use to reach that path) under a temporary name. The directory of
 * @path must exist. On success the caller writes the image into nf->fd,
 * then calls fmt_newfile_publish() or fmt_newfile_abandon(). Records
 * "<path>: cannot create: <reason>". Returns 0 or -errno.
 */
int fmt_newfile_open(const char *path, bool named, struct fmt_newfile *nf);

/*
 * fsync the file, give it its name (refused with -EEXIST "<path>: file
 * exists" when the name exists by now, whatever it is: a file, a
 * directory, a dangling symlink), fsync the directory, and release @nf.
 * On any failure the new file is abandoned (no name of ours remains) and
 * the error recorded with the path. Returns 0 or -errno.
 */
int fmt_newfile_publish(struct fmt_newfile *nf);

/* Drop the new file: close it and remove its temporary name. No-op when
 * done already. */
void fmt_newfile_abandon(struct fmt_newfile *nf);

#endif /* BC_FORMATS_FMT_NEWFILE_H */
