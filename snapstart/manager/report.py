"""Lambda's platform log lines (START / END / REPORT), formatted exactly as Lambda does."""

from __future__ import annotations

import math

__all__ = ["start_line", "end_line", "report_line"]


def start_line(request_id: str, version: str) -> str:
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(request_id: str, *, duration_ms: float, memory_mb: int,
                max_memory_used_mb: int | None, init_duration_ms: float | None = None,
                restore_duration_ms: float | None = None) -> str:
    parts = [f"REPORT RequestId: {request_id}",
             f"Duration: {duration_ms:.2f} ms",
             f"Billed Duration: {max(1, math.ceil(duration_ms))} ms",
             f"Memory Size: {memory_mb} MB",
             f"Max Memory Used: {max_memory_used_mb or 0} MB"]
    if init_duration_ms is not None:
        parts.append(f"Init Duration: {init_duration_ms:.2f} ms")
    if restore_duration_ms is not None:
        parts.append(f"Restore Duration: {restore_duration_ms:.2f} ms")
        parts.append(f"Billed Restore Duration: {max(1, math.ceil(restore_duration_ms))} ms")
    return "\t".join(parts)
