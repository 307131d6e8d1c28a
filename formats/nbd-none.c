/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbd without libnbd: the driver exists so that fmt_open() can say why
 * an NBD URI cannot be opened (meson -Dlibnbd=disabled, or libnbd-dev
 * missing at build time).
 */
#include "fmt.h"

#include <errno.h>

#include "lib/common/error.h"

static int nbd_none_open(struct fmt_image *img)
{
	bc_error_set(ERR_UNSUPPORTED, ENOTSUP,
		     "%s: NBD is not supported: blockcopy was built without libnbd",
		     img->filename);
	return -ENOTSUP;
}

const struct fmt_driver fmt_nbd_driver = {
	.name = "nbd",
	.protocol = true,
	.open = nbd_none_open,
};
