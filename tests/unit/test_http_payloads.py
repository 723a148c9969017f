"""Function URLs and HttpApi/Api routes without CRIU: route checks and matching, the
2.0/1.0 events, the response mappings, gateway errors, and the aiohttp side (the
real ``create_app`` plus the catch-all) over a fake InvokeService."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from snapstart.errors import ConfigError, ThrottledError
from snapstart.triggers import config, http
from snapstart.triggers.http import (BadResponse, HttpRequest, Snapshot, Table, check_route,
                                     error_response, event_v1, event_v2, response_v1,
                                     response_v2)


def _routes(*entries: dict) -> Snapshot:
    return Snapshot.build(config.Triggers(http_routes=[
        {"function": "f", "source": "HttpApi", **e} for e in entries]))


# ---- routes --------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [
    ("GET", "/"), ("ANY", "/items/{id}"), ("post", "/files/{proxy+}"), ("ANY", "$default"),
    ("DELETE", "/a/b/{c}/d"), ("GET", "/v1/metrics"), ("GET", "/{proxy+}"),
])
def test_good_routes(method, path):
    check_route(method, path)


@pytest.mark.parametrize("method,path,words", [
    ("POST", "/2015-03-31/functions/{name}/invocations", "Invoke API"),
    ("GET", "/2021-11-15/anything", "Invoke API"),
    ("GET", "/metrics", "/metrics"),
    ("ANY", "/lambda-url/{proxy+}", "function URLs"),
    ("GET", "/a/{proxy+}/b", "last segment"),
    ("GET", "/a/{x}/{x}", "twice"),
    ("GET", "items", "start with"),
    ("GET", "/items/", "start with"),
    ("GET", "/a//b", "bad segment"),
    ("GET", "/a/{b", "bad segment"),
    ("FETCH", "/a", "not one of"),
])
def test_bad_routes_name_the_problem(method, path, words):
    with pytest.raises(ConfigError) as info:
        check_route(method, path)
    assert words in info.value.message


def test_most_specific_route_wins():
    snap = _routes({"method": "ANY", "path": "$default", "function": "default"},
                   {"method": "ANY", "path": "/{proxy+}", "function": "root-greedy"},
                   {"method": "GET", "path": "/pets/{proxy+}", "function": "pets-greedy"},
                   {"method": "GET", "path": "/pets/{id}", "function": "pets-id"},
                   {"method": "ANY", "path": "/pets/dog", "function": "dog-any"},
                   {"method": "GET", "path": "/pets/dog", "function": "dog-get"},
                   {"method": "GET", "path": "/pets/{id}/toys", "function": "toys"})

    def target(method, path):
        found = snap.match(method, path)
        return (found[0].function, found[1]) if found else None

    assert target("GET", "/pets/dog") == ("dog-get", {})
    assert target("POST", "/pets/dog") == ("dog-any", {})
    assert target("GET", "/pets/cat") == ("pets-id", {"id": "cat"})
    assert target("GET", "/pets/cat/") == ("pets-id", {"id": "cat"})       # trailing /
    assert target("GET", "/pets/a%20b") == ("pets-id", {"id": "a b"})      # decoded
    assert target("GET", "/pets/cat/toys") == ("toys", {"id": "cat"})
    assert target("GET", "/pets/cat/food/bowl") == ("pets-greedy", {"proxy": "cat/food/bowl"})
    assert target("POST", "/pets/cat") == ("root-greedy", {"proxy": "pets/cat"})
    assert target("GET", "/") == ("default", {})         # a greedy needs a segment
    assert target("HEAD", "/pets/dog") == ("dog-any", {})


def test_unmatched_without_default():
    snap = _routes({"method": "GET", "path": "/items/{id}"})
    assert snap.match("GET", "/items") is None
    assert snap.match("GET", "/items/1/2") is None
    assert snap.match("POST", "/items/1") is None
    assert snap.match("GET", "/items//") is None


def test_bad_and_duplicate_entries_are_logged_and_left_out(caplog):
    caplog.set_level(logging.ERROR, "snapstart.triggers.http")
    triggers = config.Triggers(
        function_urls=[{"function": "a"}, {"function": "a"}, {"function": "b", "auth_type": "X"},
                       {"function": "c", "qualifier": "live", "invoke_mode": "RESPONSE_STREAM"}],
        http_routes=[{"function": "a", "source": "Api", "method": "POST",
                      "path": "/2015-03-31/functions/x/invocations"},
                     {"function": "a", "method": "GET", "path": "/ok"},
                     {"function": "b", "method": "GET", "path": "/ok"},
                     {"function": "a", "source": "Api", "path": "$default"},
                     {"function": "a", "path": "/t", "timeout_ms": 40000},
                     {"function": "../x", "path": "/bad"}])
    snap = Snapshot.build(triggers, "T")
    assert [(u.function, u.qualifier) for u in snap.urls] == [("a", None), ("c", "live")]
    assert [(r.function, r.path) for r in snap.routes] == [("a", "/ok")]
    text = caplog.text
    assert "T: http_routes[0] refused" in text and "Invoke API" in text
    assert "function_urls[1] refused: a second URL for a" in text
    assert "function_urls[2] refused: auth_type" in text
    assert "http_routes[2] refused: GET /ok is already routed to a" in text
    assert "http_routes[3] refused: $default routes are HttpApi only" in text
    assert "http_routes[4] refused: timeout_ms" in text
    assert "http_routes[5] refused" in text
    # NAME picks the unqualified or only URL; NAME:QUAL the qualified one
    assert snap.url("a").function == "a" and snap.url("c").qualifier == "live"
    assert snap.url("c:live").qualifier == "live" and snap.url("c:other") is None
    assert snap.url("zzz") is None


def test_table_follows_the_file(tmp_path, caplog):
    table = Table(tmp_path)
    assert table.current().routes == ()
    with config.locked(tmp_path):
        config.save(tmp_path, config.Triggers(http_routes=[
            {"function": "f", "method": "GET", "path": "/one"}]))
    assert [r.path for r in table.current().routes] == ["/one"]
    with config.locked(tmp_path):
        config.save(tmp_path, config.Triggers(http_routes=[
            {"function": "f", "method": "GET", "path": "/two"},
            {"function": "f", "method": "GET", "path": "/three"}]))
    assert sorted(r.path for r in table.current().routes) == ["/three", "/two"]
    # a broken file keeps what was served, with an error logged
    caplog.set_level(logging.ERROR, "snapstart.triggers.http")
    config.path_of(tmp_path).write_text("{not json")
    assert len(table.current().routes) == 2 and "not JSON" in caplog.text
    config.path_of(tmp_path).unlink()
    assert table.current().routes == ()


# ---- events --------------------------------------------------------------------------
REQ = HttpRequest(
    method="POST", path="/lambda-url/f/my/path", query="a=1&a=2&b=x%20y&empty=",
    headers=(("Host", "127.0.0.1:9000"), ("User-Agent", "ua/1"), ("X-Multi", "1"),
             ("x-multi", "2"), ("Cookie", "c1=v1; c2=v2"),
             ("Content-Type", "application/json")),
    body=b'{"k": "v"}', source_ip="10.0.0.7", host="127.0.0.1:9000", scheme="http",
    port=9000, time=1583348638.390, request_id="rid-1")


def test_event_v2_function_url_shape():
    event = event_v2(REQ, raw_path="/my/path", api_id="u" * 32)
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/my/path" and event["rawQueryString"] == REQ.query
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    headers = event["headers"]
    assert headers["x-multi"] == "1,2" and headers["user-agent"] == "ua/1"
    assert "cookie" not in headers and all(k == k.lower() for k in headers)
    assert headers["x-forwarded-for"] == "10.0.0.7" and headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-port"] == "9000"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "empty": ""}
    assert "pathParameters" not in event and "stageVariables" not in event
    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous" and ctx["apiId"] == "u" * 32
    assert ctx["domainName"] == "127.0.0.1:9000" and ctx["domainPrefix"] == "127"
    assert ctx["http"] == {"method": "POST", "path": "/my/path", "protocol": "HTTP/1.1",
                           "sourceIp": "10.0.0.7", "userAgent": "ua/1"}
    assert ctx["requestId"] == "rid-1" and ctx["routeKey"] == "$default"
    assert ctx["stage"] == "$default"
    assert ctx["time"] == "04/Mar/2020:19:03:58 +0000" and ctx["timeEpoch"] == 1583348638390
    assert event["body"] == '{"k": "v"}' and event["isBase64Encoded"] is False


def test_event_v2_bodies():
    def body(data: bytes, ctype: str | None) -> tuple:
        headers = (("Content-Type", ctype),) if ctype else ()
        event = event_v2(HttpRequest(method="POST", path="/", headers=headers, body=data))
        return event.get("body"), event["isBase64Encoded"]

    raw = bytes(range(256))
    assert body(raw, "application/octet-stream") == (base64.b64encode(raw).decode(), True)
    assert body(b"hi", "text/plain; charset=utf-8") == ("hi", False)
    assert body(b"<a/>", "application/soap+xml") == ("<a/>", False)
    assert body(b"a=1", "application/x-www-form-urlencoded") == ("YT0x", True)
    assert body(b"hi", None) == ("aGk=", True)
    assert body(b"\xff\xfe", "text/plain") == ("//4=", True)      # not UTF-8
    assert body(b"", "text/plain") == (None, False)
    event = event_v2(HttpRequest(method="GET", path="/"))
    assert "body" not in event and "cookies" not in event
    assert "queryStringParameters" not in event
    forced = event_v2(HttpRequest(method="POST", path="/", body=b"{}",
                                  headers=(("content-type", "application/json"),)),
                      binary_types=["application/*"])
    assert forced["isBase64Encoded"] is True


def test_event_v2_http_api_route():
    event = event_v2(HttpRequest(method="GET", path="/items/42"), route_key="GET /items/{id}",
                     path_params={"id": "42"}, account_id="123456789012", api_id="abc")
    assert event["routeKey"] == event["requestContext"]["routeKey"] == "GET /items/{id}"
    assert event["pathParameters"] == {"id": "42"}
    assert event["requestContext"]["accountId"] == "123456789012"


def test_event_v1_rest_shape():
    req = HttpRequest(method="GET", path="/items/42", query="t=1&t=2&u=3",
                      headers=(("Accept", "a"), ("X-Multi", "1"), ("X-Multi", "2")),
                      source_ip="10.0.0.8", time=1.5, request_id="rid")
    event = event_v1(req, resource="/items/{id}", path_params={"id": "42"},
                     account_id="123456789012", api_id="api")
    assert "version" not in event
    assert event["resource"] == "/items/{id}" and event["path"] == "/items/42"
    assert event["httpMethod"] == "GET"
    assert event["headers"]["X-Multi"] == "2" and event["headers"]["Accept"] == "a"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["queryStringParameters"] == {"t": "2", "u": "3"}
    assert event["multiValueQueryStringParameters"] == {"t": ["1", "2"], "u": ["3"]}
    assert event["pathParameters"] == {"id": "42"} and event["stageVariables"] is None
    ctx = event["requestContext"]
    assert ctx["resourcePath"] == "/items/{id}" and ctx["httpMethod"] == "GET"
    assert ctx["stage"] == "Prod" and ctx["requestId"] == "rid"
    assert ctx["identity"]["sourceIp"] == "10.0.0.8" and ctx["requestTimeEpoch"] == 1500
    assert event["body"] is None and event["isBase64Encoded"] is False
    bare = event_v1(HttpRequest(method="GET", path="/"), resource="/", http_api=True)
    assert bare["version"] == "1.0" and bare["requestContext"]["stage"] == "$default"
    assert bare["queryStringParameters"] is None and bare["pathParameters"] is None
    assert bare["multiValueQueryStringParameters"] is None


# ---- responses -----------------------------------------------------------------------
def _header(resp, name):
    return [v for k, v in resp.headers if k.lower() == name.lower()]


def test_response_v2_shapes():
    full = response_v2(json.dumps({
        "statusCode": 201, "headers": {"X-A": "1", "X-N": 5, "Content-Length": "99"},
        "cookies": ["a=1; Path=/", "b=2"], "body": "made",
        "multiValueHeaders": {"X-Ignored": ["1"]}}).encode())
    assert full.status == 201 and full.body == b"made"
    assert _header(full, "x-a") == ["1"] and _header(full, "x-n") == ["5"]
    assert _header(full, "set-cookie") == ["a=1; Path=/", "b=2"]
    assert _header(full, "content-type") == ["application/json"]
    assert not _header(full, "content-length") and not _header(full, "x-ignored")
    binary = response_v2(json.dumps({"statusCode": 200, "isBase64Encoded": True,
                                     "body": base64.b64encode(b"\0\1\2").decode(),
                                     "headers": {"content-type": "image/png"}}).encode())
    assert binary.body == b"\0\1\2" and _header(binary, "content-type") == ["image/png"]
    # anything else valid: 200, application/json, the payload verbatim
    for payload in (b'{"message": "hi"}', b'"Hello, world!"', b"[1, 2]", b"42", b"null"):
        plain = response_v2(payload)
        assert plain.status == 200 and plain.body == payload
        assert plain.headers == (("Content-Type", "application/json"),)
    assert response_v2(b'{"statusCode": "204"}').status == 204


@pytest.mark.parametrize("payload", [
    b"not json", b'{"statusCode": 99}', b'{"statusCode": true}', b'{"statusCode": "x"}',
    b'{"statusCode": 200, "headers": []}', b'{"statusCode": 200, "body": {"a": 1}}',
    b'{"statusCode": 200, "body": "!!", "isBase64Encoded": true}',
    b'{"statusCode": 200, "isBase64Encoded": "maybe"}',
    b'{"statusCode": 200, "cookies": "a=1"}',
    b'{"statusCode": 200, "headers": {"a": {"b": 1}}}',
])
def test_response_v2_malformed(payload):
    with pytest.raises(BadResponse):
        response_v2(payload)


def test_response_v1():
    resp = response_v1(json.dumps({
        "statusCode": 200, "headers": {"X-One": "h", "X-Both": "single"},
        "multiValueHeaders": {"X-Both": ["m1", "m2"], "Set-Cookie": ["a=1", "b=2"]},
        "body": "ok", "isBase64Encoded": False}).encode())
    assert resp.status == 200 and resp.body == b"ok"
    assert _header(resp, "x-one") == ["h"] and _header(resp, "x-both") == ["m1", "m2"]
    assert _header(resp, "set-cookie") == ["a=1", "b=2"]
    for payload in (b'{"body": "no status"}', b'"a string"', b"[1]", b"{bad"):
        with pytest.raises(BadResponse):
            response_v1(payload)


def test_gateway_errors_per_surface():
    def parts(surface, kind):
        resp = error_response(surface, kind, "rid")
        return resp.status, json.loads(resp.body), dict(resp.headers).get("x-amzn-ErrorType")

    assert parts("url", "function") == (502, {"message": "Internal Server Error"}, None)
    assert parts("HttpApi", "function") == (502, {"message": "Internal Server Error"}, None)
    assert parts("Api", "function") == (502, {"message": "Internal server error"}, None)
    assert parts("Api", "bad_response")[0] == 502
    assert parts("url", "throttled") == (429, {"Message": "Rate Exceeded."},
                                         "TooManyRequestsException")
    assert parts("HttpApi", "throttled")[0] == parts("Api", "throttled")[0] == 500
    assert parts("HttpApi", "timeout") == (503, {"message": "Service Unavailable"}, None)
    assert parts("Api", "timeout") == (504, {"message": "Endpoint request timed out"}, None)
    assert parts("url", "forbidden") == (403, {"Message": "Forbidden"}, "AccessDeniedException")
    assert parts("HttpApi", "not_found") == (404, {"message": "Not Found"}, None)
    status, body, kind = parts("url", "too_large")
    assert status == 413 and kind == "RequestTooLargeException"
    assert "6291456 bytes" in body["Message"]


def test_payload_limit_is_the_managers():
    from snapstart.manager.manager import MAX_SYNC_PAYLOAD
    assert http.MAX_PAYLOAD == MAX_SYNC_PAYLOAD


def test_prelude():
    assert http.split_prelude(b'{"statusCode": 201}') is None        # not yet
    prelude, rest = http.split_prelude(b'{"statusCode": 201}' + b"\0" * 8 + b"body")
    assert prelude == {"statusCode": 201} and rest == b"body"
    status, headers = http.prelude_head({"statusCode": 418, "headers": {"X": "y"},
                                         "cookies": ["c=1"]})
    assert status == 418 and ("Set-Cookie", "c=1") in headers and ("X", "y") in headers
    with pytest.raises(BadResponse):
        http.split_prelude(b"[1]" + b"\0" * 8)
    with pytest.raises(BadResponse):
        http.split_prelude(b"x" * (65 * 1024))


def test_cors():
    cors = {"AllowOrigins": ["https://a.example"], "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-h"], "ExposeHeaders": ["x-e"], "MaxAge": 60,
            "AllowCredentials": True}
    assert http.cors_headers(cors, "https://other.example") == []
    assert http.cors_headers(None, "https://a.example") == []
    pre = dict(http.cors_headers(cors, "https://a.example", preflight=True))
    assert pre["Access-Control-Allow-Origin"] == "https://a.example"
    assert pre["Access-Control-Allow-Methods"] == "GET,POST"
    assert pre["Access-Control-Max-Age"] == "60"
    assert pre["Access-Control-Allow-Credentials"] == "true"
    actual = dict(http.cors_headers({"AllowOrigins": ["*"], "ExposeHeaders": ["x-e"]}, "o"))
    assert actual == {"Access-Control-Allow-Origin": "*",
                      "Access-Control-Expose-Headers": "x-e"}


# ---- the aiohttp side, over a fake InvokeService -------------------------------------
class FakeService:
    """What the gateway and create_app use of InvokeService; ``answer(event, sink)``
    returns (payload, function_error, stream_content_type) or raises."""

    def __init__(self, home: Path, answer) -> None:
        from snapstart.invoke_api.metrics import Metrics

        self.settings = SimpleNamespace(home=home, account_id="123456789012")
        self.pool = ThreadPoolExecutor(4)
        self.control = ThreadPoolExecutor(2)
        self.metrics = Metrics()
        self.answer = answer
        self.calls: list[tuple[str, str | None, dict]] = []

    def invoke_sync(self, name, qualifier, body, *, trace_id, client_context, info=None,
                    sink=None, request_id=None, trace_context=None):
        event = json.loads(body)
        assert trace_id.startswith("Root=1-") and client_context is None
        self.calls.append((name, qualifier, event))
        payload, error, ctype = self.answer(event, sink)
        return SimpleNamespace(payload=payload, function_error=error,
                               stream_content_type=ctype), "1", b""


def _serve(tmp_path, answer, triggers: config.Triggers, scenario):
    from aiohttp.test_utils import TestClient, TestServer

    from snapstart.invoke_api.server import create_app

    config.save(tmp_path, triggers)
    service = FakeService(tmp_path, answer)

    async def main():
        app = create_app(service)
        http.install(app, service)
        async with TestClient(TestServer(app)) as client:
            await scenario(client, service)

    try:
        asyncio.run(main())
    finally:
        service.pool.shutdown(wait=True)
        service.control.shutdown(wait=True)


def test_gateway_end_to_end(tmp_path):
    def answer(event, sink):
        if event.get("rawPath") == "/boom" or event.get("path") == "/rest/boom":
            return b'{"errorType": "X", "errorMessage": "y"}', "Unhandled", None
        if event.get("rawPath") == "/throttle":
            raise ThrottledError("Rate Exceeded.", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        if event.get("rawPath") == "/slow" or event.get("path") == "/rest/slow":
            time.sleep(0.5)
        if "httpMethod" in event:
            return json.dumps({"statusCode": 200, "body": json.dumps(event)}).encode(), None, None
        return json.dumps(event).encode(), None, None

    triggers = config.Triggers(
        function_urls=[{"function": "f"}, {"function": "iam", "auth_type": "AWS_IAM"}],
        http_routes=[{"function": "g", "method": "GET", "path": "/items/{id}"},
                     {"function": "g", "method": "GET", "path": "/slow", "timeout_ms": 100},
                     {"function": "r", "source": "Api", "method": "ANY",
                      "path": "/rest/{proxy+}", "timeout_ms": 100}])

    async def scenario(client, service):
        r = await client.get("/lambda-url/f/a/b?x=1", headers={"Cookie": "k=v"})
        assert r.status == 200, await r.text()
        event = await r.json()
        assert event["rawPath"] == "/a/b" and event["cookies"] == ["k=v"]
        assert r.headers["x-amzn-RequestId"] == event["requestContext"]["requestId"]
        r = await client.get("/lambda-url/f")
        assert (await r.json())["rawPath"] == "/"
        r = await client.get("/lambda-url/f/boom")
        assert r.status == 502 and await r.json() == {"message": "Internal Server Error"}
        r = await client.get("/lambda-url/f/throttle")
        assert r.status == 429 and r.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        r = await client.get("/lambda-url/nope/")
        assert r.status == 403 and await r.json() == {"Message": "Forbidden"}
        r = await client.get("/lambda-url/iam/")
        assert r.status == 403
        r = await client.get("/lambda-url/iam/", headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/"
                             "lambda/aws4_request, SignedHeaders=host, Signature=abc"})
        event = await r.json()
        assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == "AKIDEXAMPLE"
        r = await client.post("/lambda-url/f/", data=b"x" * (7 * 1024 * 1024))
        assert r.status == 413 and "6291456" in (await r.json())["Message"]
        r = await client.get("/items/42")
        assert (await r.json())["pathParameters"] == {"id": "42"}
        r = await client.get("/slow")
        assert r.status == 503 and await r.json() == {"message": "Service Unavailable"}
        r = await client.post("/rest/slow")
        assert r.status == 504
        r = await client.post("/rest/boom")
        assert r.status == 502 and await r.json() == {"message": "Internal server error"}
        r = await client.put("/rest/a/b?q=1")
        event = json.loads(await r.text())
        assert event["resource"] == "/rest/{proxy+}" and event["httpMethod"] == "PUT"
        assert event["pathParameters"] == {"proxy": "a/b"}
        r = await client.get("/nothing/here")
        assert r.status == 404 and await r.json() == {"message": "Not Found"}
        # the Invoke API and /metrics are never shadowed, its 404/405 kept
        r = await client.get("/2015-03-31/functions/f/invocations")
        assert r.status == 405 and r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        r = await client.get("/2015-03-31/nothing")
        assert r.status == 404 and r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        r = await client.get("/metrics")
        assert r.status == 200 and "snapstart_" in await r.text()
        assert [c[0] for c in service.calls].count("g") == 2

    _serve(tmp_path, answer, triggers, scenario)


def test_no_routes_keeps_the_invoke_api_404(tmp_path):
    async def scenario(client, service):
        r = await client.get("/whatever")
        assert r.status == 404 and r.headers["x-amzn-ErrorType"] == "UnknownOperationException"

    _serve(tmp_path, lambda e, s: (b"{}", None, None), config.Triggers(), scenario)


def test_streamed_function_url_with_prelude(tmp_path):
    gate = threading.Event()

    def answer(event, sink):
        if sink is None:                       # BUFFERED: the stream is the payload
            data = b'{"statusCode": 202, "headers": {"x-s": "1"}}' + b"\0" * 8 + b"whole"
            return data, None, http.PRELUDE_CONTENT_TYPE
        sink.begin(http.PRELUDE_CONTENT_TYPE)
        sink.chunk(b'{"statusCode": 201, "headers": {"content-type": "text/plain"},')
        sink.chunk(b' "cookies": ["s=1"]}' + b"\0" * 8 + b"first\n")
        assert gate.wait(10), "the first bytes never reached the client"
        sink.chunk(b"second\n")
        return b"", None, http.PRELUDE_CONTENT_TYPE

    triggers = config.Triggers(function_urls=[
        {"function": "s", "invoke_mode": "RESPONSE_STREAM"}, {"function": "b"}])

    async def scenario(client, service):
        r = await client.get("/lambda-url/s/")
        assert r.status == 201 and r.headers["Content-Type"] == "text/plain"
        assert r.headers.getall("Set-Cookie") == ["s=1"]
        assert await r.content.readline() == b"first\n"
        gate.set()
        assert await r.content.read() == b"second\n"
        r = await client.get("/lambda-url/b/")
        assert r.status == 202 and r.headers["x-s"] == "1" and await r.read() == b"whole"

    _serve(tmp_path, answer, triggers, scenario)
