"""The agent's Runtime API routing and control frames (bootstrap/native/snapagent.c),
driven as ``snapagent --serve INIT_TYPE --listen-fd N``: no runtime, no namespaces,
no root. The test is both sides: the runtime (HTTP on its own listener) and the host
(frames on the control socketpair, bootstrap/protocol.py)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess

import pytest

from bootstrap import protocol
from snapstart.config import PROJECT_ROOT

AGENT = PROJECT_ROOT / ".snapstart" / "runtime" / "snapagent"      # `make native`
PREFIX = "/2018-06-01/runtime"


class Agent:
    def __init__(self, init_type: str) -> None:
        assert AGENT.exists(), f"{AGENT} missing: run `make native`"
        self.host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.host.settimeout(10)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.proc = subprocess.Popen(
            [str(AGENT), "--ctl-fd", str(theirs.fileno()), "--listen-fd",
             str(listener.fileno()), "--serve", init_type],
            pass_fds=(theirs.fileno(), listener.fileno()))
        theirs.close()
        listener.close()
        self.hello = self.frame()

    def frame(self) -> dict:
        while True:
            msg = protocol.recv(self.host)
            if msg["op"] != "log":
                return msg

    def send(self, **msg) -> None:
        protocol.send(self.host, msg)

    def http(self, method: str, path: str, body: bytes | None = None,
             timeout: float = 10) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, PREFIX + path, body=body)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.host.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agent():
    made: list[Agent] = []

    def start(init_type: str = "on-demand") -> Agent:
        made.append(Agent(init_type))
        return made[-1]

    yield start
    for a in made:
        a.close()


def _next_in_thread(a: Agent):
    import concurrent.futures
    pool = concurrent.futures.ThreadPoolExecutor(1)
    return pool, pool.submit(a.http, "GET", "/invocation/next")


def test_hello_then_an_invocation_round_trip(agent):
    a = agent()
    assert a.hello["op"] == "hello" and a.hello["v"] in protocol.SUPPORTED
    pool, pending = _next_in_thread(a)
    assert a.frame() == {"op": "ready"}                  # the first GET /next ends init
    a.send(op="invoke", id="req-1", payload=b'{"k": 1}', deadline_ms=4102444800000,
           arn="arn:aws:lambda:us-east-1:000000000000:function:f", trace_id="Root=1-x")
    status, headers, body = pending.result(10)
    pool.shutdown()
    assert status == 200 and body == b'{"k": 1}'
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    assert headers["Lambda-Runtime-Deadline-Ms"] == "4102444800000"
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(":function:f")
    assert headers["Lambda-Runtime-Trace-Id"] == "Root=1-x"
    status, _, _ = a.http("POST", "/invocation/req-1/response", b'"done"')
    assert status == 202
    assert a.frame() == {"op": "response", "id": "req-1", "payload": b'"done"'}
    # a second result for the same id, and an id never seen
    status, _, body = a.http("POST", "/invocation/req-1/response", b'"again"')
    assert status == 400 and json.loads(body)["errorType"] == "InvalidStateTransition"
    status, _, body = a.http("POST", "/invocation/nope/response", b'"x"')
    assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"


def test_function_error_is_forwarded_with_its_type(agent):
    a = agent()
    pool, pending = _next_in_thread(a)
    a.frame()                                             # ready
    a.send(op="invoke", id="req-2", payload=b"{}", deadline_ms=4102444800000, arn="arn")
    assert pending.result(10)[0] == 200
    pool.shutdown()
    err = b'{"errorMessage": "boom", "errorType": "ValueError"}'
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    conn.request("POST", PREFIX + "/invocation/req-2/error", body=err,
                 headers={"Lambda-Runtime-Function-Error-Type": "Unhandled"})
    assert conn.getresponse().status == 202
    conn.close()
    frame = a.frame()
    assert frame["op"] == "error" and frame["id"] == "req-2" and frame["body"] == err
    assert frame["type"] == "Unhandled"


@pytest.mark.parametrize("method, path, status, error_type", [
    ("GET", "/nowhere", 404, "NotFound"),
    ("POST", "/invocation/next", 405, "MethodNotAllowed"),
    ("GET", "/invocation/req/response", 405, "MethodNotAllowed"),
    ("GET", "/restore/next", 403, "InvalidStateTransition"),    # not snap-start
    ("POST", "/restore/error", 403, "InvalidStateTransition"),  # before a resume
])
def test_routes_refuse_what_the_phase_or_method_does_not_allow(agent, method, path, status,
                                                                error_type):
    a = agent()
    got, _, body = a.http(method, path, b"{}" if method == "POST" else None)
    assert got == status and json.loads(body)["errorType"] == error_type
    assert a.proc.poll() is None                          # the agent stays up


def test_init_error_is_reported_once_then_refused(agent):
    a = agent()
    status, _, _ = a.http("POST", "/init/error", b'{"errorMessage": "bad import"}')
    assert status == 202
    frame = a.frame()
    assert frame["op"] == "init_error" and b"bad import" in frame["body"]


def test_snap_start_parks_in_restore_next_until_resume(agent):
    a = agent("snap-start")
    import concurrent.futures
    pool = concurrent.futures.ThreadPoolExecutor(1)
    pending = pool.submit(a.http, "GET", "/restore/next")
    assert a.frame() == {"op": "snapshot"}                # quiescent: may be dumped
    assert not pending.done()
    a.send(op="resume")
    status, _, _ = pending.result(10)
    pool.shutdown()
    assert status == 200
    pool, nxt = _next_in_thread(a)
    assert a.frame() == {"op": "ready"}                   # after-restore phase done
    a.send(op="ping")
    assert a.frame() == {"op": "pong"}
    a.send(op="invoke", id="r", payload=b"1", deadline_ms=4102444800000, arn="arn")
    assert nxt.result(10)[0] == 200
    pool.shutdown()


def test_oversized_control_frame_ends_the_channel(agent):
    a = agent()
    a.host.sendall((protocol.MAX_FRAME + 1).to_bytes(4, "big"))
    a.host.settimeout(10)
    with pytest.raises((protocol.ProtocolError, ConnectionError, socket.timeout)):
        while True:
            if protocol.recv(a.host)["op"] == "fatal":
                raise protocol.ProtocolError("fatal")
    assert a.proc.wait(10) is not None



def _streamed_post(a: Agent, path: str, chunks: list[bytes], trailers: str = "") -> socket.socket:
    """A runtime's streamed response (chunked, Lambda-Runtime-Function-Response-Mode:
    streaming), written piece by piece on a raw socket; returns it to read the answer."""
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    sock.sendall((f"POST {PREFIX}{path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                  "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
                  "Transfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type, "
                  "Lambda-Runtime-Function-Error-Body\r\n\r\n").encode())
    first = True
    for chunk in chunks:
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if first:   # the host has the first bytes before the runtime sends the rest
            assert a.frame() == {"op": "stream", "id": "req-s", "content_type": "text/plain"}
            got = b""
            while len(got) < len(chunk):
                frame = a.frame()
                assert frame["op"] == "stream_chunk" and frame["id"] == "req-s"
                got += frame["data"]
            assert got == chunk
            first = False
    sock.sendall(b"0\r\n" + trailers.encode() + b"\r\n")
    return sock


def _invoking(a: Agent) -> None:
    pool, pending = _next_in_thread(a)
    a.frame()                                             # ready
    a.send(op="invoke", id="req-s", payload=b"{}", deadline_ms=4102444800000, arn="arn")
    assert pending.result(10)[0] == 200
    pool.shutdown()


def test_a_streamed_response_is_forwarded_as_it_arrives(agent):
    a = agent()
    _invoking(a)
    sock = _streamed_post(a, "/invocation/req-s/response", [b"first\n", b"second\n"])
    assert sock.recv(4096).startswith(b"HTTP/1.1 202")
    sock.close()
    assert a.frame() == {"op": "stream_chunk", "id": "req-s", "data": b"second\n"}
    assert a.frame() == {"op": "response", "id": "req-s", "payload": b""}


def test_a_stream_that_fails_reports_the_error_trailers_decoded(agent):
    import base64

    a = agent()
    _invoking(a)
    err = b'{"errorMessage": "broke", "errorType": "Error"}'
    trailers = ("Lambda-Runtime-Function-Error-Type: Error\r\n"
                f"Lambda-Runtime-Function-Error-Body: {base64.b64encode(err).decode()}\r\n")
    sock = _streamed_post(a, "/invocation/req-s/response", [b"partial"], trailers)
    assert sock.recv(4096).startswith(b"HTTP/1.1 202")
    sock.close()
    assert a.frame() == {"op": "error", "id": "req-s", "type": "Error", "body": err}


def test_a_stream_past_20_mib_is_cut_with_response_size_too_large(agent):
    import concurrent.futures

    a = agent()
    _invoking(a)
    mib = b"a" * (1 << 20)
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    head = (f"POST {PREFIX}/invocation/req-s/response HTTP/1.1\r\nHost: x\r\n"
            "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(mib), mib) for _ in range(21)) + b"0\r\n\r\n"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:   # the host reads meanwhile
        sent = pool.submit(sock.sendall, head + body)
        assert a.frame()["op"] == "stream"
        got = 0
        while True:
            frame = a.frame()
            if frame["op"] != "stream_chunk":
                break
            got += len(frame["data"])
        sent.result(30)
    assert got == 20 << 20                                # what fit went through
    assert frame["op"] == "error" and frame["type"] == "Function.ResponseSizeTooLarge"
    assert b"20971520" in frame["body"]
    assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    sock.close()
    assert a.proc.poll() is None
