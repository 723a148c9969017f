"""Concurrency policy: the account limit and per-function reserved concurrency.

Pure bookkeeping, no I/O except the optional JSON file that keeps reservations
across restarts (``$SNAPSTART_HOME/concurrency.json``: ``{"name": n}``). Lambda's
rules, applied at admission time (throttle at once, never queue):

- a function with reserved concurrency ``r`` may run at most ``r`` invocations at
  a time (capping) and always can run ``r`` (guaranteed): those ``r`` slots are
  taken out of the shared pool;
- every other function shares ``account_limit - sum(reservations)``;
- over the limit: ``ThrottledError`` with Reason
  ``ReservedFunctionConcurrentInvocationLimitExceeded`` (reserved function) or
  ``ConcurrentInvocationLimitExceeded`` (shared pool).

This module must not know about sandboxes or the HTTP layer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..errors import ConfigError, ThrottledError
from ..jsonfile import write_private

__all__ = ["ConcurrencyLimits"]


class ConcurrencyLimits:
    def __init__(self, account_limit: int, *, path: Path | None = None) -> None:
        if account_limit < 1:
            raise ConfigError("the account concurrency limit must be at least 1")
        self.account_limit = account_limit
        self.path = path
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}
        self._running: dict[str, int] = {}
        self._shared_running = 0
        self._shared: dict[str, int] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text())
                self._reserved = {str(k): int(v) for k, v in data.items()
                                  if int(v) <= account_limit}
            except (OSError, ValueError, TypeError, AttributeError):
                self._reserved = {}

    # ---- reservations ------------------------------------------------------------
    def reserved(self, name: str) -> int | None:
        with self._lock:
            return self._reserved.get(name)

    def set_reserved(self, name: str, n: int) -> None:
        if not isinstance(n, int) or n < 0:
            raise ConfigError("ReservedConcurrentExecutions must be a non-negative integer")
        with self._lock:
            others = sum(v for k, v in self._reserved.items() if k != name)
            if others + n > self.account_limit:
                raise ConfigError(
                    f"Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of 0 "
                    f"(account limit {self.account_limit}, reserved elsewhere {others})")
            self._reserved[name] = n
            self._save()

    def delete_reserved(self, name: str) -> None:
        with self._lock:
            self._reserved.pop(name, None)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        write_private(self.path, self._reserved)

    # ---- admission ---------------------------------------------------------------
    @property
    def unreserved_limit(self) -> int:
        return self.account_limit - sum(self._reserved.values())

    def acquire(self, name: str) -> None:
        """Admit one invocation of ``name`` or raise ``ThrottledError`` at once."""
        with self._lock:
            reserved = self._reserved.get(name)
            if reserved is not None:
                if self._running.get(name, 0) >= reserved:
                    raise ThrottledError(
                        "Rate Exceeded.",
                        reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            elif self._shared_running >= self.unreserved_limit:
                raise ThrottledError("Rate Exceeded.", reason="ConcurrentInvocationLimitExceeded")
            else:
                self._shared_running += 1
                self._shared[name] = self._shared.get(name, 0) + 1
            self._running[name] = self._running.get(name, 0) + 1

    def release(self, name: str) -> None:
        with self._lock:
            count = self._running.get(name, 0) - 1
            if count <= 0:
                self._running.pop(name, None)
            else:
                self._running[name] = count
            # a slot taken from the shared pool goes back there, even if the function
            # got a reservation meanwhile
            shared = self._shared.get(name, 0)
            if shared > 0:
                self._shared_running -= 1
                if shared == 1:
                    del self._shared[name]
                else:
                    self._shared[name] = shared - 1

    def running(self, name: str | None = None) -> int:
        with self._lock:
            if name is None:
                return sum(self._running.values())
            return self._running.get(name, 0)
