"""Startup cleanup: sandboxes left behind by a server that died (kill -9).

Sandboxes normally end with their manager by themselves: each sandbox's PID 1
(snapinit) holds the read end of the manager's lifeline pipe and exits when it
reads EOF (sandbox/procs.py). This is the belt to those braces, for a snapinit
that outlived its manager anyway: one of *this* installation (``--owner`` tag of
SNAPSTART_HOME) whose parent is init (PID 1), directly or through the ``unshare``
process of a cold sandbox. Killing it ends every process of its sandbox.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ..sandbox.procs import find_inits, owner_tag

__all__ = ["find_orphans", "kill_orphans"]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def find_orphans(home: Path) -> list[int]:
    """PIDs of this home's sandbox inits whose manager is gone."""
    out = []
    for pid in find_inits(owner_tag(home)):
        parent = _ppid(pid)
        if parent == 1 or (_comm(parent) == "unshare" and _ppid(parent) == 1):
            out.append(pid)
    return out


def kill_orphans(home: Path) -> int:
    orphans = find_orphans(home)
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(orphans)
