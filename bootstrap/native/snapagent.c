/*
 * snapagent: serves the Lambda Runtime API inside a sandbox and relays invocations
 * between the host (control channel, bootstrap/protocol.py) and the runtime.
 * snapagent.h says how it runs (inproc thread or PID 2 of the agent layout).
 *
 * - The Runtime API listens on 127.0.0.1:9001 of the sandbox's network namespace:
 *   HTTP/1.1 with keep-alive, pipelining, Content-Length or chunked bodies,
 *   "Expect: 100-continue"; each response is one write with TCP_NODELAY set
 *   (PLATFORM.md: separate writes cost ~86 ms per invoke).
 * - The runtime's progress is one explicit state machine (enum phase, allowed[]):
 *   every route names the phases it is valid in, anything else gets a 403
 *   InvalidStateTransition; deny by default, as the RIE does.
 * - It parks the runtime's GET /runtime/restore/next at publish, tells the host the
 *   process may be checkpointed ("snapshot"), and answers it when a restored
 *   clone is resumed.
 * - The runtime's stdout/stderr arrive on a pipe and go to the host as "log"
 *   frames; output written before a result reaches the host before the result.
 *
 * One epoll loop, nothing blocks but writes to the host: a misbehaving runtime
 * (garbage HTTP, wrong request ids, double responses, huge bodies, hundreds of
 * connections) gets a 4xx and the agent stays up. It must stay small: it is frozen
 * into every snapshot and its pages are restored with every clone.
 *
 * Routes (prefix /2018-06-01/runtime):
 *   GET  /invocation/next                 200 event + Lambda-Runtime-* headers
 *   POST /invocation/{id}/response        202 | 400 InvalidRequestID | 413
 *                                         (buffered, or streamed: below)
 *   POST /invocation/{id}/error           202 | 400
 *   POST /init/error                      202 | 403 after init
 *   GET  /restore/next                    200 once resumed | 403 if not snap-start
 *   POST /restore/error                   202 | 403 before a resume
 *
 * Streamed responses (Lambda-Runtime-Function-Response-Mode: streaming, e.g. node's
 * awslambda.streamifyResponse): the body of the running invocation's response is not
 * buffered but forwarded to the host as it arrives ("stream", then "stream_chunk"
 * frames), up to 20 MiB; the result frame follows when the body ends: "response"
 * (empty payload), or "error" when the runtime sent the error trailers
 * (Lambda-Runtime-Function-Error-Type / -Body, the body base64: decoded here) or the
 * stream outgrew its limit (Function.ResponseSizeTooLarge).
 */
#define _GNU_SOURCE
#include "snapagent.h"
#include "msgpack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define API_PORT 9001
#define MAX_REQUEST_BODY (6 * 1024 * 1024)   /* Lambda's sync response limit */
#define MAX_STREAM_BODY (20 * 1024 * 1024)   /* Lambda's streamed response limit */
#define MAX_ERROR_BODY (1024 * 1024)
#define MAX_HEAD (64 * 1024)
#define MAX_FRAME (16 * 1024 * 1024)
#define FINISHED_KEPT 256
#define PREFIX "/2018-06-01/runtime"
#define INVOCATION PREFIX "/invocation/"
#define ERROR_TYPE_HEADER "lambda-runtime-function-error-type"
#define ERROR_BODY_TRAILER "lambda-runtime-function-error-body"
#define RESPONSE_MODE_HEADER "lambda-runtime-function-response-mode"

/* ---- the runtime's phases ------------------------------------------------------ */

enum phase { STARTING, INIT, PARKED, RESTORING, IDLE, INVOKING, EXITED };
static const char *const phase_name[] = {
	"starting", "init", "parked", "restoring", "idle", "invoking", "exited"
};
#define BIT(p) (1u << (p))
static const unsigned transitions[] = {
	[STARTING] = BIT(INIT) | BIT(EXITED),
	[INIT] = BIT(PARKED) | BIT(IDLE) | BIT(EXITED),
	[PARKED] = BIT(RESTORING) | BIT(EXITED),
	[RESTORING] = BIT(IDLE) | BIT(EXITED),
	[IDLE] = BIT(INVOKING) | BIT(EXITED),
	[INVOKING] = BIT(IDLE) | BIT(EXITED),
	[EXITED] = 0,
};

/* ---- state --------------------------------------------------------------------- */

enum kind { K_LISTENER = 1, K_CTL, K_LOG, K_SIGNAL, K_CONN };

struct conn {
	enum kind kind;             /* K_CONN: first, so epoll's ptr says what it is */
	int fd;
	struct buf in;              /* received, not yet consumed */
	int parked;                 /* a GET /next or /restore/next waiting for an answer */
	int closed;
	int processing;             /* process_conn() is on the stack for it */
	/* the request being read */
	int have_head;
	char method[16];
	char *target;
	int keep_alive;
	int chunked;
	long long content_length;
	int expect_continue, sent_continue;
	char error_type[257];
	struct buf body;
	size_t body_seen;
	int too_large;
	int chunk_state;            /* 0 size line, 1 data, 2 data CRLF, 3 trailers, 4 done */
	size_t chunk_left;
	int streaming;              /* Lambda-Runtime-Function-Response-Mode: streaming */
	char content_type[129];
	char *stream_id;            /* forwarding this invocation's response as it arrives */
	struct buf error_body;      /* the Lambda-Runtime-Function-Error-Body trailer */
	struct conn *next_all;
};

struct marker {
	enum kind kind;
};

struct invoke {
	struct invoke *next;
	char *raw;                  /* a copy of the frame; the tree points into it */
	struct mp_value msg;
};

static struct {
	int ctl, listener, log_fd, sigfd, epfd;
	int inproc;
	int snap_start;
	enum phase phase;
	pid_t runtime_pid;
	struct conn *all;
	struct conn **waiters;
	size_t nwaiters, capwaiters;
	struct conn *restore_waiter;
	struct invoke *queue, *queue_tail;
	char *current;
	char *finished[FINISHED_KEPT];
	int finished_next;
	struct buf ctl_in;
	pthread_mutex_t lock;
	int started;
} A = { .ctl = -1, .listener = -1, .log_fd = -1, .sigfd = -1, .epfd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER };

static struct marker m_listener = { K_LISTENER }, m_ctl = { K_CTL }, m_log = { K_LOG },
		     __attribute__((unused))
		     m_signal = { K_SIGNAL };

static void process_conn(struct conn *c);
static long b64_decode(char *s, size_t n);
static void dispatch(void);

static void die(int code)
{
	_exit(code);
}

static int to(enum phase target)
{
	if (!(transitions[A.phase] & BIT(target)))
		return -1;
	A.phase = target;
	return 0;
}

/* ---- writing ------------------------------------------------------------------- */

/* write all of it to a non-blocking fd; stalled longer than timeout_ms (-1: never
 * give up) or an error: -1 */
static int send_all(int fd, const char *p, size_t n, int timeout_ms)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { fd, POLLOUT, 0 };
			int r = poll(&pfd, 1, timeout_ms);

			if (r > 0 || (r < 0 && errno == EINTR))
				continue;
		}
		return -1;
	}
	return 0;
}

/* ---- the host channel ---------------------------------------------------------- */

struct frame {
	struct buf b;
};

static void frame_begin(struct frame *f, const char *op, uint32_t fields)
{
	memset(f, 0, sizeof(*f));
	buf_put(&f->b, "\0\0\0\0", 4);
	mp_map(&f->b, fields + 1);
	mp_cstr(&f->b, "op");
	mp_cstr(&f->b, op);
}

static void emit_frame(struct frame *f)
{
	uint32_t n = (uint32_t)(f->b.len - 4);

	if (!f->b.data) {
		die(1);
	}
	f->b.data[0] = (char)(n >> 24);
	f->b.data[1] = (char)(n >> 16);
	f->b.data[2] = (char)(n >> 8);
	f->b.data[3] = (char)n;
	if (send_all(A.ctl, f->b.data, f->b.len, -1))
		die(0);          /* the host is gone: the sandbox dies with it */
	buf_free(&f->b);
}

static void emit_op(const char *op)
{
	struct frame f;

	frame_begin(&f, op, 0);
	emit_frame(&f);
}

static void emit_log(const char *data, size_t n)
{
	struct frame f;

	frame_begin(&f, "log", 1);
	mp_cstr(&f.b, "data");
	mp_bin(&f.b, data, n);
	emit_frame(&f);
}

static void emit_logf(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		emit_log(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void drain_logs(void)
{
	char data[65536];

	while (A.log_fd >= 0) {
		ssize_t n = read(A.log_fd, data, sizeof(data));

		if (n > 0) {
			emit_log(data, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		epoll_ctl(A.epfd, EPOLL_CTL_DEL, A.log_fd, NULL);
		close(A.log_fd);
		A.log_fd = -1;
	}
}

static void emit_exit(int status)
{
	struct frame f;

	drain_logs();
	frame_begin(&f, "exit", 2);
	mp_cstr(&f.b, "status");
	mp_int(&f.b, status);
	mp_cstr(&f.b, "inflight");
	if (A.current)
		mp_cstr(&f.b, A.current);
	else
		mp_nil(&f.b);
	emit_frame(&f);
	A.phase = EXITED;
}

/* ---- JSON and headers ---------------------------------------------------------- */

static void json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	buf_put(b, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };

			buf_put(b, e, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

			buf_put(b, e, 6);   /* bytes, not UTF-8 decoding: always valid JSON */
		} else {
			buf_put(b, s + i, 1);
		}
	}
	buf_put(b, "\"", 1);
}

static void json_error(struct buf *b, const char *message, const char *type)
{
	buf_put(b, "{\"errorMessage\": ", 17);
	json_str(b, message, strlen(message));
	buf_put(b, ", \"errorType\": ", 15);
	json_str(b, type, strlen(type));
	buf_put(b, "}", 1);
}

static const char *reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	}
	return "Unknown";
}

/* a caller's value (trace id, client-context JSON) as a header value: CR, LF and
 * NUL blanked (they are whitespace in the JSON, so its meaning stays), trimmed */
static void header_value(struct buf *out, const char *name, const struct mp_value *v)
{
	size_t s = 0, e, i;

	if (!v || (v->type != MP_STR && v->type != MP_BIN) || !v->n)
		return;
	e = v->n;
	while (s < e && (v->p[s] == ' ' || v->p[s] == '\t' || v->p[s] == '\r' ||
			 v->p[s] == '\n' || v->p[s] == '\0'))
		s++;
	while (e > s && (v->p[e - 1] == ' ' || v->p[e - 1] == '\t' || v->p[e - 1] == '\r' ||
			 v->p[e - 1] == '\n' || v->p[e - 1] == '\0'))
		e--;
	if (s == e)
		return;
	buf_put(out, name, strlen(name));
	buf_put(out, ": ", 2);
	for (i = s; i < e; i++) {
		char c = v->p[i];

		if (c == '\r' || c == '\n' || c == '\0')
			c = ' ';
		buf_put(out, &c, 1);
	}
	buf_put(out, "\r\n", 2);
}

/* ---- connections --------------------------------------------------------------- */

static void reset_request(struct conn *c)
{
	free(c->target);
	c->target = NULL;
	buf_free(&c->body);
	c->have_head = 0;
	c->method[0] = 0;
	c->keep_alive = 1;
	c->chunked = 0;
	c->content_length = 0;
	c->expect_continue = c->sent_continue = 0;
	c->error_type[0] = 0;
	c->body_seen = 0;
	c->too_large = 0;
	c->chunk_state = 0;
	c->chunk_left = 0;
	c->streaming = 0;
	c->content_type[0] = 0;
	free(c->stream_id);
	c->stream_id = NULL;
	buf_free(&c->error_body);
}

static void remove_waiter(struct conn *c)
{
	size_t i, j = 0;

	for (i = 0; i < A.nwaiters; i++)
		if (A.waiters[i] != c)
			A.waiters[j++] = A.waiters[i];
	A.nwaiters = j;
	if (A.restore_waiter == c)
		A.restore_waiter = NULL;
}

static void close_conn(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	remove_waiter(c);
	epoll_ctl(A.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	buf_free(&c->in);
	reset_request(c);
	/* freed in the loop, after the events of this round (epoll may still name it) */
}

static void free_closed(void)
{
	struct conn **pp = &A.all;

	while (*pp) {
		struct conn *c = *pp;

		if (c->closed) {
			*pp = c->next_all;
			free(c);
		} else {
			pp = &c->next_all;
		}
	}
}

static void respond_h(struct conn *c, int status, const char *body, size_t n,
		      const char *headers)
{
	struct buf out = { 0 };
	char head[256];
	int was_parked = c->parked;
	int hl;

	if (c->closed)
		return;
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
		      status, reason(status), n);
	buf_put(&out, head, (size_t)hl);
	if (headers)
		buf_put(&out, headers, strlen(headers));
	if (!c->keep_alive)
		buf_put(&out, "Connection: close\r\n", 19);
	buf_put(&out, "\r\n", 2);
	if (n)
		buf_put(&out, body, n);
	c->parked = 0;
	if (!out.data || send_all(c->fd, out.data, out.len, 10000)) {
		buf_free(&out);
		close_conn(c);          /* a runtime that stopped reading, or is gone */
		return;
	}
	buf_free(&out);
	if (!c->keep_alive) {
		close_conn(c);
		return;
	}
	if (was_parked && !c->processing)   /* answered from outside its own read: a */
		process_conn(c);            /* request may be buffered behind it */
}

static void respond(struct conn *c, int status, const char *body, size_t n)
{
	respond_h(c, status, body, n, NULL);
}

static void error_reply(struct conn *c, int status, const char *type, const char *message)
{
	struct buf b = { 0 };

	json_error(&b, message, type);
	respond(c, status, b.data, b.len);
	buf_free(&b);
}

static void bad_request(struct conn *c, int status, const char *why)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "bad HTTP request: %s", why);
	c->keep_alive = 0;
	error_reply(c, status, "InvalidRequest", msg);
	close_conn(c);
}

static void ok202(struct conn *c)
{
	static const char body[] = "{\"status\": \"OK\"}";

	respond(c, 202, body, sizeof(body) - 1);
}

/* ---- routes -------------------------------------------------------------------- */

static void emit_typed(const char *op, const char *id, const char *type, const char *body,
		       size_t n, int body_is_payload)
{
	struct frame f;

	frame_begin(&f, op, (id ? 1 : 0) + (type ? 1 : 0) + 1);
	if (id) {
		mp_cstr(&f.b, "id");
		mp_cstr(&f.b, id);
	}
	if (type) {
		mp_cstr(&f.b, "type");
		mp_cstr(&f.b, type);
	}
	mp_cstr(&f.b, body_is_payload ? "payload" : "body");
	mp_bin(&f.b, body, n);
	emit_frame(&f);
}

static const char *error_type(struct conn *c)
{
	return c->error_type[0] ? c->error_type : "Runtime.Unknown";
}

static void route_init_error(struct conn *c, const char *body, size_t n)
{
	char type[257];

	snprintf(type, sizeof(type), "%s", error_type(c));
	ok202(c);
	drain_logs();
	emit_typed("init_error", NULL, type, body, n < MAX_ERROR_BODY ? n : MAX_ERROR_BODY, 0);
}

static void route_restore_error(struct conn *c, const char *body, size_t n)
{
	char type[257];

	snprintf(type, sizeof(type), "%s", error_type(c));
	ok202(c);
	drain_logs();
	emit_typed("restore_error", NULL, type, body, n < MAX_ERROR_BODY ? n : MAX_ERROR_BODY, 0);
}

static void route_restore_next(struct conn *c, const char *body, size_t n)
{
	(void)body;
	(void)n;
	if (!A.snap_start) {
		error_reply(c, 403, "InvalidStateTransition",
			    "restore/next is only valid in snap-start mode");
		return;
	}
	if (A.phase != INIT) {          /* already resumed: nothing to wait for */
		respond(c, 200, "", 0);
		return;
	}
	to(PARKED);
	c->parked = 1;
	A.restore_waiter = c;
	drain_logs();
	emit_op("snapshot");
}

static void route_next(struct conn *c, const char *body, size_t n)
{
	(void)body;
	(void)n;
	if (A.phase == INIT || A.phase == RESTORING) {
		to(IDLE);
		drain_logs();
		emit_op("ready");
	}
	if (A.nwaiters == A.capwaiters) {
		size_t cap = A.capwaiters ? 2 * A.capwaiters : 8;
		struct conn **w = realloc(A.waiters, cap * sizeof(*w));

		if (!w) {
			close_conn(c);
			return;
		}
		A.waiters = w;
		A.capwaiters = cap;
	}
	c->parked = 1;
	A.waiters[A.nwaiters++] = c;
	dispatch();
}

static int finished(const char *id)
{
	int i;

	for (i = 0; i < FINISHED_KEPT; i++)
		if (A.finished[i] && strcmp(A.finished[i], id) == 0)
			return 1;
	return 0;
}

static void route_result(struct conn *c, const char *id, int is_error, const char *body,
			 size_t n)
{
	char type[257], msg[300];
	char *rid;

	if ((A.phase != INVOKING && A.phase != IDLE) || !A.current || strcmp(id, A.current)) {
		if (finished(id)) {
			snprintf(msg, sizeof(msg), "invocation %.200s already has a result", id);
			error_reply(c, 400, "InvalidStateTransition", msg);
		} else {
			snprintf(msg, sizeof(msg), "unknown request id %.100s", id);
			error_reply(c, 400, "InvalidRequestID", msg);
		}
		return;
	}
	rid = A.current;
	A.current = NULL;
	to(IDLE);
	free(A.finished[A.finished_next]);
	A.finished[A.finished_next] = strdup(rid);
	A.finished_next = (A.finished_next + 1) % FINISHED_KEPT;
	snprintf(type, sizeof(type), "%s", error_type(c));
	if (c->too_large) {
		/* Lambda's limits: 6 MiB buffered, 20 MiB streamed (what fit was forwarded) */
		size_t limit = c->stream_id ? MAX_STREAM_BODY : MAX_REQUEST_BODY;
		char big[160], why[80];
		int bn = snprintf(big, sizeof(big),
				  "{\"errorMessage\": \"Response payload size exceeded maximum allowed "
				  "payload size (%zu bytes).\", \"errorType\": "
				  "\"Function.ResponseSizeTooLarge\"}", limit);

		snprintf(why, sizeof(why), "%sresponse exceeds %zu bytes",
			 c->stream_id ? "streamed " : "", limit);
		error_reply(c, 413, "RequestEntityTooLarge", why);
		drain_logs();
		emit_typed("error", rid, "Function.ResponseSizeTooLarge", big, (size_t)bn, 0);
	} else if (c->stream_id && c->error_type[0]) {
		/* the runtime failed mid-stream: its error came in the trailers */
		long dn = c->error_body.data ? b64_decode(c->error_body.data, c->error_body.len) : 0;

		ok202(c);
		drain_logs();
		if (dn < 0)
			emit_typed("error", rid, type, c->error_body.data, c->error_body.len, 0);
		else
			emit_typed("error", rid, type, dn ? c->error_body.data : "", (size_t)dn, 0);
	} else {
		ok202(c);
		drain_logs();
		if (!is_error)
			emit_typed("response", rid, NULL, body, n, 1);
		else
			emit_typed("error", rid, type, body, n < MAX_ERROR_BODY ? n : MAX_ERROR_BODY, 0);
	}
	free(rid);
	dispatch();
}

struct route {
	const char *path;
	const char *method;
	void (*handler)(struct conn *, const char *, size_t);
	unsigned phases;
};

static const struct route routes[] = {
	{ PREFIX "/invocation/next", "GET", route_next,
	  BIT(INIT) | BIT(RESTORING) | BIT(IDLE) | BIT(INVOKING) },
	{ PREFIX "/init/error", "POST", route_init_error, BIT(INIT) },
	{ PREFIX "/restore/next", "GET", route_restore_next,
	  BIT(INIT) | BIT(RESTORING) | BIT(IDLE) | BIT(INVOKING) },
	/* after a resume; runtimes checkpointed in GET /next run their after-restore
	 * hooks when the first event arrives (node's preload), so INVOKING too */
	{ PREFIX "/restore/error", "POST", route_restore_error,
	  BIT(RESTORING) | BIT(IDLE) | BIT(INVOKING) },
};

static void route(struct conn *c)
{
	const char *t = c->target;
	char msg[300];
	size_t i;

	if (strncmp(t, INVOCATION, sizeof(INVOCATION) - 1) == 0) {
		const char *id = t + sizeof(INVOCATION) - 1;
		const char *slash = strchr(id, '/');

		if (slash && slash > id && (!strcmp(slash, "/response") || !strcmp(slash, "/error"))) {
			char rid[512];

			if (strcmp(c->method, "POST")) {
				snprintf(msg, sizeof(msg), "%s not allowed", c->method);
				error_reply(c, 405, "MethodNotAllowed", msg);
				return;
			}
			snprintf(rid, sizeof(rid), "%.*s", (int)(slash - id), id);
			route_result(c, rid, slash[1] == 'e', c->body.data ? c->body.data : "",
				     c->body.len);
			return;
		}
	}
	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(t, routes[i].path))
			continue;
		if (strcmp(c->method, routes[i].method)) {
			snprintf(msg, sizeof(msg), "%s not allowed", c->method);
			error_reply(c, 405, "MethodNotAllowed", msg);
		} else if (!(routes[i].phases & BIT(A.phase))) {
			snprintf(msg, sizeof(msg), "%s is not valid while the runtime is %s",
				 t + sizeof(PREFIX) - 1, phase_name[A.phase]);
			error_reply(c, 403, "InvalidStateTransition", msg);
		} else {
			routes[i].handler(c, c->body.data ? c->body.data : "", c->body.len);
		}
		return;
	}
	snprintf(msg, sizeof(msg), "unknown path %.200s", t);
	error_reply(c, 404, "NotFound", msg);
}

/* ---- HTTP parsing -------------------------------------------------------------- */

static int is_tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* parse the head in [p, p+n) (ends before the blank line); 0, or -1 with *why */
static int parse_head(struct conn *c, char *p, size_t n, const char **why)
{
	char *end = p + n, *line = p, *eol, *sp1, *sp2;
	int have_length = 0;

	eol = memmem(line, (size_t)(end - line), "\r\n", 2);
	if (!eol)
		eol = end;
	sp1 = memchr(line, ' ', (size_t)(eol - line));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || sp1 == line || (size_t)(sp1 - line) >= sizeof(c->method)) {
		*why = "malformed request line";
		return -1;
	}
	for (char *q = line; q < sp1; q++)
		if (!is_tchar(*q)) {
			*why = "malformed method";
			return -1;
		}
	memcpy(c->method, line, (size_t)(sp1 - line));
	c->method[sp1 - line] = 0;
	if (eol - sp2 - 1 == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0)
		c->keep_alive = 1;
	else if (eol - sp2 - 1 == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0)
		c->keep_alive = 0;
	else {
		*why = "unsupported HTTP version";
		return -1;
	}
	for (char *q = sp1 + 1; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			*why = "malformed target";
			return -1;
		}
	{
		char *q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
		size_t tl = (size_t)((q ? q : sp2) - sp1 - 1);

		c->target = strndup(sp1 + 1, tl);
		if (!c->target) {
			*why = "out of memory";
			return -1;
		}
	}
	for (line = eol + 2; line < end; line = eol + 2) {
		char *colon, *v, *ve;
		size_t nl;

		eol = memmem(line, (size_t)(end - line), "\r\n", 2);
		if (!eol)
			eol = end;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon || colon == line) {
			*why = "malformed header line";
			return -1;
		}
		for (char *q = line; q < colon; q++)
			if (!is_tchar(*q)) {
				*why = "malformed header name";
				return -1;
			}
		nl = (size_t)(colon - line);
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
			;
		if (nl == 14 && !strncasecmp(line, "content-length", 14)) {
			long long len = 0;
			char *q;

			if (v == ve) {
				*why = "bad Content-Length";
				return -1;
			}
			for (q = v; q < ve; q++) {
				if (*q < '0' || *q > '9' || len > (1LL << 40)) {
					*why = "bad Content-Length";
					return -1;
				}
				len = len * 10 + (*q - '0');
			}
			if (have_length && len != c->content_length) {
				*why = "conflicting Content-Length";
				return -1;
			}
			have_length = 1;
			c->content_length = len;
		} else if (nl == 17 && !strncasecmp(line, "transfer-encoding", 17)) {
			if (ve - v != 7 || strncasecmp(v, "chunked", 7)) {
				*why = "unsupported Transfer-Encoding";
				return -1;
			}
			c->chunked = 1;
		} else if (nl == 10 && !strncasecmp(line, "connection", 10)) {
			if (ve - v == 5 && !strncasecmp(v, "close", 5))
				c->keep_alive = 0;
		} else if (nl == 6 && !strncasecmp(line, "expect", 6)) {
			if (ve - v == 12 && !strncasecmp(v, "100-continue", 12))
				c->expect_continue = 1;
		} else if (nl == sizeof(ERROR_TYPE_HEADER) - 1 &&
			   !strncasecmp(line, ERROR_TYPE_HEADER, nl)) {
			snprintf(c->error_type, sizeof(c->error_type), "%.*s", (int)(ve - v), v);
		} else if (nl == sizeof(RESPONSE_MODE_HEADER) - 1 &&
			   !strncasecmp(line, RESPONSE_MODE_HEADER, nl)) {
			c->streaming = ve - v == 9 && !strncasecmp(v, "streaming", 9);
		} else if (nl == 12 && !strncasecmp(line, "content-type", 12)) {
			snprintf(c->content_type, sizeof(c->content_type), "%.*s", (int)(ve - v), v);
		}
	}
	if (c->chunked)
		c->content_length = 0;
	return 0;
}

static void emit_chunk(const char *id, const char *data, size_t n)
{
	struct frame f;

	drain_logs();           /* what the function printed before it wrote this */
	frame_begin(&f, "stream_chunk", 2);
	mp_cstr(&f.b, "id");
	mp_cstr(&f.b, id);
	mp_cstr(&f.b, "data");
	mp_bin(&f.b, data, n);
	emit_frame(&f);
}

/* a request head was parsed: a streamed response of the running invocation is
 * forwarded from now on (anything else is buffered and routed when complete) */
static void stream_begin(struct conn *c)
{
	const char *id = c->target + sizeof(INVOCATION) - 1;
	size_t n;
	struct frame f;

	if (!c->streaming || strcmp(c->method, "POST") || A.phase != INVOKING || !A.current ||
	    strncmp(c->target, INVOCATION, sizeof(INVOCATION) - 1))
		return;
	n = strlen(A.current);
	if (strncmp(id, A.current, n) || strcmp(id + n, "/response"))
		return;
	c->stream_id = strdup(A.current);
	if (!c->stream_id)
		return;
	drain_logs();
	frame_begin(&f, "stream", 2);
	mp_cstr(&f.b, "id");
	mp_cstr(&f.b, c->stream_id);
	mp_cstr(&f.b, "content_type");
	mp_cstr(&f.b, c->content_type[0] ? c->content_type : "application/octet-stream");
	emit_frame(&f);
}

/* a trailer line [p, eol) of a chunked body */
static void trailer_line(struct conn *c, const char *p, const char *eol)
{
	const char *colon = memchr(p, ':', (size_t)(eol - p)), *v, *ve;
	size_t nl;

	if (!colon)
		return;
	nl = (size_t)(colon - p);
	for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
		;
	for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
		;
	if (nl == sizeof(ERROR_TYPE_HEADER) - 1 && !strncasecmp(p, ERROR_TYPE_HEADER, nl))
		snprintf(c->error_type, sizeof(c->error_type), "%.*s", (int)(ve - v), v);
	else if (nl == sizeof(ERROR_BODY_TRAILER) - 1 && !strncasecmp(p, ERROR_BODY_TRAILER, nl) &&
		 (size_t)(ve - v) <= 2 * MAX_ERROR_BODY) {
		buf_free(&c->error_body);
		buf_put(&c->error_body, v, (size_t)(ve - v));
	}
}

/* decode base64 in place; the decoded length, or -1 if it is not base64 */
static long b64_decode(char *s, size_t n)
{
	size_t i, out = 0;
	unsigned acc = 0;
	int bits = 0;

	for (i = 0; i < n; i++) {
		int ch = (unsigned char)s[i], d;

		if (ch == '=')
			break;
		d = ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26 :
		    ch >= '0' && ch <= '9' ? ch - '0' + 52 : ch == '+' || ch == '-' ? 62 :
		    ch == '/' || ch == '_' ? 63 : -1;
		if (d < 0)
			return -1;
		acc = (acc << 6) | (unsigned)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			s[out++] = (char)(acc >> bits);
		}
	}
	return (long)out;
}

static void body_bytes(struct conn *c, const char *p, size_t n)
{
	if (c->stream_id) {
		c->body_seen += n;
		if (c->body_seen > MAX_STREAM_BODY)
			c->too_large = 1;          /* what fit was sent; the rest is dropped */
		else if (n)
			emit_chunk(c->stream_id, p, n);
		return;
	}
	c->body_seen += n;
	if (c->body_seen > MAX_REQUEST_BODY + 1024) {
		c->too_large = 1;
		buf_free(&c->body);
		return;
	}
	buf_put(&c->body, p, n);
}

/* consume body bytes from the front of c->in; 1 when the body is complete, 0 for
 * more data, -1 for a malformed chunked body */
static int read_body(struct conn *c, size_t *used)
{
	char *p = c->in.data, *end = c->in.data + c->in.len;

	*used = 0;
	if (!c->chunked) {
		size_t want = (size_t)c->content_length - c->body_seen;
		size_t take = (size_t)(end - p) < want ? (size_t)(end - p) : want;

		body_bytes(c, p, take);
		*used = take;
		return c->body_seen == (size_t)c->content_length;
	}
	while (p < end) {
		if (c->chunk_state == 0 || c->chunk_state == 3) {     /* a line */
			char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);

			if (!eol)
				return (end - p) > 1024 ? -1 : 0;
			if (c->chunk_state == 0) {
				size_t size = 0;
				char *q = p;

				if (q == eol)
					return -1;
				for (; q < eol && *q != ';'; q++) {
					int d = (*q >= '0' && *q <= '9') ? *q - '0' :
						(*q >= 'a' && *q <= 'f') ? *q - 'a' + 10 :
						(*q >= 'A' && *q <= 'F') ? *q - 'A' + 10 : -1;

					if (d < 0 || size > (1UL << 40))
						return -1;
					size = size * 16 + (size_t)d;
				}
				c->chunk_left = size;
				c->chunk_state = size ? 1 : 3;
			} else if (eol == p) {
				p = eol + 2;
				*used = (size_t)(p - c->in.data);
				c->chunk_state = 4;
				return 1;
			} else {
				trailer_line(c, p, eol);
			}
			p = eol + 2;
		} else if (c->chunk_state == 1) {
			size_t take = (size_t)(end - p) < c->chunk_left ? (size_t)(end - p) : c->chunk_left;

			body_bytes(c, p, take);
			p += take;
			c->chunk_left -= take;
			if (!c->chunk_left)
				c->chunk_state = 2;
		} else if (c->chunk_state == 2) {
			if (end - p < 2)
				break;
			if (p[0] != '\r' || p[1] != '\n')
				return -1;
			p += 2;
			c->chunk_state = 0;
		}
		*used = (size_t)(p - c->in.data);
	}
	*used = (size_t)(p - c->in.data);
	return 0;
}

static void consume(struct conn *c, size_t n)
{
	memmove(c->in.data, c->in.data + n, c->in.len - n);
	c->in.len -= n;
}

static void parse_requests(struct conn *c);

static void process_conn(struct conn *c)
{
	c->processing = 1;
	parse_requests(c);
	c->processing = 0;
}

static void parse_requests(struct conn *c)
{
	while (!c->closed && !c->parked) {
		if (!c->have_head) {
			char *p = c->in.data, *end = c->in.data + c->in.len, *blank;
			const char *why = NULL;
			size_t skip = 0;

			if (!c->in.len)
				return;
			/* blank lines before a request line are tolerated, a few */
			while (skip + 2 <= c->in.len && p[skip] == '\r' && p[skip + 1] == '\n')
				skip += 2;
			if (skip > 8) {
				bad_request(c, 400, "blank lines instead of a request");
				return;
			}
			blank = memmem(p + skip, (size_t)(end - p - skip), "\r\n\r\n", 4);
			if (!blank) {
				if (c->in.len > MAX_HEAD)
					bad_request(c, 431, "request head too large");
				return;
			}
			if ((size_t)(blank - p) > MAX_HEAD) {
				bad_request(c, 431, "request head too large");
				return;
			}
			if (parse_head(c, p + skip, (size_t)(blank - p - skip), &why)) {
				bad_request(c, 400, why);
				return;
			}
			c->have_head = 1;
			consume(c, (size_t)(blank + 4 - p));
			stream_begin(c);
		}
		{
			size_t used;
			int done = read_body(c, &used);

			if (done < 0) {
				bad_request(c, 400, "malformed chunked body");
				return;
			}
			consume(c, used);
			if (!done) {
				if (c->expect_continue && !c->sent_continue) {
					static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

					c->sent_continue = 1;
					if (send_all(c->fd, cont, sizeof(cont) - 1, 10000)) {
						close_conn(c);
						return;
					}
				}
				return;
			}
		}
		{
			int keep_alive = c->keep_alive;   /* a parked request is answered later */

			route(c);
			if (c->closed)
				return;
			reset_request(c);
			c->keep_alive = keep_alive;
		}
	}
}

static void on_conn(struct conn *c)
{
	char data[65536];
	ssize_t n;

	n = recv(c->fd, data, sizeof(data), 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		/* the client gave up (on a parked GET /next too: left registered, the next
		 * event would go into a dead connection instead of to the runtime) */
		close_conn(c);
		return;
	}
	if (c->in.len + (size_t)n > (size_t)MAX_HEAD + MAX_REQUEST_BODY + (1 << 20) && c->parked) {
		close_conn(c);      /* a parked client that keeps sending */
		return;
	}
	buf_put(&c->in, data, (size_t)n);
	if (!c->parked)
		process_conn(c);
}

static void on_accept(void)
{
	for (;;) {
		int fd = accept4(A.listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;
		int one = 1;

		if (fd < 0)
			return;           /* EAGAIN, or EMFILE and the like: the runtime's doing */
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->kind = K_CONN;
		c->fd = fd;
		reset_request(c);
		ev.data.ptr = c;
		if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd);
			free(c);
			return;
		}
		c->next_all = A.all;
		A.all = c;
	}
}

/* ---- invocations ---------------------------------------------------------------- */

static const char *str_field(const struct mp_value *m, const char *k, size_t *n)
{
	const struct mp_value *v = mp_get(m, k);

	if (!v || (v->type != MP_STR && v->type != MP_BIN)) {
		*n = 0;
		return NULL;
	}
	*n = v->n;
	return v->p;
}

static void dispatch(void)
{
	while (A.queue && A.nwaiters && A.phase == IDLE) {
		struct invoke *inv = A.queue;
		struct conn *c = A.waiters[0];
		struct buf h = { 0 };
		const struct mp_value *deadline;
		const char *id, *arn, *payload;
		size_t idn, arnn, pn;
		char line[128];

		A.queue = inv->next;
		if (!A.queue)
			A.queue_tail = NULL;
		memmove(A.waiters, A.waiters + 1, (A.nwaiters - 1) * sizeof(*A.waiters));
		A.nwaiters--;
		id = str_field(&inv->msg, "id", &idn);
		arn = str_field(&inv->msg, "arn", &arnn);
		payload = str_field(&inv->msg, "payload", &pn);
		deadline = mp_get(&inv->msg, "deadline_ms");
		A.current = strndup(id ? id : "", idn);
		to(INVOKING);
		header_value(&h, "Lambda-Runtime-Aws-Request-Id", mp_get(&inv->msg, "id"));
		snprintf(line, sizeof(line), "Lambda-Runtime-Deadline-Ms: %lld\r\n",
			 deadline && deadline->type == MP_INT ? (long long)deadline->i : 0LL);
		buf_put(&h, line, strlen(line));
		(void)arn;
		(void)arnn;
		header_value(&h, "Lambda-Runtime-Invoked-Function-Arn", mp_get(&inv->msg, "arn"));
		header_value(&h, "Lambda-Runtime-Trace-Id", mp_get(&inv->msg, "trace_id"));
		header_value(&h, "Lambda-Runtime-Client-Context", mp_get(&inv->msg, "client_context"));
		header_value(&h, "Lambda-Runtime-Cognito-Identity", mp_get(&inv->msg, "cognito"));
		buf_put(&h, "", 1);
		respond_h(c, 200, payload ? payload : "", pn, h.data);
		buf_free(&h);
		mp_free(&inv->msg);
		free(inv->raw);
		free(inv);
	}
}

/* ---- host frames --------------------------------------------------------------- */

static int start_runtime(const struct mp_value *msg);

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* (v4) Fault in ranges of this process's memory ahead of use: "write" ranges get
 * their private copy now (the pages a clone's first invocations write), "read"
 * ranges get their page-table entries. Each field is a bin of little-endian u64
 * (start, length) pairs. Only the inproc layout's memory is the runtime's own; a
 * range that is gone or not writable any more fails alone, and nothing else. */
static void populate(const struct mp_value *msg)
{
	static const char *const fields[] = { "write", "read" };
	static const int advice[] = { MADV_POPULATE_WRITE, MADV_POPULATE_READ };

	if (!A.inproc)
		return;
	for (int k = 0; k < 2; k++) {
		const struct mp_value *v = mp_get(msg, fields[k]);

		if (!v || v->type != MP_BIN)
			continue;
		for (size_t i = 0; i + 16 <= v->n; i += 16) {
			uint64_t start, len;

			memcpy(&start, v->p + i, 8);
			memcpy(&len, v->p + i + 8, 8);
			(void)madvise((void *)(uintptr_t)start, (size_t)len, advice[k]);
		}
	}
}

static void on_frame(char *body, size_t n)
{
	struct mp_value msg;
	const struct mp_value *op;

	if (mp_decode(body, n, &msg) || !(op = mp_get(&msg, "op")) || op->type != MP_STR) {
		mp_free(&msg);
		die(2);
	}
	if (op->n == 6 && !memcmp(op->p, "invoke", 6)) {
		struct invoke *inv = calloc(1, sizeof(*inv));

		mp_free(&msg);
		if (!inv || !(inv->raw = malloc(n)))
			die(1);
		memcpy(inv->raw, body, n);
		if (mp_decode(inv->raw, n, &inv->msg))
			die(2);
		if (A.queue_tail)
			A.queue_tail->next = inv;
		else
			A.queue = inv;
		A.queue_tail = inv;
		dispatch();
		return;
	}
	if (op->n == 6 && !memcmp(op->p, "resume", 6)) {
		if (A.phase == PARKED) {
			struct conn *c = A.restore_waiter;

			/* the hot set first: populating while the runtime runs its hooks
			 * was measured no faster (both fault the same pages) */
			if (mp_get(&msg, "populate"))
				populate(mp_get(&msg, "populate"));
			to(RESTORING);
			A.restore_waiter = NULL;
			if (c)
				respond(c, 200, "", 0);
		} else if (A.phase == IDLE && !A.current) {
			/* checkpointed while parked in GET /invocation/next (runtimes without
			 * restore/next): the clone is ready as soon as it is resumed */
			emit_op("ready");
		} else {
			emit_logf("agent: resume ignored in phase %s\n", phase_name[A.phase]);
		}
	} else if (op->n == 8 && !memcmp(op->p, "populate", 8)) {
		populate(&msg);
	} else if (op->n == 4 && !memcmp(op->p, "ping", 4)) {
		emit_op("pong");
	} else if (op->n == 5 && !memcmp(op->p, "start", 5)) {
		if (A.inproc || A.phase != STARTING)
			emit_logf("agent: start ignored: the runtime exists\n");
		else if (start_runtime(&msg))
			die(1);
	} else {
		emit_logf("agent: unknown op %.*s\n", (int)(op->n < 64 ? op->n : 64), op->p);
	}
	mp_free(&msg);
}

static void on_ctl(void)
{
	char data[65536];
	ssize_t n = recv(A.ctl, data, sizeof(data), 0);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0)
		die(0);                 /* the host is gone */
	buf_put(&A.ctl_in, data, (size_t)n);
	while (A.ctl_in.len >= 4) {
		unsigned char *h = (unsigned char *)A.ctl_in.data;
		size_t len = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];

		if (len > MAX_FRAME)
			die(2);
		if (A.ctl_in.len < 4 + len)
			break;
		on_frame(A.ctl_in.data + 4, len);
		memmove(A.ctl_in.data, A.ctl_in.data + 4 + len, A.ctl_in.len - 4 - len);
		A.ctl_in.len -= 4 + len;
	}
}

/* ---- the agent layout: the runtime as our child --------------------------------- */

static char *dup_str(const struct mp_value *v)
{
	return v && v->type == MP_STR ? strndup(v->p, v->n) : NULL;
}

static int start_runtime(const struct mp_value *msg)
{
	const struct mp_value *argv = mp_get(msg, "argv"), *env = mp_get(msg, "env");
	const struct mp_value *v;
	char **args, **envp, *cwd;
	int pipefd[2], uid, gid, seccomp;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &m_log };
	uint32_t i;
	pid_t pid;

	if (!argv || argv->type != MP_ARRAY || !argv->n || !env || env->type != MP_MAP)
		return -1;
	args = calloc(argv->n + 1, sizeof(char *));
	envp = calloc(env->n + 1, sizeof(char *));
	if (!args || !envp)
		return -1;
	for (i = 0; i < argv->n; i++)
		args[i] = dup_str(&argv->items[i]);
	for (i = 0; i < env->n; i++) {
		const struct mp_value *k = &env->items[2 * i], *val = &env->items[2 * i + 1];

		if (k->type == MP_STR && val->type == MP_STR &&
		    asprintf(&envp[i], "%.*s=%.*s", (int)k->n, k->p, (int)val->n, val->p) < 0)
			return -1;
	}
	cwd = dup_str(mp_get(msg, "cwd"));
	v = mp_get(msg, "uid");
	uid = v && v->type == MP_INT ? (int)v->i : 0;
	v = mp_get(msg, "gid");
	gid = v && v->type == MP_INT ? (int)v->i : 0;
	v = mp_get(msg, "seccomp");
	seccomp = !v || v->type != MP_BOOL || v->i;
	v = mp_get(msg, "init_type");
	A.snap_start = v && v->type == MP_STR && v->n == 10 && !memcmp(v->p, "snap-start", 10);
	if (pipe2(pipefd, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		sigset_t none;
		int r;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(devnull, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		if (cwd && chdir(cwd)) {
			dprintf(2, "snapstart: cannot start runtime: chdir %s: %s\n", cwd, strerror(errno));
			_exit(127);
		}
		r = snapagent_confine(uid, gid, seccomp);
		if (r) {
			dprintf(2, "snapstart: cannot start runtime: confine: %s\n", strerror(-r));
			_exit(127);
		}
		execve(args[0], args, envp);
		dprintf(2, "snapstart: cannot start runtime: exec %s: %s\n", args[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	for (i = 0; args[i] || i < argv->n; i++)
		free(args[i]);
	for (i = 0; i < env->n; i++)
		free(envp[i]);
	free(args);
	free(envp);
	free(cwd);
	A.runtime_pid = pid;
	A.log_fd = pipefd[0];
	fcntl(A.log_fd, F_SETFL, O_NONBLOCK);
	if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.log_fd, &ev))
		return -1;
	return to(INIT);
}

static void on_signal(void)
{
	struct signalfd_siginfo si;
	int status;
	pid_t pid;

	while (read(A.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != A.runtime_pid)
			continue;
		/* inflight: the invocation it was running (none: it died idle, so a queued
		 * invocation never ran and the host may retry it elsewhere) */
		emit_exit(WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status));
		die(0);                 /* the sandbox ends with its runtime */
	}
}

/* ---- the loop ------------------------------------------------------------------- */

static void run(void)
{
	struct epoll_event events[64];

	for (;;) {
		int n = epoll_wait(A.epfd, events, 64, -1), i;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die(1);
		}
		pthread_mutex_lock(&A.lock);
		for (i = 0; i < n; i++) {
			enum kind k = *(enum kind *)events[i].data.ptr;

			if (k == K_CONN) {
				struct conn *c = events[i].data.ptr;

				if (!c->closed)
					on_conn(c);
			} else if (k == K_LISTENER) {
				on_accept();
			} else if (k == K_CTL) {
				on_ctl();
			} else if (k == K_LOG) {
				drain_logs();
			} else if (k == K_SIGNAL) {
				on_signal();
			}
		}
		free_closed();
		pthread_mutex_unlock(&A.lock);
	}
}

static int listen_api(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(API_PORT) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64))
		return -1;
	return fd;
}

static int setup(int ctl, int listener, int log_fd, int inproc)
{
	struct epoll_event ev = { .events = EPOLLIN };

	A.ctl = ctl;
	A.listener = listener;
	A.inproc = inproc;
	A.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (A.epfd < 0)
		return -1;
	fcntl(ctl, F_SETFD, FD_CLOEXEC);
	fcntl(ctl, F_SETFL, O_NONBLOCK);
	fcntl(listener, F_SETFD, FD_CLOEXEC);
	fcntl(listener, F_SETFL, O_NONBLOCK);
	ev.data.ptr = &m_listener;
	if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, listener, &ev))
		return -1;
	ev.data.ptr = &m_ctl;
	if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, ctl, &ev))
		return -1;
	if (log_fd >= 0) {
		A.log_fd = log_fd;
		fcntl(log_fd, F_SETFD, FD_CLOEXEC);
		fcntl(log_fd, F_SETFL, O_NONBLOCK);
		ev.data.ptr = &m_log;
		if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, log_fd, &ev))
			return -1;
	}
	{
		struct frame f;

		frame_begin(&f, "hello", 2);
		mp_cstr(&f.b, "v");
		mp_int(&f.b, SNAPAGENT_PROTOCOL);
		mp_cstr(&f.b, "layout");
		mp_cstr(&f.b, inproc ? "inproc" : "agent");
		emit_frame(&f);
	}
	return 0;
}

/* ---- inproc API ----------------------------------------------------------------- */

static void *thread_main(void *arg)
{
	(void)arg;
	run();
	return NULL;
}

int snapagent_start(int ctl_fd, int listen_fd, int log_fd, const char *init_type)
{
	pthread_attr_t attr;
	pthread_t th;
	sigset_t all, old;
	int r;

	if (A.started)
		return -EALREADY;
	A.snap_start = init_type && !strcmp(init_type, "snap-start");
	if (listen_fd < 0 && (listen_fd = listen_api()) < 0)
		return -errno;
	if (setup(ctl_fd, listen_fd, log_fd, 1))
		return -errno;
	A.phase = INIT;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);                /* signals stay the runtime's (main thread's) */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&th, &attr, thread_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r)
		return -r;
	pthread_setname_np(th, "snapstart-agent");
	A.started = 1;
	return 0;
}

void snapagent_exit(int status)
{
	pthread_mutex_lock(&A.lock);
	emit_exit(status);
	_exit(0);
}

void snapagent_forget(void)
{
	struct conn *c;

	for (c = A.all; c; c = c->next_all)
		if (!c->closed)
			close(c->fd);
	if (A.ctl >= 0)
		close(A.ctl);
	if (A.listener >= 0)
		close(A.listener);
	if (A.epfd >= 0)
		close(A.epfd);
	A.ctl = A.listener = A.epfd = -1;
}

/* ---- the agent layout: snapagent --ctl-fd N ------------------------------------- */

#ifdef SNAPAGENT_MAIN
int main(int argc, char **argv)
{
	int ctl = -1, listener = -1, i, serve_only = 0;
	const char *init_type = NULL;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &m_signal };
	sigset_t chld;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ctl-fd") && i + 1 < argc)
			ctl = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--listen-fd") && i + 1 < argc)
			listener = atoi(argv[++i]);            /* tests: their own listener */
		else if (!strcmp(argv[i], "--serve") && i + 1 < argc) {
			serve_only = 1;                        /* tests: no runtime, phase init */
			init_type = argv[++i];
		}
	}
	if (ctl < 0) {
		fprintf(stderr, "usage: snapagent --ctl-fd N [--listen-fd N] [--serve INIT_TYPE]\n");
		return 2;
	}
	setsid();
	if (listener < 0 && (listener = listen_api()) < 0) {
		dprintf(2, "snapagent: listen: %s\n", strerror(errno));
		return 1;
	}
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (setup(ctl, listener, -1, 0))
		return 1;
	A.sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (A.sigfd < 0 || epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.sigfd, &ev))
		return 1;
	if (serve_only) {
		A.snap_start = !strcmp(init_type, "snap-start");
		A.phase = INIT;
	}
	run();
	return 0;
}
#endif
