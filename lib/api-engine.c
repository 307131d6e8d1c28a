/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Public wrappers: engine and events.
 */
#include "lib/blockcopy.h"

#include <stddef.h>

#include "engine/engine.h"
#include "lib/api-internal.h"

/* A public callback is called as the engine's. */
_Static_assert(__builtin_types_compatible_p(bc_block_job_cb, engine_event_cb),
	       "event callback type");

bc_engine *bc_engine_new(unsigned int flags)
{
	bc_engine *eng;
	int ret;

	bc_error_reset();
	if (api_bad_flags(flags, 0, __func__))
		return NULL;
	ret = engine_new(flags, &eng);
	if (ret < 0) {
		bc_fail_errno(ret);
		return NULL;
	}
	return eng;
}

void bc_engine_free(bc_engine *engine)
{
	if (engine)
		engine_free(engine);
}

int bc_engine_event_register(bc_engine *engine, bc_block_job_cb cb,
			     void *opaque)
{
	int ret;

	bc_error_reset();
	if (api_null(engine, "engine", __func__))
		return -1;
	if (!cb)
		return bc_fail(BC_ERR_INVALID_ARG, 0,
			       "cb in %s must not be NULL", __func__);
	ret = engine_event_register(engine, cb, opaque);
	return ret < 0 ? bc_fail_errno(ret) : ret;
}

int bc_engine_event_deregister(bc_engine *engine, int callback_id)
{
	int ret;

	bc_error_reset();
	if (api_null(engine, "engine", __func__))
		return -1;
	ret = engine_event_deregister(engine, callback_id);
	return ret < 0 ? bc_fail_errno(ret) : 0;
}

int bc_engine_event_fd(bc_engine *engine)
{
	bc_error_reset();
	if (api_null(engine, "engine", __func__))
		return -1;
	return engine_event_fd(engine);
}

int bc_engine_dispatch(bc_engine *engine, int timeout_ms)
{
	int ret;

	bc_error_reset();
	if (api_null(engine, "engine", __func__))
		return -1;
	ret = engine_dispatch(engine, timeout_ms);
	return ret < 0 ? bc_fail_errno(ret) : ret;
}
