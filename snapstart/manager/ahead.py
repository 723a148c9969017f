"""Restore ahead of demand: clones restored before a request needs them.

For each version invoked recently (``note``), ``per_version`` clones are restored
in the background -- CRIU's work done -- and left parked before their resume, in
GET /restore/next (or their first GET /next). A request that finds no warm clone
takes one (``take``): the manager sends it the resume and the event together, so
its after-restore hooks run then, in that clone, for that request, and every clone
is still unique. Its start type is ``restored-pool``, never ``restored``: the bench
reports the two side by side.

Parked clones hold memory (their private pages; page images are mapped and
shared) but no CPU. Their version's hot set (checkpoint/hotset.py) is faulted in
before they are parked: the pages a first invocation writes are copied then, not
on the request's path (hello ~2 MiB, numpy + pandas ~8 MiB more per parked clone). A version unused for ``idle_timeout_s`` loses its parked
clones; at most ``max_total`` are parked in all. Restores ahead yield to requests:
the filler waits until no foreground restore is in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..errors import SnapStartError
from ..registry import VersionInfo
from ..sandbox.sandbox import Sandbox
from ..sandbox.state import SandboxState
from .clones import Clones, Key
from .slots import SlotPool

__all__ = ["RestoreAhead"]

log = logging.getLogger("snapstart.manager")


class RestoreAhead:
    def __init__(self, *, per_version: int, max_total: int,
                 restore: Callable[[VersionInfo], Sandbox], clones: Clones,
                 slots: SlotPool, idle_timeout_s: float = 300.0) -> None:
        self.per_version = per_version
        self.max_total = max_total
        self.idle_timeout_s = idle_timeout_s
        self._restore = restore
        self.clones = clones
        self.slots = slots
        self._cond = threading.Condition()
        self._parked: dict[Key, list[Sandbox]] = {}
        self._recent: dict[Key, tuple[VersionInfo, float]] = {}
        self._failed: dict[Key, float] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.per_version > 0 and self.max_total > 0

    def note(self, info: VersionInfo) -> None:
        """``info`` was just needed: keep clones of it restored ahead."""
        if not self.enabled or not info.snapshot:
            return
        key = (info.name, info.version)
        with self._cond:
            if self._closed:
                return
            self._recent[key] = (info, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="snapstart-ahead",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take(self, key: Key) -> Sandbox | None:
        """A parked clone of ``key`` (state RESTORING), or None."""
        while True:
            with self._cond:
                pool = self._parked.get(key)
                if not pool:
                    return None
                sandbox = pool.pop()
                self._cond.notify_all()
            if sandbox.alive and sandbox.state is SandboxState.RESTORING:
                return sandbox
            self.clones.untrack(sandbox)

    def parked(self, key: Key | None = None) -> int:
        with self._cond:
            return sum(len(v) for k, v in self._parked.items() if key is None or k == key)

    def _next_wanted(self) -> VersionInfo | None:
        """The recent version most short of parked clones (lock held)."""
        total = sum(len(v) for v in self._parked.values())
        if total >= self.max_total:
            return None
        now = time.monotonic()
        best = None
        for key, (info, used) in sorted(self._recent.items(), key=lambda kv: -kv[1][1]):
            if now - self._failed.get(key, -1e9) < 10.0:
                continue                     # its last restore ahead failed: back off
            if len(self._parked.get(key, ())) < self.per_version:
                best = info
                break
        return best

    def _fill(self) -> None:
        while True:
            with self._cond:
                info = None
                while not self._closed and (info := self._next_wanted()) is None:
                    self._cond.wait(1.0)
                if self._closed:
                    return
            assert info is not None
            self.slots.wait_quiet(0.5)
            key = (info.name, info.version)
            try:
                sandbox = self._restore(info)
            except SnapStartError as exc:
                log.warning("restore ahead of %s:%s failed: %s", info.name, info.version,
                            exc.message.splitlines()[0])
                with self._cond:
                    self._failed[key] = time.monotonic()
                continue
            sandbox.prefault()           # its hot pages, now rather than on resume
            with self._cond:
                keep = not self._closed and key in self._recent
                if keep:
                    self._parked.setdefault(key, []).append(sandbox)
            if not keep:
                self.clones.untrack(sandbox)

    def expire(self) -> int:
        """Forget versions unused for idle_timeout_s; kill their parked clones."""
        now = time.monotonic()
        doomed: list[Sandbox] = []
        with self._cond:
            for key, (_, used) in list(self._recent.items()):
                if now - used > self.idle_timeout_s:
                    del self._recent[key]
                    doomed.extend(self._parked.pop(key, []))
        for sandbox in doomed:
            self.clones.untrack(sandbox)
        return len(doomed)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            parked = [s for pool in self._parked.values() for s in pool]
            self._parked.clear()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join()
        for sandbox in parked:
            self.clones.untrack(sandbox)
