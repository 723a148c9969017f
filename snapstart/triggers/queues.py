"""Event source mappings: queues that invoke functions (RabbitMQ and SQS).

What runs
    ``Mappings(service)`` is what ``snapstart serve`` starts (runtime.py). One watcher
    thread follows the ``mappings`` of ``$SNAPSTART_HOME/triggers.json`` (config.py) by
    its mtime, size and inode, once a second: an entry that appears is started, one that
    disappears is stopped, one that changed is stopped and started again; a file that no
    longer parses is logged and the running mappings are kept. Each enabled mapping has
    one poller thread: ``rabbitmq.RabbitPoller`` (``"type": "MQ"``) or
    ``sqs.SqsPoller`` (``"type": "SQS"``). ``start()`` returns at once (it runs on
    serve's event loop); ``stop()`` waits up to ``STOP_WAIT_S`` for batches in flight.

One batch, one invocation
    A poller gathers up to ``batch_size`` messages, for at most ``batching_window_s``
    after the first one, and below Lambda's 6 MB payload limit, and makes them one
    event (Lambda's shapes: rabbitmq.py, sqs.py). The event is invoked with
    ``service.invoke_sync`` on this module's invoke pool: the normal dispatch (warm,
    restored or cold), counted in /metrics and written to the function's logs like any
    Invoke. The poller thread keeps its connection alive while it waits (AMQP heartbeats,
    SQS visibility extensions).

    What an invocation's outcome means (``Outcome.kind``):

        ok              the function returned: the batch is acked / deleted (SQS with
                        ReportBatchItemFailures: all but the failures it names)
        function_error  the function raised, timed out, ran out of memory or its runtime
                        died, or the sandbox failed: one failed attempt of each message
        throttled       concurrency limits: messages back to the queue, no attempt
                        counted, the poller pauses ``THROTTLE_PAUSE_S``
        unavailable     the function (or qualifier) does not exist: as throttled, with a
                        longer pause and the error shown in ``snapstart mappings ls``
        interrupted     it failed while serve was stopping: as throttled, without a pause

Delivery: at least once, never lost. Nothing is acked or deleted before the invocation
that processed it returned success, so a crash anywhere (``kill -9`` of serve
included) leaves every unfinished message on the broker, which delivers it again
(rabbitmq.py and sqs.py give the argument for each). A message may so be processed more
than once, as on Lambda: functions must be idempotent.

Mapping lifecycle: one ``MappingState`` per mapping, changed only along ``TRANSITIONS``
(anything else raises InvalidTransition naming both states)::

    STARTING -> CONNECTING -> POLLING -> BACKING_OFF -> CONNECTING ...
        |            |            |            |
        +-> DISABLED +------------+------------+-> STOPPED
        +-> INVALID

State file ``$SNAPSTART_HOME/mappings-state.json`` (0600, replaced atomically after
every change; read by ``snapstart mappings ls``), format 1::

    {"format": 1, "pid": PID of serve, "running": bool, "started_at": unix-s,
     "updated_at": unix-s,
     "mappings": [{"id", "function", "qualifier", "type", "source" (password removed),
                   "queues", "batch_size", "batching_window_s", "enabled",
                   "state": MappingState, "state_since": unix-s,
                   "last_processing_result": "No records processed" | "OK" |
                                             "PROBLEM: ...",   (Lambda's words)
                   "last_batch_at": unix-s|null, "last_batch_size": int,
                   "last_batch_outcome": Outcome.kind|null, "in_flight": int,
                   "last_error": str|null, "last_error_at": unix-s|null,
                   "counts": {"received", "invoked", "function_errors", "acked",
                              "retried", "dead_lettered"}}]}

``acked`` counts AMQP acks for MQ and deleted messages for SQS; ``retried`` messages
left for redelivery after a failed attempt; ``dead_lettered`` messages moved to the
dead-letter exchange (MQ) or failed at their queue's maxReceiveCount (SQS: the
service moves them). Counts are those of the running serve (they restart at zero).

Must not: ack or delete before success; reach the manager except through
``service.invoke_sync``; know about HTTP.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from .. import tracing
from ..errors import (ConfigError, EventSourceError, FunctionNotFoundError,
                      InvalidTransition, SnapStartError, ThrottledError)
from ..jsonfile import write_private
from . import config as trigger_config

__all__ = ["Mappings", "MappingSpec", "MappingState", "MappingStatus", "StatusBoard",
           "Outcome", "Poller", "Backoff", "EventSourceError", "TRANSITIONS",
           "STATE_FILE", "load_state", "describe", "describe_lines", "redact"]

log = logging.getLogger("snapstart.mappings")

STATE_FILE = "mappings-state.json"
STATE_FORMAT = 1
STOP_WAIT_S = 10.0
THROTTLE_PAUSE_S = 1.0
UNAVAILABLE_PAUSE_S = 5.0
# Lambda's limit on an invocation's payload, less room for the event's own fields
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 64 * 1024
TYPES = ("MQ", "SQS")
DEFAULT_BATCH = {"MQ": 100, "SQS": 10}


class MappingState(enum.StrEnum):
    STARTING = "Starting"          # its poller thread is being created
    CONNECTING = "Connecting"      # connecting to the broker / resolving the queue
    POLLING = "Polling"            # consuming; batches are being invoked
    BACKING_OFF = "BackingOff"     # the source failed: waiting to connect again
    DISABLED = "Disabled"          # "enabled": false in triggers.json
    INVALID = "Invalid"            # the entry is not a valid mapping (last_error says why)
    STOPPED = "Stopped"            # removed from triggers.json, or serve stopped


S = MappingState
TRANSITIONS: dict[MappingState, frozenset[MappingState]] = {
    S.STARTING: frozenset({S.CONNECTING, S.DISABLED, S.INVALID, S.STOPPED}),
    S.CONNECTING: frozenset({S.POLLING, S.BACKING_OFF, S.STOPPED}),
    S.POLLING: frozenset({S.BACKING_OFF, S.STOPPED}),
    S.BACKING_OFF: frozenset({S.CONNECTING, S.STOPPED}),
    S.DISABLED: frozenset({S.STOPPED}),
    S.INVALID: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}


# ---- the configuration of one mapping ------------------------------------------------
@dataclass(frozen=True)
class MappingSpec:
    """One entry of triggers.json's ``mappings``, validated (config.py: the format)."""

    id: str
    function: str
    qualifier: str | None
    type: str
    source: str
    queues: tuple[str, ...]
    batch_size: int
    batching_window_s: float
    enabled: bool
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    raw: str = ""                   # the entry as canonical JSON: what "changed" means

    @classmethod
    def from_entry(cls, entry: dict[str, Any], index: int = 0) -> MappingSpec:
        where = f"mappings[{index}]"
        mid = entry.get("id")
        if not isinstance(mid, str) or not mid:
            raise ConfigError(f"{where}: needs an id")
        where = f"mapping {mid!r}"
        kind = entry.get("type")
        if kind not in TYPES:
            raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}, not {kind!r}")
        source = entry.get("source")
        if not isinstance(source, str) or not source:
            raise ConfigError(f"{where}: needs a source (broker URL or queue URL/ARN)")
        qualifier = entry.get("qualifier")
        if qualifier is not None and not isinstance(qualifier, str):
            raise ConfigError(f"{where}: qualifier must be a string or null")
        queues = entry.get("queues") or []
        if not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues):
            raise ConfigError(f"{where}: queues must be a list of queue names")
        if kind == "MQ" and not queues:
            raise ConfigError(f"{where}: an MQ mapping needs at least one queue")
        batch_size = entry.get("batch_size", DEFAULT_BATCH[kind])
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) \
                or not 1 <= batch_size <= 10000:
            raise ConfigError(f"{where}: batch_size must be an integer from 1 to 10000")
        window = entry.get("batching_window_s", 0)
        if not isinstance(window, (int, float)) or isinstance(window, bool) \
                or not 0 <= window <= 300:
            raise ConfigError(f"{where}: batching_window_s must be from 0 to 300 seconds")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}: enabled must be true or false")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: options must be an object")
        _check_options(where, kind, source, options)
        return cls(id=mid, function=entry["function"], qualifier=qualifier, type=kind,
                   source=source, queues=tuple(queues), batch_size=batch_size,
                   batching_window_s=float(window), enabled=enabled, options=dict(options),
                   raw=json.dumps(entry, sort_keys=True))


def _check_options(where: str, kind: str, source: str, options: dict[str, Any]) -> None:
    def number(key: str, low: float, high: float) -> None:
        value = options.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not low <= value <= high):
            raise ConfigError(f"{where}: options.{key} must be a number from {low} to {high}")

    number("backoff_s", 0.01, 3600)
    number("max_backoff_s", 0.01, 3600)
    if kind == "MQ":
        url = options.get("url") if source.startswith("arn:") else source
        if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"{where}: source must be an amqp:// or amqps:// URL (or the "
                              "broker's ARN, with the URL in options.url)")
        number("max_retries", 0, 1000)
        number("heartbeat_s", 0, 3600)
        if options.get("dead_letter", "publish") not in ("publish", "reject"):
            raise ConfigError(f"{where}: options.dead_letter must be 'publish' or 'reject'")
    else:
        if not source.startswith(("http://", "https://", "arn:aws:sqs:")):
            raise ConfigError(f"{where}: source must be a queue URL or an SQS queue ARN")
        number("visibility_timeout_s", 0, 43200)
        number("wait_time_s", 0, 20)
        types = options.get("function_response_types", [])
        if not isinstance(types, list) or not set(types) <= {"ReportBatchItemFailures"}:
            raise ConfigError(f"{where}: options.function_response_types may only hold "
                              "'ReportBatchItemFailures'")


def redact(url: str) -> str:
    """``url`` without its password (amqp://user:secret@host -> amqp://user:***@host)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---- what a mapping is doing: kept in memory, written for `mappings ls` ---------------
COUNTS = ("received", "invoked", "function_errors", "acked", "retried", "dead_lettered")


@dataclass
class MappingStatus:
    id: str
    function: str
    qualifier: str | None
    type: str
    source: str
    queues: list[str]
    batch_size: int
    batching_window_s: float
    enabled: bool
    state: MappingState = MappingState.STARTING
    state_since: float = field(default_factory=time.time)
    last_processing_result: str = "No records processed"
    last_batch_at: float | None = None
    last_batch_size: int = 0
    last_batch_outcome: str | None = None
    in_flight: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    @classmethod
    def of(cls, spec: MappingSpec) -> MappingStatus:
        return cls(id=spec.id, function=spec.function, qualifier=spec.qualifier,
                   type=spec.type, source=redact(spec.source), queues=list(spec.queues),
                   batch_size=spec.batch_size, batching_window_s=spec.batching_window_s,
                   enabled=spec.enabled)

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["state"] = str(self.state)
        out["counts"] = dict(self.counts)
        return out


class StatusBoard:
    """Every mapping's status, behind one lock; each change is written to the state
    file (atomically) before the call returns."""

    def __init__(self, home: Path, *, pid: int | None = None) -> None:
        self.path = Path(home) / STATE_FILE
        self.pid = os.getpid() if pid is None else pid
        self.started_at = time.time()
        self.running = True
        self._lock = threading.RLock()
        self._items: dict[str, MappingStatus] = {}

    def add(self, status: MappingStatus) -> MappingStatus:
        with self._lock:
            self._items[status.id] = status
            self._save()
        return status

    def remove(self, mid: str) -> None:
        with self._lock:
            self._items.pop(mid, None)
            self._save()

    def get(self, mid: str) -> MappingStatus | None:
        with self._lock:
            return self._items.get(mid)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.to_json() for s in self._items.values()]

    @contextlib.contextmanager
    def change(self, mid: str) -> Iterator[MappingStatus]:
        """``with board.change(id) as status:`` mutate it; saved on exit. A mapping
        removed meanwhile (its poller finishing late) gets a detached status."""
        with self._lock:
            status = self._items.get(mid)
            if status is None:
                yield MappingStatus(id=mid, function="", qualifier=None, type="", source="",
                                    queues=[], batch_size=0, batching_window_s=0,
                                    enabled=False)
                return
            yield status
            self._save()

    def to(self, mid: str, target: MappingState) -> None:
        with self._lock:
            if mid not in self._items:
                return
        with self.change(mid) as status:
            if target is status.state:
                return
            if target not in TRANSITIONS[status.state]:
                raise InvalidTransition(status.state, target)
            status.state, status.state_since = target, time.time()

    def count(self, mid: str, **deltas: int) -> None:
        with self.change(mid) as status:
            for key, n in deltas.items():
                status.counts[key] += n

    def problem(self, mid: str, message: str) -> None:
        with self.change(mid) as status:
            status.last_error, status.last_error_at = message, time.time()
            status.last_processing_result = f"PROBLEM: {message}"

    def close(self) -> None:
        with self._lock:
            self.running = False
            self._save()

    def _save(self) -> None:
        data = {"format": STATE_FORMAT, "pid": self.pid, "running": self.running,
                "started_at": self.started_at, "updated_at": time.time(),
                "mappings": [s.to_json() for s in self._items.values()]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, data)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)


def load_state(home: Path) -> dict[str, Any] | None:
    """The state file, or None if there is none (or it is not one)."""
    try:
        data = json.loads((Path(home) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return None
    return data


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(home: Path) -> list[dict[str, Any]]:
    """What ``snapstart mappings ls`` shows: every configured mapping, with what the
    running serve reports about it (or its last report, marked not running)."""
    try:
        entries = trigger_config.load(Path(home)).mappings
    except SnapStartError:
        entries = []
    state = load_state(home) or {}
    running = bool(state.get("running")) and _alive(state.get("pid"))
    reported = {m.get("id"): m for m in state.get("mappings", []) if isinstance(m, dict)}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        try:
            row = MappingStatus.of(MappingSpec.from_entry(entry, i)).to_json()
        except SnapStartError as exc:
            row = {"id": entry.get("id"), "function": entry.get("function"),
                   "type": entry.get("type"), "state": str(MappingState.INVALID),
                   "last_error": exc.message}
        mid = row.get("id")
        if running and mid in reported:
            row = dict(reported[mid])
        elif mid in reported:               # serve is not running: its last report
            last = reported[mid]
            for key in ("last_batch_at", "last_batch_size", "last_batch_outcome",
                        "last_error", "last_error_at", "counts", "last_processing_result"):
                if key in last:
                    row[key] = last[key]
        if not running and row.get("state") != str(MappingState.INVALID):
            row["state"] = "NotRunning"
        row["serve"] = "running" if running else "not running"
        rows.append(row)
        seen.add(str(mid))
    if running:     # started but since removed from the file (serve stops it in a second)
        rows += [dict(m, serve="running") for mid, m in reported.items() if mid not in seen]
    return rows


def _ago(t: Any, now: float) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return f"{max(0.0, now - t):.0f}s ago"


def describe_lines(rows: list[dict[str, Any]], now: float | None = None) -> list[str]:
    """``snapstart mappings ls`` as text: one line per mapping, tab-separated."""
    now = time.time() if now is None else now
    out = []
    for row in rows:
        qual = f":{row['qualifier']}" if row.get("qualifier") else ""
        c = row.get("counts") or {}
        last = "last batch: -" if not row.get("last_batch_at") else (
            f"last batch: {row.get('last_batch_size', 0)} msg {_ago(row['last_batch_at'], now)}"
            f" ({row.get('last_batch_outcome')})")
        line = (f"{row.get('id')}\t{row.get('type')}\t{row.get('source')}"
                f"{' ' + ','.join(row['queues']) if row.get('queues') else ''}"
                f"\t-> {row.get('function')}{qual}\t{row.get('state')}\t{last}\t"
                f"received={c.get('received', 0)} invoked={c.get('invoked', 0)} "
                f"acked={c.get('acked', 0)} retried={c.get('retried', 0)} "
                f"dead_lettered={c.get('dead_lettered', 0)}")
        if row.get("last_error"):
            line += f"\terror ({_ago(row.get('last_error_at'), now)}): {row['last_error']}"
        out.append(line)
    return out


# ---- invoking a batch --------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    kind: str                       # ok | function_error | throttled | unavailable |
                                    # interrupted
    payload: bytes = b""
    error: str = ""                 # "errorType: errorMessage" (not for ok)
    request_id: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def counts_attempt(self) -> bool:
        """A failed attempt of each message (redelivery budget, redrive count)."""
        return self.kind == "function_error"


def _error_text(payload: bytes) -> str:
    try:
        data = json.loads(payload)
        return f"{data.get('errorType') or 'Unhandled'}: {data.get('errorMessage') or ''}"[:500]
    except (ValueError, AttributeError, UnicodeDecodeError):
        return payload[:500].decode("utf-8", "replace")


def run_invocation(service: Any, spec: MappingSpec, body: bytes, system: str) -> Outcome:
    """One invocation through the normal dispatch (blocking; runs in the invoke pool)."""
    with tracing.span("Invoke", kind="CONSUMER", **{"faas.invoked_name": spec.function,
                                                   "faas.trigger": "pubsub",
                                                   "messaging.system": system,
                                                   "snapstart.mapping": spec.id}):
        trace_id = tracing.function_header({})
        try:
            result, _, _ = service.invoke_sync(spec.function, spec.qualifier, body,
                                               trace_id=trace_id, client_context=None,
                                               trace_context=tracing.current_context())
        except ThrottledError as exc:
            return Outcome("throttled", error=f"{exc.error_type}: {exc.message}")
        except FunctionNotFoundError as exc:
            return Outcome("unavailable", error=f"{exc.error_type}: {exc.message}")
        except SnapStartError as exc:      # sandbox, restore, payload: a failed attempt
            return Outcome("function_error", error=f"{exc.error_type}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a failed attempt, never a dead poller
            log.exception("mapping %s: invocation failed", spec.id)
            return Outcome("function_error", error=f"ServiceException: {exc!r}"[:500])
    if result.function_error:
        return Outcome("function_error", payload=result.payload,
                       error=_error_text(result.payload), request_id=result.request_id)
    return Outcome("ok", payload=result.payload, request_id=result.request_id)


class Backoff:
    """Reconnect delays: ``base * 2**n`` capped at ``cap``, with +-20 % jitter."""

    def __init__(self, base: float = 1.0, cap: float = 30.0) -> None:
        self.base, self.cap, self.n = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.n))
        self.n += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.n = 0


class Poller:
    """One mapping's thread. Subclasses implement ``session()``: connect, then gather and
    process batches until ``self.stopping`` is set (return) or the source fails (raise
    EventSourceError or the client library's error: the poller backs off, reconnects)."""

    system: ClassVar[str] = ""
    tick_wait: ClassVar[float] = 0.0     # how long to wait for the invocation between ticks

    def __init__(self, spec: MappingSpec, board: StatusBoard, service: Any,
                 pool: ThreadPoolExecutor) -> None:
        self.spec = spec
        self.board = board
        self.service = service
        self.pool = pool
        self.stopping = threading.Event()
        opts = spec.options
        self.backoff = Backoff(float(opts.get("backoff_s", 1.0)),
                               float(opts.get("max_backoff_s", 30.0)))
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"snapstart-esm-{spec.id}"[:60])

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def to(self, state: MappingState) -> None:
        self.board.to(self.spec.id, state)

    def _run(self) -> None:
        mid = self.spec.id
        while not self.stopping.is_set():
            self.to(MappingState.CONNECTING)
            try:
                self.session()
            except Exception as exc:  # noqa: BLE001 - the source failed: back off, retry
                message = self.describe_error(exc)
                delay = self.backoff.next()
                self.board.problem(mid, message)
                expected = isinstance(exc, (EventSourceError, *self.source_errors()))
                log.error("mapping %s (%s %s): %s; connecting again in %.1f s", mid,
                          self.spec.type, redact(self.spec.source), message, delay,
                          exc_info=not expected)
                self.to(MappingState.BACKING_OFF)
                self.stopping.wait(delay)
        self.to(MappingState.STOPPED)

    def source_errors(self) -> tuple[type[BaseException], ...]:
        return ()

    def describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, SnapStartError):
            return exc.message
        return f"{type(exc).__name__}: {exc}"[:500]

    def session(self) -> None:
        raise NotImplementedError

    # ---- one batch ----------------------------------------------------------------------
    def polling(self) -> None:
        """Connected: a good connection resets the backoff."""
        self.backoff.reset()
        self.to(MappingState.POLLING)
        with self.board.change(self.spec.id) as status:
            if status.last_processing_result.startswith("PROBLEM"):
                status.last_processing_result = "No records processed" \
                    if status.last_batch_at is None else "OK"

    def invoke(self, event: dict[str, Any], size: int, tick: Callable[[], None]) -> Outcome:
        """Invoke ``event`` (a batch of ``size`` messages) on the invoke pool; call
        ``tick`` until it finished (it keeps the connection alive; it may raise)."""
        body = json.dumps(event, separators=(",", ":")).encode()
        with self.board.change(self.spec.id) as status:
            status.in_flight = size
            status.counts["invoked"] += 1
            status.last_batch_at, status.last_batch_size = time.time(), size
        future: Future[Outcome] = self.pool.submit(run_invocation, self.service, self.spec,
                                                   body, self.system)
        try:
            while not future.done():
                tick()
                if self.tick_wait:
                    futures_wait([future], timeout=self.tick_wait)
        finally:
            with self.board.change(self.spec.id) as status:
                status.in_flight = 0
        outcome = future.result()
        if self.stopping.is_set() and not outcome.ok:
            # serve is shutting down (the manager may be closing under the invocation):
            # not the function's failure, so not an attempt; the messages go back
            outcome = Outcome("interrupted", error=outcome.error)
        with self.board.change(self.spec.id) as status:
            status.last_batch_outcome = outcome.kind
            if outcome.ok:
                status.last_processing_result = "OK"
            else:
                status.last_error, status.last_error_at = outcome.error, time.time()
                status.last_processing_result = f"PROBLEM: {outcome.error}"
                if outcome.kind == "function_error":
                    status.counts["function_errors"] += 1
        if outcome.kind in ("throttled", "unavailable"):
            log.warning("mapping %s: %s; batch returned to the queue", self.spec.id,
                        outcome.error)
        return outcome

    def pause_after(self, outcome: Outcome) -> float:
        return {"throttled": THROTTLE_PAUSE_S,
                "unavailable": UNAVAILABLE_PAUSE_S}.get(outcome.kind, 0.0)


# ---- the supervisor serve runs -----------------------------------------------------------
class Mappings:
    """Start, follow and stop every event source mapping of triggers.json."""

    def __init__(self, service: Any, *, watch_s: float = 1.0) -> None:
        self.service = service
        self.home = Path(service.settings.home)
        self.watch_s = watch_s
        self.board = StatusBoard(self.home)
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="snapstart-esm-invoke")
        self.pollers: dict[str, Poller] = {}
        self.specs: dict[str, MappingSpec] = {}
        self._stop = threading.Event()
        self._follower = trigger_config.Follower(self.home)
        self._thread = threading.Thread(target=self._watch, name="snapstart-mappings",
                                        daemon=True)

    def start(self) -> None:
        self.board._save()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for poller in self.pollers.values():
            poller.stop()
        deadline = time.monotonic() + STOP_WAIT_S
        for mid, poller in list(self.pollers.items()):
            # a batch in flight gets until the deadline; an idle poller (an SQS long
            # poll cannot be interrupted) a second: what it holds was never invoked and
            # returns to its queue (connection closed / visibility timeout)
            status = self.board.get(mid)
            busy = status is not None and status.in_flight > 0
            wait = max(0.0, deadline - time.monotonic())
            if not poller.join(wait if busy else min(1.0, wait)) and busy:
                log.warning("mapping %s: batch still running at shutdown; its messages stay "
                            "unacknowledged and will be delivered again", mid)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.board.close()

    # ---- following triggers.json ------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep following the file
                log.exception("event source mappings: refresh failed")
            self._stop.wait(self.watch_s)

    def refresh(self, *, force: bool = False) -> None:
        try:
            triggers = self._follower.poll(force=force)
        except SnapStartError as exc:
            log.error("event source mappings: %s; keeping the running mappings", exc.message)
            return
        if triggers is not None:
            self.apply(triggers.mappings)

    def apply(self, entries: list[dict[str, Any]]) -> None:
        """Make the running mappings those of ``entries``."""
        wanted: dict[str, MappingSpec | ConfigError] = {}
        raw: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(entries):
            try:
                spec = MappingSpec.from_entry(entry, i)
            except ConfigError as exc:
                mid = str(entry["id"]) if isinstance(entry.get("id"), str) else f"mappings[{i}]"
                wanted[mid], raw[mid] = exc, entry
                continue
            wanted[spec.id] = spec
        for mid in list(self.specs):
            new = wanted.get(mid)
            if not isinstance(new, MappingSpec) or new.raw != self.specs[mid].raw:
                self._stop_one(mid)
        for mid, new in wanted.items():
            if mid in self.specs:
                continue
            if isinstance(new, ConfigError):
                self._invalid(mid, raw[mid], new)
            else:
                self._start_one(new)
        for mid in [s["id"] for s in self.board.snapshot()]:
            if mid not in wanted:
                self.board.remove(mid)

    def _invalid(self, mid: str, entry: dict[str, Any], error: ConfigError) -> None:
        old = self.board.get(mid)
        if old is not None and old.last_error == error.message:
            return
        log.error("event source mapping %s: %s", mid, error.message)
        self.board.remove(mid)
        self.board.add(MappingStatus(
            id=mid, function=str(entry.get("function")), qualifier=None,
            type=str(entry.get("type")), source=redact(str(entry.get("source"))),
            queues=[], batch_size=0, batching_window_s=0, enabled=False))
        self.board.to(mid, MappingState.INVALID)
        self.board.problem(mid, error.message)

    def _start_one(self, spec: MappingSpec) -> None:
        old = self.board.get(spec.id)
        if old is not None:
            self.board.remove(spec.id)
        self.board.add(MappingStatus.of(spec))
        self.specs[spec.id] = spec
        if not spec.enabled:
            self.board.to(spec.id, MappingState.DISABLED)
            log.info("event source mapping %s: disabled", spec.id)
            return
        poller = self._poller(spec)
        self.pollers[spec.id] = poller
        log.info("event source mapping %s: %s %s -> %s", spec.id, spec.type,
                 redact(spec.source), spec.function)
        poller.start()

    def _poller(self, spec: MappingSpec) -> Poller:
        if spec.type == "MQ":
            from .rabbitmq import RabbitPoller
            return RabbitPoller(spec, self.board, self.service, self.pool)
        from .sqs import SqsPoller
        return SqsPoller(spec, self.board, self.service, self.pool)

    def _stop_one(self, mid: str) -> None:
        self.specs.pop(mid, None)
        poller = self.pollers.pop(mid, None)
        if poller is not None:
            poller.stop()
            if not poller.join(STOP_WAIT_S):
                log.warning("mapping %s: batch still running; its messages stay "
                            "unacknowledged", mid)
        status = self.board.get(mid)
        if status is not None and status.state is not MappingState.STOPPED and poller is None:
            self.board.to(mid, MappingState.STOPPED)
        self.board.remove(mid)
        log.info("event source mapping %s: stopped", mid)
