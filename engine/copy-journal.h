/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy journal (issue 12, resume): a file next to a COPY job's
 * destination, "DST.bcjournal", that says which granules may still differ
 * between source and destination, so that a job killed with its process
 * (or FAILED, or canceled before MIRRORING) can be resumed by a new job
 * with BC_BLOCK_COPY_RESUME that copies only those granules.
 *
 * On disk (docs/design.md §12): a header of header_size
 * bytes (a multiple of 4096; little-endian fields, CRC-32 of the header)
 * naming the source and destination (realpath, st_dev, st_ino), the
 * virtual size, the granularity and the job's flags; then one bit per
 * granule, bit i in byte i / 8 at (1 << (i % 8)): 1 = still to copy. The
 * file is mapped MAP_SHARED: a bit set in the map is in the page cache at
 * once and survives the death of the process (not a host power loss: the
 * msync points are a guest flush and each checkpoint).
 *
 * The invariant: a granule whose bit is clear holds on the destination,
 * durably, what the source holds. So:
 *  - a guest write sets its granules' bits before the source is written
 *    (copy_journal_write_begin), not only before it is acknowledged: a
 *    write that reached the source but not the journal would be lost to a
 *    resumed copy even if it was never acknowledged;
 *  - bits are cleared only by a checkpoint, for granules that were clean
 *    in the job's dirty and in-flight bitmaps when the checkpoint looked,
 *    not written since it began, and only after the destination was
 *    flushed.
 *
 * Checkpoint protocol (the job thread; guest threads only ever set bits):
 *   begin     under the journal lock: forget "recent" (granules written
 *             since), switch the write epoch.
 *   ready     wait until every guest write that began in the old epoch
 *             has ended (copy_journal_write_end, after the job marked it
 *             dirty). Not a blocking wait: the job polls, so a guest write
 *             waiting for one of the job's copies cannot deadlock it.
 *   snapshot  with job->lock held: candidates = bits & ~recent & ~dirty &
 *             ~in-flight.
 *   (flush the destination)
 *   commit    under the journal lock: clear candidates & ~recent; msync.
 * A guest write that began before "begin" has set its bits and marked the
 * job's dirty bitmap before "snapshot": the granule is dirty, in flight,
 * or was copied after the write landed. One that began after "begin" is
 * in "recent" and keeps its bits.
 *
 * Locking: j->lock is a leaf (taken under job->lock, never the reverse).
 * References: the disk and the job each hold one; the last unref unmaps
 * and closes, leaving the file.
 */
#ifndef BC_ENGINE_COPY_JOURNAL_H
#define BC_ENGINE_COPY_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

struct copy_journal;
struct dirty_bitmap;

/* File name suffix: the journal of "DST" is "DST.bcjournal". */
#define COPY_JOURNAL_SUFFIX ".bcjournal"

/* Job flags recorded in the journal; a resumed job must have the same. */
#define COPY_JOURNAL_SHALLOW  (1u << 0)
#define COPY_JOURNAL_DEST_RAW (1u << 1) /* destination raw (COPY_RAW) */

/* Who the journal is for. Paths are realpaths. */
struct copy_journal_ident {
	const char *src_path;
	uint64_t src_dev, src_ino;
	const char *dst_path;
	uint64_t dst_dev, dst_ino;
	uint64_t size;	      /* virtual size, bytes */
	uint32_t granularity; /* bytes, a power of two */
	unsigned int flags;   /* COPY_JOURNAL_* */
};

/*
 * Fill @id (paths malloc'd into *@src_real and *@dst_real, the caller
 * frees them) from the source top @src_file (open descriptor @src_fd)
 * and the destination file @dest, which must exist. Returns 0 or -errno,
 * recorded.
 */
int copy_journal_ident_of(const char *src_file, int src_fd, const char *dest,
			  struct copy_journal_ident *id, char **src_real,
			  char **dst_real);

/* "@dest.bcjournal", malloc'd; NULL on ENOMEM. */
char *copy_journal_path(const char *dest);

/*
 * Create the journal at @path for @id, all bits clear, under a temporary
 * name ("@path.tmp"): nothing that a resume would find exists until
 * copy_journal_publish(). Returns 0 or -errno, recorded with the path.
 */
int copy_journal_create(const char *path, const struct copy_journal_ident *id,
			struct copy_journal **out);

/*
 * Make the created journal durable under its real name: msync, fsync,
 * rename over @path, fsync the directory. Returns 0 or -errno, recorded.
 */
int copy_journal_publish(struct copy_journal *j);

/*
 * Open and map the journal at @path, checking its format (magic, version,
 * header checksum, sizes against the file). Errors name the journal:
 * -ENOENT (BC_ERR_NO_SUCH_FILE "no journal 'P' to resume from"), -EINVAL
 * (BC_ERR_INVALID_ARG "journal 'P': <what is wrong>"), or -errno.
 */
int copy_journal_open(const char *path, struct copy_journal **out);

/*
 * Check that @j was written for @id: source and destination (path,
 * device, inode), virtual size and the shallow flag (the granularity and
 * the raw flag are the journal's to give). Returns 0 or -EINVAL with the
 * mismatch recorded as "journal 'P' <field> ...".
 */
int copy_journal_check(const struct copy_journal *j,
		       const struct copy_journal_ident *id);

/* The granularity (bytes) and COPY_JOURNAL_* flags recorded in @j. */
uint32_t copy_journal_granularity(const struct copy_journal *j);
unsigned int copy_journal_flags(const struct copy_journal *j);
/* Whether @j is the file at @path (same device and inode). */
bool copy_journal_is_file(const struct copy_journal *j, const char *path);

void copy_journal_ref(struct copy_journal *j);
/* Last reference: msync, unmap, close. The file stays. NULL is a no-op. */
void copy_journal_unref(struct copy_journal *j);

/*
 * The copy is complete: unlink the journal (and a leftover temporary),
 * so that nothing is resumed from it. Guest writes still set bits in
 * the mapping; they go nowhere. Returns 0 or -errno (not recorded).
 */
int copy_journal_remove(struct copy_journal *j);

/*
 * A guest write of [@off, @off + @len) is about to change the source:
 * set its bits. Returns a token for copy_journal_write_end(), which the
 * caller calls once the write's end is recorded in the job's dirty bitmap.
 */
unsigned int copy_journal_write_begin(struct copy_journal *j, uint64_t off,
				      uint64_t len);
void copy_journal_write_end(struct copy_journal *j, unsigned int token);

/* Set the bits of [@off, @off + @len) (not a guest write: no epoch). */
void copy_journal_mark(struct copy_journal *j, uint64_t off, uint64_t len);

/* Set every bit whose granule @d marks dirty (the caller holds @d's lock). */
void copy_journal_mark_dirty(struct copy_journal *j,
			     const struct dirty_bitmap *d);
/* Mark dirty in @d every granule whose bit is set (same lock). */
void copy_journal_load(struct copy_journal *j, struct dirty_bitmap *d);

/* msync the bits (a guest flush): 0 or -errno, recorded. */
int copy_journal_sync(struct copy_journal *j);

/* Checkpoint steps, in this order (header comment). */
void copy_journal_checkpoint_begin(struct copy_journal *j);
bool copy_journal_checkpoint_ready(struct copy_journal *j);
void copy_journal_checkpoint_snapshot(struct copy_journal *j,
				      const struct dirty_bitmap *dirty,
				      const struct dirty_bitmap *inflight);
/* Returns 0 or -errno (msync), recorded. */
int copy_journal_checkpoint_commit(struct copy_journal *j);

#endif /* BC_ENGINE_COPY_JOURNAL_H */
