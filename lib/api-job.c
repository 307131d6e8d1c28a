/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Public wrappers: block jobs, with the flag rules of libvirt's
 * virDomainBlockRebase / BlockCopy / BlockJobAbort (docs/rules.md R1-R8,
 * R17-R19).
 */
#include "lib/blockcopy.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "engine/engine.h"
#include "lib/api-internal.h"
#include "lib/common/util.h"

/* The engine's job constants are the public ones. */
API_SAME_VALUE(JOB_TYPE_UNKNOWN, BC_BLOCK_JOB_TYPE_UNKNOWN);
API_SAME_VALUE(JOB_TYPE_PULL, BC_BLOCK_JOB_TYPE_PULL);
API_SAME_VALUE(JOB_TYPE_COPY, BC_BLOCK_JOB_TYPE_COPY);
API_SAME_VALUE(JOB_EVENT_COMPLETED, BC_BLOCK_JOB_COMPLETED);
API_SAME_VALUE(JOB_EVENT_FAILED, BC_BLOCK_JOB_FAILED);
API_SAME_VALUE(JOB_EVENT_CANCELED, BC_BLOCK_JOB_CANCELED);
API_SAME_VALUE(JOB_EVENT_MIRRORING, BC_BLOCK_JOB_MIRRORING);
API_SAME_VALUE(JOB_EVENT_PAUSED, BC_BLOCK_JOB_PAUSED);
API_SAME_VALUE(JOB_STATE_RUNNING, BC_BLOCK_JOB_STATE_RUNNING);
API_SAME_VALUE(JOB_STATE_READY, BC_BLOCK_JOB_STATE_READY);
API_SAME_VALUE(JOB_STATE_PAUSED, BC_BLOCK_JOB_STATE_PAUSED);
API_SAME_VALUE(JOB_STATE_ENDING, BC_BLOCK_JOB_STATE_ENDING);
API_SAME_VALUE(JOB_MODE_BACKGROUND, BC_BLOCK_JOB_MODE_BACKGROUND);
API_SAME_VALUE(JOB_MODE_WRITE_BLOCKING, BC_BLOCK_JOB_MODE_WRITE_BLOCKING);

#define REBASE_MASK                                                          \
	(BC_BLOCK_REBASE_SHALLOW | BC_BLOCK_REBASE_REUSE_EXT |               \
	 BC_BLOCK_REBASE_COPY_RAW | BC_BLOCK_REBASE_COPY |                   \
	 BC_BLOCK_REBASE_RELATIVE | BC_BLOCK_REBASE_BANDWIDTH_BYTES)
#define COPY_MASK                                                            \
	(BC_BLOCK_COPY_SHALLOW | BC_BLOCK_COPY_REUSE_EXT |                   \
	 BC_BLOCK_COPY_TRANSIENT_JOB | BC_BLOCK_COPY_SYNCHRONOUS_WRITES |     \
	 BC_BLOCK_COPY_AUTO_CONVERGE | BC_BLOCK_COPY_ON_TARGET_ERROR_STOP |   \
	 BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE | COPY_PATH_MASK |              \
	 BC_BLOCK_COPY_REFLINK | BC_BLOCK_COPY_REFLINK_ALWAYS |               \
	 BC_BLOCK_COPY_RESUME)
#define COPY_PATH_MASK                                                       \
	(BC_BLOCK_COPY_DIRECT | BC_BLOCK_COPY_BUFFERED |                     \
	 BC_BLOCK_COPY_FILE_RANGE)
#define ABORT_MASK                                                           \
	(BC_BLOCK_JOB_ABORT_ASYNC | BC_BLOCK_JOB_ABORT_PIVOT |               \
	 BC_BLOCK_JOB_ABORT_VERIFY)

#define MIN_GRANULARITY (4u * 1024)
#define MAX_GRANULARITY (64u * 1024 * 1024)
#define MAX_BUF_SIZE    (1ull << 30)

/* Bandwidth in bytes/s from libvirt's MiB/s unless @bytes. */
static bool bandwidth_bytes(unsigned long bw, bool bytes, uint64_t *out)
{
	if (bytes) {
		*out = bw;
		return true;
	}
	if (bc_mul_overflow((uint64_t)bw, 1ull << 20, out)) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "bandwidth must be less than %llu MiB/s",
			     (unsigned long long)(UINT64_MAX >> 20));
		return false;
	}
	return true;
}

int bc_block_rebase(bc_disk *disk, const char *base, unsigned long bandwidth,
		    unsigned int flags)
{
	bool copy = flags & BC_BLOCK_REBASE_COPY;
	uint64_t bw;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, REBASE_MASK, __func__))
		return -1;
	if ((flags & BC_BLOCK_REBASE_SHALLOW) && !copy)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "shallow only permitted when requesting a copy");
	if ((flags & BC_BLOCK_REBASE_REUSE_EXT) && !copy)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "reuse_ext only permitted when requesting a copy");
	if ((flags & BC_BLOCK_REBASE_COPY_RAW) && !copy)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "copy_raw only permitted when requesting a copy");
	if (copy && !base)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "base is required when starting a copy");
	if (copy && (flags & BC_BLOCK_REBASE_RELATIVE))
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "relative backing during copy is not supported");
	if (!bandwidth_bytes(bandwidth, flags & BC_BLOCK_REBASE_BANDWIDTH_BYTES,
			     &bw))
		return -1;

	if (copy) {
		struct job_copy_opts opts = {
			.bandwidth = bw,
			.shallow = flags & BC_BLOCK_REBASE_SHALLOW,
			.reuse_ext = flags & BC_BLOCK_REBASE_REUSE_EXT,
			.dest_raw = flags & BC_BLOCK_REBASE_COPY_RAW,
		};

		ret = job_start_copy(disk, base, &opts);
	} else {
		ret = job_start_pull(disk, base, bw,
				     flags & BC_BLOCK_REBASE_RELATIVE);
	}
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_block_pull(bc_disk *disk, unsigned long bandwidth, unsigned int flags)
{
	uint64_t bw;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, BC_BLOCK_PULL_BANDWIDTH_BYTES, __func__))
		return -1;
	if (!bandwidth_bytes(bandwidth, flags & BC_BLOCK_PULL_BANDWIDTH_BYTES,
			     &bw))
		return -1;
	ret = job_start_pull(disk, NULL, bw, false);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

/* The data-path flags of bc_block_copy into @opts; false (recorded) if they clash. */
static bool copy_path_flags(unsigned int flags, struct job_copy_opts *opts)
{
	unsigned int path = flags & COPY_PATH_MASK;

	if (path & (path - 1)) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "direct, buffered and file-range data paths are mutually exclusive");
		return false;
	}
	if ((flags & BC_BLOCK_COPY_REFLINK) &&
	    (flags & BC_BLOCK_COPY_REFLINK_ALWAYS)) {
		bc_error_set(BC_ERR_INVALID_ARG, 0,
			     "reflink and reflink-always are mutually exclusive");
		return false;
	}
	if (path == BC_BLOCK_COPY_DIRECT)
		opts->path = JOB_PATH_DIRECT;
	else if (path == BC_BLOCK_COPY_BUFFERED)
		opts->path = JOB_PATH_BUFFERED;
	else if (path == BC_BLOCK_COPY_FILE_RANGE)
		opts->path = JOB_PATH_FILE_RANGE;
	if (flags & BC_BLOCK_COPY_REFLINK)
		opts->reflink = JOB_REFLINK_AUTO;
	else if (flags & BC_BLOCK_COPY_REFLINK_ALWAYS)
		opts->reflink = JOB_REFLINK_ALWAYS;
	return true;
}

/* bc_block_copy and bc_block_copy_bitmap (@bitmap NULL for the former). */
static int start_copy(bc_disk *disk, const char *dest, const char *bitmap,
		      const bc_block_copy_params *params, unsigned int flags,
		      const char *func)
{
	struct job_copy_opts opts = { .bitmap = bitmap };
	int ret;

	if (api_null(disk, "disk", func) || api_null(dest, "dest", func) ||
	    api_bad_flags(flags, COPY_MASK, func))
		return -1;
	if (params) {
		unsigned int g = params->granularity;

		if (g && (!bc_is_pow2(g) || g < MIN_GRANULARITY ||
			  g > MAX_GRANULARITY))
			return bc_fail(BC_ERR_INVALID_ARG, 0,
				       "granularity must be a power of two between %u and %u",
				       MIN_GRANULARITY, MAX_GRANULARITY);
		if (params->buf_size &&
		    (params->buf_size < (g ? g : 64u * 1024) ||
		     params->buf_size > MAX_BUF_SIZE))
			return bc_fail(BC_ERR_INVALID_ARG, 0,
				       "buf-size must be between the granularity and %llu bytes",
				       (unsigned long long)MAX_BUF_SIZE);
		opts.bandwidth = params->bandwidth;
		opts.granularity = g;
		opts.buf_size = params->buf_size;
	}
	if ((flags & BC_BLOCK_COPY_SYNCHRONOUS_WRITES) &&
	    (flags & BC_BLOCK_COPY_AUTO_CONVERGE))
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "synchronous writes and auto-converge are mutually exclusive");
	if ((flags & BC_BLOCK_COPY_ON_TARGET_ERROR_STOP) &&
	    (flags & BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE))
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "on-target-error stop and ignore are mutually exclusive");
	if (flags & BC_BLOCK_COPY_ON_TARGET_ERROR_STOP)
		opts.on_target_error = JOB_TARGET_STOP;
	else if (flags & BC_BLOCK_COPY_ON_TARGET_ERROR_IGNORE)
		opts.on_target_error = JOB_TARGET_IGNORE;
	if (!copy_path_flags(flags, &opts))
		return -1;
	opts.write_blocking = flags & BC_BLOCK_COPY_SYNCHRONOUS_WRITES;
	opts.auto_converge = flags & BC_BLOCK_COPY_AUTO_CONVERGE;
	opts.shallow = flags & BC_BLOCK_COPY_SHALLOW;
	opts.reuse_ext = flags & BC_BLOCK_COPY_REUSE_EXT;
	/* Resume (issue 12): the journal says what is left to copy. */
	opts.resume = flags & BC_BLOCK_COPY_RESUME;
	if (opts.resume && bitmap)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "resume and a bitmap are mutually exclusive: the journal says what is left to copy");
	ret = job_start_copy(disk, dest, &opts);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_block_copy(bc_disk *disk, const char *dest,
		  const bc_block_copy_params *params, unsigned int flags)
{
	bc_error_reset();
	return start_copy(disk, dest, NULL, params, flags, __func__);
}

int bc_block_copy_bitmap(bc_disk *disk, const char *dest, const char *bitmap,
			 const bc_block_copy_params *params,
			 unsigned int flags)
{
	bc_error_reset();
	if (api_null(bitmap, "bitmap", __func__))
		return -1;
	return start_copy(disk, dest, bitmap, params, flags, __func__);
}

int bc_block_job_abort(bc_disk *disk, unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, ABORT_MASK, __func__))
		return -1;
	if ((flags & BC_BLOCK_JOB_ABORT_ASYNC) && (flags & BC_BLOCK_JOB_ABORT_PIVOT))
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "async and pivot flags are mutually exclusive");
	if ((flags & BC_BLOCK_JOB_ABORT_VERIFY) && !(flags & BC_BLOCK_JOB_ABORT_PIVOT))
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "verify only permitted with pivot");
	ret = job_abort(disk, flags & BC_BLOCK_JOB_ABORT_ASYNC,
			flags & BC_BLOCK_JOB_ABORT_PIVOT,
			flags & BC_BLOCK_JOB_ABORT_VERIFY);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_get_block_job_info(bc_disk *disk, bc_block_job_info *info,
			  unsigned int flags)
{
	struct job_info ji;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_null(info, "info", __func__) ||
	    api_bad_flags(flags, BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES, __func__))
		return -1;
	ret = job_get_info(disk, &ji, flags & BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES);
	if (ret == 1) {
		info->type = ji.type;
		info->bandwidth = ji.bandwidth;
		info->cur = ji.cur;
		info->end = ji.end;
	}
	return ret;
}

int bc_get_block_job_stats(bc_disk *disk, bc_block_job_stats *stats,
			   unsigned int flags)
{
	struct job_stats js;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_null(stats, "stats", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	ret = job_get_stats(disk, &js);
	if (ret == 1)
		*stats = (bc_block_job_stats){
			.active = js.active,
			.type = js.type,
			.mode = js.mode,
			.auto_converge = js.auto_converge,
			.ready = js.ready,
			.status = js.status,
			.cur = js.cur,
			.end = js.end,
			.dirty_bytes = js.dirty_bytes,
			.bytes_copied = js.bytes_copied,
			.bytes_zeroed = js.bytes_zeroed,
			.active_writes = js.active_writes,
			.mirroring_ns = js.mirroring_ns,
			.mode_switch_ns = js.mode_switch_ns,
			.pivot_stall_ns = js.pivot_stall_ns,
			.elapsed_ns = js.elapsed_ns,
		};
	return ret;
}

int bc_block_job_set_speed(bc_disk *disk, unsigned long bandwidth,
			   unsigned int flags)
{
	uint64_t bw;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES, __func__))
		return -1;
	if (!bandwidth_bytes(bandwidth,
			     flags & BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES, &bw))
		return -1;
	ret = job_set_speed(disk, bw);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

/* --- 1.1: target-error policy --------------------------------------- */

int bc_get_block_job_state(bc_disk *disk, int *state, bc_error *error,
			   unsigned int flags)
{
	struct error_record paused_by;
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_null(state, "state", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	ret = job_get_state(disk, state, error ? &paused_by : NULL);
	if (ret == 1 && error) {
		error->code = paused_by.code;
		error->sys_errno = paused_by.sys_errno;
		_Static_assert(sizeof(error->message) == sizeof(paused_by.message),
			       "message size");
		memcpy(error->message, paused_by.message, sizeof(error->message));
	}
	return ret;
}

int bc_block_job_resume(bc_disk *disk, unsigned int flags)
{
	int ret;

	bc_error_reset();
	if (api_null(disk, "disk", __func__) ||
	    api_bad_flags(flags, 0, __func__))
		return -1;
	ret = job_resume(disk);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

const char *bc_block_job_copy_method(bc_disk *disk)
{
	bc_error_reset();
	if (api_null(disk, "disk", __func__))
		return NULL;
	return job_copy_method(disk);
}
