/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbdkit-delayfirst-plugin (test only): a file served over NBD that holds
 * back the first write touching one offset.
 *
 *   nbdkit nbdkit-delayfirst-plugin.so file=PATH at=OFFSET delay-ms=N
 *          marker=PATH
 *
 * The first write whose range contains OFFSET sleeps N ms before it
 * writes, and creates the marker file when it starts sleeping; every
 * other request is served at once. With the parallel thread model the
 * server answers later requests while that one sleeps, as a real server
 * may (NBD orders nothing between requests in flight), so a client that
 * sends an overlapping write without waiting for the first one sees the
 * first one land last. The filter nbdkit ships (delay) holds back every
 * request alike and cannot show that.
 *
 * No multi-conn, no zero, trim or extents callbacks (nbdkit emulates zero
 * with writes and reports all data): one connection, the plain path.
 */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *file_path;
static char *marker_path;
static int64_t delay_at = -1;
static unsigned int delay_ms;
static int fd = -1;
static bool delayed; /* the first write at delay_at has been taken (atomic) */

static void df_unload(void)
{
	if (fd >= 0)
		close(fd);
	free(file_path);
	free(marker_path);
}

static int df_config(const char *key, const char *value)
{
	if (!strcmp(key, "file")) {
		free(file_path);
		file_path = nbdkit_realpath(value);
		return file_path ? 0 : -1;
	}
	if (!strcmp(key, "marker")) {
		free(marker_path);
		marker_path = strdup(value);
		return marker_path ? 0 : -1;
	}
	if (!strcmp(key, "at")) {
		delay_at = nbdkit_parse_size(value);
		return delay_at < 0 ? -1 : 0;
	}
	if (!strcmp(key, "delay-ms"))
		return nbdkit_parse_unsigned("delay-ms", value, &delay_ms);
	nbdkit_error("unknown parameter '%s'", key);
	return -1;
}

static int df_config_complete(void)
{
	if (!file_path || !marker_path || delay_at < 0) {
		nbdkit_error("file=, marker= and at= are required");
		return -1;
	}
	fd = open(file_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		nbdkit_error("open %s: %m", file_path);
		return -1;
	}
	return 0;
}

static void *df_open(int readonly)
{
	static int handle;

	return &handle;
}

static int64_t df_get_size(void *h)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		nbdkit_error("fstat %s: %m", file_path);
		return -1;
	}
	return st.st_size;
}

/* 0 when @r is the whole @count, else -1 with the error reported. */
static int io_result(const char *what, ssize_t r, uint32_t count, uint64_t off)
{
	if (r == (ssize_t)count)
		return 0;
	if (r >= 0)
		errno = EIO; /* short: the file is smaller than it was */
	nbdkit_error("%s %s at %llu: %m", what, file_path,
		     (unsigned long long)off);
	return -1;
}

static int df_pread(void *h, void *buf, uint32_t count, uint64_t off,
		    uint32_t flags)
{
	return io_result("pread", pread(fd, buf, count, (off_t)off), count,
			 off);
}

/* Whether this write is the one to hold back: the first at delay_at. */
static bool take_delay(uint32_t count, uint64_t off)
{
	bool no = false;

	if ((uint64_t)delay_at < off || (uint64_t)delay_at >= off + count)
		return false;
	return __atomic_compare_exchange_n(&delayed, &no, true, false,
					   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static int df_pwrite(void *h, const void *buf, uint32_t count, uint64_t off,
		     uint32_t flags)
{
	if (take_delay(count, off)) {
		int m = open(marker_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

		if (m < 0) {
			nbdkit_error("create %s: %m", marker_path);
			return -1;
		}
		close(m);
		if (nbdkit_nanosleep(delay_ms / 1000u,
				     (delay_ms % 1000u) * 1000000u) < 0)
			return -1; /* the server is shutting down */
	}
	return io_result("pwrite", pwrite(fd, buf, count, (off_t)off), count,
			 off);
}

static int df_flush(void *h, uint32_t flags)
{
	if (fdatasync(fd) < 0) {
		nbdkit_error("fdatasync %s: %m", file_path);
		return -1;
	}
	return 0;
}

static struct nbdkit_plugin plugin = {
	.name = "delayfirst",
	.version = "1",
	.unload = df_unload,
	.config = df_config,
	.config_complete = df_config_complete,
	.config_help = "file=PATH at=OFFSET delay-ms=N marker=PATH",
	.open = df_open,
	.get_size = df_get_size,
	.pread = df_pread,
	.pwrite = df_pwrite,
	.flush = df_flush,
	.errno_is_preserved = 1,
};

/* The macro defines plugin_init without a prototype. */
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
