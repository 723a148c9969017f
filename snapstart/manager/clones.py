"""Every sandbox a manager owns, and its idle (warm) clones by version.

A clone is *tracked* from the moment it exists until it is killed; an idle one is
*parked* under its version's key until an invocation pops it (after a health
check: a runtime that died while idle is dropped, not reused) or housekeeping
expires it. ``untrack`` is the one way a clone leaves: it is killed, and the
listeners (the provisioned pool) hear of it.

Must not know how clones are made (that is the manager's) or talk to them
(that is ``Sandbox``'s).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..sandbox.sandbox import Sandbox

__all__ = ["Clones", "Key"]

Key = tuple[str, str]           # (function name, version)


class Clones:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # clones that served their last invocation are killed here, after the caller
        # has its result (a clone's teardown is ~2 ms: reap, cgroup, namespaces)
        self._retirer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapstart-retire")
        self._all: set[Sandbox] = set()
        self._idle: dict[Key, list[Sandbox]] = {}
        self._listeners: list[Callable[[Sandbox], None]] = []

    def on_untrack(self, listener: Callable[[Sandbox], None]) -> None:
        self._listeners.append(listener)

    def track(self, sandbox: Sandbox) -> Sandbox:
        with self.lock:
            self._all.add(sandbox)
        return sandbox

    def untrack(self, sandbox: Sandbox) -> None:
        sandbox.kill()
        with self.lock:
            self._all.discard(sandbox)
            for pool in self._idle.values():
                if sandbox in pool:
                    pool.remove(sandbox)
        for listener in self._listeners:
            listener(sandbox)

    def retire(self, sandbox: Sandbox) -> None:
        """Untrack ``sandbox`` off the caller's path (close() waits for it)."""
        self.later(self.untrack, sandbox)

    def later(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` off the caller's path, after the work handed over before
        it (one thread, in order; close() waits for it)."""
        try:
            self._retirer.submit(fn, *args)
        except RuntimeError:          # closing: do it here
            fn(*args)

    def park(self, key: Key, sandbox: Sandbox) -> None:
        with self.lock:
            self._idle.setdefault(key, []).append(sandbox)

    def pop_idle(self, key: Key) -> Sandbox | None:
        """The most recently used idle clone that is still healthy (others dropped)."""
        while True:
            with self.lock:
                pool = self._idle.get(key)
                if not pool:
                    return None
                sandbox = pool.pop()
            if sandbox.healthy():
                return sandbox
            self.untrack(sandbox)

    def idle_count(self, name: str | None = None) -> int:
        with self.lock:
            return sum(len(v) for k, v in self._idle.items() if name is None or k[0] == name)

    def has_idle(self, key: Key) -> bool:
        with self.lock:
            return bool(self._idle.get(key))

    def idle_of(self, key: Key) -> list[Sandbox]:
        """A copy of ``key``'s idle clones (read-only uses: memory figures)."""
        with self.lock:
            return list(self._idle.get(key, ()))

    def is_idle(self, sandbox: Sandbox) -> bool:
        with self.lock:
            return any(sandbox in pool for pool in self._idle.values())

    def expire(self, *, idle_timeout_s: float, max_lifetime_s: float,
               keep: set[Sandbox]) -> int:
        """Kill idle clones unused for ``idle_timeout_s`` (not those in ``keep``),
        older than ``max_lifetime_s``, or dead; returns how many."""
        now = time.monotonic()
        doomed: list[Sandbox] = []
        with self.lock:
            for pool in self._idle.values():
                stay = []
                for sandbox in pool:
                    old = now - sandbox.created > max_lifetime_s
                    idle = sandbox not in keep and now - sandbox.last_used > idle_timeout_s
                    if old or idle or not sandbox.alive or _pid_dead(sandbox.pid):
                        doomed.append(sandbox)
                    else:
                        stay.append(sandbox)
                pool[:] = stay
        for sandbox in doomed:
            self.untrack(sandbox)
        return len(doomed)

    def discard_idle(self) -> int:
        """Kill every idle clone (benchmarks between series); returns how many."""
        with self.lock:
            doomed = [s for pool in self._idle.values() for s in pool]
            self._idle.clear()
        for sandbox in doomed:
            self.untrack(sandbox)
        return len(doomed)

    def close(self) -> None:
        self._retirer.shutdown(wait=True)
        with self.lock:
            sandboxes = list(self._all)
            self._all.clear()
            self._idle.clear()
        for sandbox in sandboxes:
            sandbox.kill()


def _pid_dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True
