"""Per-clone mount namespaces: a private, size-capped ``/tmp`` for every sandbox.

Lambda gives each execution environment its own writable ``/tmp`` (ephemeral
storage, 512 MB by default, up to 10,240 MB). Here every sandbox -- cold, publish
or restored -- lives in its own mount namespace whose ``/tmp`` is a fresh tmpfs
(``nosuid,nodev``, ``size=<ephemeral storage>``, mode 1777). Nothing written there
is visible to the host or to another clone, and it is gone when the clone's last
process exits (the namespace and its tmpfs die with it): there is nothing to
clean up by name. tmpfs pages are memory, charged to the writing clone's memory
cgroup: a function writing to ``/tmp`` spends its memory size on it (as on Cloud
Run); the size cap bounds it independently (ENOSPC).

How CRIU fits (measured: dumping a namespace copied from this host fails with
"Can't lookup mount=24 for fd=0 path=/dev/null"): the mount namespace is *not*
part of the snapshot. ``criu dump`` runs inside the sandbox's mount namespace, so
CRIU sees no mount namespace to dump; ``criu swrk`` for a restore is started inside
a *new* namespace prepared with its own empty tmpfs (``run_in_new``), and CRIU
restores the tree into the namespace it runs in. What the function left in
``/tmp`` during init travels separately, as a tar member of the snapshot
(``TMP_ARCHIVE``: written at publish, unpacked into the clone's tmpfs before the
restore), so init code that downloads a model to ``/tmp`` works after restore as
it does on Lambda SnapStart.

The host's other world-writable directories (``/var/tmp``, ``/dev/shm``,
``/run/lock``) are covered by empty read-only tmpfs mounts in the same namespace:
like Lambda's read-only root, ``/tmp`` is the only place a function can write, and
no directory is left through which two clones (or a clone and the host) could
exchange files. Paths the sandbox needs that live under any of these (a checkout
in /tmp, a test's SNAPSTART_HOME, the L1 snapshot cache in /dev/shm) are
bind-mounted at the same place (``keep``), so the runtime, its code and CRIU's
images stay reachable.

Namespaces are entered per thread (``unshare(CLONE_NEWNS)`` / ``setns`` only
affect the calling thread once it has its own ``fs_struct``), and the forks that
start the agent or ``criu swrk`` happen on that thread: the manager itself never
leaves the host's mount namespace. Reading and writing a clone's ``/tmp`` from
the host goes through a thread ``chroot``-ed into it, so symlinks the function
left there cannot point the (root) manager anywhere else.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from ..config import CRIU_RUNDIR, PROJECT_ROOT
from ..errors import SandboxError
from .nsutil import CLONE_FS, CLONE_NEWNS, check, libc, on_thread

__all__ = ["PrivateTmp", "run_in_new", "run_in_mntns_of", "resize_tmp", "save_tmp",
           "restore_tmp", "TMP_ARCHIVE", "EPHEMERAL_DEFAULT_MB"]

T = TypeVar("T")

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
MASKED = ("/var/tmp", "/dev/shm", "/run/lock")   # read-only and empty in a sandbox
_ROOTS = ("/tmp",) + MASKED
EPHEMERAL_DEFAULT_MB = 512
TMP_ARCHIVE = "snapstart-tmp.tar"   # /tmp at publish time, next to CRIU's images

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          f"mount {target}")


@dataclass(frozen=True)
class PrivateTmp:
    """What a new sandbox mount namespace gets: a ``size_mb`` tmpfs on /tmp, and the
    host paths under /tmp that must stay visible (bind-mounted in place)."""

    size_mb: int = EPHEMERAL_DEFAULT_MB
    keep: tuple[str, ...] = ()

    @classmethod
    def for_paths(cls, size_mb: int, paths: Sequence[os.PathLike | str]) -> "PrivateTmp":
        """Keep the ones of ``paths`` under /tmp or a masked dir (outermost only)."""
        under: list[str] = []
        for p in paths:
            real = os.path.realpath(p)
            if real in _ROOTS:
                raise SandboxError(f"{p} is {real} itself; it cannot be shared with a "
                                   f"sandbox, whose {real} is private")
            if any(real.startswith(root + "/") for root in _ROOTS) and os.path.exists(real):
                under.append(real)
        keep: list[str] = []
        for p in sorted(set(under)):
            if not any(p.startswith(k + "/") for k in keep):
                keep.append(p)
        return cls(size_mb=size_mb, keep=tuple(keep))

    @classmethod
    def for_sandbox(cls, size_mb: int, *paths: os.PathLike | str) -> "PrivateTmp":
        """``for_paths`` of ``paths`` plus what every sandbox needs to reach:
        snapstart's code, its Python, CRIU's kdat cache directory."""
        return cls.for_paths(size_mb, [PROJECT_ROOT, sys.prefix, CRIU_RUNDIR, *paths])

    def _tmpfs_options(self) -> str:
        return f"size={self.size_mb}m,mode=1777"


def run_in_new(tmp: PrivateTmp, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread inside a new mount namespace with a private /tmp.

    Processes ``fn`` starts (fork/exec on that thread) live in the namespace; it
    lasts as long as one of them does."""

    def body() -> T:
        keep_fds: list[tuple[str, int]] = []
        try:
            check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            # Our mounts must not propagate back to the host (systemd makes / shared).
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            for path in tmp.keep:
                keep_fds.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC)))
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp._tmpfs_options())
            masked = [d for d in MASKED if os.path.isdir(d)]
            for d in masked:
                _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "size=64k,mode=755")
            for path, fd in keep_fds:
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            for d in masked:    # read-only now that the kept paths' mount points exist
                _mount("tmpfs", d, "tmpfs",
                       MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
        except OSError as exc:
            raise SandboxError(f"cannot create the sandbox's private /tmp: {exc}") from exc
        finally:
            for _, fd in keep_fds:
                os.close(fd)
        return fn()

    return on_thread(body, "snapstart-mntns")


def _enter_mntns_of(pid: int) -> None:
    check(libc.unshare(CLONE_FS), "unshare(CLONE_FS)")   # setns needs an unshared fs
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, CLONE_NEWNS), "setns(mnt)")
    finally:
        os.close(fd)


def run_in_mntns_of(pid: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread that has joined the mount namespace of ``pid``."""

    def body() -> T:
        try:
            _enter_mntns_of(pid)
        except OSError as exc:
            raise SandboxError(f"cannot enter the mount namespace of pid {pid}: {exc}") from exc
        return fn()

    return on_thread(body, "snapstart-mntns")


def resize_tmp(pid: int, tmp: PrivateTmp) -> None:
    """Set the size cap of the /tmp tmpfs in ``pid``'s mount namespace."""
    run_in_mntns_of(pid, lambda: _mount("tmpfs", "/tmp", "tmpfs",
                                        MS_REMOUNT | MS_NOSUID | MS_NODEV,
                                        tmp._tmpfs_options()))


def _in_tmp_of(pid: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread chroot-ed into ``pid``'s /tmp (its cwd is that /)."""

    def body() -> T:
        check(libc.unshare(CLONE_FS), "unshare(CLONE_FS)")   # chroot this thread only
        os.chroot(f"/proc/{pid}/root/tmp")
        os.chdir("/")
        return fn()

    return on_thread(body, "snapstart-tmp")


def _scaffold(keep: Sequence[str]) -> set[str]:
    """/tmp-relative dirs that exist only to hold the kept mount points."""
    out: set[str] = set()
    for path in keep:
        if not path.startswith("/tmp/"):
            continue
        parts = Path(path).relative_to("/tmp").parts
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def save_tmp(pid: int, archive: Path, tmp: PrivateTmp) -> int:
    """Archive what the function left in ``pid``'s /tmp into ``archive`` (plain tar:
    the store compresses); returns the number of entries, 0 (and no file) if none.

    Only the tmpfs is archived: kept host paths (mount points, another st_dev) and
    the directories holding them are skipped, symlinks are stored, never followed.
    """
    import stat
    import tarfile   # imported before the chroot: nothing can be imported inside it

    try:
        if not os.listdir(f"/proc/{pid}/root/tmp"):
            return 0
    except OSError as exc:
        raise SandboxError(f"cannot read the sandbox's /tmp: {exc}") from exc
    scaffold = _scaffold(tmp.keep)

    def write(f) -> int:
        root_dev = os.lstat("/").st_dev
        count = 0
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            stack = sorted(os.listdir("/"), reverse=True)
            while stack:
                rel = stack.pop()
                st = os.lstat(rel)
                if st.st_dev != root_dev:
                    continue                          # a kept host path
                if rel not in scaffold:
                    tar.add(rel, recursive=False)
                    count += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.extend(sorted((f"{rel}/{c}" for c in os.listdir(rel)), reverse=True))
        return count

    try:
        with open(os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                          0o600), "wb") as f:
            count = _in_tmp_of(pid, lambda: write(f))
    except OSError as exc:
        archive.unlink(missing_ok=True)
        raise SandboxError(f"cannot archive the sandbox's /tmp: {exc}") from exc
    if not count:
        archive.unlink()
    return count


def restore_tmp(pid: int, archive: Path) -> None:
    """Unpack ``archive`` (from ``save_tmp``) into ``pid``'s /tmp, before the clone
    runs. A member whose place resolves outside the clone's tmpfs (into a kept host
    path, through a symlink or a mount point) is skipped."""
    import tarfile

    # Inside the chroot nothing can escape the clone's /tmp but kept host paths,
    # which the st_dev check excludes; "fully_trusted" keeps owners and modes as the
    # function left them (Pythons with extraction filters).
    extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}

    def on_tmpfs(path: str, root_dev: int) -> bool:
        here = os.path.realpath(path)
        while not os.path.lexists(here):
            here = os.path.dirname(here)
        return os.lstat(here).st_dev == root_dev

    def unpack(f) -> None:
        root_dev = os.lstat("/").st_dev
        with tarfile.open(fileobj=f, mode="r") as tar:
            for member in tar:
                name = "/" + member.name.lstrip("/")
                if on_tmpfs(os.path.dirname(name), root_dev) and (
                        not os.path.lexists(name) or os.lstat(name).st_dev == root_dev):
                    tar.extract(member, "/", numeric_owner=True, **extra)

    try:
        with open(archive, "rb") as f:
            _in_tmp_of(pid, lambda: unpack(f))
    except (OSError, tarfile.TarError) as exc:
        raise SandboxError(f"cannot unpack /tmp into the clone: {exc}") from exc
