"""The values that cross layers: an invocation request, its result, how it started.

``Sandbox`` produces an ``InvokeResult``; the manager completes it (start type,
init/restore durations, notes) with ``dataclasses.replace`` -- results are frozen,
nobody mutates one after the fact; the CLI, the log files, the Invoke API server,
its metrics and the benchmarks read the same type. Must not import anything but
the standard library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["StartType", "InvokeRequest", "InvokeResult", "ResponseSink"]


class StartType(enum.StrEnum):
    """How the clone that ran an invocation came to be (a ``str``: "warm" == WARM)."""

    COLD = "cold"                    # a new sandbox ran the function's init
    RESTORED = "restored"            # CRIU restored the published snapshot for it
    RESTORED_POOL = "restored-pool"  # restored ahead of demand, resumed for it
    WARM = "warm"                    # an idle clone that had served before


class ResponseSink(Protocol):
    """Where a streamed response goes as it arrives (InvokeWithResponseStream, the
    CLI's ``invoke --stream``). Called on the invoking thread, in order: ``begin``
    once, then ``chunk`` per piece; it must not block for long (the runtime's next
    bytes wait) and must not raise. A response that is not streamed never calls it:
    it is the result's payload."""

    def begin(self, content_type: str) -> None: ...

    def chunk(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class InvokeRequest:
    request_id: str
    payload: bytes
    arn: str
    timeout_s: float
    trace_id: str | None = None
    client_context: str | None = None
    # a streamed response's chunks go here; without one they become the payload
    sink: ResponseSink | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InvokeResult:
    request_id: str
    payload: bytes
    function_error: str | None          # None | "Unhandled"
    duration_ms: float
    logs: bytes = b""
    start_type: StartType = StartType.WARM
    init_duration_ms: float | None = None
    restore_duration_ms: float | None = None
    max_memory_used_mb: int | None = None
    executed_version: str = ""
    notes: tuple[str, ...] = ()
    # the runtime streamed its response: its content type; the bytes went to the
    # request's sink (payload b"") or, without one, are the payload
    stream_content_type: str | None = None
