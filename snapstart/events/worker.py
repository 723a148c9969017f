"""The background worker that runs queued Event invocations through the Manager.

Retries: a function error (``function_error`` set: Unhandled, Sandbox.Timedout,
Runtime.ExitError) is retried ``retries`` times (Lambda: 2; a function's own
MaximumRetryAttempts wins, destinations.py) after ``backoff_s * 2**attempt``; then the
event moves to the failed table. Throttles are re-queued without counting an
attempt. An unknown function fails at once. An event older than the function's
MaximumEventAgeInSeconds is failed without running. With ``destinations``, each
settled event's record goes to the function's OnSuccess / OnFailure destination.

Must not know about HTTP: it gets a Manager-like object with ``invoke``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import FunctionNotFoundError, PayloadError, SnapStartError, ThrottledError
from .store import EventRecord, EventStore

__all__ = ["EventWorker", "RetryPolicy"]

log = logging.getLogger("snapstart.events")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    backoff_s: float = 60.0
    throttle_delay_s: float = 1.0

    def delay(self, attempt: int) -> float:
        return self.backoff_s * (2 ** attempt)


class EventWorker:
    def __init__(self, store: EventStore, manager, *, policy: RetryPolicy = RetryPolicy(),
                 threads: int = 2, poll_s: float = 0.2,
                 on_result: Callable[[EventRecord, object], None] | None = None,
                 destinations: Any = None, function_arn: Callable[[str, str | None], str]
                 | None = None) -> None:
        self.store = store
        self.destinations = destinations
        self.function_arn = function_arn or (lambda name, q: name)
        self.manager = manager
        self.policy = policy
        self.poll_s = poll_s
        self.on_result = on_result
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="snapstart-event")
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="snapstart-events", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    free = self._threads - len(self._inflight)
                    busy = set(self._inflight)
                records = self.store.due(limit=free, exclude=busy) if free > 0 else []
                for record in records:
                    with self._lock:
                        self._inflight.add(record.id)
                    self._pool.submit(self._run, record)
            except Exception:  # noqa: BLE001 - keep the worker alive
                log.exception("event loop failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _run(self, record: EventRecord) -> None:
        try:
            self._run_one(record)
        except Exception:  # noqa: BLE001
            log.exception("event %s failed unexpectedly", record.id)
            try:
                self.store.retry(record.id, next_at=time.time() + self.policy.delay(
                    record.attempts), error="ServiceException")
            except Exception:  # noqa: BLE001
                pass
        finally:
            with self._lock:
                self._inflight.discard(record.id)
            self._wake.set()

    def _settle(self, record: EventRecord, condition: str, result: Any,
                settings: dict | None) -> None:
        """Send the record of a settled event to its destination, if one is set."""
        if not settings or self.destinations is None:
            return
        target = settings.get("on_success" if condition == "Success" else "on_failure")
        if not target:
            return
        from .destinations import record as destination_record
        self.destinations.send(target, destination_record(
            request_id=record.id, function_arn=self.function_arn(record.function,
                                                                 record.qualifier),
            condition=condition, attempts=record.attempts + 1, payload=record.payload,
            result=result))

    def _run_one(self, record: EventRecord) -> None:
        settings = (self.destinations.settings(record.function)
                    if self.destinations is not None else None)
        retries = self.policy.retries
        if settings is not None:
            retries = int(settings.get("maximum_retry_attempts", retries))
            max_age = float(settings.get("maximum_event_age_s", 21600))
            if time.time() - record.created > max_age:
                self.store.fail(record.id, "EventAgeExceeded: older than "
                                f"{max_age:.0f} s when its turn came")
                self._settle(record, "EventAgeExceeded", None, settings)
                return
        try:
            result = self.manager.invoke(record.function, record.payload,
                                         qualifier=record.qualifier, trace_id=record.trace_id,
                                         client_context=record.client_context,
                                         request_id=record.id)
        except ThrottledError as exc:
            self.store.retry(record.id, next_at=time.time() + self.policy.throttle_delay_s,
                             error=exc.error_type, count_attempt=False)
            return
        except (FunctionNotFoundError, PayloadError) as exc:
            self.store.fail(record.id, f"{exc.error_type}: {exc.message}")
            return
        except SnapStartError as exc:
            result = None
            error: str | None = f"{exc.error_type}: {exc.message}"
        else:
            error = None
            if result.function_error:
                error = f"{result.function_error}: " + result.payload[:1024].decode(
                    "utf-8", "replace")
        if self.on_result is not None and result is not None:
            try:
                self.on_result(record, result)
            except Exception:  # noqa: BLE001
                log.exception("event result hook failed")
        if error is None:
            self.store.done(record.id)
            self._settle(record, "Success", result, settings)
        elif record.attempts >= retries:
            self.store.fail(record.id, error)
            self._settle(record, "RetriesExhausted", result, settings)
        else:
            self.store.retry(record.id, next_at=time.time() + self.policy.delay(record.attempts),
                             error=error)
