/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbdkit-blockcopy-plugin: serve a live disk over NBD.
 *
 *   nbdkit nbdkit-blockcopy-plugin.so disk=IMG [format=qcow2|raw]
 *          [direct=true] [control=SOCKET]
 *
 * The disk is opened with the public library (bc_disk_open), so every
 * NBD client is a guest of the disk: its writes go through bc_disk_pwrite
 * and are tracked by a running copy job, which the control socket starts,
 * watches, pivots and aborts (control.c, docs/nbdkit-plugin.md).
 *
 * All connections share the one bc_disk, which is thread-safe: the
 * parallel thread model, and multi-conn (a flush on any connection
 * flushes the disk every connection writes). Block status comes from
 * bc_disk_block_status; FUA is a flush after the write.
 *
 * nbdkit forks when it daemonizes and threads do not survive a fork:
 * the engine (its I/O thread) and the control thread start in
 * .after_fork, which runs in the process that serves.
 */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/blockcopy.h"
#include "nbdkit/control.h"

static char *disk_path;        /* disk= (absolute) */
static char *disk_format;      /* format=, NULL = detect */
static char *control_path;     /* control=, NULL = no control socket */
static bool direct;            /* direct=true: O_DIRECT */

static bc_engine *engine;
static bc_disk *disk;
static struct control *control;

/* The handle of every connection: they all share the disk. */
static int the_handle;

/* Hand the library's last error to nbdkit: message and errno. */
static int fail(const char *what)
{
	const bc_error *e = bc_last_error();

	nbdkit_error("%s: %s", what, e->message[0] ? e->message : "failed");
	nbdkit_set_error(e->sys_errno > 0 ? e->sys_errno : EIO);
	return -1;
}

static void bc_unload(void)
{
	free(disk_path);
	free(disk_format);
	free(control_path);
}

static int bc_config(const char *key, const char *value)
{
	if (!strcmp(key, "disk")) {
		free(disk_path);
		disk_path = nbdkit_absolute_path(value);
		return disk_path ? 0 : -1;
	}
	if (!strcmp(key, "format")) {
		if (strcmp(value, "qcow2") && strcmp(value, "raw")) {
			nbdkit_error("format must be qcow2 or raw, not '%s'", value);
			return -1;
		}
		free(disk_format);
		disk_format = strdup(value);
		return disk_format ? 0 : -1;
	}
	if (!strcmp(key, "control")) {
		free(control_path);
		control_path = nbdkit_absolute_path(value);
		return control_path ? 0 : -1;
	}
	if (!strcmp(key, "direct")) {
		int r = nbdkit_parse_bool(value);

		if (r < 0)
			return -1;
		direct = r;
		return 0;
	}
	nbdkit_error("unknown parameter '%s'", key);
	return -1;
}

static int bc_config_complete(void)
{
	if (!disk_path) {
		nbdkit_error("the disk parameter is required (disk=IMAGE)");
		return -1;
	}
	return 0;
}

#define bc_config_help \
	"disk=<IMAGE>     (required) qcow2 or raw image (top of its chain)\n" \
	"format=qcow2|raw format of IMAGE (default: detected)\n" \
	"direct=true      open the chain with O_DIRECT\n" \
	"control=<SOCKET> unix socket for the JSON-lines control interface"

static int bc_after_fork(void)
{
	engine = bc_engine_new(0);
	if (!engine)
		return fail("engine");
	disk = bc_disk_open(engine, disk_path, disk_format,
			    direct ? BC_DISK_DIRECT : 0);
	if (!disk) {
		fail("open");
		goto err_engine;
	}
	if (control_path) {
		char err[256];

		if (control_start(&control, engine, disk, control_path, err,
				  sizeof(err)) < 0) {
			nbdkit_error("control socket %s: %s", control_path, err);
			goto err_disk;
		}
	}
	return 0;

err_disk:
	(void)bc_disk_close(disk);
	disk = NULL;
err_engine:
	bc_engine_free(engine);
	engine = NULL;
	return -1;
}

static void bc_cleanup(void)
{
	if (control)
		control_stop(control);
	control = NULL;
	if (disk) {
		/* A job still running is cancelled: the disk stays where it is. */
		(void)bc_block_job_abort(disk, 0);
		if (bc_disk_close(disk) < 0)
			nbdkit_error("close: %s", bc_last_error()->message);
	}
	disk = NULL;
	bc_engine_free(engine);
	engine = NULL;
}

static void *bc_open(int readonly)
{
	return &the_handle;
}

static int64_t bc_get_size(void *h)
{
	int64_t size = bc_disk_size(disk);

	return size < 0 ? fail("size") : size;
}

static int bc_can_multi_conn(void *h)
{
	return 1;
}

static int bc_can_flush(void *h)
{
	return 1;
}

static int bc_can_trim(void *h)
{
	return 1;
}

static int bc_can_zero(void *h)
{
	return 1;
}

static int bc_can_fua(void *h)
{
	return NBDKIT_FUA_NATIVE;
}

static int bc_can_extents(void *h)
{
	return 1;
}

static int bc_thread_model(void)
{
	return NBDKIT_THREAD_MODEL_PARALLEL;
}

static int fua(uint32_t flags)
{
	if ((flags & NBDKIT_FLAG_FUA) && bc_disk_flush(disk) < 0)
		return fail("flush (FUA)");
	return 0;
}

static int bc_pread(void *h, void *buf, uint32_t count, uint64_t offset,
		    uint32_t flags)
{
	return bc_disk_pread(disk, buf, count, offset) < 0 ? fail("read") : 0;
}

static int bc_pwrite(void *h, const void *buf, uint32_t count,
		     uint64_t offset, uint32_t flags)
{
	if (bc_disk_pwrite(disk, buf, count, offset) < 0)
		return fail("write");
	return fua(flags);
}

static int bc_zero(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	unsigned int zf = (flags & NBDKIT_FLAG_MAY_TRIM) ? BC_DISK_ZEROES_MAY_UNMAP : 0;

	if (bc_disk_write_zeroes(disk, offset, count, zf) < 0)
		return fail("write zeroes");
	return fua(flags);
}

static int bc_trim(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	if (bc_disk_discard(disk, offset, count, 0) < 0)
		return fail("trim");
	return fua(flags);
}

static int bc_flush(void *h, uint32_t flags)
{
	return bc_disk_flush(disk) < 0 ? fail("flush") : 0;
}

static int bc_extents(void *h, uint32_t count, uint64_t offset, uint32_t flags,
		      struct nbdkit_extents *extents)
{
	uint64_t end = offset + count;

	while (offset < end) {
		unsigned int st;
		uint32_t type = 0;
		int64_t n = bc_disk_block_status(disk, offset, end - offset, &st, 0);

		if (n < 0)
			return fail("block status");
		if (st & BC_DISK_EXTENT_ZERO)
			type |= NBDKIT_EXTENT_ZERO;
		if (st & BC_DISK_EXTENT_HOLE)
			type |= NBDKIT_EXTENT_HOLE;
		if (nbdkit_add_extent(extents, offset, (uint64_t)n, type) < 0)
			return -1;
		offset += (uint64_t)n;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static struct nbdkit_plugin plugin = {
	.name = "blockcopy",
	.longname = "blockcopy live disk",
	.version = BC_VERSION,
	.description = "Serve a disk opened with libblockcopy; copy, mirror and pivot it live",
	.unload = bc_unload,
	.config = bc_config,
	.config_complete = bc_config_complete,
	.config_help = bc_config_help,
	.after_fork = bc_after_fork,
	.cleanup = bc_cleanup,
	.thread_model = bc_thread_model,
	.open = bc_open,
	.get_size = bc_get_size,
	.can_multi_conn = bc_can_multi_conn,
	.can_flush = bc_can_flush,
	.can_trim = bc_can_trim,
	.can_zero = bc_can_zero,
	.can_fua = bc_can_fua,
	.can_extents = bc_can_extents,
	.pread = bc_pread,
	.pwrite = bc_pwrite,
	.zero = bc_zero,
	.trim = bc_trim,
	.flush = bc_flush,
	.extents = bc_extents,
	.errno_is_preserved = 0,
};

/* NBDKIT_REGISTER_PLUGIN wants the model as a macro too. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
/* The entry point the macro defines, declared (-Wmissing-prototypes). */
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
