"""The trigger configuration: ``$SNAPSTART_HOME/triggers.json`` (root-only, 0600).

Written whole by ``snapstart deploy`` (atomically, under ``triggers.lock``); read by
``snapstart serve`` at start and whenever the file changes (mtime). Format 1::

    {"format": 1,
     "function_urls": [{"function": NAME, "qualifier": ALIAS|VERSION|null,
                        "auth_type": "NONE"|"AWS_IAM", "invoke_mode": "BUFFERED"|
                        "RESPONSE_STREAM", "cors": {...}|null}],
     "http_routes":   [{"function": NAME, "qualifier": ...|null,
                        "source": "HttpApi"|"Api", "method": "GET"|...|"ANY",
                        "path": "/items/{id}" | "/files/{proxy+}" | "$default",
                        "payload_format": "2.0"|"1.0",
                        "timeout_ms": int, "binary_media_types": [STR] (optional)}],
     "schedules":     [{"id": STR (unique), "function": NAME, "qualifier": ...|null,
                        "expression": "rate(5 minutes)"|"cron(0 12 * * ? *)",
                        "input": JSON-text|null, "enabled": bool,
                        "timezone": "Area/City" (optional, ScheduleV2)}],
     "mappings":      [{"id": STR (unique), "function": NAME, "qualifier": ...|null,
                        "type": "MQ"|"SQS", "source": URL-or-ARN,
                        "queues": [STR] (MQ), "batch_size": int,
                        "batching_window_s": float, "enabled": bool,
                        "options": {...type-specific...}}],
     "destinations":  [{"function": NAME, "qualifier": ...|null,
                        "maximum_retry_attempts": int, "maximum_event_age_s": int,
                        "on_success": DEST|null, "on_failure": DEST|null}],
     "provisioned":   [{"function": NAME, "qualifier": ALIAS, "n": int}]}

(``provisioned`` is applied by ``snapstart serve`` when it starts and when the file
changes: that many clones of the alias's version kept initialized.)

A DEST is {"type": "function", "name": NAME} or {"type": "sqs", "queue_url": URL}.
Unknown keys are kept (a newer snapstart may add them); a file of another format is
refused with a ConfigError naming it. Each entry is validated when loaded: a bad entry
is an error naming the list and its index, never silently dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..jsonfile import write_private

__all__ = ["FORMAT", "Triggers", "Follower", "load", "save", "locked", "path_of"]

FORMAT = 1
KINDS = ("function_urls", "http_routes", "schedules", "mappings", "destinations",
         "provisioned")


@dataclasses.dataclass
class Triggers:
    function_urls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    http_routes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    schedules: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mappings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    destinations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    provisioned: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **{k: getattr(self, k) for k in KINDS}}

    def for_function(self, name: str) -> dict[str, list[dict[str, Any]]]:
        return {k: [e for e in getattr(self, k) if e.get("function") == name] for k in KINDS}


def path_of(home: Path) -> Path:
    return Path(home) / "triggers.json"


def _check(data: Any, where: Path) -> Triggers:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a snapstart trigger file of format {FORMAT}")
    out = Triggers()
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: {kind} must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("function"), str):
                raise ConfigError(f"{where}: {kind}[{i}] needs a function name")
        setattr(out, kind, entries)
    return out


def load(home: Path) -> Triggers:
    """The configuration (empty if there is none)."""
    path = path_of(home)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return Triggers()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    return _check(data, path)


def save(home: Path, triggers: Triggers) -> None:
    """Replace the configuration atomically (0600). Call under ``locked``."""
    path = path_of(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, triggers.to_json())


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Exclusive: one writer of triggers.json at a time (deploys)."""
    Path(home).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(home) / "triggers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Follower:
    """``triggers.json`` as it changes, for a reader that keeps what it loaded last
    (serve's HTTP routes, scheduler, mappings and destinations)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = path_of(home)
        self._key: tuple[int, int, int] | None | bool = False     # False: never read

    def poll(self, *, force: bool = False) -> Triggers | None:
        """The configuration if the file changed (mtime, size, inode) since the last
        poll -- a removed file reads as empty -- else None. ``ConfigError``/``OSError``
        for a file that cannot be read or parsed: the caller keeps what it had (the
        file is not read again until it changes)."""
        try:
            st = os.stat(self.path)
            key: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        if key == self._key and not force:
            return None
        self._key = key
        return load(self.home)
