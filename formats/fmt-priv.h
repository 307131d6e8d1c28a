/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by fmt.c and chain.c only (not part of the format
 * layer's interface; drivers and upper layers use fmt.h).
 */
#ifndef BC_FORMATS_FMT_PRIV_H
#define BC_FORMATS_FMT_PRIV_H

#include <stdbool.h>

/*
 * Whether a backing name is a protocol reference rather than a file
 * name: "json:..." or "<proto>:..." where <proto> is one of QEMU's
 * protocol drivers (nbd, http, https, ftp, ftps, ssh, iscsi, rbd,
 * gluster, sheepdog, vvfat, file, host_device, ...) and no '/' comes
 * before the ':'. Such names are refused, never followed (CVE-2024-4467);
 * "./nbd:x" names a file.
 */
bool fmt_backing_is_protocol(const char *name);

#endif /* BC_FORMATS_FMT_PRIV_H */
