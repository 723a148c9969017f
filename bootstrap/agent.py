"""The sandbox agent: PID 1 of each sandbox, serving the Lambda Runtime API.

Runs inside the sandbox (its own PID, time, IPC, UTS and network namespaces) as
``python -m bootstrap.agent --ctl-fd N``. It:

- serves the Lambda Runtime API on 127.0.0.1:9001 of the sandbox's network
  namespace (HTTP/1.1 via h11; each response is written with one ``sendall`` and
  TCP_NODELAY is set, see PLATFORM.md: separate writes cost ~86 ms per invoke);
- starts the runtime (``start`` frame from the host) with its stdout/stderr on a
  pipe, and forwards that output to the host as ``log`` frames;
- relays invocations from the host to the runtime and results back, over the
  control channel described in ``bootstrap.protocol``;
- parks the runtime's ``GET /runtime/restore/next`` at publish, tells the host the
  tree is ready to checkpoint, and answers it when a restored clone is resumed;
- reaps every process that dies in the sandbox (it is PID 1).

It is one thread and one ``selectors`` loop: nothing here may block except the
host socket, so a misbehaving runtime (garbage HTTP, wrong request ids, double
responses, huge bodies) gets a 4xx and the agent stays up. It must not import
anything heavy: every millisecond here is paid on every cold start.

Runtime API routes (prefix ``/2018-06-01/runtime``)::

    GET  /invocation/next                 200 event + Lambda-Runtime-* headers
    POST /invocation/{id}/response        202 | 400 InvalidRequestID | 413
    POST /invocation/{id}/error           202 | 400
    POST /init/error                      202 | 403 after init
    GET  /restore/next                    200 once resumed | 403 if not snap-start
    POST /restore/error                   202
"""

from __future__ import annotations

import collections
import errno
import json
import os
import re
import selectors
import signal
import socket
import sys

import h11

from bootstrap import protocol

API_HOST, API_PORT = "127.0.0.1", 9001
MAX_REQUEST_BODY = 6 * 1024 * 1024          # Lambda's sync response limit
MAX_ERROR_BODY = 1 * 1024 * 1024
PREFIX = "/2018-06-01/runtime"
_INVOCATION_RE = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")


def _sendall(sock: socket.socket, data: bytes, *, timeout: float | None) -> bool:
    """sendall on a non-blocking socket; False on error or after ``timeout`` s stalled."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            if not selectors.select.select([], [sock], [], timeout)[1]:
                return False
        except OSError:
            return False
    return True


def _recv_ready(sock: socket.socket, n: int) -> bytes | None:
    """A non-blocking read: the data, b"" at EOF or on an error, None if nothing yet."""
    try:
        return sock.recv(n)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _json(obj: dict) -> bytes:
    return json.dumps(obj).encode()


_HEADER_UNSAFE = bytes.maketrans(b"\r\n\0", b"   ")


def _header_value(value: str | None) -> bytes:
    """A caller's value (trace id, client-context JSON) as a header value h11 sends.

    h11 refuses CR, LF, NUL and surrounding whitespace, and str values that are not
    ASCII; either would end the runtime's GET /next (or, uncaught, this process).
    CR/LF are whitespace in the client-context JSON, so blanking them keeps its
    meaning; non-ASCII text goes as UTF-8.
    """
    if not value:
        return b""
    return value.encode("utf-8", "surrogateescape").translate(_HEADER_UNSAFE).strip(b" \t")


class Conn:
    """One HTTP connection from the runtime."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.too_large = False
        self.parked = False        # a GET /next or /restore/next waiting for an answer
        self.closed = False

    @property
    def target(self) -> str:
        return self.request.target.decode("latin-1").split("?", 1)[0] if self.request else ""

    def header(self, name: bytes) -> str | None:
        for key, value in self.request.headers if self.request else ():
            if key == name:
                return value.decode("latin-1")
        return None


class Agent:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.sel = selectors.DefaultSelector()
        self.reader = protocol.FrameReader()
        self.conns: dict[int, Conn] = {}
        self.queue: collections.deque[dict] = collections.deque()
        self.next_waiters: collections.deque[Conn] = collections.deque()
        self.restore_waiter: Conn | None = None
        self.current: str | None = None          # request id delivered to the runtime
        self.finished: set[str] = set()          # ids already answered (double response)
        self.init_done = False
        self.init_type = "on-demand"
        self.resumed = False
        self.runtime_pid: int | None = None
        self.log_fd: int | None = None

        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((API_HOST, API_PORT))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)

        self.ctl.setblocking(False)
        self.sel.register(self.ctl, selectors.EVENT_READ, self._on_ctl)

        # SIGCHLD wakes the loop through a socketpair; the handler itself does nothing.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_signal)

    # ---- host channel -------------------------------------------------------------
    def emit(self, msg: dict) -> None:
        if not _sendall(self.ctl, protocol.encode(msg), timeout=None):
            os._exit(0)  # host is gone: the sandbox dies with it (PID 1 exits)

    def _on_ctl(self) -> None:
        data = _recv_ready(self.ctl, 1 << 20)
        if data is None:
            return
        if not data:
            os._exit(0)
        try:
            msgs = self.reader.feed(data)
        except protocol.ProtocolError:
            os._exit(2)
        for msg in msgs:
            getattr(self, "_op_" + msg["op"], self._op_unknown)(msg)

    def _op_unknown(self, msg: dict) -> None:
        self.emit({"op": "log", "data": f"agent: unknown op {msg['op']!r}\n".encode()})

    def _op_ping(self, msg: dict) -> None:
        self.emit({"op": "pong"})

    def _op_start(self, msg: dict) -> None:
        self.init_type = msg.get("init_type", "on-demand")
        r, w = os.pipe()
        # The agent is single-threaded: fork is safe. The child confines itself
        # (uid/gid, no_new_privs, seccomp: bootstrap.confine) and execs the runtime.
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(w, 1)
                os.dup2(w, 2)
                os.chdir(msg["cwd"])
                from bootstrap.confine import confine
                confine(int(msg.get("uid", 0)), int(msg.get("gid", 0)),
                        seccomp=bool(msg.get("seccomp", True)))
                os.execve(msg["argv"][0], msg["argv"], msg["env"])
            except BaseException as exc:  # report through the log pipe, then die
                os.write(2, f"snapstart: cannot start runtime: {exc!r}\n".encode())
            os._exit(127)
        os.close(w)
        self.runtime_pid = pid
        self.log_fd = r
        os.set_blocking(r, False)
        self.sel.register(r, selectors.EVENT_READ, self._drain_logs)

    def _op_invoke(self, msg: dict) -> None:
        self.queue.append(msg)
        self._dispatch()

    def _op_resume(self, msg: dict) -> None:
        self.resumed = True
        if self.restore_waiter is not None:
            conn, self.restore_waiter = self.restore_waiter, None
            self._respond(conn, 200, b"")
        elif self.init_done:
            # Checkpointed while parked in GET /invocation/next (runtimes without
            # restore/next support): the clone is ready as soon as it is resumed.
            self.emit({"op": "ready"})

    # ---- runtime output -----------------------------------------------------------
    def _drain_logs(self) -> None:
        if self.log_fd is None:
            return
        while True:
            try:
                data = os.read(self.log_fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.sel.unregister(self.log_fd)
                os.close(self.log_fd)
                self.log_fd = None
                return
            self.emit({"op": "log", "data": data})

    def _on_signal(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.runtime_pid:
                self._drain_logs()
                code = os.waitstatus_to_exitcode(status)
                # inflight: the invocation the runtime was running (None: it died idle,
                # so a queued invocation never ran and the host may retry it elsewhere)
                self.emit({"op": "exit", "status": code, "inflight": self.current})
                os._exit(0)  # the sandbox ends with its runtime

    # ---- HTTP ---------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = Conn(sock)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, lambda c=conn: self._on_conn(c))

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.sock.fileno(), None)
        self.sel.unregister(conn.sock)
        if conn in self.next_waiters:
            self.next_waiters.remove(conn)
        if self.restore_waiter is conn:
            self.restore_waiter = None
        conn.sock.close()

    def _send(self, conn: Conn, data: bytes) -> bool:
        if not _sendall(conn.sock, data, timeout=10.0):
            self._close(conn)          # a runtime that stopped reading, or is gone
            return False
        return True

    def _respond(self, conn: Conn, status: int, body: bytes,
                 headers: list[tuple[str, str]] | None = None) -> None:
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        hdrs += headers or []
        try:
            out = conn.h11.send(h11.Response(status_code=status, headers=hdrs))
            out += conn.h11.send(h11.Data(data=body)) if body else b""
            out += conn.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self._close(conn)
            return
        was_parked, conn.parked = conn.parked, False
        if not self._send(conn, out):
            return
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.request, conn.body, conn.too_large = None, bytearray(), False
            if was_parked:  # answered from outside _on_conn: a request may be buffered
                self._on_conn(conn, read=False)
        elif conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
            self._close(conn)

    def _error(self, conn: Conn, status: int, error_type: str, message: str) -> None:
        self._respond(conn, status, _json({"errorMessage": message, "errorType": error_type}))

    def _on_conn(self, conn: Conn, read: bool = True) -> None:
        if read:
            data = _recv_ready(conn.sock, 1 << 16)
            if data is None:
                return
            if not data and conn.parked:
                # The client gave up on its parked GET /next (or /restore/next). Left
                # registered, its EOF would spin this loop, and the next event would
                # be delivered into the dead connection instead of to the runtime.
                self._close(conn)
                return
            try:
                conn.h11.receive_data(data)
            except RuntimeError:  # receive after close
                self._close(conn)
                return
        while not conn.parked:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    self._respond(conn, exc.error_status_hint,
                                  _json({"errorMessage": f"bad HTTP request: {exc}",
                                         "errorType": "InvalidRequest"}))
                self._close(conn)
                return
            if event is h11.NEED_DATA:
                if read and not data:
                    self._close(conn)
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self._close(conn)
                return
            if isinstance(event, h11.Request):
                conn.request = event
            elif isinstance(event, h11.Data):
                limit = MAX_REQUEST_BODY + 1024
                if len(conn.body) + len(event.data) > limit:
                    conn.too_large = True
                else:
                    conn.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._route(conn)
                if conn.closed:
                    return

    # ---- routing ------------------------------------------------------------------
    def _route(self, conn: Conn) -> None:
        # Responding starts the connection's next cycle: keep what we need first.
        body = bytes(conn.body)
        method = conn.request.method.decode("latin-1")
        target = conn.target
        if target == PREFIX + "/invocation/next":
            if method != "GET":
                return self._error(conn, 405, "MethodNotAllowed", f"{method} not allowed")
            return self._next(conn)
        match = _INVOCATION_RE.match(target)
        if match:
            if method != "POST":
                return self._error(conn, 405, "MethodNotAllowed", f"{method} not allowed")
            return self._invocation_result(conn, match.group(1), match.group(2), body)
        if target == PREFIX + "/init/error":
            if method != "POST":
                return self._error(conn, 405, "MethodNotAllowed", f"{method} not allowed")
            if self.init_done:
                return self._error(conn, 403, "InvalidStateTransition",
                                   "init/error is only valid during init")
            error_type = self._error_type(conn)
            self._respond(conn, 202, _json({"status": "OK"}))
            self._drain_logs()
            return self.emit({"op": "init_error", "type": error_type,
                              "body": body[:MAX_ERROR_BODY]})
        if target == PREFIX + "/restore/next":
            if method != "GET":
                return self._error(conn, 405, "MethodNotAllowed", f"{method} not allowed")
            if self.init_type != "snap-start":
                return self._error(conn, 403, "InvalidStateTransition",
                                   "restore/next is only valid in snap-start mode")
            if self.resumed:
                return self._respond(conn, 200, b"")
            conn.parked = True
            self.restore_waiter = conn
            self._drain_logs()
            return self.emit({"op": "snapshot"})
        if target == PREFIX + "/restore/error":
            if method != "POST":
                return self._error(conn, 405, "MethodNotAllowed", f"{method} not allowed")
            error_type = self._error_type(conn)
            self._respond(conn, 202, _json({"status": "OK"}))
            self._drain_logs()
            return self.emit({"op": "restore_error", "type": error_type,
                              "body": body[:MAX_ERROR_BODY]})
        return self._error(conn, 404, "NotFound", f"unknown path {target[:200]}")

    @staticmethod
    def _error_type(conn: Conn) -> str:
        return (conn.header(b"lambda-runtime-function-error-type") or "Runtime.Unknown")[:256]

    def _next(self, conn: Conn) -> None:
        if not self.init_done:
            self.init_done = True
            self._drain_logs()
            self.emit({"op": "ready"})
        conn.parked = True
        self.next_waiters.append(conn)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queue and self.next_waiters and self.current is None:
            msg = self.queue.popleft()
            conn = self.next_waiters.popleft()
            self.current = msg["id"]
            headers = [("Lambda-Runtime-Aws-Request-Id", msg["id"]),
                       ("Lambda-Runtime-Deadline-Ms", str(msg["deadline_ms"])),
                       ("Lambda-Runtime-Invoked-Function-Arn", msg["arn"])]
            for key, name in (("trace_id", "Lambda-Runtime-Trace-Id"),
                              ("client_context", "Lambda-Runtime-Client-Context"),
                              ("cognito", "Lambda-Runtime-Cognito-Identity")):
                value = _header_value(msg.get(key))
                if value:
                    headers.append((name, value))
            self._respond(conn, 200, msg["payload"], headers)

    def _invocation_result(self, conn: Conn, request_id: str, kind: str, body: bytes) -> None:
        if request_id != self.current:
            if request_id in self.finished:
                return self._error(conn, 400, "InvalidStateTransition",
                                   f"invocation {request_id} already has a result")
            return self._error(conn, 400, "InvalidRequestID",
                               f"unknown request id {request_id[:100]}")
        self.current = None
        self.finished.add(request_id)
        if len(self.finished) > 1024:
            self.finished = set(list(self.finished)[-256:])
        error_type = self._error_type(conn)
        if conn.too_large:
            self._error(conn, 413, "RequestEntityTooLarge",
                        f"response exceeds {MAX_REQUEST_BODY} bytes")
            self._drain_logs()
            self.emit({"op": "error", "id": request_id, "type": "Function.ResponseSizeTooLarge",
                       "body": _json({"errorMessage": "Response payload size exceeded maximum "
                                      f"allowed payload size ({MAX_REQUEST_BODY} bytes).",
                                      "errorType": "Function.ResponseSizeTooLarge"})})
        else:
            self._respond(conn, 202, _json({"status": "OK"}))
            self._drain_logs()
            if kind == "response":
                self.emit({"op": "response", "id": request_id, "payload": body})
            else:
                self.emit({"op": "error", "id": request_id, "type": error_type,
                           "body": body[:MAX_ERROR_BODY]})
        self._dispatch()

    def run(self) -> None:
        while True:
            try:
                events = self.sel.select()
            except InterruptedError:
                continue
            for key, _ in events:
                key.data()


def main(argv: list[str]) -> None:
    fd = int(argv[argv.index("--ctl-fd") + 1])
    ctl = socket.socket(fileno=fd)
    try:
        os.setsid()
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise
    try:
        agent = Agent(ctl)
    except Exception as exc:
        protocol.send(ctl, {"op": "fatal", "message": f"agent failed to start: {exc!r}"})
        sys.exit(1)
    agent.run()


if __name__ == "__main__":
    main(sys.argv)
