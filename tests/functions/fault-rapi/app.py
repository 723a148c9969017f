"""A handler that abuses the in-sandbox Lambda Runtime API with raw sockets.

``event["case"]`` names the abuse (tests/integration/test_runtime_api.py). The
observed answers are returned and printed as one ``RAPI-RESULT <json>`` line: the
invocation's result may be what the handler posted itself, so the test reads the
line from the function's output.
"""
import json
import os
import socket
import time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PREFIX = "/2018-06-01/runtime"


def _connect(timeout=5.0):
    sock = socket.create_connection((HOST, int(PORT)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(f):
    """(status, body) of one response from a buffered reader; (None, reason) if the
    connection ended first."""
    try:
        line = f.readline(65536)
    except OSError as exc:
        return None, f"{type(exc).__name__}"
    if not line:
        return None, "closed"
    status = int(line.split()[1])
    length = 0
    while True:
        header = f.readline(65536)
        if header in (b"\r\n", b"\n", b""):
            break
        key, _, value = header.decode("latin-1").partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    body = f.read(length) if length else b""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("latin-1")[:200]
    return status, parsed


def raw(data, responses=1, timeout=5.0):
    """Send raw bytes on a new connection; [(status, body)] of up to ``responses``."""
    sock = _connect(timeout)
    try:
        sock.sendall(data)
        f = sock.makefile("rb")
        out = []
        for _ in range(responses):
            status, body = _read_response(f)
            out.append([status, body])
            if status is None:
                break
        return out
    finally:
        sock.close()


def request(method, path, body=b"", headers=None):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)[0]


def alive():
    """The agent still answers: a harmless request gets its 404."""
    return request("GET", PREFIX + "/ping")[0] == 404


def handler(event, context):
    rid = context.aws_request_id
    case = event["case"]
    out = {"case": case}
    if case == "wrong_id":
        out["response"] = request("POST", f"{PREFIX}/invocation/not-{rid}/response", b"{}")
        out["error"] = request("POST", f"{PREFIX}/invocation/not-{rid}/error", b"{}")
    elif case == "double_response":
        out["first"] = request("POST", f"{PREFIX}/invocation/{rid}/response",
                               b'{"from": "handler"}')
        out["second"] = request("POST", f"{PREFIX}/invocation/{rid}/response", b'{"again": 1}')
        out["error_after"] = request("POST", f"{PREFIX}/invocation/{rid}/error", b"{}")
    elif case == "huge_response":
        out["huge"] = request("POST", f"{PREFIX}/invocation/{rid}/response",
                              b'"' + b"x" * (7 << 20) + b'"')
    elif case == "huge_chunked":
        sock = _connect(30)
        try:
            sock.sendall((f"POST {PREFIX}/invocation/{rid}/response HTTP/1.1\r\n"
                          "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
            piece = b"y" * (1 << 20)
            for _ in range(7):
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            out["huge"] = list(_read_response(sock.makefile("rb")))
        finally:
            sock.close()
    elif case == "garbage":
        out["binary"] = raw(b"\x00\x01\x02\xff garbage \r\n\r\n")
        out["no_colon"] = raw(b"GET " + PREFIX.encode() + b"/invocation/next HTTP/1.1\r\n"
                              b"this header has no colon\r\n\r\n")
        out["bad_version"] = raw(b"GET / HTTP/7.3\r\n\r\n")
        out["bad_length"] = raw(b"POST " + PREFIX.encode() + b"/init/error HTTP/1.1\r\n"
                                b"Host: x\r\nContent-Length: banana\r\n\r\n")
        out["huge_header"] = raw(b"GET / HTTP/1.1\r\nX-Big: " + b"z" * (200 << 10) + b"\r\n\r\n")
        out["only_newlines"] = raw(b"\r\n" * 5000, timeout=2)
        # a partial request left hanging, then abandoned
        s = _connect()
        s.sendall(b"POST " + PREFIX.encode() + b"/invocation/x/resp")
        s.close()
    elif case == "unknown_paths":
        out["paths"] = [request("GET", p)[0] for p in (
            "/", "/2018-06-01", PREFIX, PREFIX + "/nope", PREFIX + "/invocation/../next",
            PREFIX + "/invocation/" + rid + "/response/extra", "/2015-03-31/functions",
            PREFIX + "/invocation/next/../../init/error", "/%00", "/" + "a" * 4000)]
    elif case == "wrong_methods":
        out["methods"] = [request(m, PREFIX + p)[0] for m, p in (
            ("DELETE", "/invocation/next"), ("POST", "/invocation/next"),
            ("GET", f"/invocation/{rid}/response"), ("PUT", f"/invocation/{rid}/error"),
            ("GET", "/init/error"), ("POST", "/restore/next"), ("PATCH", "/restore/error"),
            ("BREW", "/invocation/next"))]
    elif case == "restore_next":
        out["restore_next"] = request("GET", PREFIX + "/restore/next")
        out["init_error"] = request("POST", PREFIX + "/init/error", b"{}",
                                    {"Lambda-Runtime-Function-Error-Type": "Late.Error"})
    elif case == "pipelined":
        req = ("GET %s/nope HTTP/1.1\r\nHost: x\r\n\r\n" % PREFIX).encode()
        out["pipelined"] = raw(req * 3, responses=3)
    elif case == "many_connections":
        socks = [_connect() for _ in range(150)]
        for i, s in enumerate(socks):
            if i % 2:
                s.sendall(b"GET /half")
        for s in socks:
            s.close()
    elif case == "abandoned_next":
        # a second GET /next while this invocation runs: it parks; give up on it
        s = _connect(timeout=0.5)
        s.sendall(f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            out["second_next"] = s.recv(100).decode("latin-1")[:40]
        except socket.timeout:
            out["second_next"] = "parked"
        s.close()
        time.sleep(0.2)
    elif case == "error_garbage":
        out["error"] = request("POST", f"{PREFIX}/invocation/{rid}/error",
                               b"\x00not json at all\xff",
                               {"Lambda-Runtime-Function-Error-Type": "Weird." + "E" * 5000})
    out["alive"] = alive()
    out["case"] = case         # the caller may only see what the handler posted itself
    print("RAPI-RESULT " + json.dumps(out), flush=True)
    return out
