/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON-lines control socket of nbdkit-blockcopy-plugin.
 *
 * One thread polls the listening socket, up to CONTROL_CLIENTS clients,
 * the engine's event fd and a wake-up pipe. A request is one JSON object
 * on one line; the answer is one line, {"ok":true,...} or
 * {"ok":false,"error":"..."}. Events are pushed to every client as
 * {"event":"mirroring",...} lines whenever the engine has them; a client
 * tells answers from events by the key. The protocol is documented in
 * docs/nbdkit-plugin.md.
 *
 * The parser takes the flat objects the protocol uses: string, integer,
 * boolean and null values and arrays of strings; anything else is
 * refused with a message. Requests run on this thread: a pivot blocks
 * it (not the NBD clients) until the pivot is done.
 */
#include "nbdkit/control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_CLIENTS 8
#define LINE_MAX_LEN    4096
#define KEYS_MAX        8
#define FLAGS_MAX       8

struct client {
	int fd;                 /* -1 = free */
	size_t len;             /* bytes in buf */
	char buf[LINE_MAX_LEN];
};


/* --- a small JSON reader for flat objects ------------------------------- */

enum jtype { J_NULL, J_BOOL, J_INT, J_STR, J_STRS };

struct jval {
	char key[32];
	enum jtype type;
	bool b;
	uint64_t n;
	char s[1024];
	char strs[FLAGS_MAX][32];
	unsigned int nstrs;
};

struct jobj {
	struct jval v[KEYS_MAX];
	unsigned int n;
};

struct control {
	bc_engine *eng;
	bc_disk *disk;
	char *path;
	int lfd;
	int wake[2];            /* control_stop() writes to wake[1] */
	int cb_id;
	pthread_t thread;
	bool running;           /* thread started: control_stop() joins it */
	struct client clients[CONTROL_CLIENTS];
	struct jobj req;        /* the request being handled (this thread's) */
	char line[LINE_MAX_LEN + 1]; /* ...and its line */
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* A string into @out (NUL-terminated); returns the end or NULL. */
static const char *parse_str(const char *p, char *out, size_t size)
{
	size_t n = 0;

	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		char c = *p++;

		if (c == '\\') {
			switch (*p++) {
			case '"': c = '"'; break;
			case '\\': c = '\\'; break;
			case '/': c = '/'; break;
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			default: return NULL; /* \u and the rest: not needed */
			}
		}
		if (n + 1 >= size)
			return NULL;
		out[n++] = c;
	}
	if (*p != '"')
		return NULL;
	out[n] = '\0';
	return p + 1;
}

/* Parses @line into @o; returns 0 or -1 with a reason in @err. */
static int parse_obj(const char *line, struct jobj *o, const char **err)
{
	const char *p = skip_ws(line);

	o->n = 0;
	*err = "a request is one JSON object per line";
	if (*p++ != '{')
		return -1;
	p = skip_ws(p);
	if (*p == '}')
		return 0;
	for (;;) {
		struct jval *v;

		if (o->n == KEYS_MAX) {
			*err = "too many keys";
			return -1;
		}
		v = &o->v[o->n];
		memset(v, 0, sizeof(*v));
		p = parse_str(skip_ws(p), v->key, sizeof(v->key));
		if (!p)
			return -1;
		p = skip_ws(p);
		if (*p++ != ':')
			return -1;
		p = skip_ws(p);
		if (*p == '"') {
			v->type = J_STR;
			p = parse_str(p, v->s, sizeof(v->s));
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
			v->type = J_BOOL;
			v->b = *p == 't';
			p += v->b ? 4 : 5;
		} else if (!strncmp(p, "null", 4)) {
			v->type = J_NULL;
			p += 4;
		} else if (*p >= '0' && *p <= '9') {
			char *end;

			errno = 0;
			v->type = J_INT;
			v->n = strtoull(p, &end, 10);
			if (errno || *end == '.' || *end == 'e' || *end == 'E') {
				*err = "numbers are non-negative integers";
				return -1;
			}
			p = end;
		} else if (*p == '[') {
			v->type = J_STRS;
			p = skip_ws(p + 1);
			while (p && *p != ']') {
				if (v->nstrs == FLAGS_MAX) {
					*err = "too many array elements";
					return -1;
				}
				p = parse_str(p, v->strs[v->nstrs], sizeof(v->strs[0]));
				if (!p) {
					*err = "arrays hold short strings";
					return -1;
				}
				v->nstrs++;
				p = skip_ws(p);
				if (*p == ',')
					p = skip_ws(p + 1);
				else if (*p != ']')
					return -1;
			}
			if (p)
				p++;
		} else {
			return -1;
		}
		if (!p)
			return -1;
		o->n++;
		p = skip_ws(p);
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p++ != '}')
			return -1;
		if (*skip_ws(p)) {
			*err = "one object per line";
			return -1;
		}
		return 0;
	}
}

static const struct jval *get(const struct jobj *o, const char *key,
			      enum jtype type)
{
	unsigned int i;

	for (i = 0; i < o->n; i++) {
		if (!strcmp(o->v[i].key, key) && o->v[i].type == type)
			return &o->v[i];
	}
	return NULL;
}

static bool has_key(const struct jobj *o, const char *key)
{
	unsigned int i;

	for (i = 0; i < o->n; i++) {
		if (!strcmp(o->v[i].key, key))
			return true;
	}
	return false;
}

/* --- output --------------------------------------------------------------- */

/* Appends @s as a JSON string to @out (of @size, NUL-terminated). */
static void put_str(char *out, size_t size, const char *s)
{
	size_t n = strlen(out);

	if (n + 1 < size)
		out[n++] = '"';
	for (; *s && n + 7 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, size - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	if (n + 1 < size)
		out[n++] = '"';
	out[n] = '\0';
}

__attribute__((format(printf, 3, 4)))
static void put(char *out, size_t size, const char *fmt, ...)
{
	size_t n = strlen(out);
	va_list ap;

	if (n >= size)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(out + n, size - n, fmt, ap);
	va_end(ap);
}

static void send_line(struct client *c, char *line)
{
	size_t n = strlen(line), done = 0;

	line[n++] = '\n'; /* callers leave room: buffers are LINE_MAX_LEN + 1 */
	while (done < n && c->fd >= 0) {
		ssize_t r = send(c->fd, line + done, n - done, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* A client that stopped reading is dropped. */
			(void)close(c->fd);
			c->fd = -1;
			break;
		}
		done += (size_t)r;
	}
	line[n - 1] = '\0'; /* the line can be sent again */
}

/* Own frame: each answer buffer is LINE_MAX_LEN. */
__attribute__((noinline)) static void send_error(struct client *c, const char *msg)
{
	char line[LINE_MAX_LEN + 1] = "{\"ok\":false,\"error\":";

	put_str(line, LINE_MAX_LEN, msg);
	put(line, LINE_MAX_LEN, "}");
	send_line(c, line);
}

static void send_last_error(struct client *c)
{
	send_error(c, bc_last_error()->message);
}

/* Own frame: each answer buffer is LINE_MAX_LEN. */
__attribute__((noinline)) static void send_ok(struct client *c)
{
	char line[LINE_MAX_LEN + 1] = "{\"ok\":true}";

	send_line(c, line);
}

static const char *job_type_name(int type)
{
	switch (type) {
	case BC_BLOCK_JOB_TYPE_PULL:
		return "pull";
	case BC_BLOCK_JOB_TYPE_COPY:
		return "copy";
	default:
		return "unknown";
	}
}

/* --- requests ------------------------------------------------------------ */

/* Own frame: each answer buffer is LINE_MAX_LEN. */
__attribute__((noinline)) static void cmd_info(struct control *ctl, struct client *c)
{
	char line[LINE_MAX_LEN + 1] = "{\"ok\":true,\"disk\":";
	bc_block_job_info info;
	int r;

	put_str(line, LINE_MAX_LEN, bc_disk_path(ctl->disk));
	put(line, LINE_MAX_LEN, ",\"size\":%" PRId64 ",\"job\":",
	    bc_disk_size(ctl->disk));
	r = bc_get_block_job_info(ctl->disk, &info,
				  BC_BLOCK_JOB_INFO_BANDWIDTH_BYTES);
	if (r < 0) {
		send_last_error(c);
		return;
	}
	if (r == 0)
		put(line, LINE_MAX_LEN, "null}");
	else
		put(line, LINE_MAX_LEN,
		    "{\"type\":\"%s\",\"cur\":%" PRIu64 ",\"end\":%" PRIu64
		    ",\"bandwidth\":%lu}}",
		    job_type_name(info.type), info.cur, info.end, info.bandwidth);
	send_line(c, line);
}

/* Own frame: each answer buffer is LINE_MAX_LEN. */
__attribute__((noinline)) static void cmd_stats(struct control *ctl, struct client *c)
{
	char line[LINE_MAX_LEN + 1] = "{\"ok\":true,\"stats\":";
	bc_block_job_stats st;
	int r = bc_get_block_job_stats(ctl->disk, &st, 0);

	if (r < 0) {
		send_last_error(c);
		return;
	}
	if (r == 0) {
		put(line, LINE_MAX_LEN, "null}");
		send_line(c, line);
		return;
	}
	put(line, LINE_MAX_LEN,
	    "{\"active\":%s,\"type\":\"%s\",\"mode\":\"%s\",\"ready\":%s,"
	    "\"status\":%d,\"cur\":%" PRIu64 ",\"end\":%" PRIu64
	    ",\"dirty_bytes\":%" PRIu64 ",\"bytes_copied\":%" PRIu64
	    ",\"bytes_zeroed\":%" PRIu64 ",\"active_writes\":%" PRIu64
	    ",\"mirroring_ns\":%" PRIu64 ",\"pivot_stall_ns\":%" PRIu64
	    ",\"elapsed_ns\":%" PRIu64 "}}",
	    st.active ? "true" : "false", job_type_name(st.type),
	    st.mode == BC_BLOCK_JOB_MODE_WRITE_BLOCKING ? "write-blocking"
							: "background",
	    st.ready ? "true" : "false", st.status, st.cur, st.end,
	    st.dirty_bytes, st.bytes_copied, st.bytes_zeroed, st.active_writes,
	    st.mirroring_ns, st.pivot_stall_ns, st.elapsed_ns);
	send_line(c, line);
}

static const struct {
	const char *name;
	unsigned int flag;
} copy_flags[] = {
	{ "shallow", BC_BLOCK_COPY_SHALLOW },
	{ "reuse-external", BC_BLOCK_COPY_REUSE_EXT },
	{ "synchronous-writes", BC_BLOCK_COPY_SYNCHRONOUS_WRITES },
	{ "auto-converge", BC_BLOCK_COPY_AUTO_CONVERGE },
};

static void cmd_copy(struct control *ctl, struct client *c,
		     const struct jobj *o)
{
	const struct jval *dest = get(o, "dest", J_STR);
	const struct jval *flags = get(o, "flags", J_STRS);
	const struct jval *v;
	bc_block_copy_params params = { 0 };
	unsigned int f = 0, i, k;

	if (!dest) {
		send_error(c, "copy needs \"dest\": a path or an NBD URI");
		return;
	}
	for (i = 0; flags && i < flags->nstrs; i++) {
		for (k = 0; k < sizeof(copy_flags) / sizeof(copy_flags[0]); k++) {
			if (!strcmp(flags->strs[i], copy_flags[k].name))
				break;
		}
		if (k == sizeof(copy_flags) / sizeof(copy_flags[0])) {
			char msg[128];

			(void)snprintf(msg, sizeof(msg), "unknown copy flag '%s'",
				       flags->strs[i]);
			send_error(c, msg);
			return;
		}
		f |= copy_flags[k].flag;
	}
	if ((v = get(o, "bandwidth", J_INT)))
		params.bandwidth = v->n;
	if ((v = get(o, "granularity", J_INT)))
		params.granularity = (unsigned int)v->n;
	if ((v = get(o, "buf-size", J_INT)))
		params.buf_size = v->n;
	if (bc_block_copy(ctl->disk, dest->s, &params, f) < 0)
		send_last_error(c);
	else
		send_ok(c);
}

static void cmd_set_speed(struct control *ctl, struct client *c,
			  const struct jobj *o)
{
	const struct jval *bw = get(o, "bandwidth", J_INT);

	if (!bw) {
		send_error(c, "set-speed needs \"bandwidth\" in bytes/s (0 = unlimited)");
		return;
	}
	if (bc_block_job_set_speed(ctl->disk, (unsigned long)bw->n,
				   BC_BLOCK_JOB_SPEED_BANDWIDTH_BYTES) < 0)
		send_last_error(c);
	else
		send_ok(c);
}

static void cmd_abort(struct control *ctl, struct client *c, unsigned int flags)
{
	if (bc_block_job_abort(ctl->disk, flags) < 0)
		send_last_error(c);
	else
		send_ok(c);
}

static void handle_line(struct control *ctl, struct client *c, const char *line)
{
	struct jobj *o = &ctl->req;
	const char *err;
	const struct jval *cmd;

	if (parse_obj(line, o, &err) < 0) {
		send_error(c, err);
		return;
	}
	cmd = get(o, "cmd", J_STR);
	if (!cmd) {
		send_error(c, has_key(o, "cmd") ? "\"cmd\" is a string"
						 : "missing \"cmd\"");
		return;
	}
	if (!strcmp(cmd->s, "info")) {
		cmd_info(ctl, c);
	} else if (!strcmp(cmd->s, "stats")) {
		cmd_stats(ctl, c);
	} else if (!strcmp(cmd->s, "copy")) {
		cmd_copy(ctl, c, o);
	} else if (!strcmp(cmd->s, "set-speed")) {
		cmd_set_speed(ctl, c, o);
	} else if (!strcmp(cmd->s, "pivot")) {
		const struct jval *verify = get(o, "verify", J_BOOL);

		cmd_abort(ctl, c, BC_BLOCK_JOB_ABORT_PIVOT |
				  (verify && verify->b ? BC_BLOCK_JOB_ABORT_VERIFY : 0));
	} else if (!strcmp(cmd->s, "abort")) {
		cmd_abort(ctl, c, 0);
	} else {
		char msg[128];

		(void)snprintf(msg, sizeof(msg),
			       "unknown command '%.64s' (info, stats, copy, set-speed, pivot, abort)",
			       cmd->s);
		send_error(c, msg);
	}
}

/* --- events ---------------------------------------------------------------- */

static const char *status_name(int status)
{
	switch (status) {
	case BC_BLOCK_JOB_COMPLETED:
		return "completed";
	case BC_BLOCK_JOB_FAILED:
		return "failed";
	case BC_BLOCK_JOB_CANCELED:
		return "canceled";
	case BC_BLOCK_JOB_MIRRORING:
		return "mirroring";
	default:
		return "unknown";
	}
}

static void on_event(bc_engine *eng, bc_disk *disk, const char *path, int type,
		     int status, void *opaque)
{
	struct control *ctl = opaque;
	char line[LINE_MAX_LEN + 1];
	unsigned int i;

	(void)snprintf(line, LINE_MAX_LEN,
		       "{\"event\":\"%s\",\"job\":\"%s\",\"disk\":",
		       status_name(status), job_type_name(type));
	put_str(line, LINE_MAX_LEN, path);
	if (status == BC_BLOCK_JOB_FAILED) {
		/* The dispatcher set the job's error as the last error. */
		put(line, LINE_MAX_LEN, ",\"error\":");
		put_str(line, LINE_MAX_LEN, bc_last_error()->message);
	}
	put(line, LINE_MAX_LEN, "}");
	for (i = 0; i < CONTROL_CLIENTS; i++) {
		if (ctl->clients[i].fd >= 0)
			send_line(&ctl->clients[i], line);
	}
}

/* --- the thread ------------------------------------------------------------ */

static void accept_client(struct control *ctl)
{
	int fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
	unsigned int i;

	if (fd < 0)
		return;
	for (i = 0; i < CONTROL_CLIENTS; i++) {
		if (ctl->clients[i].fd < 0) {
			ctl->clients[i].fd = fd;
			ctl->clients[i].len = 0;
			return;
		}
	}
	(void)close(fd); /* full */
}

static void read_client(struct control *ctl, struct client *c)
{
	ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	char *nl;

	if (r <= 0) {
		if (r < 0 && errno == EINTR)
			return;
		(void)close(c->fd);
		c->fd = -1;
		return;
	}
	c->len += (size_t)r;
	while (c->fd >= 0 && (nl = memchr(c->buf, '\n', c->len))) {
		size_t n = (size_t)(nl - c->buf);

		memcpy(ctl->line, c->buf, n);
		ctl->line[n] = '\0';
		memmove(c->buf, nl + 1, c->len - n - 1);
		c->len -= n + 1;
		if (*ctl->line)
			handle_line(ctl, c, ctl->line);
	}
	if (c->fd >= 0 && c->len == sizeof(c->buf)) {
		send_error(c, "request line too long");
		c->len = 0;
	}
}

static void *control_main(void *arg)
{
	struct control *ctl = arg;

	for (;;) {
		struct pollfd pfd[3 + CONTROL_CLIENTS];
		unsigned int map[CONTROL_CLIENTS], n = 3, i;

		pfd[0] = (struct pollfd){ .fd = ctl->wake[0], .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = ctl->lfd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = bc_engine_event_fd(ctl->eng),
					  .events = POLLIN };
		for (i = 0; i < CONTROL_CLIENTS; i++) {
			if (ctl->clients[i].fd < 0)
				continue;
			pfd[n] = (struct pollfd){ .fd = ctl->clients[i].fd,
						  .events = POLLIN };
			map[n - 3] = i;
			n++;
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[2].revents)
			(void)bc_engine_dispatch(ctl->eng, 0);
		if (pfd[1].revents)
			accept_client(ctl);
		for (i = 3; i < n; i++) {
			if (pfd[i].revents)
				read_client(ctl, &ctl->clients[map[i - 3]]);
		}
	}
	return NULL;
}

static int start_failed(struct control *ctl, int err, const char *what,
			char *msg, size_t size)
{
	char ebuf[128];

	(void)snprintf(msg, size, "%s: %s", what,
		       strerror_r(err, ebuf, sizeof(ebuf)));
	control_stop(ctl);
	return -err;
}

int control_start(struct control **out, bc_engine *eng, bc_disk *disk,
		  const char *path, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct control *ctl;
	struct stat st;
	unsigned int i;
	int r;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		(void)snprintf(err, errlen, "socket path longer than %zu bytes",
			       sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl || !(ctl->path = strdup(path))) {
		free(ctl);
		(void)snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ctl->eng = eng;
	ctl->disk = disk;
	ctl->lfd = ctl->wake[0] = ctl->wake[1] = -1;
	ctl->cb_id = -1;
	for (i = 0; i < CONTROL_CLIENTS; i++)
		ctl->clients[i].fd = -1;
	if (pipe2(ctl->wake, O_CLOEXEC) < 0)
		return start_failed(ctl, errno, "pipe", err, errlen);
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->lfd < 0)
		return start_failed(ctl, errno, "socket", err, errlen);
	/* A stale socket from an earlier run; never a regular file. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void)unlink(path);
	strcpy(addr.sun_path, path);
	if (bind(ctl->lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return start_failed(ctl, errno, "bind", err, errlen);
	if (listen(ctl->lfd, CONTROL_CLIENTS) < 0)
		return start_failed(ctl, errno, "listen", err, errlen);
	ctl->cb_id = bc_engine_event_register(eng, on_event, ctl);
	if (ctl->cb_id < 0)
		return start_failed(ctl, EINVAL, "event callback", err, errlen);
	r = pthread_create(&ctl->thread, NULL, control_main, ctl);
	if (r)
		return start_failed(ctl, r, "thread", err, errlen);
	ctl->running = true;
	*out = ctl;
	return 0;
}

void control_stop(struct control *ctl)
{
	unsigned int i;

	if (!ctl)
		return;
	if (ctl->running) {
		char b = 1;

		if (write(ctl->wake[1], &b, 1) == 1)
			(void)pthread_join(ctl->thread, NULL);
	}
	if (ctl->cb_id >= 0)
		(void)bc_engine_event_deregister(ctl->eng, ctl->cb_id);
	for (i = 0; i < CONTROL_CLIENTS; i++) {
		if (ctl->clients[i].fd >= 0)
			(void)close(ctl->clients[i].fd);
	}
	if (ctl->lfd >= 0) {
		(void)close(ctl->lfd);
		(void)unlink(ctl->path);
	}
	if (ctl->wake[0] >= 0)
		(void)close(ctl->wake[0]);
	if (ctl->wake[1] >= 0)
		(void)close(ctl->wake[1]);
	free(ctl->path);
	free(ctl);
}
