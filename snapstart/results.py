"""The values that cross layers: an invocation request, its result, how it started.

``Sandbox`` produces an ``InvokeResult``; the manager completes it (start type,
init/restore durations, notes) with ``dataclasses.replace`` -- results are frozen,
nobody mutates one after the fact; the CLI, the log files, the Invoke API server,
its metrics and the benchmarks read the same type. Must not import anything but
the standard library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["StartType", "InvokeRequest", "InvokeResult"]


class StartType(enum.StrEnum):
    """How the clone that ran an invocation came to be (a ``str``: "warm" == WARM)."""

    COLD = "cold"                    # a new sandbox ran the function's init
    RESTORED = "restored"            # CRIU restored the published snapshot for it
    RESTORED_POOL = "restored-pool"  # restored ahead of demand, resumed for it
    WARM = "warm"                    # an idle clone that had served before


@dataclass(frozen=True)
class InvokeRequest:
    request_id: str
    payload: bytes
    arn: str
    timeout_s: float
    trace_id: str | None = None
    client_context: str | None = None


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
