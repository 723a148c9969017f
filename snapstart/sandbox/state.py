"""The sandbox lifecycle as one explicit state machine.

::

    CREATED --> INITIALIZING --> IDLE <--> BUSY
                     |             |        |
                     v             v        v
                SNAPSHOTTING --> DEAD <-----+
                     ^             |
                     +-------------+   (runtimes checkpointed at their first GET /next)
    RESTORING --> IDLE           ^
        |                        |
        +------------------------+      (any state may go to DRAINING, then DEAD)

A sandbox is born CREATED (cold) or RESTORING (from a snapshot). Every change goes
through ``Lifecycle.to()``, which consults ``TRANSITIONS`` and raises
``InvalidTransition`` naming both states for anything else. DEAD is final.
"""

from __future__ import annotations

import enum
import threading

from ..errors import InvalidTransition

__all__ = ["SandboxState", "TRANSITIONS", "Lifecycle"]


class SandboxState(enum.Enum):
    CREATED = "created"
    INITIALIZING = "initializing"
    SNAPSHOTTING = "snapshotting"
    RESTORING = "restoring"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    DEAD = "dead"


S = SandboxState
TRANSITIONS: dict[SandboxState, frozenset[SandboxState]] = {
    S.CREATED: frozenset({S.INITIALIZING, S.DRAINING, S.DEAD}),
    S.INITIALIZING: frozenset({S.IDLE, S.SNAPSHOTTING, S.DRAINING, S.DEAD}),
    S.SNAPSHOTTING: frozenset({S.DEAD, S.DRAINING}),
    S.RESTORING: frozenset({S.IDLE, S.DRAINING, S.DEAD}),
    S.IDLE: frozenset({S.BUSY, S.SNAPSHOTTING, S.DRAINING, S.DEAD}),
    S.BUSY: frozenset({S.IDLE, S.DRAINING, S.DEAD}),
    S.DRAINING: frozenset({S.DEAD}),
    S.DEAD: frozenset(),
}


class Lifecycle:
    """Thread-safe holder of one sandbox's state."""

    def __init__(self, initial: SandboxState) -> None:
        self._state = initial
        self._lock = threading.Lock()

    @property
    def state(self) -> SandboxState:
        return self._state

    def to(self, target: SandboxState) -> None:
        with self._lock:
            if target not in TRANSITIONS[self._state]:
                raise InvalidTransition(self._state, target)
            self._state = target

    def try_to(self, target: SandboxState) -> bool:
        """Transition if allowed; return whether it happened (for racing reapers)."""
        with self._lock:
            if target not in TRANSITIONS[self._state]:
                return False
            self._state = target
            return True
