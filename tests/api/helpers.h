/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fixtures for the API tests: a temporary directory, an engine with an
 * event recorder, a qcow2 chain with known content and a shadow copy of
 * what the guest should read.
 */
#ifndef BC_TESTS_API_HELPERS_H
#define BC_TESTS_API_HELPERS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/blockcopy.h"

#define FX_SIZE       (8u << 20)
#define FX_MAX_LAYERS 4
#define FX_MAX_EVENTS 32

struct fx {
	char dir[PATH_MAX];
	char *layers[FX_MAX_LAYERS]; /* absolute paths, base first */
	int nlayers;
	const char *top;
	bc_engine *eng;
	bc_disk *disk;
	uint8_t *shadow;             /* FX_SIZE bytes the guest should read */
	bc_block_job_info info;
	struct {
		int type;
		int status;
		char path[PATH_MAX];
	} events[FX_MAX_EVENTS];
	int nevents;
	int consumed;
	bc_error last_err;           /* bc_last_error() in a FAILED or PAUSED callback */
};

void fx_setup(struct fx *fx);
void fx_teardown(struct fx *fx);
/* Build a chain of @n qcow2 layers (relative backing names) and open it. */
void fx_open_chain(struct fx *fx, int n);
/* The same with @cluster_size (0: the default) and bc_disk_open flags. */
void fx_open_chain_with(struct fx *fx, int n, uint32_t cluster_size,
			unsigned int disk_flags);
void fx_close_disk(struct fx *fx);
/* "<dir>/<name>" in a scratch buffer that lives until the test ends. */
const char *fx_path(struct fx *fx, const char *name);
const char *fx_fmt(struct fx *fx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Dispatch until the next event arrives (30 s at most) and check it. */
void fx_expect_event(struct fx *fx, int type, int status);
/*
 * Whether a MIRRORING event is recorded, not yet consumed, or arrives
 * within @ms while dispatching (the events stay recorded).
 */
bool fx_mirroring_within(struct fx *fx, int ms);
void fx_guest_write(struct fx *fx, uint64_t off, uint64_t len, uint8_t byte);
void fx_check_disk_equals_shadow(struct fx *fx);
void fx_check_image_equals_shadow(struct fx *fx, const char *path,
				  const char *format);
bool fx_image_matches_shadow(struct fx *fx, const char *path,
			     const char *format);
/* Whether the scratch directory takes O_DIRECT files. */
bool fx_dir_can_direct(struct fx *fx);

#endif /* BC_TESTS_API_HELPERS_H */
