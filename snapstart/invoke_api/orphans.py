"""Startup cleanup: sandboxes left behind by a server that died (kill -9).

An orphan is a process running ``python -m bootstrap.agent`` whose manager is
gone: its parent is init (PID 1), directly (restored clones are children of the
manager) or through the ``unshare`` process of a cold sandbox. Only sandboxes of
*this* installation are touched: one of the agent's processes must have its
working directory under ``SNAPSTART_HOME`` or ``SNAPSTART_SHM`` (the runtime runs
in the version's code directory).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ..sandbox.sandbox import children_of

__all__ = ["find_orphans", "kill_orphans"]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _is_agent(argv: list[str]) -> bool:
    return any(argv[i] == "-m" and argv[i + 1] == "bootstrap.agent"
               for i in range(len(argv) - 1))


def _under(pid: int, roots: list[Path]) -> bool:
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return any(cwd == root or root in cwd.parents for root in roots)


def find_orphans(home: Path, shm: Path) -> list[tuple[int, int | None]]:
    """[(agent pid, its orphaned unshare parent or None)] of this home's sandboxes."""
    roots = [Path(home).resolve(), Path(shm)]
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == os.getpid() or not _is_agent(_cmdline(pid)):
            continue
        parent = _ppid(pid)
        holder: int | None = None
        if parent != 1:
            pargv = _cmdline(parent)
            if not (pargv and os.path.basename(pargv[0]) == "unshare" and _ppid(parent) == 1):
                continue                              # its manager is alive
            holder = parent
        if any(_under(child, roots) for child in children_of(pid)):
            out.append((pid, holder))
    return out


def kill_orphans(home: Path, shm: Path) -> int:
    orphans = find_orphans(home, shm)
    for pid, holder in orphans:
        for victim in (pid, holder):
            if victim:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return len(orphans)
