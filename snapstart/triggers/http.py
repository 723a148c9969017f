"""Function URLs and HttpApi/Api routes on ``snapstart serve``'s port (issue 15).

Real HTTP requests become Lambda events, run through the Invoke API's own path
(``InvokeService.invoke_sync`` on its thread pool: warm, restored or cold; counted
in /metrics and written to the function's log like any invocation), and the
function's result becomes the HTTP response, as Lambda function URLs and API
Gateway do. Must not: shadow an Invoke API path, block the event loop on an
invocation, or answer a gateway request with an Invoke API error shape.

Configuration
-------------
``$SNAPSTART_HOME/triggers.json`` (config.py: ``function_urls`` and ``http_routes``),
re-read when its mtime, size or inode changes (checked on every request: a deploy
needs no restart). Each entry is checked when loaded; a bad one is logged as an
error naming ``function_urls[i]`` / ``http_routes[i]`` and left out, the others
served. A file that cannot be read at all keeps the previous configuration.
Keys besides config.py's, all optional: a route's ``timeout_ms`` (the integration
timeout, SAM's ``TimeoutInMillis``: 50..29000 for Api, 50..30000 for HttpApi) and
``binary_media_types``; a function URL's ``cors`` uses Lambda's ``Cors`` keys
(``AllowOrigins``, ``AllowMethods``, ``AllowHeaders``, ``ExposeHeaders``,
``MaxAge``, ``AllowCredentials``).

Where requests go
-----------------
One catch-all aiohttp route, added after every route of ``create_app``; aiohttp
tries routes in order, so the Invoke API (its paths begin with a date segment,
``/2015-03-31/...``) and ``/metrics`` always win. A request that reaches the
catch-all on such a path (an Invoke API path with the wrong method) is answered as
before, with the Invoke API's own 404/405.

- ``/lambda-url/NAME[:QUALIFIER]/SUBPATH?QUERY``, any method: the function URL of
  NAME (its entry with that qualifier; without one, the unqualified entry or the
  only entry). ``rawPath`` is ``/SUBPATH`` (``/`` if none). A function without an
  entry answers 403 ``{"Message":"Forbidden"}`` (``x-amzn-ErrorType:
  AccessDeniedException``), which is what Lambda answers a function URL request it
  will not invoke; whether NAME exists is not revealed. ``auth_type: AWS_IAM``
  requires a SigV4-signed request (``Authorization: AWS4-HMAC-SHA256 ...`` or
  ``X-Amz-Signature`` in the query), else the same 403; the signature itself is not
  verified (there is no IAM here), its access key is passed on in
  ``requestContext.authorizer.iam``.
- every other path: the ``http_routes``, matched most specific first, as API
  Gateway does: segment by segment from the left, a literal segment beats a
  ``{param}``, which beats a greedy ``{proxy+}`` (one or more segments, last only);
  at equal paths an exact method beats ``ANY``; ``$default`` (HttpApi) last. Literal
  segments and parameter values are compared and passed percent-decoded; one
  trailing ``/`` is ignored. ``HEAD`` is only matched by ``HEAD`` or ``ANY``.
  No route matches: HttpApi's 404 ``{"message":"Not Found"}`` (REST's 403
  ``{"message":"Missing Authentication Token"}`` when only Api routes are
  configured; the Invoke API's 404 when no route is configured at all).

``check_route(method, path)`` is the one validity check (deploy calls it too): a
method of GET/POST/PUT/PATCH/DELETE/HEAD/OPTIONS/ANY, a path of ``/`` segments
(``{name}``, a final ``{name+}``) or ``$default``; a path whose first segment is a
date (``/2015-03-31/...``), ``/metrics`` or ``/lambda-url/...`` collides with the
Invoke API or the function URLs and is refused with a ConfigError. A duplicate
method and path is refused when loaded (the first entry is kept).

Events (what the function gets)
-------------------------------
Payload format 2.0 (function URLs; HttpApi routes by default)::

    {"version": "2.0", "routeKey": "$default" | "GET /items/{id}",
     "rawPath": "/items/42", "rawQueryString": "a=1&a=2",
     "cookies": ["k=v", ...],                      (only if a Cookie header came)
     "headers": {"lowercase-name": "v1,v2"},       (Cookie excluded; x-forwarded-*,
                                                    x-amzn-trace-id added)
     "queryStringParameters": {"a": "1,2"},        (only if there is a query)
     "pathParameters": {"id": "42"},               (HttpApi routes with parameters)
     "requestContext": {"accountId", "apiId", "domainName", "domainPrefix",
        "http": {"method", "path", "protocol", "sourceIp", "userAgent"},
        "requestId", "routeKey", "stage": "$default", "time": "12/Mar/2020:19:03:58
        +0000", "timeEpoch": ms, "authorizer": {"iam": ...} (AWS_IAM URLs only)},
     "body": "...",                                (only if the request had one)
     "isBase64Encoded": bool}

A function URL's ``accountId`` is ``"anonymous"`` (auth NONE) and its ``apiId`` a
stable 32-character URL id; ``domainName`` is the request's Host (``domainPrefix``
its first label), and its ``requestId`` is the invocation's request id (the
``x-amzn-RequestId`` of the response), as on Lambda.

Payload format 1.0 (Api routes, REST API; HttpApi routes with payload_format 1.0,
which add ``"version": "1.0"`` and use stage ``$default``)::

    {"resource": "/items/{id}", "path": "/items/42", "httpMethod": "GET",
     "headers": {"Name": "last value"} | null,
     "multiValueHeaders": {"Name": ["v1", "v2"]} | null,
     "queryStringParameters": {"a": "2"} | null,
     "multiValueQueryStringParameters": {"a": ["1", "2"]} | null,
     "pathParameters": {"id": "42"} | null, "stageVariables": null,
     "requestContext": {"accountId", "apiId", "domainName", "domainPrefix",
        "extendedRequestId", "httpMethod", "identity": {"sourceIp", "userAgent",
        ... null}, "path", "protocol", "requestId", "requestTime",
        "requestTimeEpoch", "resourceId", "resourcePath", "stage": "Prod"},
     "body": "..." | null, "isBase64Encoded": bool}

A body is passed as text when its Content-Type is textual (``text/*``, JSON, XML,
JavaScript, ``*+json``, ``*+xml``) and it is valid UTF-8, else base64-encoded with
``isBase64Encoded: true`` (always base64 for a type in ``binary_media_types``).

Responses (what the client gets)
--------------------------------
2.0: a JSON object with ``statusCode``: that status, its ``headers`` (values
turned into strings), each of ``cookies`` as a ``Set-Cookie`` header, its ``body``
(base64-decoded if ``isBase64Encoded``); ``multiValueHeaders`` is ignored, as
Lambda does. Any other valid JSON (an object without ``statusCode``, a string, a
number, a list, null): 200, ``Content-Type: application/json``, and the function's
payload as the body, verbatim (a returned string arrives with its quotes, as
Lambda's documentation shows). 1.0: the object must have ``statusCode`` (else 502,
as API Gateway does); ``headers`` and ``multiValueHeaders`` are merged (for a name
in both, the multi values). Without a Content-Type the response gets
``application/json``. A statusCode outside 100..599, headers that are not an
object, a body that is not a string, bad base64 or a payload that is not JSON are
malformed: 502.

Errors, per surface (function URL | HttpApi | Api)::

    function error (Unhandled, incl. the
      function's own timeout and crashes)  502 {"message":"Internal Server Error"} |
                                           502 {"message":"Internal Server Error"} |
                                           502 {"message": "Internal server error"}
    malformed response                     502, the same bodies
    integration timeout (timeout_ms,        -- (a URL waits for the function's own
      default 30 s HttpApi, 29 s Api)         timeout) | 503 {"message":"Service
                                           Unavailable"} | 504 {"message": "Endpoint
                                           request timed out"}
    throttled (concurrency limits)         429 {"Message":"Rate Exceeded."}
                                           (TooManyRequestsException) | 500 | 500
                                           (API Gateway answers a rejected Lambda
                                           invoke with 500 "Internal server error")
    request over 6 MB (the event Lambda    413 {"Message": "Request must be smaller
      would be sent, body included)           than 6291456 bytes for the
                                           InvokeFunction operation"} on all three
                                           (API Gateway itself takes 10 MB, then
                                           fails the invoke with a 500)
    function gone since the deploy         403 {"Message":"Forbidden"} | 500 | 500
    any other failure to invoke (restore,  500 {"Message":"An internal error
      sandbox; logged)                        occurred."} | 500 | 500

The invocation keeps running when the integration times out (as on Lambda); its
result is still logged and counted. A RESPONSE_STREAM function URL sends the bytes
a streaming function writes as they arrive (chunked); a stream of type
``application/vnd.awslambda.http-integration-response`` (node's
``awslambda.HttpResponseStream.from``) begins with a JSON prelude (``statusCode``,
``headers``, ``cookies``) and 8 NUL bytes, which become the status and headers. An
error after the first byte can only end the stream. A function that does not
stream is answered as BUFFERED. Function URL CORS (``cors``): a preflight
``OPTIONS`` is answered without invoking; other responses to an allowed Origin get
``Access-Control-Allow-Origin``/``-Expose-Headers``/``-Allow-Credentials``
(replacing the function's own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote

from .. import tracing
from ..config import validate_name
from ..errors import ConfigError, FunctionNotFoundError, SnapStartError, ThrottledError
from ..invoke_api.sink import LoopSink
from . import config

__all__ = ["check_route", "install", "Route", "FunctionUrl", "Snapshot", "Table",
           "HttpRequest", "HttpResponse", "BadResponse", "event_v1", "event_v2",
           "response_v1", "response_v2", "error_response", "compile_route", "compile_url",
           "cors_headers", "split_prelude", "prelude_head", "MAX_PAYLOAD",
           "PRELUDE_CONTENT_TYPE"]

log = logging.getLogger("snapstart.triggers.http")

MAX_PAYLOAD = 6 * 1024 * 1024      # Lambda's synchronous invocation payload (the event)
DRAIN_LIMIT = 16 * 1024 * 1024     # read (and drop) this much of a too-large body first,
#                                    so that a client still sending it reads the 413
PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
MAX_PRELUDE = 64 * 1024

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
URL_PREFIX = "lambda-url"
DEFAULT_ROUTE = "$default"
_DATE_SEGMENT = re.compile(r"\d{4}-\d{2}-\d{2}")
_PARAM = re.compile(r"\{([A-Za-z0-9._-]{1,128})(\+?)\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()*,;=:@%+-]+")
_URL_PATH = re.compile(r"/lambda-url/([^/?]+)(/[^?]*)?")
_QUALIFIER = re.compile(r"\$LATEST|[A-Za-z0-9_-]{1,128}")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")
# headers a gateway sets itself: never copied from a function's response
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                         "upgrade", "te", "trailer", "proxy-connection"})

LITERAL, PARAM, GREEDY = 0, 1, 2


# ---- routes --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Route:
    """One ``http_routes`` entry, checked and compiled."""

    function: str
    qualifier: str | None
    source: str                       # "HttpApi" | "Api"
    method: str                       # GET ... | "ANY"
    path: str                         # "/items/{id}" | "$default"
    payload_format: str               # "2.0" | "1.0"
    timeout_s: float
    binary_media_types: tuple[str, ...] = ()
    segments: tuple[tuple[int, str], ...] = ()

    @property
    def route_key(self) -> str:
        return DEFAULT_ROUTE if self.path == DEFAULT_ROUTE else f"{self.method} {self.path}"

    @property
    def order(self) -> tuple:
        """Sort key: the most specific route first (see the module docstring)."""
        if self.path == DEFAULT_ROUTE:
            return (1, (), 1)
        return (0, tuple(kind for kind, _ in self.segments), self.method == "ANY")

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        """Path parameters if this route takes the request, else None."""
        if self.path == DEFAULT_ROUTE:
            return {}
        if self.method != "ANY" and self.method != method:
            return None
        params: dict[str, str] = {}
        for i, (kind, value) in enumerate(self.segments):
            if kind == GREEDY:
                rest = segments[i:]
                if not rest or rest[0] == "":
                    return None
                params[value] = unquote("/".join(rest))
                return params
            if i >= len(segments):
                return None
            if kind == LITERAL:
                if unquote(segments[i]) != value:
                    return None
            elif segments[i] == "":
                return None
            else:
                params[value] = unquote(segments[i])
        return params if len(segments) == len(self.segments) else None


def _parse_path(path: str) -> tuple[tuple[int, str], ...]:
    if path == "/":
        return ()
    parts = path[1:].split("/")
    out: list[tuple[int, str]] = []
    names: set[str] = set()
    for i, part in enumerate(parts):
        m = _PARAM.fullmatch(part)
        if m:
            name, greedy = m.group(1), bool(m.group(2))
            if greedy and i != len(parts) - 1:
                raise ConfigError(f"route path {path!r}: a greedy {{{name}+}} must be the "
                                  "last segment")
            if name in names:
                raise ConfigError(f"route path {path!r}: parameter {name!r} appears twice")
            names.add(name)
            out.append((GREEDY if greedy else PARAM, name))
        elif part and _LITERAL.fullmatch(part) and "{" not in part and "}" not in part:
            out.append((LITERAL, unquote(part)))
        else:
            raise ConfigError(f"route path {path!r}: bad segment {part!r} (a literal, "
                              "{name} or a final {name+})")
    return tuple(out)


def check_route(method: str, path: str) -> None:
    """Raise ConfigError unless ``method path`` is a route serve can take: valid, and
    not colliding with the Invoke API (``/YYYY-MM-DD/...``), ``/metrics`` or the
    function URLs (``/lambda-url/...``)."""
    if not isinstance(method, str) or method.upper() not in (*METHODS, "ANY"):
        raise ConfigError(f"route method {method!r:.40}: not one of "
                          f"{', '.join(METHODS)}, ANY")
    if not isinstance(path, str) or not path:
        raise ConfigError("route path missing")
    if path == DEFAULT_ROUTE:
        return
    if not path.startswith("/") or len(path) > 1024 or (path != "/" and path.endswith("/")):
        raise ConfigError(f"route path {path[:100]!r}: must start with '/' and not end "
                          "with one")
    segments = _parse_path(path)
    first = segments[0] if segments else None
    if first and first[0] == LITERAL and _DATE_SEGMENT.fullmatch(first[1]):
        raise ConfigError(f"route {method.upper()} {path} collides with the Lambda Invoke "
                          "API on serve's port: its paths begin with a date "
                          "(/2015-03-31/functions/...)")
    if segments == ((LITERAL, "metrics"),):
        raise ConfigError(f"route {method.upper()} {path} collides with serve's /metrics")
    if first == (LITERAL, URL_PREFIX):
        raise ConfigError(f"route {method.upper()} {path} collides with the function URLs "
                          f"(/{URL_PREFIX}/NAME/...)")


def _qualifier(entry: Mapping[str, Any]) -> str | None:
    qualifier = entry.get("qualifier")
    if qualifier is None:
        return None
    if not isinstance(qualifier, str) or not _QUALIFIER.fullmatch(qualifier):
        raise ConfigError(f"bad qualifier {qualifier!r:.60}")
    return qualifier


def compile_route(entry: Mapping[str, Any]) -> Route:
    """A ``http_routes`` entry as a Route (ConfigError naming what is wrong)."""
    function = validate_name(entry.get("function"))    # type: ignore[arg-type]
    source = entry.get("source", "HttpApi")
    if source not in ("HttpApi", "Api"):
        raise ConfigError(f"source {source!r:.40}: not HttpApi or Api")
    method = str(entry.get("method") or "ANY").upper()
    path = entry.get("path")
    check_route(method, path)                                # type: ignore[arg-type]
    assert isinstance(path, str)
    if path == DEFAULT_ROUTE and source != "HttpApi":
        raise ConfigError("$default routes are HttpApi only")
    payload_format = str(entry.get("payload_format") or ("1.0" if source == "Api" else "2.0"))
    if payload_format not in ("1.0", "2.0") or (source == "Api" and payload_format != "1.0"):
        raise ConfigError(f"payload_format {payload_format!r:.20}: Api routes take 1.0, "
                          "HttpApi routes 1.0 or 2.0")
    limit_ms = 29000 if source == "Api" else 30000
    timeout_ms = entry.get("timeout_ms", limit_ms)
    if (not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool)
            or not 50 <= timeout_ms <= limit_ms):
        raise ConfigError(f"timeout_ms {timeout_ms!r:.20}: 50..{limit_ms} for {source}")
    binary = entry.get("binary_media_types") or []
    if not isinstance(binary, list) or not all(isinstance(t, str) for t in binary):
        raise ConfigError("binary_media_types must be a list of media types")
    return Route(function=function, qualifier=_qualifier(entry), source=source,
                 method=method, path=path, payload_format=payload_format,
                 timeout_s=timeout_ms / 1000, binary_media_types=tuple(binary),
                 segments=() if path == DEFAULT_ROUTE else _parse_path(path))


@dataclasses.dataclass(frozen=True)
class FunctionUrl:
    """One ``function_urls`` entry, checked."""

    function: str
    qualifier: str | None
    auth_type: str = "NONE"                 # "NONE" | "AWS_IAM"
    invoke_mode: str = "BUFFERED"           # "BUFFERED" | "RESPONSE_STREAM"
    cors: Mapping[str, Any] | None = None

    @property
    def url_id(self) -> str:
        """Stable, like Lambda's: 32 lowercase letters and digits."""
        return _stable_id(f"url:{self.function}:{self.qualifier or ''}", 32)


def compile_url(entry: Mapping[str, Any]) -> FunctionUrl:
    function = validate_name(entry.get("function"))    # type: ignore[arg-type]
    auth = entry.get("auth_type") or "NONE"
    if auth not in ("NONE", "AWS_IAM"):
        raise ConfigError(f"auth_type {auth!r:.40}: not NONE or AWS_IAM")
    mode = entry.get("invoke_mode") or "BUFFERED"
    if mode not in ("BUFFERED", "RESPONSE_STREAM"):
        raise ConfigError(f"invoke_mode {mode!r:.40}: not BUFFERED or RESPONSE_STREAM")
    cors = entry.get("cors")
    if cors is not None and not isinstance(cors, dict):
        raise ConfigError("cors must be an object (Lambda's Cors keys) or null")
    return FunctionUrl(function=function, qualifier=_qualifier(entry), auth_type=auth,
                       invoke_mode=mode, cors=cors)


def _stable_id(seed: str, n: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:n])


def _compile_all(entries, compile_one, clash, where: str, field: str) -> list:
    """Each entry compiled; one that does not compile, or clashes with one kept
    before it (``clash`` says how), is refused with one logged error."""
    out: list = []
    for i, entry in enumerate(entries):
        try:
            item = compile_one(entry)
        except SnapStartError as exc:
            log.error("%s: %s[%d] refused: %s", where, field, i, exc.message)
            continue
        why = clash(item, out)
        if why is not None:
            log.error("%s: %s[%d] refused: %s", where, field, i, why)
            continue
        out.append(item)
    return out


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What is served at one moment (a request keeps the one it started with)."""

    urls: tuple[FunctionUrl, ...] = ()
    routes: tuple[Route, ...] = ()          # most specific first

    @classmethod
    def build(cls, triggers: config.Triggers, where: str = "triggers.json") -> "Snapshot":
        def url_clash(url: FunctionUrl, urls: list[FunctionUrl]) -> str | None:
            if any((u.function, u.qualifier) == (url.function, url.qualifier) for u in urls):
                return (f"a second URL for {url.function}"
                        + (f":{url.qualifier}" if url.qualifier else ""))
            return None

        def route_clash(route: Route, routes: list[Route]) -> str | None:
            same = next((r for r in routes if r.route_key == route.route_key), None)
            return None if same is None else \
                f"{route.route_key} is already routed to {same.function}"

        urls = _compile_all(triggers.function_urls, compile_url, url_clash, where,
                            "function_urls")
        routes = _compile_all(triggers.http_routes, compile_route, route_clash, where,
                              "http_routes")
        routes.sort(key=lambda r: r.order)
        return cls(urls=tuple(urls), routes=tuple(routes))

    def url(self, ref: str) -> FunctionUrl | None:
        """The function URL of ``NAME`` or ``NAME:QUALIFIER``."""
        name, _, qualifier = ref.partition(":")
        mine = [u for u in self.urls if u.function == name]
        if qualifier:
            return next((u for u in mine if u.qualifier == qualifier), None)
        return next((u for u in mine if u.qualifier is None), None) or \
            (mine[0] if len(mine) == 1 else None)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        segments = path[1:].split("/") if path not in ("", "/") else []
        if len(segments) > 1 and segments[-1] == "":
            segments.pop()                  # one trailing slash
        for route in self.routes:
            params = route.match(method, segments)
            if params is not None:
                return route, params
        return None


class Table:
    """``triggers.json`` as served: reloaded when the file changes (mtime, size, inode)."""

    def __init__(self, home: Path) -> None:
        self.path = config.path_of(home)
        self._follower = config.Follower(home)
        self._snapshot = Snapshot()

    def current(self) -> Snapshot:
        try:
            triggers = self._follower.poll()
        except (SnapStartError, OSError) as exc:
            log.error("%s: %s (serving the previous HTTP triggers)", self.path, exc)
            return self._snapshot
        if triggers is not None:
            self._snapshot = Snapshot.build(triggers, str(self.path))
            log.info("HTTP triggers: %d function URL(s), %d route(s)",
                     len(self._snapshot.urls), len(self._snapshot.routes))
        return self._snapshot


# ---- events --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HttpRequest:
    """An HTTP request as the events need it (no aiohttp: unit-testable)."""

    method: str
    path: str                                   # as received (percent-encoded), no query
    query: str = ""                             # as received, without '?'
    headers: tuple[tuple[str, str], ...] = ()   # as received, in order
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"
    host: str = "localhost"
    scheme: str = "http"
    port: int = 80
    time: float = 0.0                           # epoch seconds
    request_id: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


_TEXT_TYPES = re.compile(r"text/.*|application/(json|javascript|ecmascript|xml|x-javascript)"
                         r"|application/.*\+(json|xml)|.*/.*;\s*charset=utf-?8.*")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _body(req: HttpRequest, binary_types: Iterable[str] = ()) -> tuple[str | None, bool]:
    """(body, isBase64Encoded): text if textual and UTF-8, else base64; None if none."""
    if not req.body:
        return None, False
    ctype = (req.header("content-type") or "").strip().lower()
    media = _media_type(ctype)
    forced = any(t == "*/*" or t.lower() == media
                 or (t.endswith("/*") and media.startswith(t[:-1].lower()))
                 for t in binary_types)
    if not forced and _TEXT_TYPES.fullmatch(ctype):
        try:
            return req.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(req.body).decode("ascii"), True


def _clf_time(t: float) -> str:
    """``12/Mar/2020:19:03:58 +0000`` (month names fixed, whatever the locale)."""
    g = time.gmtime(t)
    return f"{g.tm_mday:02d}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year}:" \
           f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True) if query else []


def _forwarded(req: HttpRequest) -> list[tuple[str, str]]:
    """The request's headers plus what Lambda's front end adds (x-forwarded-*)."""
    headers = [(k, v) for k, v in req.headers
               if k.lower() not in ("x-forwarded-proto", "x-forwarded-port")]
    prior = req.header("x-forwarded-for")
    headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
    headers.append(("X-Forwarded-For", f"{prior}, {req.source_ip}" if prior else req.source_ip))
    headers.append(("X-Forwarded-Proto", req.scheme))
    headers.append(("X-Forwarded-Port", str(req.port)))
    return headers


def event_v2(req: HttpRequest, *, route_key: str = DEFAULT_ROUTE, raw_path: str | None = None,
             path_params: Mapping[str, str] | None = None, account_id: str = "anonymous",
             api_id: str = "", authorizer: Mapping[str, Any] | None = None,
             binary_types: Iterable[str] = ()) -> dict[str, Any]:
    """The payload format 2.0 event of ``req`` (function URLs, HttpApi)."""
    raw_path = req.path if raw_path is None else raw_path
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in _forwarded(req):
        name = name.lower()
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    query: dict[str, str] = {}
    for key, value in _query_pairs(req.query):
        query[key] = f"{query[key]},{value}" if key in query else value
    host = req.host or "localhost"
    epoch_ms = int(req.time * 1000)
    context: dict[str, Any] = {
        "accountId": account_id, "apiId": api_id, "domainName": host,
        "domainPrefix": host.split(":", 1)[0].split(".", 1)[0],
        "http": {"method": req.method, "path": raw_path, "protocol": req.protocol,
                 "sourceIp": req.source_ip, "userAgent": req.header("user-agent") or ""},
        "requestId": req.request_id, "routeKey": route_key, "stage": "$default",
        "time": _clf_time(req.time), "timeEpoch": epoch_ms}
    if authorizer is not None:
        context["authorizer"] = dict(authorizer)
    event: dict[str, Any] = {"version": "2.0", "routeKey": route_key, "rawPath": raw_path,
                             "rawQueryString": req.query}
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = dict(path_params)
    event["requestContext"] = context
    body, b64 = _body(req, binary_types)
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = b64
    return event


def event_v1(req: HttpRequest, *, resource: str, path_params: Mapping[str, str] | None = None,
             account_id: str = "000000000000", api_id: str = "", stage: str = "Prod",
             http_api: bool = False, binary_types: Iterable[str] = ()) -> dict[str, Any]:
    """The payload format 1.0 event of ``req`` (REST API; HttpApi with 1.0 adds
    ``version`` and uses stage ``$default``)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in _forwarded(req):
        single[name] = value
        multi.setdefault(name, []).append(value)
    qs_single: dict[str, str] = {}
    qs_multi: dict[str, list[str]] = {}
    for key, value in _query_pairs(req.query):
        qs_single[key] = value
        qs_multi.setdefault(key, []).append(value)
    host = req.host or "localhost"
    request_id = req.request_id
    context: dict[str, Any] = {
        "accountId": account_id, "apiId": api_id, "domainName": host,
        "domainPrefix": host.split(":", 1)[0].split(".", 1)[0],
        "extendedRequestId": request_id, "httpMethod": req.method,
        "identity": {"accessKey": None, "accountId": None, "caller": None,
                     "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                     "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                     "principalOrgId": None, "sourceIp": req.source_ip, "user": None,
                     "userAgent": req.header("user-agent") or "", "userArn": None},
        "path": req.path, "protocol": req.protocol, "requestId": request_id,
        "requestTime": _clf_time(req.time), "requestTimeEpoch": int(req.time * 1000),
        "resourceId": _stable_id(f"resource:{resource}", 6), "resourcePath": resource,
        "stage": "$default" if http_api else stage}
    body, b64 = _body(req, binary_types)
    event: dict[str, Any] = {}
    if http_api:
        event["version"] = "1.0"
    event.update({
        "resource": resource, "path": req.path, "httpMethod": req.method,
        "headers": single or None, "multiValueHeaders": multi or None,
        "queryStringParameters": qs_single or None,
        "multiValueQueryStringParameters": qs_multi or None,
        "pathParameters": dict(path_params) if path_params else None,
        "stageVariables": None, "requestContext": context, "body": body,
        "isBase64Encoded": b64})
    return event


# ---- responses -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class BadResponse(ValueError):
    """The function's result cannot be an HTTP response (API Gateway's 502)."""


def _status(value: Any) -> int:
    if isinstance(value, bool):
        raise BadResponse("statusCode is not a number")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or not 100 <= value <= 599:
        raise BadResponse(f"statusCode {value!r:.40} is not an HTTP status")
    return value


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise BadResponse(f"header value {value!r:.40} is not a string")


def _header_map(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadResponse(f"{what} is not an object")
    return value


def _decode_body(data: Mapping[str, Any]) -> bytes:
    body = data.get("body")
    b64 = data.get("isBase64Encoded", False)
    if b64 in ("true", "True"):
        b64 = True
    elif b64 in ("false", "False", None):
        b64 = False
    if not isinstance(b64, bool):
        raise BadResponse("isBase64Encoded is not a boolean")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise BadResponse("body is not a string")
    if not b64:
        return body.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadResponse("body is not valid base64") from None


def _finish(status: int, headers: list[tuple[str, str]], body: bytes) -> HttpResponse:
    headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(status, tuple(headers), body)


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadResponse("the function's response is not JSON") from None


def response_v2(payload: bytes) -> HttpResponse:
    """Lambda's mapping of a payload format 2.0 result (function URLs, HttpApi)."""
    data = _json(payload)
    if not isinstance(data, dict) or "statusCode" not in data:
        return HttpResponse(200, (("Content-Type", "application/json"),), payload)
    status = _status(data["statusCode"])
    headers = [(str(k), _scalar(v)) for k, v in _header_map(data.get("headers"),
                                                            "headers").items()
               if v is not None]
    cookies = data.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadResponse("cookies is not a list")
    headers += [("Set-Cookie", _scalar(c)) for c in cookies]
    return _finish(status, headers, _decode_body(data))


def response_v1(payload: bytes) -> HttpResponse:
    """API Gateway's mapping of a payload format 1.0 (Lambda proxy) result."""
    data = _json(payload)
    if not isinstance(data, dict) or "statusCode" not in data:
        raise BadResponse("a 1.0 response needs a statusCode")
    status = _status(data["statusCode"])
    single = _header_map(data.get("headers"), "headers")
    multi = _header_map(data.get("multiValueHeaders"), "multiValueHeaders")
    headers = [(str(k), _scalar(v)) for k, v in single.items() if v is not None and k not in multi]
    for name, values in multi.items():
        if not isinstance(values, list):
            raise BadResponse(f"multiValueHeaders[{name!r:.40}] is not a list")
        headers += [(str(name), _scalar(v)) for v in values if v is not None]
    return _finish(status, headers, _decode_body(data))


def split_prelude(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(prelude, rest) of a streamed http-integration response once its 8 NUL bytes
    arrived, else None (BadResponse if the prelude is not a JSON object or too long)."""
    at = data.find(PRELUDE_DELIMITER)
    if at < 0:
        if len(data) > MAX_PRELUDE:
            raise BadResponse("no response prelude in the first 64 KiB of the stream")
        return None
    try:
        prelude = json.loads(data[:at]) if at else {}
    except (ValueError, UnicodeDecodeError):
        raise BadResponse("the response prelude is not JSON") from None
    if not isinstance(prelude, dict):
        raise BadResponse("the response prelude is not an object")
    return prelude, data[at + len(PRELUDE_DELIMITER):]


def prelude_head(prelude: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers of a streamed response's prelude (as Lambda reads it)."""
    status = _status(prelude.get("statusCode", 200))
    headers = [(str(k), _scalar(v)) for k, v in _header_map(prelude.get("headers"),
                                                            "headers").items()
               if v is not None and str(k).lower() not in _HOP_BY_HOP]
    cookies = prelude.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadResponse("cookies is not a list")
    headers += [("Set-Cookie", _scalar(c)) for c in cookies]
    return status, headers


# ---- gateway errors ------------------------------------------------------------------
URL, HTTP_API, REST_API = "url", "HttpApi", "Api"

_ERRORS: dict[tuple[str, str], tuple[int, dict[str, Any], str | None]] = {
    (URL, "function"): (502, {"message": "Internal Server Error"}, None),
    (HTTP_API, "function"): (502, {"message": "Internal Server Error"}, None),
    (REST_API, "function"): (502, {"message": "Internal server error"}, None),
    (URL, "throttled"): (429, {"Message": "Rate Exceeded."}, "TooManyRequestsException"),
    (HTTP_API, "throttled"): (500, {"message": "Internal Server Error"}, None),
    (REST_API, "throttled"): (500, {"message": "Internal server error"}, None),
    (URL, "internal"): (500, {"Message": "An internal error occurred."}, "ServiceException"),
    (HTTP_API, "internal"): (500, {"message": "Internal Server Error"}, None),
    (REST_API, "internal"): (500, {"message": "Internal server error"}, None),
    (HTTP_API, "timeout"): (503, {"message": "Service Unavailable"}, None),
    (REST_API, "timeout"): (504, {"message": "Endpoint request timed out"}, None),
    (URL, "forbidden"): (403, {"Message": "Forbidden"}, "AccessDeniedException"),
    (HTTP_API, "not_found"): (404, {"message": "Not Found"}, None),
    (REST_API, "not_found"): (403, {"message": "Missing Authentication Token"},
                              "MissingAuthenticationTokenException"),
}
_TOO_LARGE = f"Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation"


def error_response(surface: str, kind: str, request_id: str = "") -> HttpResponse:
    """The error a function URL (``url``), an HTTP API or a REST API answers."""
    error_type: str | None
    if kind == "too_large":
        key = "Message" if surface == URL else "message"
        status, body, error_type = 413, {key: _TOO_LARGE}, "RequestTooLargeException"
    elif kind == "bad_response":
        status, body, error_type = _ERRORS[(surface, "function")]
    else:
        status, body, error_type = _ERRORS[(surface, kind)]
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    if request_id:
        headers.append(("x-amzn-RequestId", request_id))
    return HttpResponse(status, tuple(headers), json.dumps(body).encode())


# ---- CORS (function URLs) ------------------------------------------------------------
def _cors_list(cors: Mapping[str, Any], key: str) -> list[str]:
    value = cors.get(key) or []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def cors_headers(cors: Mapping[str, Any] | None, origin: str | None, *,
                 preflight: bool = False) -> list[tuple[str, str]]:
    """The CORS headers Lambda adds for ``origin`` (none if it is not allowed)."""
    if not cors or not origin:
        return []
    origins = _cors_list(cors, "AllowOrigins")
    if "*" not in origins and origin not in origins:
        return []
    out = [("Access-Control-Allow-Origin", "*" if "*" in origins else origin)]
    if "*" not in origins:
        out.append(("Vary", "Origin"))
    if cors.get("AllowCredentials"):
        out.append(("Access-Control-Allow-Credentials", "true"))
    if preflight:
        for key, header in (("AllowMethods", "Access-Control-Allow-Methods"),
                            ("AllowHeaders", "Access-Control-Allow-Headers")):
            values = _cors_list(cors, key)
            if values:
                out.append((header, ",".join(values)))
        if cors.get("MaxAge") is not None:
            out.append(("Access-Control-Max-Age", str(int(cors["MaxAge"]))))
    else:
        expose = _cors_list(cors, "ExposeHeaders")
        if expose:
            out.append(("Access-Control-Expose-Headers", ",".join(expose)))
    return out


def _with_cors(resp: HttpResponse, extra: list[tuple[str, str]]) -> HttpResponse:
    if not extra:
        return resp
    names = {k.lower() for k, _ in extra}
    kept = [(k, v) for k, v in resp.headers if k.lower() not in names]
    return dataclasses.replace(resp, headers=tuple(kept + extra))


def _signed(req: HttpRequest) -> str | None:
    """The access key of a SigV4-signed request, else None (not verified: no IAM)."""
    auth = req.header("authorization") or ""
    m = re.match(r"AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/", auth)
    if m:
        return m.group(1)
    query = dict(_query_pairs(req.query))
    if query.get("X-Amz-Signature") and query.get("X-Amz-Credential"):
        return query["X-Amz-Credential"].split("/", 1)[0]
    return None


# ---- the aiohttp side ----------------------------------------------------------------
class _TooLarge(Exception):
    pass


def _reserved(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return bool(_DATE_SEGMENT.fullmatch(first)) or path.rstrip("/") == "/metrics"


class Gateway:
    """The catch-all handler: function URLs and routes, over one InvokeService."""

    def __init__(self, service: Any, table: Table) -> None:
        self.service = service
        self.table = table
        self.resource: Any = None       # our aiohttp resource (skipped when re-resolving)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        try:
            return await self._handle(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - a gateway error, never a dead server
            log.error("%s %s failed: %r", request.method, request.path, exc, exc_info=True)
            surface = URL if _URL_PATH.fullmatch(request.rel_url.raw_path) else HTTP_API
            return _web(error_response(surface, "internal"))

    async def _handle(self, request: Any) -> Any:
        path = request.rel_url.raw_path
        if _reserved(path):
            await self._invoke_api_miss(request)
        snapshot = self.table.current()
        m = _URL_PATH.fullmatch(path)
        if m:
            return await self._function_url(request, snapshot, m.group(1), m.group(2) or "/")
        found = snapshot.match(request.method, path)
        if found is None:
            if not snapshot.routes:
                await self._invoke_api_miss(request)
            surface = HTTP_API if any(r.source == HTTP_API for r in snapshot.routes) \
                else REST_API
            return _web(error_response(surface, "not_found"))
        route, params = found
        surface = REST_API if route.source == "Api" else HTTP_API
        request_id = str(uuid.uuid4())
        try:
            req = await self._request(request, request_id)
        except _TooLarge:
            return _web(error_response(surface, "too_large"), close=True)
        account = self.service.settings.account_id
        api_id = _stable_id(f"api:{route.source}", 10)
        if route.payload_format == "2.0":
            event = event_v2(req, route_key=route.route_key, path_params=params,
                             account_id=account, api_id=api_id,
                             binary_types=route.binary_media_types)
        else:
            event = event_v1(req, resource=route.path, path_params=params,
                             account_id=account, api_id=api_id,
                             http_api=route.source == HTTP_API,
                             binary_types=route.binary_media_types)
        mapper = response_v2 if route.payload_format == "2.0" else response_v1
        resp = await self._invoke(request, route.function, route.qualifier, event, surface,
                                  mapper, timeout_s=route.timeout_s)
        if isinstance(resp, HttpResponse):
            header = "apigw-requestid" if surface == HTTP_API else "x-amzn-RequestId"
            resp = dataclasses.replace(resp, headers=resp.headers + ((header, request_id),))
            return _web(resp)
        return resp

    async def _invoke_api_miss(self, request: Any) -> None:
        """Raise what the Invoke API answered before this route existed (404/405)."""
        from aiohttp import web

        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is self.resource:
                continue
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= set(methods)
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    async def _function_url(self, request: Any, snapshot: Snapshot, ref: str,
                            raw_path: str) -> Any:
        request_id = str(uuid.uuid4())
        url = snapshot.url(unquote(ref))
        if url is None:
            return _web(error_response(URL, "forbidden", request_id))
        origin = request.headers.get("Origin")
        if (url.cors and request.method == "OPTIONS"
                and request.headers.get("Access-Control-Request-Method")):
            return _web(HttpResponse(200, tuple(cors_headers(url.cors, origin, preflight=True))
                                     + (("x-amzn-RequestId", request_id),)))
        cors = cors_headers(url.cors, origin)
        try:
            req = await self._request(request, request_id)
        except _TooLarge:
            return _web(_with_cors(error_response(URL, "too_large", request_id), cors),
                        close=True)
        authorizer = None
        account = "anonymous"
        if url.auth_type == "AWS_IAM":
            access_key = _signed(req)
            if access_key is None:
                return _web(_with_cors(error_response(URL, "forbidden", request_id), cors))
            account = self.service.settings.account_id
            authorizer = {"iam": {"accessKey": access_key, "accountId": account,
                                  "callerId": None, "cognitoIdentity": None,
                                  "principalOrgId": None, "userArn": None, "userId": None}}
        event = event_v2(req, raw_path=raw_path, account_id=account, api_id=url.url_id,
                         authorizer=authorizer)
        resp = await self._invoke(request, url.function, url.qualifier, event, URL,
                                  response_v2, request_id=request_id,
                                  stream=url.invoke_mode == "RESPONSE_STREAM", cors=cors)
        if isinstance(resp, HttpResponse):
            resp = dataclasses.replace(resp, headers=resp.headers
                                       + (("x-amzn-RequestId", request_id),))
            return _web(_with_cors(resp, cors))
        return resp

    async def _request(self, request: Any, request_id: str) -> HttpRequest:
        body = await _read_body(request)
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        return HttpRequest(
            method=request.method, path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1"))
                          for k, v in request.raw_headers),
            body=body, source_ip=request.remote or "", host=request.host,
            protocol=f"HTTP/{request.version.major}.{request.version.minor}",
            scheme=request.scheme, port=sock[1] if sock else 80, time=time.time(),
            request_id=request_id)

    async def _invoke(self, request: Any, function: str, qualifier: str | None,
                      event: dict[str, Any], surface: str, mapper: Any, *,
                      request_id: str | None = None, timeout_s: float | None = None,
                      stream: bool = False, cors: list[tuple[str, str]] | None = None) -> Any:
        """Invoke as the Invoke API does; an HttpResponse, or a StreamResponse sent."""
        loop = asyncio.get_running_loop()
        # without a sink a streamed response is collected into the payload (answered whole)
        sink = LoopSink(loop) if stream else None
        streamed = _Streamed(request, cors or [])
        with tracing.span("Invoke", kind="SERVER", context=tracing.extract(request.headers),
                          **{"faas.invoked_name": function, "faas.trigger": "http",
                             "aws.lambda.invocation_type": "RequestResponse",
                             "snapstart.http_surface": surface}):
            trace_id = tracing.function_header(request.headers)
            _trace_header(event, trace_id)
            data = json.dumps(event, separators=(",", ":")).encode()
            if len(data) > MAX_PAYLOAD:
                return error_response(surface, "too_large", request_id or "")
            done = loop.run_in_executor(self.service.pool, functools.partial(
                self.service.invoke_sync, function, qualifier, data, trace_id=trace_id,
                client_context=None, sink=sink, request_id=request_id,
                trace_context=tracing.current_context()))
            done.add_done_callback(_consume)
            if sink is None:
                finished, _ = await asyncio.wait({done}, timeout=timeout_s)
                if not finished:            # the integration timed out; the invoke goes on
                    log.warning("%s %s: %s did not answer within %.3f s (%s timeout)",
                                request.method, request.path, function, timeout_s, surface)
                    return error_response(surface, "timeout")
            else:
                await sink.relay_until(done, streamed.relay)
            try:
                result, _, _ = done.result()
            except ThrottledError:
                return error_response(surface, "throttled", request_id or "")
            except FunctionNotFoundError as exc:
                log.error("%s %s: %s", request.method, request.path, exc.message)
                return error_response(surface, "forbidden" if surface == URL else "internal",
                                      request_id or "")
            except Exception as exc:  # noqa: BLE001 - a gateway error, never a dead server
                log.error("%s %s: invoking %s failed: %r", request.method, request.path,
                          function, exc, exc_info=not isinstance(exc, SnapStartError))
                if streamed.response is not None:
                    return await streamed.close()
                return error_response(surface, "internal", request_id or "")
            if streamed.response is not None:
                return await streamed.close()   # an error after the first byte ends it
            if result.function_error:
                return error_response(surface, "function", request_id or "")
            try:
                if streamed.content_type is not None:   # streamed, never started
                    return _buffered_stream(streamed.content_type, streamed.buffer)
                if result.stream_content_type is not None:
                    return _buffered_stream(result.stream_content_type, result.payload)
                return mapper(result.payload)
            except BadResponse as exc:
                log.warning("%s %s: malformed response from %s: %s", request.method,
                            request.path, function, exc)
                return error_response(surface, "bad_response", request_id or "")


def _trace_header(event: dict[str, Any], trace_id: str) -> None:
    """The trace header the function sees, in the event's headers too (as Lambda's and
    API Gateway's front ends add it)."""
    if event.get("version") == "2.0":
        event["headers"]["x-amzn-trace-id"] = trace_id
        return
    single = {k: v for k, v in (event.get("headers") or {}).items()
              if k.lower() != "x-amzn-trace-id"}
    multi = {k: v for k, v in (event.get("multiValueHeaders") or {}).items()
             if k.lower() != "x-amzn-trace-id"}
    event["headers"] = {**single, "X-Amzn-Trace-Id": trace_id}
    event["multiValueHeaders"] = {**multi, "X-Amzn-Trace-Id": [trace_id]}


def _consume(future: Any) -> None:
    """Retrieve an invocation's exception that nobody waited for (timeouts)."""
    if not future.cancelled():
        future.exception()


def _buffered_stream(content_type: str, data: bytes) -> HttpResponse:
    """A streamed response answered whole (BUFFERED URLs, routes)."""
    if content_type == PRELUDE_CONTENT_TYPE:
        parts = split_prelude(data)
        if parts is None:
            raise BadResponse("the stream ended inside its prelude")
        status, headers = prelude_head(parts[0])
        return _finish(status, headers, parts[1])
    return HttpResponse(200, (("Content-Type", content_type),), data)


class _Streamed:
    """Relays a streamed response to the client as it arrives (RESPONSE_STREAM URLs):
    the prelude of an http-integration response first becomes status and headers."""

    def __init__(self, request: Any, cors: list[tuple[str, str]]) -> None:
        self.request = request
        self.cors = cors
        self.content_type: str | None = None
        self.buffer = b""               # the prelude, until its delimiter arrived
        self.response: Any = None
        self.gone = False

    async def relay(self, item: tuple[str, Any]) -> None:
        kind, value = item
        if kind == "begin":
            self.content_type = value
            if value != PRELUDE_CONTENT_TYPE:
                await self._start(200, [("Content-Type", value)])
            return
        if not value:
            return
        if self.response is None:
            self.buffer += value
            try:
                parts = split_prelude(self.buffer)
            except BadResponse:
                return                  # answered as a malformed response at the end
            if parts is None:
                return
            try:
                status, headers = prelude_head(parts[0])
            except BadResponse:
                return
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers.append(("Content-Type", "application/octet-stream"))
            self.buffer = b""
            await self._start(status, headers)
            value = parts[1]
        await self._write(value)

    async def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        from aiohttp import web
        from multidict import CIMultiDict

        names = {k.lower() for k, _ in self.cors}
        merged = CIMultiDict([(k, v) for k, v in headers if k.lower() not in names]
                             + self.cors)
        self.response = web.StreamResponse(status=status, headers=merged)
        self.response.enable_chunked_encoding()
        try:
            await self.response.prepare(self.request)
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def _write(self, data: bytes) -> None:
        if self.gone or not data:
            return
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError):
            self.gone = True            # the client left: the invocation still finishes

    async def close(self) -> Any:
        if not self.gone:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return self.response


async def _read_body(request: Any) -> bytes:
    """The body, at most MAX_PAYLOAD bytes; more raises _TooLarge once up to
    DRAIN_LIMIT of it was read (so that the client gets to read the 413)."""
    length = request.content_length
    if length is not None and length > DRAIN_LIMIT:
        raise _TooLarge()
    buf = bytearray()
    total = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if total <= MAX_PAYLOAD:
            buf += chunk
        elif total > DRAIN_LIMIT:
            break
    if total > MAX_PAYLOAD:
        raise _TooLarge()
    return bytes(buf)


def _web(resp: HttpResponse, *, close: bool = False) -> Any:
    from aiohttp import web
    from multidict import CIMultiDict

    headers = CIMultiDict(resp.headers)
    if close:
        headers["Connection"] = "close"
    return web.Response(status=resp.status, body=resp.body, headers=headers)


def install(app: Any, service: Any) -> None:
    """Route function URLs and HttpApi/Api events: one catch-all route, added after
    (so behind) every route ``create_app`` registered."""
    gateway = Gateway(service, Table(service.settings.home))
    gateway.resource = app.router.add_resource("/{tail:.*}", name="snapstart-http-triggers")
    gateway.resource.add_route("*", gateway.handle)
    gateway.table.current()             # log what is configured (or wrong) at start
