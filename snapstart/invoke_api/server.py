"""``snapstart serve``: Lambda's Invoke API for unmodified boto3 / aws-cli (endpoint_url).

Routes (paths and shapes from botocore's lambda service model)::

    POST   /2015-03-31/functions/{FunctionName}/invocations        Invoke
    POST   /2021-11-15/functions/{FunctionName}/response-streaming-invocations
                                                                   InvokeWithResponseStream
    PUT    /2017-10-31/functions/{FunctionName}/concurrency        PutFunctionConcurrency
    GET    /2019-09-30/functions/{FunctionName}/concurrency        GetFunctionConcurrency
    DELETE /2017-10-31/functions/{FunctionName}/concurrency        DeleteFunctionConcurrency
    PUT    /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=
    GET    /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=
    DELETE /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=
    GET    /2015-03-31/functions/                                  ListFunctions
    GET    /2015-03-31/functions/{FunctionName}                    GetFunction
    GET    /2015-03-31/functions/{FunctionName}/versions           ListVersionsByFunction
    GET    /metrics                                                Prometheus text

The Manager is blocking, so every invocation runs in a thread pool sized above
the concurrency limit; throttling happens at admission inside the Manager and is
immediate (no queueing for sync calls). Event invocations are committed to the
SQLite queue (snapstart.events) before the 202. Nothing that goes wrong in one
request may stop the server: every exception becomes a Lambda-shaped API error.

InvokeWithResponseStream answers with an event stream (eventstream.py): the bytes a
streaming function writes (node's ``awslambda.streamifyResponse``) go out as
``PayloadChunk`` events as they arrive, then one ``InvokeComplete`` (with the error
and the log tail, if any). A function that does not stream sends its whole response
as one chunk, as Lambda does. Errors before the first byte are ordinary API errors;
after it, they can only be reported in ``InvokeComplete``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import os
import signal
import sys
from typing import Any
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from aiohttp import web

from .. import tracing
from ..config import Settings
from ..errors import SnapStartError, StoreError, ThrottledError
from ..events import EventStore, EventWorker, RetryPolicy
from ..logs import TAIL_BYTES, LogWriter, invocation_block
from ..manager.manager import MAX_SYNC_PAYLOAD, check_payload
from ..registry import LATEST
from ..results import ResponseSink
from . import eventstream
from .sink import LoopSink
from .errors import ApiError, from_exception
from .metrics import CONTENT_TYPE, Metrics
from .names import parse_function_ref

__all__ = ["ServeOptions", "InvokeService", "create_app", "serve"]

log = logging.getLogger("snapstart.serve")


class _MalformedRequestFilter(logging.Filter):
    """aiohttp answers a malformed request (bad framing, bad headers) with 400 and logs
    a traceback for it at ERROR: one per bad request a client sends. Those are the
    client's errors, not the server's: keep one DEBUG line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp import http_exceptions

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            log.debug("malformed request answered with %s: %s", exc.code,
                      " ".join(str(exc.message).split())[:200])
            return False
        return True

MAX_EVENT_PAYLOAD = 256 * 1024
MAX_CLIENT_CONTEXT = 3583


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 9000
    max_concurrency: int | None = None
    idle_timeout_s: float = 300.0
    max_lifetime_s: float = 7200.0
    event_retries: int = 2
    event_backoff_s: float = 60.0
    event_threads: int = 2
    provisioned_wait_s: float = 60.0
    restore_ahead: int = 1


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class InvokeService:
    """Everything a request handler needs; blocking methods run in threads."""

    def __init__(self, manager, settings: Settings, options: ServeOptions) -> None:
        self.manager = manager
        self.settings = settings
        self.options = options
        self.metrics = Metrics()
        self.logs = LogWriter(settings.home)
        # invocation logs are appended in order on their own thread, after the caller
        # has its response (as Lambda's logs reach CloudWatch after it)
        self.log_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapstart-logs")
        self.events = EventStore(settings.home / "events.db")
        from ..events.destinations import Destinations
        destinations = Destinations(settings.home, self._enqueue_destination)
        self.worker = EventWorker(self.events, manager,
                                  policy=RetryPolicy(retries=options.event_retries,
                                                     backoff_s=options.event_backoff_s),
                                  threads=options.event_threads, on_result=self._event_result,
                                  destinations=destinations,
                                  function_arn=settings.function_arn)
        self.pool = ThreadPoolExecutor(max_workers=manager.max_concurrency + 8,
                                       thread_name_prefix="snapstart-invoke")
        self.control = ThreadPoolExecutor(max_workers=4, thread_name_prefix="snapstart-ctl")
        store_stats = None
        try:
            if hasattr(manager.store, "l1_stats"):
                store_stats = manager.store.l1_stats
        except Exception:  # noqa: BLE001 - metrics without the store are still useful
            store_stats = None
        self.metrics.bind(concurrent=lambda: manager.active,
                          provisioned=manager.provisioned_ready,
                          pending=self._pending_count, l1_stats=store_stats)

    def _pending_count(self) -> float:
        try:
            return float(self.events.count_pending())
        except Exception:  # noqa: BLE001
            return 0.0

    # ---- invoke (runs in a pool thread) ---------------------------------------------
    def invoke_sync(self, name: str, qualifier: str | None, body: bytes, *,
                    trace_id: str, client_context: str | None, info=None,
                    sink: ResponseSink | None = None, request_id: str | None = None,
                    trace_context: Any = None) -> tuple:
        """``trace_context``: the request's span (tracing.current_context), carried into
        this thread so that the invocation's spans are its children."""
        info = info or self.manager.registry.resolve(name, qualifier)
        try:
            with tracing.attach(trace_context):
                result = self.manager.invoke_version(info, body, trace_id=trace_id,
                                                     client_context=client_context,
                                                     qualifier=qualifier, sink=sink,
                                                     request_id=request_id)
        except ThrottledError as exc:
            self.metrics.throttles.labels(name, exc.reason).inc()
            raise
        block = self._record(name, info.version, info.config.memory_mb, result)
        return result, info.version, block

    async def invoke_warm(self, name: str, qualifier: str | None, body: bytes, *,
                          trace_id: str, client_context: str | None,
                          tail: bool = False) -> tuple | None:
        """``invoke_sync`` on the event loop when it resolves from the registry's cache
        and an idle clone takes the event (Manager.invoke_warm); else None. Its
        metrics and log block are written on the loop after the response went out
        (``_account``): no hand-over to the log thread, whose wake-up and GIL cost
        the next request ~0.2 ms on 2 CPUs. The block is made now only for
        ``tail``."""
        info = self.manager.registry.cached(name, qualifier)
        if info is None:
            return None
        try:
            result = await self.manager.invoke_warm(info, body, trace_id=trace_id,
                                                    client_context=client_context,
                                                    qualifier=qualifier)
        except ThrottledError as exc:
            self.metrics.throttles.labels(name, exc.reason).inc()
            raise
        if result is None:
            return None
        memory_mb = info.config.memory_mb
        block = invocation_block(result, info.version, memory_mb) if tail else None
        asyncio.get_running_loop().call_soon(self._account, name, info.version, memory_mb,
                                             result, block)
        return result, info.version, block or b""

    def _account(self, name: str, version: str, memory_mb: int, result,
                 block: bytes | None) -> None:
        self.metrics.observe(name, result)
        self._write_log(name, version, block or invocation_block(result, version, memory_mb))

    def _record(self, name: str, version: str, memory_mb: int, result, *,
                sync: bool = False) -> bytes:
        """Metrics and the invocation's log block; ``sync``: written before returning
        (asynchronous invocations: no caller waits), else on the log thread."""
        self.metrics.observe(name, result)
        block = invocation_block(result, version, memory_mb)
        try:
            written = self.log_pool.submit(self._write_log, name, version, block)
            if sync:
                written.result()      # in order with the blocks queued before it
        except RuntimeError:          # shutting down: write it here
            self._write_log(name, version, block)
        return block

    def _write_log(self, name: str, version: str, block: bytes) -> None:
        try:
            self.logs.write(name, version, block)
        except (OSError, ValueError) as exc:
            log.warning("cannot write the log of %s: %s", name, exc)

    def _event_result(self, record, result) -> None:
        try:
            info = self.manager.registry.resolve(record.function, record.qualifier)
            self._record(record.function, info.version, info.config.memory_mb, result,
                         sync=True)
        except SnapStartError:
            pass

    def _enqueue_destination(self, name: str, body: bytes) -> None:
        """A function destination's record: an Event invocation of that function."""
        self.events.add(name, None, body)
        self.metrics.events.labels(name).inc()
        self.worker.wake()

    def enqueue(self, name: str, qualifier: str | None, body: bytes, *, trace_id: str,
                client_context: str | None) -> tuple[str, str]:
        info = self.manager.registry.resolve(name, qualifier)
        check_payload(body, MAX_EVENT_PAYLOAD)
        event_id = self.events.add(name, qualifier, body, trace_id=trace_id,
                                   client_context=client_context)
        self.metrics.events.labels(name).inc()
        return event_id, info.version

    # ---- control plane (blocking) -------------------------------------------------------
    def function_configuration(self, name: str, version: str) -> dict:
        info = (self.manager.registry.latest(name) if version == LATEST
                else self.manager.registry.version(name, int(version)))
        cfg = info.config
        try:
            mtime = (info.code_dir.parent / ("config.json" if version == LATEST
                                             else "version.json")).stat().st_mtime
        except OSError:
            mtime = time.time()
        arn = self.settings.function_arn(name)
        return {
            "FunctionName": name,
            "FunctionArn": f"{arn}:{version}",
            "Runtime": "python3.11" if cfg.runtime == "python" else cfg.runtime,
            "Role": f"arn:aws:iam::{self.settings.account_id}:role/snapstart",
            "Handler": cfg.handler, "CodeSize": 0, "Description": "",
            "Timeout": int(cfg.timeout_s) if float(cfg.timeout_s).is_integer() else cfg.timeout_s,
            "MemorySize": cfg.memory_mb, "LastModified": _iso(mtime),
            "EphemeralStorage": {"Size": cfg.ephemeral_storage_mb},
            "Version": version, "State": "Active", "LastUpdateStatus": "Successful",
            "PackageType": "Zip", "Architectures": [os.uname().machine.replace("aarch64", "arm64")],
            "Environment": {"Variables": dict(cfg.environment)},
            "SnapStart": {"ApplyOn": "PublishedVersions",
                          "OptimizationStatus": "On" if info.snapshot else "Off"},
        }

    def list_functions(self, all_versions: bool) -> dict:
        reg = self.manager.registry
        out = []
        for name in reg.functions():
            out.append(self.function_configuration(name, LATEST))
            if all_versions:
                out += [self.function_configuration(name, str(n)) for n in reg.versions(name)]
        return {"Functions": out}

    def get_function(self, name: str, qualifier: str | None) -> dict:
        info = self.manager.registry.resolve(name, qualifier or LATEST)
        out = {"Configuration": self.function_configuration(name, info.version),
               "Code": {"RepositoryType": "S3", "Location": ""}}
        reserved = self.manager.limits.reserved(name)
        if reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
        return out

    def list_versions(self, name: str) -> dict:
        reg = self.manager.registry
        reg.resolve(name)
        versions = [self.function_configuration(name, LATEST)]
        versions += [self.function_configuration(name, str(n)) for n in reg.versions(name)]
        return {"Versions": versions}

    def provisioned(self, name: str, qualifier: str, n: int | None) -> dict:
        if n is not None:
            version = self.manager.set_provisioned(name, qualifier, n,
                                                   wait_s=self.options.provisioned_wait_s)
        else:
            version = self.manager.registry.resolve(name, qualifier).version
        requested, allocated, available = self.manager.provisioned_status(name, version)
        if not requested:
            raise ApiError("ProvisionedConcurrencyConfigNotFoundException",
                           "No Provisioned Concurrency Config found for this function")
        return {"RequestedProvisionedConcurrentExecutions": requested,
                "AllocatedProvisionedConcurrentExecutions": allocated,
                "AvailableProvisionedConcurrentExecutions": available,
                "Status": "READY" if allocated >= requested else "IN_PROGRESS",
                "LastModified": _iso(time.time())}

    def close(self) -> None:
        self.worker.stop()
        self.manager.close()
        self.log_pool.shutdown(wait=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.control.shutdown(wait=False, cancel_futures=True)


# ---- HTTP layer ---------------------------------------------------------------------
async def _read_body(request: web.Request, limit: int, operation: str) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError("RequestTooLargeException",
                       f"Request must be smaller than {limit} bytes for the {operation} operation",
                       headers={"Connection": "close"})
    buf = bytearray()
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ApiError("RequestTooLargeException",
                           f"Request must be smaller than {limit} bytes for the {operation} "
                           "operation", headers={"Connection": "close"})
    return bytes(buf)


async def _json_body(request: web.Request) -> dict:
    raw = await _read_body(request, 1024 * 1024, "control")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequestContentException", "Could not parse request body into json")
    if not isinstance(data, dict):
        raise ApiError("InvalidRequestContentException", "Request body must be a JSON object")
    return data


def _error_parts(payload: bytes) -> tuple[str, str]:
    """(errorType, errorMessage) of a function error's payload."""
    try:
        data = json.loads(payload)
        return str(data.get("errorType") or "Unhandled"), str(data.get("errorMessage") or "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "Unhandled", payload.decode("utf-8", "replace")[:1024]


def _client_context(header: str | None) -> str | None:
    if not header:
        return None
    if len(header) > MAX_CLIENT_CONTEXT * 4 // 3 + 4:
        raise ApiError("InvalidParameterValueException",
                       f"Client context must be smaller than {MAX_CLIENT_CONTEXT} bytes")
    try:
        text = base64.b64decode(header, validate=True).decode("utf-8")
        # an object: the runtime reads .get("client"/"custom"/"env") from it, and
        # awslambdaric fails every invoke given a list, string or number
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequestContentException",
                       "Client context must be a valid Base64-encoded JSON object.")
    return text


def _positive_int(data: dict, key: str, *, minimum: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ApiError("InvalidParameterValueException", f"{key} must be an integer >= {minimum}")
    return value


def create_app(service: InvokeService) -> web.Application:
    routes = web.RouteTableDef()

    async def run(fn, *args, pool=None, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool or service.control,
                                          functools.partial(fn, *args, **kw))

    def ref(request: web.Request, *, qualifier: bool = True) -> tuple[str, str | None]:
        return parse_function_ref(request.match_info["name"],
                                  request.query.get("Qualifier") if qualifier else None)

    async def invocation(request: web.Request, operation: str, types: tuple[str, ...]
                         ) -> tuple[str, str | None, str, str, bytes, str | None]:
        """What Invoke and InvokeWithResponseStream read alike, checked: (name,
        qualifier, invocation type, log type, payload, client context)."""
        name, qualifier = ref(request)
        itype = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if itype not in types:
            raise ApiError("InvalidParameterValueException",
                           f"Unsupported invocation type {itype[:64]!r}")
        log_type = request.headers.get("X-Amz-Log-Type", "None")
        if log_type not in ("None", "Tail"):
            raise ApiError("InvalidParameterValueException", f"Unsupported log type {log_type[:64]!r}")
        if log_type == "Tail" and itype != "RequestResponse":
            log_type = "None"
        limit = MAX_EVENT_PAYLOAD if itype == "Event" else MAX_SYNC_PAYLOAD
        body = await _read_body(request, limit, operation)
        if not body.strip():
            body = b"{}"            # Lambda's event for an invoke without a payload
        client_context = _client_context(request.headers.get("X-Amz-Client-Context"))
        return name, qualifier, itype, log_type, body, client_context

    @routes.post("/2015-03-31/functions/{name}/invocations")
    async def invoke(request: web.Request) -> web.StreamResponse:
        name, qualifier, itype, log_type, body, client_context = await invocation(
            request, "Invoke", ("RequestResponse", "Event", "DryRun"))
        if itype == "DryRun":
            info = await run(service.manager.registry.resolve, name, qualifier)
            return web.Response(status=204, headers={"X-Amz-Executed-Version": info.version})
        with tracing.span("Invoke", kind="SERVER", context=tracing.extract(request.headers),
                          **{"faas.invoked_name": name, "faas.trigger": "http",
                             "aws.lambda.invocation_type": itype}):
            return await invoke_traced(request, name, qualifier, itype, log_type, body,
                                       client_context)

    async def invoke_traced(request: web.Request, name: str, qualifier: str | None,
                            itype: str, log_type: str, body: bytes,
                            client_context: str | None) -> web.StreamResponse:
        trace_id = tracing.function_header(request.headers)
        if itype == "Event":
            event_id, version = await run(service.enqueue, name, qualifier, body,
                                          trace_id=trace_id, client_context=client_context)
            service.worker.wake()
            return web.Response(status=202, headers={"x-amzn-RequestId": event_id,
                                                     "X-Amz-Executed-Version": version,
                                                     "X-Amzn-Trace-Id": trace_id})
        done = await service.invoke_warm(name, qualifier, body, trace_id=trace_id,
                                         client_context=client_context,
                                         tail=log_type == "Tail")
        if done is None:            # no idle clone (or a fleet sync is due): on a thread
            done = await run(service.invoke_sync, name, qualifier, body, trace_id=trace_id,
                             client_context=client_context, pool=service.pool,
                             trace_context=tracing.current_context())
        result, version, block = done
        with tracing.span("response"):
            return _invoke_response(result, version, block, trace_id, log_type)

    def _invoke_response(result, version: str, block: bytes, trace_id: str,
                         log_type: str) -> web.Response:
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": result.request_id,
                   "X-Amz-Executed-Version": version, "X-Amzn-Trace-Id": trace_id,
                   "X-Snapstart-Start-Type": result.start_type,
                   "X-Snapstart-Duration-Ms": f"{result.duration_ms:.3f}"}
        for header, value in (("X-Snapstart-Init-Duration-Ms", result.init_duration_ms),
                              ("X-Snapstart-Restore-Duration-Ms", result.restore_duration_ms),
                              ("X-Snapstart-Max-Memory-Used-Mb", result.max_memory_used_mb)):
            if value is not None:
                headers[header] = str(round(value, 3))
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if log_type == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(block[-TAIL_BYTES:]).decode()
        return web.Response(status=200, body=result.payload, headers=headers)

    @routes.post("/2021-11-15/functions/{name}/response-streaming-invocations")
    async def invoke_stream(request: web.Request) -> web.StreamResponse:
        name, qualifier, itype, log_type, body, client_context = await invocation(
            request, "InvokeWithResponseStream", ("RequestResponse", "DryRun"))
        info = await run(service.manager.registry.resolve, name, qualifier)
        if itype == "DryRun":
            return web.Response(status=204, headers={"X-Amz-Executed-Version": info.version})
        with tracing.span("Invoke", kind="SERVER", context=tracing.extract(request.headers),
                          **{"faas.invoked_name": name, "faas.trigger": "http",
                             "aws.lambda.invocation_type": "RequestResponse",
                             "snapstart.streamed": True}):
            return await stream_traced(request, name, qualifier, info, log_type, body,
                                       client_context)

    async def stream_traced(request: web.Request, name: str, qualifier: str | None, info,
                            log_type: str, body: bytes,
                            client_context: str | None) -> web.StreamResponse:
        trace_id = tracing.function_header(request.headers)
        request_id = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        sink = LoopSink(loop)
        done = loop.run_in_executor(service.pool, functools.partial(
            service.invoke_sync, name, qualifier, body, trace_id=trace_id,
            client_context=client_context, info=info, sink=sink, request_id=request_id,
            trace_context=tracing.current_context()))
        resp: web.StreamResponse | None = None
        gone = False                # the client hung up: finish the invoke, write nothing

        async def send(data: bytes, content_type: str = "application/octet-stream") -> None:
            nonlocal resp, gone
            if gone:
                return
            try:
                if resp is None:
                    resp = web.StreamResponse(status=200, headers={
                        "Content-Type": "application/vnd.amazon.eventstream",
                        "X-Amzn-Remapped-Content-Type": content_type,
                        "x-amzn-RequestId": request_id, "X-Amz-Executed-Version": info.version,
                        "X-Amzn-Trace-Id": trace_id})
                    await resp.prepare(request)
                if data:
                    await resp.write(data)
            except (ConnectionError, RuntimeError):
                gone = True

        async def relay(item: tuple[str, Any]) -> None:
            kind, value = item
            if kind == "begin":
                await send(b"", value)
            elif value:
                await send(eventstream.payload_chunk(value))

        await sink.relay_until(done, relay)
        try:
            result, _, block = done.result()
        except Exception as exc:  # noqa: BLE001 - after the first byte: in InvokeComplete
            if resp is None:
                raise
            error = from_exception(exc)
            await send(eventstream.invoke_complete(error_code=error.error_type,
                                                   error_details=error.message))
        else:
            if result.stream_content_type is None and not result.function_error:
                await send(eventstream.payload_chunk(result.payload), "application/json")
            code = details = None
            if result.function_error:
                code, details = _error_parts(result.payload)
            tail = (base64.b64encode(block[-TAIL_BYTES:]).decode()
                    if log_type == "Tail" else None)
            await send(eventstream.invoke_complete(error_code=code, error_details=details,
                                                   log_result=tail), "application/json")
        if resp is not None and not gone:
            try:
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return resp if resp is not None else web.Response(status=204)

    @routes.put("/2017-10-31/functions/{name}/concurrency")
    async def put_concurrency(request: web.Request) -> web.Response:
        name, _ = ref(request, qualifier=False)
        data = await _json_body(request)
        n = _positive_int(data, "ReservedConcurrentExecutions", minimum=0)
        await run(service.manager.registry.resolve, name)
        try:
            service.manager.limits.set_reserved(name, n)
        except SnapStartError as exc:
            raise ApiError("InvalidParameterValueException", exc.message)
        return web.json_response({"ReservedConcurrentExecutions": n})

    @routes.get("/2019-09-30/functions/{name}/concurrency")
    async def get_concurrency(request: web.Request) -> web.Response:
        name, _ = ref(request, qualifier=False)
        await run(service.manager.registry.resolve, name)
        reserved = service.manager.limits.reserved(name)
        return web.json_response({} if reserved is None
                                 else {"ReservedConcurrentExecutions": reserved})

    @routes.delete("/2017-10-31/functions/{name}/concurrency")
    @routes.delete("/2019-09-30/functions/{name}/concurrency")
    async def delete_concurrency(request: web.Request) -> web.Response:
        name, _ = ref(request, qualifier=False)
        await run(service.manager.registry.resolve, name)
        service.manager.limits.delete_reserved(name)
        return web.Response(status=204)

    @routes.put("/2019-09-30/functions/{name}/provisioned-concurrency")
    async def put_provisioned(request: web.Request) -> web.Response:
        name, qualifier = ref(request)
        if not qualifier:
            raise ApiError("InvalidParameterValueException", "Qualifier is required")
        data = await _json_body(request)
        n = _positive_int(data, "ProvisionedConcurrentExecutions", minimum=1)
        if n > service.manager.max_concurrency:
            raise ApiError("InvalidParameterValueException",
                           "ProvisionedConcurrentExecutions exceeds the account limit")
        body = await run(service.provisioned, name, qualifier, n)
        return web.json_response(body, status=202)

    @routes.get("/2019-09-30/functions/{name}/provisioned-concurrency")
    async def get_provisioned(request: web.Request) -> web.Response:
        name, qualifier = ref(request)
        if not qualifier:
            raise ApiError("InvalidParameterValueException", "Qualifier is required")
        return web.json_response(await run(service.provisioned, name, qualifier, None))

    @routes.delete("/2019-09-30/functions/{name}/provisioned-concurrency")
    async def delete_provisioned(request: web.Request) -> web.Response:
        name, qualifier = ref(request)
        if not qualifier:
            raise ApiError("InvalidParameterValueException", "Qualifier is required")
        await run(service.manager.set_provisioned, name, qualifier, 0)
        return web.Response(status=204)

    @routes.get("/2015-03-31/functions/")
    @routes.get("/2015-03-31/functions")
    async def list_functions(request: web.Request) -> web.Response:
        all_versions = request.query.get("FunctionVersion") == "ALL"
        return web.json_response(await run(service.list_functions, all_versions))

    @routes.get("/2015-03-31/functions/{name}")
    async def get_function(request: web.Request) -> web.Response:
        name, qualifier = ref(request)
        return web.json_response(await run(service.get_function, name, qualifier))

    @routes.get("/2015-03-31/functions/{name}/versions")
    async def list_versions(request: web.Request) -> web.Response:
        name, _ = ref(request, qualifier=False)
        return web.json_response(await run(service.list_versions, name))

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        body = await run(service.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    @web.middleware
    async def errors(request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = ApiError("UnknownOperationException" if exc.status in (404, 405)
                             else "ServiceException" if exc.status >= 500
                             else "InvalidRequestContentException",
                             exc.reason or "error", status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never die on a request
            error = from_exception(exc)
            if error.status >= 500:
                log.error("request %s %s failed: %r", request.method, request.path, exc,
                          exc_info=not isinstance(exc, SnapStartError))
        service.metrics.api_errors.labels(error.error_type).inc()
        status, headers, body = error.parts()
        headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application(middlewares=[errors], client_max_size=MAX_SYNC_PAYLOAD + 1024)
    app.add_routes(routes)
    return app


def serve(options: ServeOptions, settings: Settings | None = None, *,
          ready=None) -> None:
    """Run the server until SIGINT/SIGTERM; cleans up orphans first, every clone after."""
    from ..manager import Manager
    from .orphans import kill_orphans

    settings = settings or Settings.from_env()
    killed = kill_orphans(settings.home)
    if killed:
        log.warning("killed %d sandbox(es) left by a previous server", killed)
    manager = Manager(settings, max_concurrency=options.max_concurrency,
                      restore_ahead=options.restore_ahead)
    if settings.store_url:
        # a fleet's settings are checked now, not at the first request; an unreachable
        # bucket is only a warning: the versions this node holds still serve
        try:
            manager.store.bucket.check()
        except StoreError as exc:
            log.warning("%s; serving what this node holds until it answers", exc.message)
        except BaseException:
            manager.close()
            raise
    service = InvokeService(manager, settings, options)
    try:
        # uvloop's event loop (libuv): ~15 % more warm invokes/s than asyncio's with
        # 4 clients (benches/bench_serve.py: 1444 -> 1664/s on 2 cores)
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_main(service, options, ready))
    finally:
        service.close()
        tracing.shutdown()          # export the spans still queued


async def _main(service: InvokeService, options: ServeOptions, ready) -> None:
    from ..triggers import runtime as triggers
    app = create_app(service)
    triggers.install(app, service)      # function URLs, HttpApi/Api routes
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(_MalformedRequestFilter())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service.manager.start_housekeeping(idle_timeout_s=options.idle_timeout_s,
                                       max_lifetime_s=options.max_lifetime_s)
    service.worker.start()
    running = triggers.start(service)   # schedules, event source mappings
    server: Any = site._server     # asyncio.Server (the base type lacks .sockets)
    port = server.sockets[0].getsockname()[1] if server else options.port
    print(f"snapstart: serving the Lambda Invoke API on http://{options.host}:{port}",
          file=sys.stderr, flush=True)
    if ready is not None:
        ready(port)
    try:
        await stop.wait()
    finally:
        triggers.stop(running)
        await runner.cleanup()
