"""Tracing: each invocation is one OpenTelemetry trace, and Lambda's trace header.

Spans (names and parents; attributes in ``ATTRS``)::

    Invoke                   serve: the Invoke API request (kind SERVER), continues the
    |                        caller's trace (X-Amzn-Trace-Id or W3C traceparent)
    +- dispatch              manager: the whole invocation; faas.name, faas.version,
       |                     faas.invocation_id, snapstart.start_type, faas.coldstart
       +- restore            a clone restored for it:
       |  +- materialize       the snapshot's manifest checked, its images in L1
       |  +- slot              a prepared restore slot taken (or prepared now)
       |  +- criu restore      CRIU's restore RPC
       +- resume             after-restore phase, until the runtime asks for the event
       +- init               cold: a new sandbox runs the function's init
       +- runtime invoke     the event in the runtime, until its response or error
    +- response              serve: the result written to the caller

Enabled by the SDK's own variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set -> OTLP/HTTP (protobuf) export through a
``BatchSpanProcessor`` (spans are queued on the invoking thread and exported on the
SDK's own thread, never on the request path); ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*`` as the
SDK reads them. ``OTEL_SDK_DISABLED=true`` turns it off. Not set: nothing of
OpenTelemetry is imported and every span below is a no-op. ``configure(provider)``
installs a provider directly (tests: the SDK's in-memory exporter).

The function sees Lambda's header in ``_X_AMZN_TRACE_ID`` / ``Lambda-Runtime-Trace-Id``
(``Root=1-XXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX;Parent=XXXXXXXXXXXXXXXX;Sampled=N``): the
caller's trace, continued, whether or not spans are exported (``function_header``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from typing import Any, Iterator

__all__ = ["enabled", "configure", "shutdown", "span", "record", "current_context",
           "attach", "extract", "function_header", "ATTRS"]

ATTRS = {"name": "faas.name", "version": "faas.version", "request_id": "faas.invocation_id",
         "start_type": "snapstart.start_type", "coldstart": "faas.coldstart"}

_lock = threading.Lock()
_tracer: Any = None          # an opentelemetry Tracer, or False once found disabled
_provider: Any = None


def _env_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(provider: Any = None) -> None:
    """Install ``provider`` (an SDK TracerProvider), or None to go back to what the
    environment says on next use."""
    global _tracer, _provider
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer("snapstart") if provider is not None else None


def _get() -> Any:
    global _tracer, _provider
    tracer = _tracer
    if tracer is not None:
        return tracer or None
    with _lock:
        if _tracer is None:
            if not _env_enabled():
                _tracer = False
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter)
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                resource = Resource.create({"service.name": os.environ.get(
                    "OTEL_SERVICE_NAME", "snapstart")})
                _provider = TracerProvider(resource=resource)
                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
                _tracer = _provider.get_tracer("snapstart")
        return _tracer or None


def enabled() -> bool:
    return _get() is not None


def shutdown() -> None:
    """Flush what is queued (end of a CLI command, of ``serve``)."""
    provider = _provider
    if provider is not None:
        provider.shutdown()


_OFF = contextlib.nullcontext()       # span() when tracing is off: no generator per call


def span(name: str, /, *, kind: str | None = None, context: Any = None,
         **attrs: Any) -> contextlib.AbstractContextManager[Any]:
    """A span around the block (the current one inside it), or a no-op: the ``with``
    gives the span (``set_attribute`` works) or None."""
    tracer = _get()
    if tracer is None:
        return _OFF
    return _span(tracer, name, kind, context, attrs)


@contextlib.contextmanager
def _span(tracer: Any, name: str, kind: str | None, context: Any,
          attrs: dict[str, Any]) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind, Status, StatusCode
    with tracer.start_as_current_span(
            name, context=context, kind=getattr(SpanKind, kind) if kind else SpanKind.INTERNAL,
            attributes=_attrs(attrs), record_exception=False,
            set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
            raise


def record(name: str, start_ns: int, end_ns: int, /, *, parent: Any = None,
           error: str | None = None, **attrs: Any) -> None:
    """A span measured already (a phase known by its timestamps): a child of ``parent``
    (from ``current_context``, for another thread) or of the current span."""
    tracer = _get()
    if tracer is None:
        return
    done = tracer.start_span(name, context=parent, start_time=start_ns,
                             attributes=_attrs(attrs))
    if error:
        from opentelemetry.trace import Status, StatusCode
        done.set_status(Status(StatusCode.ERROR, error[:200]))
    done.end(end_time=end_ns)


def now_ns() -> int:
    return time.time_ns()


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {ATTRS.get(k, k): (str(v) if not isinstance(v, (bool, int, float, str)) else v)
            for k, v in attrs.items() if v is not None}


def current_context() -> Any:
    """The current OpenTelemetry context, to carry into another thread (or None)."""
    if _get() is None:
        return None
    from opentelemetry import context
    return context.get_current()


@contextlib.contextmanager
def attach(ctx: Any) -> Iterator[None]:
    """Make ``ctx`` (from ``current_context``) current in this thread for the block."""
    if ctx is None:
        yield
        return
    from opentelemetry import context
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def extract(headers: Any) -> Any:
    """The caller's trace as a parent context: X-Amzn-Trace-Id first (Lambda's own),
    else W3C traceparent; None when tracing is off."""
    if _get() is None:
        return None
    from opentelemetry.propagators.aws import AwsXRayPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    lower = {k.lower(): v for k, v in headers.items()}
    if "x-amzn-trace-id" in lower:      # the propagators look keys up case-sensitively
        return AwsXRayPropagator().extract({"X-Amzn-Trace-Id": lower["x-amzn-trace-id"]})
    return TraceContextTextMapPropagator().extract(
        {k: lower[k] for k in ("traceparent", "tracestate") if k in lower})


_XRAY_ROOT = re.compile(r"Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_XRAY_SAMPLED = re.compile(r"Sampled=([01])")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _xray(trace_id: str, parent: str, sampled: bool) -> str:
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={parent};Sampled={int(sampled)}"


def function_header(headers: Any) -> str:
    """The trace header the function sees: the current span's trace and id when tracing
    is on; else the caller's X-Amzn-Trace-Id as sent, or its traceparent in Lambda's
    format, or a new root (not sampled)."""
    tracer = _get()
    if tracer is not None:
        from opentelemetry import trace
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return _xray(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", ctx.trace_flags.sampled)
    carrier = {k.lower(): v for k, v in headers.items()}
    amzn = carrier.get("x-amzn-trace-id")
    if amzn and _XRAY_ROOT.search(amzn):
        return amzn
    w3c = _TRACEPARENT.match(carrier.get("traceparent", "").strip().lower())
    if w3c and w3c.group(1) != "0" * 32:
        return _xray(w3c.group(1), w3c.group(2), bool(int(w3c.group(3), 16) & 1))
    return _xray(f"{int(time.time()):08x}{secrets.token_hex(12)}", secrets.token_hex(8), False)
