"""Function URLs and HttpApi/Api routes (issue 15) on a real ``snapstart serve``
subprocess, serving real restored clones, driven by a real HTTP client (http.client):
event shapes, response mapping, binary round trips, errors, limits, reloads of
triggers.json, and real web stacks inside the function (FastAPI through Mangum,
Express through serverless-http, a streaming Node.js handler)."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import function_logs  # noqa: E402
from leaks import cli as _cli, publish  # noqa: E402
from test_serve import serve  # noqa: E402,F401 - the serve fixture

from snapstart.triggers import config  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def _triggers(home, **kinds) -> None:
    """Write triggers.json as deploy does (atomically, under its lock)."""
    with config.locked(home.home):
        config.save(home.home, config.Triggers(**kinds))


class Reply:
    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = resp.read()

    def json(self):
        return json.loads(self.body)


def _http(server, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None, timeout: float = 60) -> Reply:
    host = urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def _invocations(server, name: str) -> float:
    return sum(v for k, v in server.metrics().items()
               if k.startswith(f'snapstart_invocations_total{{function="{name}"'))


def _wait_for(predicate, what: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _node_publish(home, directory: Path, name: str) -> None:
    _cli(home, "publish", str(directory), "--name", name, "--runtime", "node",
         "--handler", "index.handler", "--timeout", "10", "--json")


def test_function_url_shapes_errors_limits_and_reload(home, serve):
    publish(home, "http-echo", "echo", timeout=5)
    publish(home, "hello")                               # published, but has no URL
    _triggers(home, function_urls=[{"function": "echo", "qualifier": None,
                                    "auth_type": "NONE", "invoke_mode": "BUFFERED",
                                    "cors": None}])
    server = serve()

    # the event: payload format 2.0, rawPath below /lambda-url/NAME
    r = _http(server, "GET", "/lambda-url/echo/some/path?a=1&a=2&b=%20x",
              headers={"Cookie": "c1=v1; c2=v2", "X-Multi": "one", "User-Agent": "t/1"})
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/json"
    out = r.json()
    event = out["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/some/path" and event["rawQueryString"] == "a=1&a=2&b=%20x"
    assert event["queryStringParameters"] == {"a": "1,2", "b": " x"}
    assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one" and event["headers"]["user-agent"] == "t/1"
    assert event["headers"]["x-amzn-trace-id"].startswith("Root=1-")
    assert "pathParameters" not in event and "body" not in event
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["http"]["method"] == "GET" and ctx["http"]["path"] == "/some/path"
    assert ctx["http"]["sourceIp"] == "127.0.0.1" and ctx["stage"] == "$default"
    assert ctx["accountId"] == "anonymous" and len(ctx["apiId"]) == 32
    # the URL's request id is the invocation's (Lambda: "to trace invocation logs")
    assert ctx["requestId"] == out["request_id"] == r.headers["x-amzn-RequestId"]

    # response mapping, as Lambda does for 2.0
    plain = _http(server, "GET", "/lambda-url/echo/plain")
    assert plain.status == 200 and plain.headers["Content-Type"] == "application/json"
    assert plain.json()["message"] == "plain"
    string = _http(server, "GET", "/lambda-url/echo/string")
    assert string.status == 200 and string.body == b'"Hello, world!"'
    assert _http(server, "GET", "/lambda-url/echo/list").body == b"[1, 2, 3]"
    custom = _http(server, "POST", "/lambda-url/echo/custom", body=b"{}",
                   headers={"Content-Type": "application/json"})
    assert custom.status == 201 and custom.body == b"created"
    assert custom.headers["Content-Type"] == "text/plain" and custom.headers["X-Custom"] == "yes"
    assert custom.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]

    # binary bodies round-trip (base64 both ways)
    data = bytes(range(256)) * 64
    binary = _http(server, "POST", "/lambda-url/echo/binary", body=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert binary.status == 200 and binary.body == data[::-1]
    assert binary.headers["Content-Type"] == "application/octet-stream"

    # errors: a function error and a malformed response are 502s with Lambda's body
    failed = _http(server, "GET", "/lambda-url/echo/raise")
    assert failed.status == 502 and failed.json() == {"message": "Internal Server Error"}
    bad = _http(server, "GET", "/lambda-url/echo/malformed")
    assert bad.status == 502
    # a 7 MB body: 413 with Lambda's message, the server keeps serving
    big = _http(server, "POST", "/lambda-url/echo/", body=b"x" * (7 * 1024 * 1024),
                headers={"Content-Type": "text/plain"})
    assert big.status == 413
    assert big.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
    assert "smaller than 6291456 bytes" in big.json()["Message"]
    # a function without a URL, and one that does not exist: Lambda's 403
    for name in ("hello", "nosuch"):
        denied = _http(server, "GET", f"/lambda-url/{name}/")
        assert denied.status == 403 and denied.json() == {"Message": "Forbidden"}

    # the Invoke API is untouched, and /metrics counts the URL's invocations
    client = server.client()
    ok = client.invoke(FunctionName="hello", Payload=b'{"k": 1}')
    assert ok["StatusCode"] == 200 and json.loads(ok["Payload"].read())["event"] == {"k": 1}
    assert _invocations(server, "echo") == 8         # 413 and 403s never invoked
    m = server.metrics()
    assert m['snapstart_errors_total{error_type="RuntimeError",function="echo"}'] == 1
    assert _wait_for(lambda: "http-echo: $default /some/path" in function_logs(home, "echo"),
                     "the URL invocation's log")

    # triggers.json followed without a restart: a route added, the URL removed
    _triggers(home, http_routes=[{"function": "echo", "source": "HttpApi", "method": "GET",
                                  "path": "/items/{id}", "payload_format": "2.0"}])
    routed = _http(server, "GET", "/items/42")
    assert routed.status == 200, routed.body
    assert routed.json()["event"]["pathParameters"] == {"id": "42"}
    assert _http(server, "GET", "/lambda-url/echo/").status == 403
    assert server.alive()


def test_http_api_and_rest_routes(home, serve):
    publish(home, "http-echo", "api", timeout=6)
    publish(home, "http-echo", "rest", timeout=6)
    _triggers(home, http_routes=[
        {"function": "api", "source": "HttpApi", "method": "GET", "path": "/items/{id}"},
        {"function": "api", "source": "HttpApi", "method": "GET", "path": "/items/special"},
        {"function": "api", "source": "HttpApi", "method": "ANY", "path": "/files/{proxy+}"},
        {"function": "api", "source": "HttpApi", "method": "ANY", "path": "$default"},
        {"function": "api", "source": "HttpApi", "method": "GET", "path": "/slow/{x}",
         "timeout_ms": 1000},
        {"function": "rest", "source": "Api", "method": "ANY", "path": "/rest/{proxy+}",
         "timeout_ms": 1000},
        # collides with the Invoke API: refused with an error logged, the rest served
        {"function": "api", "source": "Api", "method": "POST",
         "path": "/2015-03-31/functions/{name}/invocations"},
    ])
    server = serve()

    def event_of(method: str, path: str, **kw) -> dict:
        r = _http(server, method, path, **kw)
        assert r.status == 200, (path, r.status, r.body)
        return r.json()["event"]

    ev = event_of("GET", "/items/42?q=1")
    assert ev["routeKey"] == "GET /items/{id}" and ev["pathParameters"] == {"id": "42"}
    assert ev["queryStringParameters"] == {"q": "1"}
    assert event_of("GET", "/items/special")["routeKey"] == "GET /items/special"
    ev = event_of("DELETE", "/files/a/b%20c/d.txt")
    assert ev["routeKey"] == "ANY /files/{proxy+}"
    assert ev["pathParameters"] == {"proxy": "a/b c/d.txt"}
    assert ev["requestContext"]["http"]["method"] == "DELETE"
    ev = event_of("POST", "/anything/else", body=b'{"x": 1}',
                  headers={"Content-Type": "application/json"})
    assert ev["routeKey"] == "$default" and ev["body"] == '{"x": 1}'
    assert ev["isBase64Encoded"] is False

    # REST API (payload 1.0)
    r = _http(server, "PUT", "/rest/a/b?t=1&t=2", body=b"\x00\xffdata",
              headers={"Content-Type": "application/octet-stream", "X-H": "h"})
    assert r.status == 200, r.body
    ev = r.json()["event"]
    assert ev["resource"] == "/rest/{proxy+}" and ev["path"] == "/rest/a/b"
    assert ev["httpMethod"] == "PUT" and ev["pathParameters"] == {"proxy": "a/b"}
    assert ev["queryStringParameters"] == {"t": "2"}
    assert ev["multiValueQueryStringParameters"] == {"t": ["1", "2"]}
    assert ev["headers"]["X-H"] == "h" and ev["multiValueHeaders"]["X-H"] == ["h"]
    assert ev["headers"]["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert ev["requestContext"]["stage"] == "Prod"
    assert ev["requestContext"]["resourcePath"] == "/rest/{proxy+}"
    assert ev["isBase64Encoded"] is True and ev["stageVariables"] is None
    multi = _http(server, "GET", "/rest/x/multi")
    assert multi.status == 200 and multi.headers.get_all("X-Multi") == ["1", "2"]
    assert _http(server, "GET", "/rest/x/binary").status == 200
    failed = _http(server, "GET", "/rest/x/raise")
    assert failed.status == 502 and failed.json() == {"message": "Internal server error"}
    no_status = _http(server, "GET", "/rest/x/plain")           # 1.0 needs a statusCode
    assert no_status.status == 502
    # integration timeouts: HttpApi 503, REST 504; the server keeps serving
    slow = _http(server, "GET", "/slow/sleep")
    assert slow.status == 503 and slow.json() == {"message": "Service Unavailable"}
    slow = _http(server, "GET", "/rest/x/sleep")
    assert slow.status == 504 and slow.json() == {"message": "Endpoint request timed out"}
    big = _http(server, "POST", "/files/big", body=b"x" * (7 * 1024 * 1024),
                headers={"Content-Type": "text/plain"})
    assert big.status == 413 and "6291456" in big.json()["message"]

    # the colliding route was refused, loudly; the Invoke API answers there
    assert "http_routes[6] refused" in server.output() and "Invoke API" in server.output()
    client = server.client()
    assert client.invoke(FunctionName="api", Payload=b"{}")["StatusCode"] == 200
    assert _wait_for(lambda: _invocations(server, "api") >= 6, "the api invocations")


def test_fastapi_through_mangum(home, serve):
    """A real ASGI stack inside the function; requirements.txt installed at publish."""
    publish(home, "http-fastapi", "fastapi", timeout=10)
    _triggers(home, function_urls=[{"function": "fastapi"}],
              http_routes=[{"function": "fastapi", "source": "HttpApi", "method": "GET",
                            "path": "/items/{item_id}"}])
    server = serve()
    r = _http(server, "GET", "/lambda-url/fastapi/items/5?q=x")
    assert r.status == 200, r.body
    assert r.json() == {"item_id": 5, "q": "x"}
    assert _http(server, "GET", "/items/7").json() == {"item_id": 7, "q": None}
    data = bytes(range(256)) * 16
    echo = _http(server, "POST", "/lambda-url/fastapi/echo", body=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert echo.status == 200 and echo.body == data[::-1]
    cookie = _http(server, "GET", "/lambda-url/fastapi/cookie", headers={"Cookie": "visit=yes"})
    assert cookie.json() == {"visit": "yes"}
    assert cookie.headers["Set-Cookie"].startswith("seen=yes")
    missing = _http(server, "GET", "/lambda-url/fastapi/nope")
    assert missing.status == 404 and missing.json() == {"detail": "Not Found"}
    failed = _http(server, "GET", "/lambda-url/fastapi/fail")     # FastAPI's own 500
    assert failed.status == 500 and failed.body == b"Internal Server Error"


def test_express_through_serverless_http_and_a_streaming_url(home, serve):
    """Express on Node through serverless-http (npm ci into a copy of the function),
    and a RESPONSE_STREAM function URL whose first bytes arrive before it finishes."""
    if shutil.which("npm") is None:
        pytest.fail("npm is needed for the Express function (Debian's npm package)")
    work = home.home.parent / "http-express"
    shutil.copytree(FUNCTIONS / "http-express", work)
    proc = subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _node_publish(home, work, "express")
    _node_publish(home, FUNCTIONS / "http-node-stream", "streamer")
    _triggers(home, function_urls=[{"function": "express"},
                                   {"function": "streamer", "invoke_mode": "RESPONSE_STREAM"}],
              http_routes=[{"function": "express", "source": "HttpApi", "method": "ANY",
                            "path": "/users/{proxy+}"}])
    server = serve()
    r = _http(server, "GET", "/lambda-url/express/users/7?q=hi", headers={"User-Agent": "t/2"})
    assert r.status == 200, r.body
    assert r.json() == {"id": "7", "q": "hi", "ua": "t/2"}
    assert r.headers["Set-Cookie"] == "user=7; Path=/"
    assert r.headers["X-Powered-By"] == "Express"
    routed = _http(server, "GET", "/users/8")
    assert routed.status == 200 and routed.json()["id"] == "8"
    data = bytes(range(256)) * 16
    echo = _http(server, "POST", "/lambda-url/express/echo", body=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert echo.status == 200 and echo.body == data[::-1]
    assert _http(server, "GET", "/lambda-url/express/none").status == 404

    # streaming: status, headers and cookies from the prelude, then the body as written
    code = home.home / "functions" / "streamer" / "versions" / "1" / "code"
    host = urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        conn.request("GET", "/lambda-url/streamer/s?gate=gate-1")
        resp = conn.getresponse()
        assert resp.status == 201 and resp.headers["Content-Type"] == "text/plain"
        assert resp.headers["X-Streamed"] == "yes"
        assert resp.headers["Set-Cookie"] == "streamed=1; Path=/"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert resp.readline() == b"first /s\n"
        (code / "gate-1").write_text("open")       # only now may the handler go on
        assert resp.read() == b"gate-open\nlast\n"
    finally:
        conn.close()
