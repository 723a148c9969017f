"""Per-sandbox mount namespaces and the filesystem a function sees.

Every sandbox -- cold, publish or restored -- lives in its own mount namespace, and
its processes run ``chroot``-ed into a root built there at one fixed path,
``SANDBOX_ROOT`` (the same path in every namespace: CRIU records the paths a
snapshot's files have under it, and every clone finds them at the same place)::

    /                tmpfs, read-only once built
    /usr /etc        the host's, read-only bind mounts (/bin /lib ... as on the host:
                     symlinks into /usr, or read-only bind mounts)
    /var/runtime     the runtime, read-only: venv/ (snapstart's Python and
                     awslambdaric), snapstart/ (the agent, bootstrap/native),
                     bootstrap/ (the Python launcher), node/ (aws-lambda-ric)
    /var/task        the function's code, read-only (LAMBDA_TASK_ROOT, the cwd)
    /var/packages    what its requirements.txt installed, read-only
    /opt             layers, read-only (empty: snapstart has no layers yet)
    /tmp             a private tmpfs, nosuid,nodev, size = ephemeral storage
    /proc            a procfs of the sandbox's own PID namespace, hidepid=invisible
                     (mounted by its PID 1, snapinit, which then chroots)
    /dev             null zero full random urandom (bind mounts), fd, std*, an empty
                     read-only shm
    /sys /run /var/tmp   empty and read-only

So a function sees nothing of the host's processes, of snapstart's home (where its
own code lives on the host) or of other functions, ``/tmp`` is the only place it can
write, and no directory is left through which two clones (or a clone and the host)
could exchange files. It is gone when the sandbox's last process exits (the
namespace and its tmpfs die with it): nothing to clean up by name. tmpfs pages are
memory, charged to the writing clone's memory cgroup.

How CRIU fits: the mount namespace is not part of the snapshot (dumping one copied
from this host fails). ``criu dump`` runs in the sandbox's namespace but outside its
root, where ``/proc`` is still the host's (CRIU needs that); ``criu swrk`` for a
restore is started inside a *new* namespace prepared with an empty root
(``run_in_new``: a restore slot, before the snapshot is known), the function's code
is bind-mounted into it (``attach_task``), and CRIU restores the tree into it,
chroot and all. What the function left in ``/tmp`` during init travels separately,
as a tar member of the snapshot (``TMP_ARCHIVE``: written at publish, unpacked into
the clone's tmpfs before the restore).

Namespaces are entered per thread (``unshare(CLONE_NEWNS)`` / ``setns`` only
affect the calling thread once it has its own ``fs_struct``), and the forks that
start a sandbox or ``criu swrk`` happen on that thread: the manager itself never
leaves the host's mount namespace. Reading and writing a clone's ``/tmp`` from
the host goes through a thread ``chroot``-ed into it, so symlinks the function
left there cannot point the (root) manager anywhere else.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..config import PROJECT_ROOT
from ..errors import SandboxError
from .nsutil import (CLONE_FS, CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWUTS, check, libc,
                     on_thread)

__all__ = ["SandboxFs", "run_in_new", "run_in_mntns_of", "attach_task", "resize_tmp",
           "save_tmp", "restore_tmp", "take_tmp_file", "sandbox_path", "runtime_mounts",
           "TMP_ARCHIVE", "EPHEMERAL_DEFAULT_MB", "SANDBOX_ROOT", "TASK_DIR", "PACKAGES_DIR",
           "RUNTIME_DIR", "OPT_DIR"]

T = TypeVar("T")

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
EPHEMERAL_DEFAULT_MB = 512
TMP_ARCHIVE = "snapstart-tmp.tar"   # /tmp at publish time, next to CRIU's images

SANDBOX_ROOT = "/run/snapstart/root"
TASK_DIR = "/var/task"
PACKAGES_DIR = "/var/packages"
RUNTIME_DIR = "/var/runtime"
OPT_DIR = "/opt"
_HOST_RO = ("/usr", "/etc")
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_EMPTY = ("sys", "run", "run/lock", "var/tmp", "root", "home", "mnt")

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          f"mount {target}")


def _bind_ro(source: str, target: str, *, exec_ok: bool = True) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _mount(None, target, None, flags | (0 if exec_ok else MS_NOEXEC))


def runtime_mounts() -> dict[str, str]:
    """{host dir: sandbox dir} of the runtime tree under /var/runtime: snapstart's
    Python environment (when it is a venv), the agent (bootstrap/) and the Node
    runtime client (when installed). Computed once per process (on every restore
    slot's path)."""
    return dict(_runtime_mounts())


@functools.cache
def _runtime_mounts() -> dict[str, str]:
    out = {str(PROJECT_ROOT / "bootstrap"): f"{RUNTIME_DIR}/bootstrap",
           str(PROJECT_ROOT / ".snapstart" / "runtime"): f"{RUNTIME_DIR}/snapstart"}
    if sys.prefix != sys.base_prefix:
        out[os.path.realpath(sys.prefix)] = f"{RUNTIME_DIR}/venv"
    node = PROJECT_ROOT / ".snapstart" / "node"
    if node.is_dir():
        out[str(node)] = f"{RUNTIME_DIR}/node"
    return out


def sandbox_path(host_path: os.PathLike | str) -> str:
    """Where a host file of the runtime tree (or the host's /usr) is inside a sandbox."""
    path = os.path.abspath(host_path)
    for host, inside in runtime_mounts().items():
        if path == host or path.startswith(host + "/"):
            return inside + path[len(host):]
    if path.startswith(("/usr/", "/etc/")):
        return path
    raise SandboxError(f"{host_path} is not visible inside a sandbox")


@dataclass(frozen=True)
class SandboxFs:
    """What a new sandbox mount namespace gets: ``size_mb`` of /tmp, and (cold and
    publish sandboxes) the function's code and packages at /var/task, /var/packages.
    Restore slots are built without them; ``attach_task`` adds them at restore."""

    size_mb: int = EPHEMERAL_DEFAULT_MB
    task: str | None = None
    packages: str | None = None

    def _tmpfs_options(self) -> str:
        return f"size={self.size_mb}m,mode=1777"


def _build_root(fs: SandboxFs) -> None:
    """Build the sandbox root at SANDBOX_ROOT (this thread is in the new namespace)."""
    root = SANDBOX_ROOT
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for d in (*_HOST_RO, TASK_DIR, PACKAGES_DIR, OPT_DIR, "/tmp", "/proc", "/dev",
              *(f"/{e}" for e in _EMPTY), *runtime_mounts().values()):
        os.makedirs(root + d, mode=0o755, exist_ok=True)
    for name in _USR_LINKS:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{name}")
        elif os.path.isdir(host):
            os.mkdir(f"{root}/{name}", 0o755)
            _bind_ro(host, f"{root}/{name}")
    for d in _HOST_RO:
        _bind_ro(d, root + d)
    for host, inside in runtime_mounts().items():
        _bind_ro(host, root + inside)
    _mount("tmpfs", root + OPT_DIR, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=755")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, fs._tmpfs_options())
    dev = root + "/dev"
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in _DEVICES:
        # a mount point made without opening it: a file open for writing (even in a
        # child another thread forks meanwhile) would make the remount below EBUSY
        os.mknod(f"{dev}/{name}", 0o644 | stat.S_IFREG)
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.mkdir(f"{dev}/shm", 0o755)
    os.mkdir(f"{dev}/pts", 0o755)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    if fs.task:
        _attach(fs.task, fs.packages)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _attach(task: str, packages: str | None) -> None:
    _bind_ro(task, SANDBOX_ROOT + TASK_DIR)
    if packages:
        _bind_ro(packages, SANDBOX_ROOT + PACKAGES_DIR)


def run_in_new(fs: SandboxFs, fn: Callable[[], T], *, ipc_uts: bool = False) -> T:
    """Run ``fn`` on a thread inside a new mount namespace holding a sandbox root
    (and, with ``ipc_uts``, new IPC and UTS namespaces: a restore slot's, which CRIU
    then need not create).

    Processes ``fn`` starts (fork/exec on that thread) live in the namespaces; they
    last as long as one of them does."""
    os.makedirs(SANDBOX_ROOT, mode=0o755, exist_ok=True)   # the mount point, on the host
    flags = CLONE_NEWNS | (CLONE_NEWIPC | CLONE_NEWUTS if ipc_uts else 0)

    def body() -> T:
        try:
            check(libc.unshare(flags), "unshare(CLONE_NEWNS)")
            # Our mounts must not propagate back to the host (systemd makes / shared).
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            _build_root(fs)
        except OSError as exc:
            raise SandboxError(f"cannot build the sandbox's filesystem: {exc}") from exc
        return fn()

    return on_thread(body, "snapstart-mntns")


def _enter(pid: int, kind: str, flag: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, flag), f"setns({kind})")
    finally:
        os.close(fd)


def _enter_mntns_of(pid: int) -> None:
    check(libc.unshare(CLONE_FS), "unshare(CLONE_FS)")   # setns needs an unshared fs
    _enter(pid, "mnt", CLONE_NEWNS)


def _sysv_ipc_empty() -> bool:
    """No SysV shared memory, semaphore or message queue in this thread's IPC
    namespace (/proc/sysvipc shows the reader's)."""
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                if len(f.read().splitlines()) > 1:
                    return False
        except OSError:
            return False
    return True


def run_in_mntns_of(pid: int, fn: Callable[[], T], *, ipc_uts: bool = False) -> T:
    """Run ``fn`` on a thread that has joined the mount namespace of ``pid`` (with
    ``ipc_uts``, its UTS namespace and, when it holds no SysV objects, its IPC
    namespace too: a dump then leaves them out, restore slots provide fresh ones)."""

    def body() -> T:
        try:
            _enter_mntns_of(pid)
            if ipc_uts:
                _enter(pid, "uts", CLONE_NEWUTS)
                _enter(pid, "ipc", CLONE_NEWIPC)
                if not _sysv_ipc_empty():   # let CRIU dump them: back to ours
                    _enter(os.getpid(), "ipc", CLONE_NEWIPC)
        except OSError as exc:
            raise SandboxError(f"cannot enter the mount namespace of pid {pid}: {exc}") from exc
        return fn()

    return on_thread(body, "snapstart-mntns")


def attach_task(pid: int, task: os.PathLike | str, packages: os.PathLike | str | None) -> None:
    """Bind the function's code (and packages) into ``pid``'s sandbox root."""
    try:
        run_in_mntns_of(pid, lambda: _attach(str(task), str(packages) if packages else None))
    except OSError as exc:
        raise SandboxError(f"cannot mount the function's code into the sandbox: {exc}") from exc


def resize_tmp(pid: int, fs: SandboxFs) -> None:
    """Set the size cap of the sandbox /tmp in ``pid``'s mount namespace."""
    run_in_mntns_of(pid, lambda: _mount("tmpfs", SANDBOX_ROOT + "/tmp", "tmpfs",
                                        MS_REMOUNT | MS_NOSUID | MS_NODEV,
                                        fs._tmpfs_options()))


def _in_dir(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread chroot-ed into ``path`` (its cwd is that /)."""

    def body() -> T:
        check(libc.unshare(CLONE_FS), "unshare(CLONE_FS)")   # chroot this thread only
        os.chroot(path)
        os.chdir("/")
        return fn()

    return on_thread(body, "snapstart-tmp")


def _tmp_of(pid: int, *, chrooted: bool) -> str:
    """The sandbox /tmp as seen through ``pid``: a sandbox process (chroot-ed into
    the root) or a process of its namespace outside it (criu swrk)."""
    return f"/proc/{pid}/root/tmp" if chrooted else f"/proc/{pid}/root{SANDBOX_ROOT}/tmp"


def save_tmp(pid: int, archive: Path) -> int:
    """Archive what the function left in the /tmp of sandbox process ``pid`` into
    ``archive`` (plain tar: the store compresses); returns the number of entries, 0
    (and no file) if none. Symlinks are stored, never followed."""
    import tarfile   # imported before the chroot: nothing can be imported inside it

    tmp = _tmp_of(pid, chrooted=True)
    try:
        if not os.listdir(tmp):
            return 0
    except OSError as exc:
        raise SandboxError(f"cannot read the sandbox's /tmp: {exc}") from exc

    def write(f) -> int:
        root_dev = os.lstat("/").st_dev
        count = 0
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            stack = sorted(os.listdir("/"), reverse=True)
            while stack:
                rel = stack.pop()
                st = os.lstat(rel)
                if st.st_dev != root_dev:
                    continue                          # not the tmpfs (cannot happen)
                tar.add(rel, recursive=False)
                count += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.extend(sorted((f"{rel}/{c}" for c in os.listdir(rel)), reverse=True))
        return count

    try:
        with open(os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                          0o600), "wb") as f:
            count = _in_dir(tmp, lambda: write(f))
    except OSError as exc:
        archive.unlink(missing_ok=True)
        raise SandboxError(f"cannot archive the sandbox's /tmp: {exc}") from exc
    if not count:
        archive.unlink()
    return count


def take_tmp_file(pid: int, name: str, limit: int) -> bytes | None:
    """Read and remove the regular file ``/tmp/<name>`` of sandbox process ``pid``
    (a note the runtime left for the host, taken before the dump so clones never
    see it). None if it is absent, not a regular file (never followed if a
    symlink) or over ``limit`` bytes; it is removed in every case."""

    def take() -> bytes | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            data = None
        else:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(limit + 1) if stat.S_ISREG(st.st_mode) else None
            if data is not None and len(data) > limit:
                data = None
        try:
            os.unlink(name)
        except (FileNotFoundError, IsADirectoryError):
            pass
        return data

    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    try:
        return _in_dir(_tmp_of(pid, chrooted=True), take)
    except OSError as exc:
        raise SandboxError(f"cannot read /tmp/{name} of the sandbox: {exc}") from exc


def restore_tmp(pid: int, archive: Path) -> None:
    """Unpack ``archive`` (from ``save_tmp``) into the sandbox /tmp of the namespace
    of ``pid`` (a restore slot's criu swrk), before the clone runs. A member whose
    place resolves outside the tmpfs (through a symlink) is skipped."""
    import tarfile

    # Inside the chroot nothing can escape the clone's /tmp; "fully_trusted" keeps
    # owners and modes as the function left them (Pythons with extraction filters).
    extra: dict[str, Any] = ({"filter": "fully_trusted"}
                             if hasattr(tarfile, "fully_trusted_filter") else {})

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
            _in_dir(_tmp_of(pid, chrooted=False), lambda: unpack(f))
    except (OSError, tarfile.TarError) as exc:
        raise SandboxError(f"cannot unpack /tmp into the clone: {exc}") from exc
