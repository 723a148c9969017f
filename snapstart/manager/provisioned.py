"""Provisioned concurrency: N clones of a published version kept restored, resumed
(after-restore hooks run) and idle, so invocations find them warm.

``set`` records the target; ``replenish`` (called by the manager's housekeeping,
and once by ``set`` with ``wait_s``) restores what is missing through the
``prewarm`` callable it is given. Members that die or are shut down leave through
``Clones.untrack``, which tells this pool.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from typing import Callable

from ..errors import ConfigError, SnapStartError
from ..registry import LATEST, Registry, VersionInfo
from ..sandbox.sandbox import Sandbox
from .clones import Clones, Key

__all__ = ["Provisioned"]

log = logging.getLogger("snapstart.manager")


class Provisioned:
    def __init__(self, registry: Registry, clones: Clones,
                 prewarm: Callable[[VersionInfo], Sandbox],
                 closed: Callable[[], bool]) -> None:
        self.registry = registry
        self.clones = clones
        self._prewarm = prewarm
        self._closed = closed
        self._lock = threading.Lock()
        self._target: dict[Key, int] = {}
        self._members: dict[Key, set[Sandbox]] = {}
        clones.on_untrack(self._forget)

    def set(self, name: str, qualifier: str | None, n: int, *, wait_s: float = 0.0) -> str:
        """Keep ``n`` clones of a published version restored and idle; returns the
        version. With ``wait_s`` the missing ones are restored now (up to that long)."""
        info = self.registry.resolve(name, qualifier)
        if info.version == LATEST or not info.snapshot:
            raise ConfigError("Provisioned Concurrency Configs cannot be applied to unpublished "
                              "function versions ($LATEST)")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError("ProvisionedConcurrentExecutions must be a non-negative integer")
        key = (info.name, info.version)
        with self._lock:
            if n == 0:
                self._target.pop(key, None)
                members = self._members.pop(key, set())
            else:
                self._target[key] = n
                self._members.setdefault(key, set())
                members = set()
        for sandbox in members:           # un-provisioned clones become plain idle clones
            sandbox.last_used = time.monotonic()
        if wait_s > 0 and n > 0:
            self.replenish(key, deadline=time.monotonic() + wait_s)
        return info.version

    def status(self, name: str, version: str) -> tuple[int, int, int]:
        """(requested, allocated, available) clones of one version."""
        key = (name, version)
        with self._lock:
            members = set(self._members.get(key, set()))
            target = self._target.get(key, 0)
        return target, len(members), sum(1 for s in members if self.clones.is_idle(s))

    def ready(self) -> int:
        with self._lock:
            return sum(len(m) for m in self._members.values())

    def members(self) -> builtins.set[Sandbox]:
        with self._lock:
            return set().union(*self._members.values()) if self._members else set()

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._target)

    def replenish(self, key: Key, *, deadline: float | None = None) -> None:
        while not self._closed():
            with self._lock:
                want = self._target.get(key, 0) - len(self._members.get(key, ()))
            if want <= 0 or (deadline is not None and time.monotonic() > deadline):
                return
            try:
                info = self.registry.version(key[0], int(key[1]))
                sandbox = self._prewarm(info)
            except SnapStartError as exc:
                log.warning("provisioned clone of %s:%s failed: %s", key[0], key[1], exc.message)
                return
            with self._lock:
                extra = self._closed() or key not in self._target
                if not extra:
                    self._members[key].add(sandbox)
            if extra:
                self.clones.untrack(sandbox)
            else:
                self.clones.park(key, sandbox)

    def _forget(self, sandbox: Sandbox) -> None:
        with self._lock:
            for members in self._members.values():
                members.discard(sandbox)
