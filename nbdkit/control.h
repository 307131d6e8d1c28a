/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The plugin's control interface: a unix socket speaking JSON lines
 * (docs/nbdkit-plugin.md). One thread accepts clients, answers each
 * request line with one response line and pushes the disk's block-job
 * events to every client as they are dispatched.
 */
#ifndef BC_NBDKIT_CONTROL_H
#define BC_NBDKIT_CONTROL_H

#include <stddef.h>

#include "lib/blockcopy.h"

struct control;

/*
 * Listen on @path (replacing a stale socket file) and start the thread.
 * Returns 0, or -errno with a one-line reason in @err.
 */
int control_start(struct control **out, bc_engine *eng, bc_disk *disk,
		  const char *path, char *err, size_t errlen);

/* Stop the thread, close every client, remove the socket. */
void control_stop(struct control *ctl);

#endif /* BC_NBDKIT_CONTROL_H */
