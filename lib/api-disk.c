/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Public wrappers: disks and the guest data path.
 */
#include "lib/blockcopy.h"

#include <string.h>

#include "engine/engine.h"
#include "lib/api-internal.h"

/* The engine's disk flags and extent bits are the public ones. */
API_SAME_VALUE(DISK_OPEN_READONLY, BC_DISK_READONLY);
API_SAME_VALUE(DISK_OPEN_DIRECT, BC_DISK_DIRECT);
API_SAME_VALUE(DISK_ZEROES_MAY_UNMAP, BC_DISK_ZEROES_MAY_UNMAP);
API_SAME_VALUE(DISK_EXTENT_ZERO, BC_DISK_EXTENT_ZERO);
API_SAME_VALUE(DISK_EXTENT_HOLE, BC_DISK_EXTENT_HOLE);

bc_disk *bc_disk_open(bc_engine *engine, const char *path, const char *format,
		      unsigned int flags)
{
	bc_disk *disk;
	int ret;

	bc_error_reset();
	if (api_null(engine, "engine", __func__) ||
	    api_null(path, "path", __func__) ||
	    api_bad_flags(flags, BC_DISK_READONLY | BC_DISK_DIRECT, __func__))
		return NULL;
	if (format && strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "unknown disk format '%s' (expected raw or qcow2)",
			     format);
		return NULL;
	}
	ret = disk_open(engine, path, format, flags, &disk);
	if (ret < 0) {
		bc_fail_errno(ret);
		return NULL;
	}
	return disk;
}

int bc_disk_close(bc_disk *disk)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__))
		return -1;
	ret = disk_close(disk);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int64_t bc_disk_size(bc_disk *disk)
{
	bc_error_reset();
	if (api_null(disk, "disk", __func__))
		return -1;
	return disk_size(disk);
}

const char *bc_disk_path(bc_disk *disk)
{
	bc_error_reset();
	if (api_null(disk, "disk", __func__))
		return NULL;
	return disk_path(disk);
}

ssize_t bc_disk_pread(bc_disk *disk, void *buf, size_t n, uint64_t off)
{
	ssize_t ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    (n && api_null(buf, "buf", __func__)))
		return -1;
	ret = disk_pread(disk, buf, n, off);
	return ret < 0 ? bc_fail_errno((int)ret) : ret;
}

ssize_t bc_disk_pwrite(bc_disk *disk, const void *buf, size_t n, uint64_t off)
{
	ssize_t ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    (n && api_null(buf, "buf", __func__)))
		return -1;
	ret = disk_pwrite(disk, buf, n, off);
	return ret < 0 ? bc_fail_errno((int)ret) : ret;
}

int bc_disk_write_zeroes(bc_disk *disk, uint64_t off, uint64_t len,
			 unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, BC_DISK_ZEROES_MAY_UNMAP, __func__))
		return -1;
	ret = disk_write_zeroes(disk, off, len, flags);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_disk_discard(bc_disk *disk, uint64_t off, uint64_t len,
		    unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	ret = disk_discard(disk, off, len);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

/* --- BC_1.1 block status (issue 11) --- */
int64_t bc_disk_block_status(bc_disk *disk, uint64_t off, uint64_t len,
			     unsigned int *status, unsigned int flags)
{
	int64_t ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_null(status, "status", __func__))
		return -1;
	if (flags)
		return bc_fail(BC_ERR_INVALID_ARG, 0, "unsupported flags 0x%x",
			       flags);
	if (!len)
		return bc_fail(BC_ERR_INVALID_ARG, 0, "len must not be 0");
	ret = disk_block_status(disk, off, len, status);
	return ret < 0 ? bc_fail_errno((int)ret) : ret;
}
/* --- end block status --- */

int bc_disk_flush(bc_disk *disk)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__))
		return -1;
	ret = disk_flush(disk);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_snapshot_create(bc_disk *disk, const char *overlay, unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_null(overlay, "overlay", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	ret = disk_snapshot_create(disk, overlay);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}
