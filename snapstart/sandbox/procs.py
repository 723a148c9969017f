"""Sandboxes as the host sees them: their PID 1 (snapinit), their processes, their tie
to the manager.

- ``owner_tag(home)`` names an installation (a SNAPSTART_HOME): every snapinit is
  started with ``--owner TAG``, so cleanup and tests find this installation's
  sandboxes (and only them) in /proc.
- ``lifeline_fd()``: the read end of a pipe whose write end only this process holds.
  Every snapinit gets it: when this process dies, even by SIGKILL, the pipe reads
  EOF and every sandbox it started ends with it.
- ``find_inits`` / ``members``: a sandbox's PID 1 and the processes of its PID
  namespace.

This module reads /proc and never signals anything.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

__all__ = ["owner_tag", "private_name", "lifeline_fd", "find_inits", "members", "children_of"]

_lifeline: tuple[int, int] | None = None
_lock = threading.Lock()


def owner_tag(home: os.PathLike | str) -> str:
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:16]


def private_name() -> str:
    """A work / staging dir name that says which process owns it (``<pid>-<hex>``)."""
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def lifeline_fd() -> int:
    """The lifeline's read end (close-on-exec; hand it to snapinit with pass_fds)."""
    global _lifeline
    with _lock:
        if _lifeline is None:
            _lifeline = os.pipe2(os.O_CLOEXEC)   # the write end is never written
        return _lifeline[0]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def children_of(pid: int) -> list[int]:
    """Child pids of ``pid`` (every thread's; needs CONFIG_PROC_CHILDREN)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        out.extend(int(x) for x in _read(f"/proc/{pid}/task/{tid}/children").split())
    return out


def find_inits(tag: str | None = None) -> list[int]:
    """PIDs (host view) of every snapinit, or of those of installation ``tag``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if _read(f"/proc/{entry}/comm").strip() != b"snapinit":
            continue
        argv = _read(f"/proc/{entry}/cmdline").split(b"\0")
        if tag is None or any(argv[i] == b"--owner" and argv[i + 1] == tag.encode()
                              for i in range(len(argv) - 1)):
            out.append(int(entry))
    return out


def members(init_pid: int) -> list[int]:
    """The processes of ``init_pid``'s PID namespace, other than itself (host view)."""
    try:
        ns = os.stat(f"/proc/{init_pid}/ns/pid").st_ino
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != init_pid:
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == ns:
                    out.append(int(entry))
            except OSError:
                continue
    return out
