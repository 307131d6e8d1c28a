/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy journal: format, creation, identity checks and the checkpoint
 * protocol (design and invariants: copy-journal.h).
 *
 * Cost: a guest write takes j->lock once at its start and once at its
 * end, and sets O(len / granularity) bits. A checkpoint is O(granules / 8)
 * byte operations plus O(dirty runs), then one msync of the bits.
 */
#include "engine/copy-journal.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "engine/dirty-bitmap.h"
#include "formats/fmt.h"
#include "lib/common/error.h"
#include "lib/common/util.h"

#define JOURNAL_MAGIC	 "BCJRNL\r\n"
#define JOURNAL_VERSION	 1u
#define JOURNAL_BLOCK	 4096u
#define JOURNAL_FIXED	 128u /* fixed fields; the two paths follow */
#define JOURNAL_PATH_MAX 4096u

/* Offsets of the fixed header fields (docs/design.md). */
enum {
	H_MAGIC = 0,	    /* 8 bytes */
	H_VERSION = 8,	    /* le32 */
	H_HEADER_SIZE = 12, /* le32: bytes before the bits */
	H_GRAN_BITS = 16,   /* le32: log2 of the granularity */
	H_FLAGS = 20,	    /* le32: COPY_JOURNAL_* */
	H_SIZE = 24,	    /* le64: virtual size */
	H_NBITS = 32,	    /* le64: granules */
	H_SRC_DEV = 40,	    /* le64 */
	H_SRC_INO = 48,	    /* le64 */
	H_DST_DEV = 56,	    /* le64 */
	H_DST_INO = 64,	    /* le64 */
	H_SRC_LEN = 72,	    /* le32: source path bytes, no NUL */
	H_DST_LEN = 76,	    /* le32: destination path bytes, no NUL */
	H_CRC = 80, /* le32: CRC-32 of header_size bytes, this field 0 */
};

struct copy_journal {
	atomic_int refs;
	pthread_mutex_t lock; /* bits, recent, candidates, writers, epoch */
	char *path;	      /* DST.bcjournal */
	char *tmp_path;	      /* created, not yet published; else NULL */
	int fd;
	uint8_t *map; /* the whole file, MAP_SHARED */
	size_t map_len;
	uint32_t header_size;
	uint8_t *bits; /* map + header_size: 1 = still to copy */
	uint64_t nbits;
	uint64_t size; /* virtual size */
	uint32_t gran_bits;
	unsigned int flags; /* COPY_JOURNAL_* */
	uint64_t src_dev, src_ino, dst_dev, dst_ino;
	char *src_path, *dst_path;
	bool removed;       /* unlinked by copy_journal_remove() */
	uint8_t *recent;    /* granules written since the checkpoint began */
	uint8_t *cand;	    /* the checkpoint's candidates to clear */
	unsigned int epoch; /* guest writes count in writers[epoch & 1] */
	unsigned int writers[2];
};

static uint32_t le32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint32_t header_crc(const uint8_t *h, uint32_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	crc = crc32(crc, h, H_CRC);
	crc = crc32(crc, (const Bytef *)"\0\0\0\0", 4);
	crc = crc32(crc, h + H_CRC + 4, len - H_CRC - 4);
	return (uint32_t)crc;
}

/* Record "<what> '<path>': <reason>" for -errno @ret; returns @ret. */
static __cold int sys_error(int ret, const char *what, const char *path)
{
	char ebuf[128];

	bc_error_set(bc_errno_to_code(-ret), -ret, "%s '%s': %s", what, path,
		     strerror_r(-ret, ebuf, sizeof(ebuf)));
	return ret;
}

/* --- byte bitmaps (bit i: byte i / 8, mask 1 << (i % 8)) --------------- */

static void bits_set(uint8_t *b, uint64_t first, uint64_t end)
{
	while (first < end && (first & 7)) {
		b[first / 8] |= (uint8_t)(1u << (first & 7));
		first++;
	}
	if (end - first >= 8) {
		memset(b + first / 8, 0xff, (end - first) / 8);
		first += (end - first) & ~7ull;
	}
	while (first < end) {
		b[first / 8] |= (uint8_t)(1u << (first & 7));
		first++;
	}
}

static void bits_clear(uint8_t *b, uint64_t first, uint64_t end)
{
	while (first < end && (first & 7)) {
		b[first / 8] &= (uint8_t) ~(1u << (first & 7));
		first++;
	}
	if (end - first >= 8) {
		memset(b + first / 8, 0, (end - first) / 8);
		first += (end - first) & ~7ull;
	}
	while (first < end) {
		b[first / 8] &= (uint8_t) ~(1u << (first & 7));
		first++;
	}
}

static uint64_t nbytes_of(const struct copy_journal *j)
{
	return (j->nbits + 7) / 8;
}

/* Granules touched by [off, off + len), clipped to the size: [*first, *end). */
static bool granules_of(const struct copy_journal *j, uint64_t off,
			uint64_t len, uint64_t *first, uint64_t *end)
{
	uint64_t e;

	if (!len || off >= j->size)
		return false;
	e = len > j->size - off ? j->size : off + len;
	*first = off >> j->gran_bits;
	*end = ((e - 1) >> j->gran_bits) + 1;
	return true;
}

/* --- life cycle --------------------------------------------------------- */

static struct copy_journal *journal_alloc(void)
{
	struct copy_journal *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	atomic_init(&j->refs, 1);
	pthread_mutex_init(&j->lock, NULL);
	j->fd = -1;
	return j;
}

static void journal_free(struct copy_journal *j)
{
	if (j->map) {
		/* A journal removed from its directory has nothing to keep. */
		if (!j->removed)
			(void)msync(j->map, j->map_len, MS_SYNC);
		(void)munmap(j->map, j->map_len);
	}
	if (j->fd >= 0)
		(void)close(j->fd);
	free(j->recent);
	free(j->cand);
	free(j->path);
	free(j->tmp_path);
	free(j->src_path);
	free(j->dst_path);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

void copy_journal_ref(struct copy_journal *j)
{
	atomic_fetch_add(&j->refs, 1);
}

void copy_journal_unref(struct copy_journal *j)
{
	if (j && atomic_fetch_sub(&j->refs, 1) == 1)
		journal_free(j);
}

char *copy_journal_path(const char *dest)
{
	char *p;

	if (asprintf(&p, "%s%s", dest, COPY_JOURNAL_SUFFIX) < 0)
		return NULL;
	return p;
}

int copy_journal_ident_of(const char *src_file, int src_fd, const char *dest,
			  struct copy_journal_ident *id, char **src_real,
			  char **dst_real)
{
	struct stat ss, ds;
	int err;

	*src_real = NULL;
	*dst_real = NULL;
	if (fstat(src_fd, &ss) < 0)
		return sys_error(-errno, "cannot identify source", src_file);
	if (stat(dest, &ds) < 0)
		return sys_error(-errno, "cannot identify destination", dest);
	*src_real = realpath(src_file, NULL);
	*dst_real = realpath(dest, NULL);
	if (!*src_real || !*dst_real) {
		err = errno;
		free(*src_real);
		free(*dst_real);
		*src_real = *dst_real = NULL;
		bc_error_set(bc_errno_to_code(err), err,
			     "cannot resolve '%s' or '%s' for the copy journal",
			     src_file, dest);
		return -err;
	}
	id->src_path = *src_real;
	id->src_dev = ss.st_dev;
	id->src_ino = ss.st_ino;
	id->dst_path = *dst_real;
	id->dst_dev = ds.st_dev;
	id->dst_ino = ds.st_ino;
	return 0;
}

/* The in-memory side shared by create and open: scratch bitmaps. */
static int journal_scratch(struct copy_journal *j)
{
	uint64_t n = nbytes_of(j);

	j->recent = calloc(1, n ? n : 1);
	j->cand = calloc(1, n ? n : 1);
	return j->recent && j->cand ? 0 : -ENOMEM;
}

static int journal_map(struct copy_journal *j, const char *name)
{
	void *p = mmap(NULL, j->map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
		       j->fd, 0);

	if (p == MAP_FAILED)
		return sys_error(-errno, "cannot map journal", name);
	j->map = p;
	j->bits = j->map + j->header_size;
	return 0;
}

int copy_journal_create(const char *path, const struct copy_journal_ident *id,
			struct copy_journal **out)
{
	size_t sl = strlen(id->src_path), dl = strlen(id->dst_path);
	struct copy_journal *j;
	uint8_t *h;
	int ret;

	assert(bc_is_pow2(id->granularity));
	if (sl > JOURNAL_PATH_MAX || dl > JOURNAL_PATH_MAX) {
		bc_error_set(ERR_INVALID_ARG, 0, "journal '%s': path too long",
			     path);
		return -ENAMETOOLONG;
	}
	j = journal_alloc();
	if (!j)
		return -ENOMEM;
	j->path = strdup(path);
	j->src_path = strdup(id->src_path);
	j->dst_path = strdup(id->dst_path);
	if (!j->path || !j->src_path || !j->dst_path ||
	    asprintf(&j->tmp_path, "%s.tmp", path) < 0) {
		j->tmp_path = NULL;
		ret = -ENOMEM;
		goto err_free;
	}
	j->size = id->size;
	j->gran_bits = (uint32_t)__builtin_ctz(id->granularity);
	j->nbits = (id->size + id->granularity - 1) >> j->gran_bits;
	j->flags = id->flags;
	j->src_dev = id->src_dev;
	j->src_ino = id->src_ino;
	j->dst_dev = id->dst_dev;
	j->dst_ino = id->dst_ino;
	j->header_size =
		(uint32_t)bc_align_up(JOURNAL_FIXED + sl + dl, JOURNAL_BLOCK);
	j->map_len = j->header_size + nbytes_of(j);
	ret = journal_scratch(j);
	if (ret < 0)
		goto err_free;

	(void)unlink(j->tmp_path); /* left by a creation that died */
	j->fd = open(j->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (j->fd < 0 || ftruncate(j->fd, (off_t)j->map_len) < 0) {
		ret = sys_error(-errno, "cannot create journal", j->tmp_path);
		goto err_unlink;
	}
	ret = journal_map(j, j->tmp_path);
	if (ret < 0)
		goto err_unlink;
	h = j->map;
	memcpy(h + H_MAGIC, JOURNAL_MAGIC, 8);
	put_le32(h + H_VERSION, JOURNAL_VERSION);
	put_le32(h + H_HEADER_SIZE, j->header_size);
	put_le32(h + H_GRAN_BITS, j->gran_bits);
	put_le32(h + H_FLAGS, j->flags);
	put_le64(h + H_SIZE, j->size);
	put_le64(h + H_NBITS, j->nbits);
	put_le64(h + H_SRC_DEV, j->src_dev);
	put_le64(h + H_SRC_INO, j->src_ino);
	put_le64(h + H_DST_DEV, j->dst_dev);
	put_le64(h + H_DST_INO, j->dst_ino);
	put_le32(h + H_SRC_LEN, (uint32_t)sl);
	put_le32(h + H_DST_LEN, (uint32_t)dl);
	memcpy(h + JOURNAL_FIXED, id->src_path, sl);
	memcpy(h + JOURNAL_FIXED + sl, id->dst_path, dl);
	put_le32(h + H_CRC, header_crc(h, j->header_size));
	*out = j;
	return 0;

err_unlink:
	if (j->fd >= 0)
		(void)unlink(j->tmp_path);
err_free:
	journal_free(j);
	return ret;
}

/* fsync the directory holding @path: a rename or unlink in it is durable. */
static int sync_dir_of(const char *path)
{
	BC_AUTOFREE char *copy = strdup(path);
	BC_AUTOCLOSE int fd = -1;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

int copy_journal_publish(struct copy_journal *j)
{
	int ret = 0;

	assert(j->tmp_path);
	if (msync(j->map, j->map_len, MS_SYNC) < 0 || fsync(j->fd) < 0 ||
	    rename(j->tmp_path, j->path) < 0)
		return sys_error(-errno, "cannot write journal", j->path);
	/* Named now: a failure from here on must remove j->path, not .tmp. */
	free(j->tmp_path);
	j->tmp_path = NULL;
	ret = sync_dir_of(j->path);
	if (ret < 0)
		return sys_error(ret, "cannot write journal", j->path);
	return 0;
}

static __cold int bad_journal(const char *path, const char *what)
{
	bc_error_set(ERR_INVALID_ARG, 0, "journal '%s': %s", path, what);
	return -EINVAL;
}

/* Validate the header at j->map (j->map_len bytes) and load its fields. */
static int parse_header(struct copy_journal *j, const char *path)
{
	const uint8_t *h = j->map;
	uint32_t sl, dl, hs;
	uint64_t need;

	if (j->map_len < JOURNAL_FIXED || memcmp(h, JOURNAL_MAGIC, 8) != 0)
		return bad_journal(path, "not a blockcopy copy journal");
	if (le32_at(h + H_VERSION) != JOURNAL_VERSION)
		return bad_journal(path, "unsupported version");
	hs = le32_at(h + H_HEADER_SIZE);
	sl = le32_at(h + H_SRC_LEN);
	dl = le32_at(h + H_DST_LEN);
	if (hs % JOURNAL_BLOCK || hs > j->map_len || sl > JOURNAL_PATH_MAX ||
	    dl > JOURNAL_PATH_MAX || JOURNAL_FIXED + sl + dl > hs)
		return bad_journal(path, "header size out of range");
	if (le32_at(h + H_CRC) != header_crc(h, hs))
		return bad_journal(path, "header checksum mismatch");
	j->header_size = hs;
	j->gran_bits = le32_at(h + H_GRAN_BITS);
	j->flags = le32_at(h + H_FLAGS);
	j->size = le64_at(h + H_SIZE);
	j->nbits = le64_at(h + H_NBITS);
	if (j->gran_bits < 9 || j->gran_bits > 26 ||
	    j->flags & ~(COPY_JOURNAL_SHALLOW | COPY_JOURNAL_DEST_RAW) ||
	    j->size > INT64_MAX ||
	    j->nbits != (j->size + (1ull << j->gran_bits) - 1) >> j->gran_bits)
		return bad_journal(path,
				   "granularity, size or flags out of range");
	need = hs + nbytes_of(j);
	if (need != j->map_len)
		return bad_journal(path, "file size does not match its header");
	j->src_dev = le64_at(h + H_SRC_DEV);
	j->src_ino = le64_at(h + H_SRC_INO);
	j->dst_dev = le64_at(h + H_DST_DEV);
	j->dst_ino = le64_at(h + H_DST_INO);
	j->src_path = strndup((const char *)h + JOURNAL_FIXED, sl);
	j->dst_path = strndup((const char *)h + JOURNAL_FIXED + sl, dl);
	if (!j->src_path || !j->dst_path)
		return -ENOMEM;
	j->bits = j->map + hs;
	return 0;
}

int copy_journal_open(const char *path, struct copy_journal **out)
{
	struct copy_journal *j = journal_alloc();
	struct stat st;
	int ret, err;

	if (!j)
		return -ENOMEM;
	j->path = strdup(path);
	if (!j->path) {
		ret = -ENOMEM;
		goto err_free;
	}
	j->fd = open(path, O_RDWR | O_CLOEXEC);
	if (j->fd < 0 || fstat(j->fd, &st) < 0) {
		err = errno;
		if (err == ENOENT)
			bc_error_set(ERR_NO_SUCH_FILE, err,
				     "no journal '%s' to resume from", path);
		else
			(void)sys_error(-err, "cannot open journal", path);
		ret = -err;
		goto err_free;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)JOURNAL_FIXED) {
		ret = bad_journal(path, "not a blockcopy copy journal");
		goto err_free;
	}
	j->map_len = (size_t)st.st_size;
	ret = journal_map(j, path);
	if (ret == 0)
		ret = parse_header(j, path);
	if (ret == 0)
		ret = journal_scratch(j);
	if (ret < 0)
		goto err_free;
	*out = j;
	return 0;

err_free:
	journal_free(j);
	return ret;
}

int copy_journal_check(const struct copy_journal *j,
		       const struct copy_journal_ident *id)
{
	const char *p = j->path;

	if (strcmp(j->src_path, id->src_path) != 0) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "journal '%s' source is '%s', not '%s'", p,
			     j->src_path, id->src_path);
		return -EINVAL;
	}
	if (j->src_dev != id->src_dev || j->src_ino != id->src_ino) {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"journal '%s' source '%s' is another file now (device or inode differ)",
			p, id->src_path);
		return -EINVAL;
	}
	if (strcmp(j->dst_path, id->dst_path) != 0) {
		bc_error_set(ERR_INVALID_ARG, 0,
			     "journal '%s' destination is '%s', not '%s'", p,
			     j->dst_path, id->dst_path);
		return -EINVAL;
	}
	if (j->dst_dev != id->dst_dev || j->dst_ino != id->dst_ino) {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"journal '%s' destination '%s' is another file now (device or inode differ)",
			p, id->dst_path);
		return -EINVAL;
	}
	if (j->size != id->size) {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"journal '%s' virtual size %llu differs from the source's %llu",
			p, (unsigned long long)j->size,
			(unsigned long long)id->size);
		return -EINVAL;
	}
	if ((j->flags ^ id->flags) & COPY_JOURNAL_SHALLOW) {
		bc_error_set(
			ERR_INVALID_ARG, 0,
			"journal '%s' records a %s copy, not a %s one", p,
			j->flags & COPY_JOURNAL_SHALLOW ? "shallow" : "full",
			j->flags & COPY_JOURNAL_SHALLOW ? "full" : "shallow");
		return -EINVAL;
	}
	return 0;
}

uint32_t copy_journal_granularity(const struct copy_journal *j)
{
	return 1u << j->gran_bits;
}

unsigned int copy_journal_flags(const struct copy_journal *j)
{
	return j->flags;
}

bool copy_journal_is_file(const struct copy_journal *j, const char *path)
{
	struct stat a, b;

	return fstat(j->fd, &a) == 0 && stat(path, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int copy_journal_remove(struct copy_journal *j)
{
	int ret = 0;

	if (j->tmp_path)
		(void)unlink(j->tmp_path);
	else if (unlink(j->path) < 0 && errno != ENOENT)
		ret = -errno;
	if (ret == 0) {
		j->removed = true;
		ret = sync_dir_of(j->path);
	}
	return ret;
}

/* --- bits --------------------------------------------------------------- */

unsigned int copy_journal_write_begin(struct copy_journal *j, uint64_t off,
				      uint64_t len)
{
	uint64_t first, end;
	unsigned int token;

	BC_LOCK_GUARD(&j->lock);
	if (granules_of(j, off, len, &first, &end)) {
		bits_set(j->recent, first, end);
		bits_set(j->bits, first, end);
	}
	token = j->epoch & 1;
	j->writers[token]++;
	return token;
}

void copy_journal_write_end(struct copy_journal *j, unsigned int token)
{
	BC_LOCK_GUARD(&j->lock);
	assert(j->writers[token] > 0);
	j->writers[token]--;
}

void copy_journal_mark(struct copy_journal *j, uint64_t off, uint64_t len)
{
	uint64_t first, end;

	BC_LOCK_GUARD(&j->lock);
	if (granules_of(j, off, len, &first, &end))
		bits_set(j->bits, first, end);
}

void copy_journal_mark_dirty(struct copy_journal *j,
			     const struct dirty_bitmap *d)
{
	uint64_t off, len, first, end;

	assert(dirty_bitmap_granularity(d) == 1u << j->gran_bits);
	BC_LOCK_GUARD(&j->lock);
	dirty_bitmap_for_each_dirty (d, off, len) {
		if (granules_of(j, off, len, &first, &end))
			bits_set(j->bits, first, end);
	}
}

void copy_journal_load(struct copy_journal *j, struct dirty_bitmap *d)
{
	uint64_t i = 0;

	assert(dirty_bitmap_granularity(d) == 1u << j->gran_bits);
	BC_LOCK_GUARD(&j->lock);
	while (i < j->nbits) {
		uint64_t k;

		if (!(j->bits[i / 8] & (1u << (i & 7)))) {
			i = (i & 7) || j->bits[i / 8] ? i + 1 : i + 8;
			continue;
		}
		for (k = i + 1;
		     k < j->nbits && (j->bits[k / 8] & (1u << (k & 7)));)
			k++;
		dirty_bitmap_set(d, i << j->gran_bits, (k - i) << j->gran_bits);
		i = k;
	}
}

static int sync_bits(struct copy_journal *j)
{
	/* msync wants a page-aligned start. */
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = bc_align_down(j->header_size, page);

	if (msync(j->map + start, j->map_len - start, MS_SYNC) < 0)
		return sys_error(-errno, "cannot write journal", j->path);
	return 0;
}

int copy_journal_sync(struct copy_journal *j)
{
	return j->map_len > j->header_size ? sync_bits(j) : 0;
}

/* --- checkpoint ----------------------------------------------------------- */

void copy_journal_checkpoint_begin(struct copy_journal *j)
{
	BC_LOCK_GUARD(&j->lock);
	memset(j->recent, 0, nbytes_of(j));
	j->epoch++;
}

bool copy_journal_checkpoint_ready(struct copy_journal *j)
{
	BC_LOCK_GUARD(&j->lock);
	return j->writers[(j->epoch - 1) & 1] == 0;
}

/* cand &= ~(granules @d marks). */
static void cand_clear_dirty(struct copy_journal *j,
			     const struct dirty_bitmap *d)
{
	uint64_t off, len, first, end;

	dirty_bitmap_for_each_dirty (d, off, len) {
		if (granules_of(j, off, len, &first, &end))
			bits_clear(j->cand, first, end);
	}
}

void copy_journal_checkpoint_snapshot(struct copy_journal *j,
				      const struct dirty_bitmap *dirty,
				      const struct dirty_bitmap *inflight)
{
	uint64_t i;

	BC_LOCK_GUARD(&j->lock);
	for (i = 0; i < nbytes_of(j); i++)
		j->cand[i] = j->bits[i] & (uint8_t)~j->recent[i];
	cand_clear_dirty(j, dirty);
	cand_clear_dirty(j, inflight);
}

int copy_journal_checkpoint_commit(struct copy_journal *j)
{
	uint64_t i;

	pthread_mutex_lock(&j->lock);
	for (i = 0; i < nbytes_of(j); i++)
		j->bits[i] &= (uint8_t) ~(j->cand[i] & (uint8_t)~j->recent[i]);
	pthread_mutex_unlock(&j->lock);
	return copy_journal_sync(j);
}
