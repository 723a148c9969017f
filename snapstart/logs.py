"""Per-function log files: what CloudWatch Logs would hold for a function.

Layout::

    $SNAPSTART_HOME/logs/<function>/<stream>.log

``<stream>`` is the version (``LATEST`` for ``$LATEST``). Each invocation is
appended as one block (written with a single ``write`` under a lock, so concurrent
invocations never interleave): the START line, the runtime's output, END and
REPORT, exactly as Lambda prints them. Every line in the file is prefixed with its
timestamp: ``2026-11-01T12:00:00.123Z<TAB><line>``; ``read_lines`` and
``follow`` strip nothing (``snapstart logs`` shows them like ``aws logs tail``).

This module must not know about HTTP or sandboxes: it formats and stores text.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import threading
import time
from pathlib import Path
from typing import Iterator

from .config import validate_name
from .manager.report import end_line, report_line, start_line

__all__ = ["LogWriter", "invocation_block", "read_lines", "follow", "TAIL_BYTES"]

TAIL_BYTES = 4096
_STREAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def stream_name(version: str) -> str:
    stream = version.replace("$", "")
    if not _STREAM_RE.match(stream) or stream.startswith("."):
        raise ValueError(f"invalid log stream {version!r}")
    return stream


def invocation_block(result, version: str, memory_mb: int) -> bytes:
    """START + runtime output + END + REPORT of one invocation (Lambda's text)."""
    body = result.logs or b""
    if body and not body.endswith(b"\n"):
        body += b"\n"
    report = report_line(result.request_id, duration_ms=result.duration_ms, memory_mb=memory_mb,
                         max_memory_used_mb=result.max_memory_used_mb,
                         init_duration_ms=result.init_duration_ms,
                         restore_duration_ms=result.restore_duration_ms)
    return (start_line(result.request_id, version).encode() + b"\n" + body
            + end_line(result.request_id).encode() + b"\n" + report.encode() + b"\n")


def _stamp(t: float) -> bytes:
    return (_dt.datetime.fromtimestamp(t, _dt.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z").encode()


class LogWriter:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "logs"
        self._lock = threading.Lock()
        # (name, stream) -> its file's path, once its directory exists: writes are on
        # every invocation's path in `snapstart serve`
        self._paths: dict[tuple[str, str], str] = {}

    def path(self, name: str, version: str) -> Path:
        return self.root / validate_name(name) / f"{stream_name(version)}.log"

    def write(self, name: str, version: str, data: bytes) -> None:
        if not data:
            return
        stamp = _stamp(time.time()) + b"\t"
        lines = data.rstrip(b"\n").split(b"\n")
        text = b"".join(stamp + line + b"\n" for line in lines)
        with self._lock:
            path = self._paths.get((name, version))
            if path is None:
                p = self.path(name, version)
                p.parent.mkdir(parents=True, exist_ok=True)
                path = self._paths[(name, version)] = str(p)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:       # its directory was removed: make it again
                del self._paths[(name, version)]
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
            try:
                while text:
                    text = text[os.write(fd, text):]
            finally:
                os.close(fd)

    def sink(self, name: str, stream: str, data: bytes) -> None:
        """``Manager(log_sink=...)`` hook: output produced outside an invocation."""
        try:
            self.write(name, stream, data)
        except (OSError, ValueError):
            pass


def _parse_time(line: str) -> float | None:
    stamp = line.split("\t", 1)[0]
    try:
        return _dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None


def read_lines(home: Path, name: str, *, since_s: float | None = None) -> list[str]:
    """All lines of a function's streams, oldest first (merged by timestamp)."""
    fdir = Path(home) / "logs" / validate_name(name)
    if not fdir.is_dir():
        return []
    cutoff = None if since_s is None else time.time() - since_s
    rows: list[tuple[float, int, str]] = []
    for i, path in enumerate(sorted(fdir.glob("*.log"))):
        for line in path.read_text(errors="replace").splitlines():
            t = _parse_time(line) or 0.0
            if cutoff is None or t >= cutoff:
                rows.append((t, i, line))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


def follow(home: Path, name: str, *, poll_s: float = 0.5) -> Iterator[str]:
    """Yield new lines as they are appended to any of the function's streams."""
    fdir = Path(home) / "logs" / validate_name(name)
    offsets: dict[Path, int] = {p: p.stat().st_size for p in fdir.glob("*.log")} \
        if fdir.is_dir() else {}
    partial: dict[Path, bytes] = {}
    while True:
        for path in sorted(fdir.glob("*.log")) if fdir.is_dir() else []:
            size = path.stat().st_size
            start = offsets.get(path, 0)
            if size <= start:
                continue
            with open(path, "rb") as f:
                f.seek(start)
                chunk = partial.pop(path, b"") + f.read(size - start)
            offsets[path] = size
            *lines, rest = chunk.split(b"\n")
            if rest:
                partial[path] = rest
            for line in lines:
                yield line.decode("utf-8", "replace")
        time.sleep(poll_s)
