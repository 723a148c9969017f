"""Prepared restore slots: what a restore needs before the snapshot is known.

A ``RestoreSlot`` (sandbox/sandbox.py) holds fresh network, mount, IPC, UTS and PID
namespaces, the sandbox root with its /proc, snapinit, a cgroup and a ``criu swrk``
already forked into them (~7 ms of work). ``SlotPool`` keeps ``target`` of them
ready on one background thread (forks are serialized), so a restore only mounts the
function's code and sends CRIU its request.

Refills yield to restores: on 2 CPUs, preparing a slot (forks, mounts, the GIL)
while a clone is being restored slows that restore down, so the filler waits
until no restore is in flight (``busy()``) -- for at most ``QUIET_WAIT_S``, so a
steady stream of restores still gets its slots back.

Must not know about versions or stores.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

from ..checkpoint.criu import Criu
from ..errors import SnapStartError
from ..sandbox.mountns import SandboxFs
from ..sandbox.procs import private_name
from ..sandbox.sandbox import RestoreSlot

__all__ = ["SlotPool"]

log = logging.getLogger("snapstart.manager")
QUIET_WAIT_S = 0.25


class SlotPool:
    def __init__(self, criu: Criu, work_root: Path, *, owner: str, target: int,
                 refill: bool = True) -> None:
        """``target`` slots are prepared from the start; ``refill``: keep them topped
        up as restores take them (a one-shot caller, the CLI, does not)."""
        self.criu = criu
        self.work_root = work_root
        self.owner = owner
        self.target = target
        self.refill = refill
        self._made = 0
        self.fs = SandboxFs()          # a slot's filesystem: no code yet, default /tmp
        self._slots: list[RestoreSlot] = []
        self._cond = threading.Condition()
        self._busy = 0
        self._preparing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._adopted: list[Future] = []     # slots being prepared by the caller
        if target > 0:
            self._start()

    def _start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._fill, name="snapstart-slots",
                                                daemon=True)
                self._thread.start()

    def adopt(self, pending: Future) -> None:
        """A slot the caller started preparing before this pool existed (the one-shot
        CLI, while it imports the rest of snapstart); ``take`` hands it out first."""
        with self._cond:
            self._adopted.append(pending)

    def _take_adopted(self, wait: bool) -> RestoreSlot | None:
        with self._cond:
            pending = next((f for f in self._adopted if wait or f.done()), None)
            if pending is None:
                return None
            self._adopted.remove(pending)
        try:
            return pending.result()
        except (SnapStartError, OSError) as exc:    # the restore prepares its own
            log.warning("cannot prepare a restore slot: %s", exc)
            return None

    def take(self, *, wait: bool = False) -> RestoreSlot | None:
        """A prepared slot, or None. With ``wait``, if none is ready but one is being
        prepared, wait for it: it is further along than a new one would be."""
        if self._adopted and (slot := self._take_adopted(wait)) is not None:
            return slot
        if self.target <= 0:
            return None
        with self._cond:
            while wait and not self._slots and self._preparing and not self._closed:
                self._cond.wait(0.05)
            slot = self._slots.pop() if self._slots else None
            self._cond.notify_all()
        return slot

    def claim(self, *, fs: SandboxFs | None = None) -> RestoreSlot:
        """The slot being prepared (waited for), else a new one made now."""
        return self.take(wait=True) or self.prepare(fs=fs)

    def prepare(self, *, fs: SandboxFs | None = None) -> RestoreSlot:
        """A slot made now (no pool, or it was empty)."""
        return RestoreSlot.prepare(self.criu, self.work_root / private_name(),
                                   owner=self.owner, fs=fs or self.fs)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a restore in flight: refills wait for it (up to QUIET_WAIT_S)."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def wait_quiet(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until no restore is in flight."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._closed and self._busy and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def ready(self) -> int:
        with self._cond:
            return len(self._slots)

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (len(self._slots) >= self.target or
                                            (not self.refill and self._made >= self.target)):
                    self._cond.wait()
                deadline = time.monotonic() + QUIET_WAIT_S
                while not self._closed and self._busy and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                if self._closed:
                    return
                self._preparing = True
                self._made += 1
            try:
                slot = self.prepare()
            except SnapStartError as exc:
                log.warning("cannot prepare a restore slot: %s", exc)
                with self._cond:
                    self._preparing = False
                    self._cond.notify_all()
                    self._cond.wait(1.0)
                continue
            with self._cond:
                self._preparing = False
                keep = not self._closed
                if keep:
                    self._slots.append(slot)
                self._cond.notify_all()
            if not keep:
                discard(slot)
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            slots, self._slots = self._slots, []
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join()
        while self._adopted:
            slot = self._take_adopted(True)
            if slot is not None:
                slots.append(slot)
        for slot in slots:
            discard(slot)


def discard(slot: RestoreSlot) -> None:
    slot.discard()
    shutil.rmtree(slot.work_dir, ignore_errors=True)
