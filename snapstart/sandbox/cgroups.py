"""Per-sandbox cgroups: memory, pids and CPU share, on whichever hierarchy exists.

Layout: one group per sandbox, ``snapstart/<id>`` under each controller. On cgroup
v1 (separate ``memory``, ``pids``, ``cpu`` mounts, as on this project's machines)
that is three directories; on a pure v2 host it is one directory in the unified
tree with those controllers enabled.

Limits follow Lambda: memory = the function's memory size (no swap); pids capped
(a fork bomb is contained); CPU share proportional to memory (Lambda gives a full
vCPU at 1,769 MB), as a *share*, not a hard quota, so an idle machine still
restores at full speed.

A cold sandbox's PID 2 is moved in right after it starts; a restored clone is born
inside its group because ``criu swrk`` itself is moved in before it restores (see
``checkpoint.criu``). Must not know about functions or versions.

Migrations are cheap only with ``favordynmods`` (``favor_dynmods``): without it,
every move into ``cgroup.procs`` write-locks a global percpu rwsem, which waits an
RCU grace period: 11-12 ms per restore slot here, and the fork/exit of any process
meanwhile (a restore in flight) stalls behind it (a 9 ms stall seen in CRIU's
log). Linux 6.18 gives each thread group its own lock as soon as one hierarchy has
been mounted with the option, and keeps it until reboot: migrations then take
~0.1 ms. snapstart mounts (and unmounts) a throwaway named hierarchy with it once
per boot; on older kernels the option only lasts while such a mount exists, so it
is left alone there.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SandboxError

__all__ = ["Cgroup", "cgroup_mode", "sweep_stale", "favor_dynmods", "kernel_at_least", "PIDS_MAX"]

ROOT = Path("/sys/fs/cgroup")
PARENT = "snapstart"
PIDS_MAX = 1024
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_FULL_CPU_MB = 1769


def cgroup_mode() -> str:
    """"v1" (per-controller mounts), "v2" (unified with controllers) or "none"."""
    if all((ROOT / c / "cgroup.procs").exists() for c in _V1_CONTROLLERS):
        return "v1"
    if (ROOT / "cgroup.controllers").exists():
        controllers = (ROOT / "cgroup.controllers").read_text().split()
        if {"memory", "pids"} <= set(controllers):
            return "v2"
    return "none"


def kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def favor_dynmods(marker: Path) -> str:
    """Make cgroup migrations cheap for the rest of this boot (module docstring).

    ``marker``: a file on tmpfs saying it was done this boot. Returns what happened:
    "on" (done now or before), or why not ("kernel < 6.18", the mount's error)."""
    if marker.exists():
        return "on"
    if not kernel_at_least(6, 18):
        return "kernel < 6.18: migrations wait an RCU grace period"
    import ctypes
    import tempfile

    libc = ctypes.CDLL(None, use_errno=True)
    where = tempfile.mkdtemp(prefix="snapstart-dynmods-")
    try:
        if libc.mount(b"cgroup", where.encode(), b"cgroup", 0,
                      b"none,name=snapstart-dynmods,favordynmods") != 0:
            err = ctypes.get_errno()
            return f"cannot mount a favordynmods hierarchy: {os.strerror(err)}"
        libc.umount2(where.encode(), 0)
    finally:
        os.rmdir(where)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("favordynmods enabled this boot (sandbox/cgroups.py)\n")
    return "on"


def _write(path: Path, value: str) -> None:
    """One write(2) to a cgroup control file (no buffering, no text layer: several
    per restore slot)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SandboxError(f"cannot write {value!r} to {path}: {exc}") from exc


@dataclass
class Cgroup:
    name: str
    mode: str
    dirs: list[Path] = field(default_factory=list)
    _paths: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, name: str, *, memory_mb: int | None,
               pids_max: int = PIDS_MAX) -> "Cgroup":
        """Create the group; ``memory_mb=None`` leaves limits for ``limit()`` (pools)."""
        mode = cgroup_mode()
        group = cls(name=name, mode=mode)
        if mode == "none":
            return group
        try:
            if mode == "v1":
                for controller in _V1_CONTROLLERS:
                    path = ROOT / controller / PARENT / name
                    path.mkdir(parents=True, exist_ok=True)
                    group.dirs.append(path)
            else:
                parent = ROOT / PARENT
                parent.mkdir(exist_ok=True)
                _write(ROOT / "cgroup.subtree_control", "+memory +pids +cpu")
                _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
                path = parent / name
                path.mkdir(exist_ok=True)
                group.dirs.append(path)
                _write(path / "memory.swap.max", "0")
            group._pids(pids_max)
            if memory_mb is not None:
                group.limit(memory_mb)
        except OSError as exc:
            group.destroy()
            raise SandboxError(f"cannot create cgroup {name}: {exc}") from exc
        except SandboxError:
            group.destroy()
            raise
        return group

    def _pids(self, pids_max: int) -> None:
        if self.mode == "v1":
            _write(self.dirs[1] / "pids.max", str(pids_max))
        elif self.mode == "v2":
            _write(self.dirs[0] / "pids.max", str(pids_max))

    def limit(self, memory_mb: int) -> None:
        """Memory = the function's size; CPU share proportional to it (Lambda's rule)."""
        if self.mode == "v1":
            mem, _, cpu = self.dirs
            _write(mem / "memory.limit_in_bytes", str(memory_mb << 20))
            _write(cpu / "cpu.shares", str(max(2, 1024 * memory_mb // _FULL_CPU_MB)))
        elif self.mode == "v2":
            _write(self.dirs[0] / "memory.max", str(memory_mb << 20))
            _write(self.dirs[0] / "cpu.weight", str(max(1, 100 * memory_mb // _FULL_CPU_MB)))

    def add(self, pid: int) -> None:
        for path in self.dirs:
            _write(path / "cgroup.procs", str(pid))

    def _read(self, v1_controller: str, v1_file: str, v2_file: str) -> str | None:
        """A control file's text (read after every invocation: paths built once)."""
        key = v2_file if self.mode == "v2" else f"{v1_controller}/{v1_file}"
        path = self._paths.get(key)
        if path is None:
            if self.mode == "v1":
                path = str(ROOT / v1_controller / PARENT / self.name / v1_file)
            elif self.mode == "v2" and self.dirs:
                path = str(self.dirs[0] / v2_file)
            else:
                return None
            self._paths[key] = path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.read(fd, 65536).decode()
        except OSError:
            return None
        finally:
            os.close(fd)

    def max_memory_used_mb(self) -> int | None:
        text = self._read("memory", "memory.max_usage_in_bytes", "memory.peak")
        return round(int(text) / (1 << 20)) if text and text.strip().isdigit() else None

    def oom_kills(self) -> int:
        text = self._read("memory", "memory.oom_control", "memory.events") or ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def procs(self) -> list[int]:
        if not self.dirs:
            return []
        try:
            return [int(x) for x in (self.dirs[0] / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def destroy(self, timeout_s: float = 5.0) -> None:
        """Remove the group (its processes must be dying: we SIGKILL stragglers)."""
        deadline = time.monotonic() + timeout_s
        for path in reversed(self.dirs):
            while path.exists():
                try:
                    path.rmdir()
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    for pid in self.procs():
                        try:
                            os.kill(pid, 9)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.005)
        self.dirs = [p for p in self.dirs if p.exists()]


def sweep_stale() -> int:
    """Remove empty snapstart groups whose owner (the pid in their name) is gone.

    Groups are named ``<kind>-<owner pid>-<id>``; a live owner's empty groups (e.g.
    a pool's) are left alone. Returns how many were removed.
    """
    removed = 0
    bases = [ROOT / c / PARENT for c in _V1_CONTROLLERS] + [ROOT / PARENT]
    for base in bases:
        if not base.is_dir():
            continue
        for child in base.iterdir():
            parts = child.name.split("-")
            if not child.is_dir() or len(parts) < 3 or not parts[1].isdigit():
                continue
            if Path(f"/proc/{parts[1]}").exists():
                continue
            try:
                if not (child / "cgroup.procs").read_text().split():
                    child.rmdir()
                    removed += 1
            except OSError:
                pass
    return removed
