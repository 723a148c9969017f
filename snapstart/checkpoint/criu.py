"""CRIU adapter: checkpoint and restore sandbox process trees over CRIU's RPC.

Only this module talks to CRIU. It drives ``criu swrk`` over RPC -- with pycriu
for dumps and checks, with checkpoint/rpc.py's protobuf-free codec for restores
(the hot path) -- and translates every CRIU failure into ``DumpError`` /
``RestoreError`` (keeping the request type, CRIU's errno and the tail of CRIU's
log).

The sandbox layout CRIU sees (see ../shared/PLATFORM.md for why):

- the tree's root is the runtime (or the agent, for other runtimes), PID 2 of the
  sandbox's PID namespace whose PID 1 is snapinit, session leader, inside an
  anonymous network namespace created by the manager;
- the network namespace is external: dumped as ``net[<inode>]:netns`` and supplied
  per clone with ``inherit_fd {key: "netns", fd}``;
- the agent's end of the control socketpair is an external unix socket
  (``unix[<inode>]``), replaced per clone by a fresh socketpair end with
  ``inherit_fd {key: "socket:[<inode>]", fd}``;
- the runtime's TCP connection to the agent (parked in GET /restore/next) is inside
  the tree: ``tcp_established``; network locking is skipped (no iptables, and each
  clone has its own namespace anyway);
- the sandbox's PID namespace is external too (``pid[<inode>]:pidns``): its PID 1
  (snapinit) is not in the image, and each clone is restored as PID 2 into the
  namespace its restore slot prepared (``inherit_fd {key: "pidns", fd}``);
- the restored root is criu's child while CRIU works (so CRIU sees it die and
  fails the restore instead of waiting for it forever); when ``criu swrk`` exits,
  it is reparented to the manager, a child subreaper, which reaps it by pid.

CRIU writes its log to a work directory (never into the shared image directory, so
many clones can restore from one materialized snapshot at once).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CheckpointError, DumpError, RestoreError

__all__ = ["Criu", "DumpResult", "Worker", "compatibility_problem",
           "reap_restore_leftovers"]

NETNS_KEY = "netns"
PIDNS_KEY = "pidns"
_NETWORK_LOCK_NFTABLES = 2
_NETWORK_LOCK_SKIP = 3
_CG_IGNORE = 0   # cgroups are the manager's: restored tasks inherit criu's own group


@dataclass(frozen=True)
class DumpResult:
    image_bytes: int


KEEP_LOGS_ENV = "SNAPSTART_KEEP_CRIU_LOGS"


def keep_log(work_dir: Path, name: str) -> None:
    """With ``SNAPSTART_KEEP_CRIU_LOGS=DIR`` set, copy CRIU's log of one request to DIR
    before its work dir goes (the integration tests keep those of a failed test)."""
    keep = os.environ.get(KEEP_LOGS_ENV)
    if not keep:
        return
    try:
        os.makedirs(keep, exist_ok=True)
        dest = Path(keep) / f"{time.time_ns()}-{os.getpid()}-{name}"
        shutil.copyfile(work_dir / name, dest)
    except OSError:
        pass


def _version_cache_path(binary: str) -> tuple[str, str] | None:
    """(cache file, identity line) of ``binary``'s version cache, or None (no binary)."""
    import hashlib

    from ..config import CRIU_RUNDIR

    path = shutil.which(binary) or binary
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident = f"{os.path.realpath(path)} {st.st_size} {st.st_mtime_ns} {st.st_ino}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return os.path.join(CRIU_RUNDIR, f"version-{digest}"), ident


def _log_tail(work_dir: Path, name: str, lines: int = 15) -> str:
    try:
        text = (work_dir / name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line or "error" in line]
    return "\n".join((errors or text)[-lines:])


# The one known CRIU floor: below 4.2 CRIU cannot dump a process owning a TCP socket
# on Linux >= 6.16 (SO_PASSCRED/SO_PASSSEC getsockopt, criu issue 2705), although
# `criu check` passes there. Every sandbox owns one (the runtime's connection).
_TCP_DUMP_FIX = ((6, 16), (4, 2))   # (kernel from which it matters, CRIU that fixed it)


def _major_minor(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    return int(match.group(1)), int(match.group(2))


def compatibility_problem(criu_version: str, kernel_release: str) -> str | None:
    """Why this CRIU version cannot serve snapstart on this kernel, or None.

    Any CRIU whose ``criu check`` passes is accepted (Debian 12's 3.17 works on its
    own 6.1 kernel); only the known kernel-specific breakage is refused here. RPC
    differences between versions are handled where they are used (``restore_with``).
    """
    try:
        criu = _major_minor(criu_version)
        kernel = _major_minor(kernel_release)
    except ValueError as exc:
        return f"cannot compare versions: {exc}"
    (bad_kernel, fixed_in) = _TCP_DUMP_FIX
    if kernel >= bad_kernel and criu < fixed_in:
        return (f"CRIU {criu_version} cannot dump TCP sockets on Linux {kernel_release} "
                f"(needs CRIU >= {fixed_in[0]}.{fixed_in[1]} on Linux >= "
                f"{bad_kernel[0]}.{bad_kernel[1]})")
    return None


def _network_lock(opts) -> int:
    """SKIP where the RPC has it (4.x); an RPC without it (Debian 12's CRIU 3.17)
    always locks the dumped tree's network: nftables needs no extra tool there
    (libnftables is linked into criu), iptables would need iptables-restore."""
    values = opts.DESCRIPTOR.fields_by_name["network_lock"].enum_type.values_by_name
    if "SKIP" in values:
        return _NETWORK_LOCK_SKIP
    return values["NFTABLES"].number


class Criu:
    def __init__(self, binary: str, *, map_pages: bool = True, log_level: int = 2) -> None:
        """``map_pages``: restore private memory by mapping the page images
        (``--mmap-page-image``, scripts/criu-patches/0003) where this CRIU has it,
        else by copying. ``log_level``: CRIU's -v (4 for restore_timeline's phases)."""
        self.binary = binary
        self.map_pages = map_pages
        self.log_level = log_level
        self._version: str | None = None

    # ---- facts ----------------------------------------------------------------
    def version(self) -> str:
        """``criu --version``, remembered per binary (path, size, mtime) in CRIU's run
        directory on tmpfs: a one-shot CLI restore would otherwise run criu once more
        (~3 ms) before the restore."""
        if self._version is None:
            cache = _version_cache_path(self.binary)
            if cache is not None:
                try:
                    with open(cache[0]) as f:
                        if f.readline().rstrip("\n") == cache[1]:
                            self._version = f.readline().strip() or None
                except OSError:
                    pass
            if self._version is None:
                self._version = self._run_version()
                if cache is not None:
                    try:
                        tmp = f"{cache[0]}.{os.getpid()}"
                        with open(tmp, "w") as f:
                            f.write(f"{cache[1]}\n{self._version}\n")
                        os.replace(tmp, cache[0])
                    except OSError:
                        pass
        return self._version

    def _run_version(self) -> str:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True,
                                 text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckpointError(f"cannot run criu at {self.binary}: {exc}") from exc
        match = re.search(r"Version:\s*([0-9.]+)", out)
        if not match:
            raise CheckpointError(f"cannot parse `criu --version` output: {out!r}")
        return match.group(1)

    def check(self) -> tuple[bool, str]:
        try:
            proc = subprocess.run([self.binary, "check"], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        out = (proc.stdout + proc.stderr).strip().splitlines()
        ok = proc.returncode == 0 and any("Looks good" in line for line in out)
        return ok, (out[-1] if out else "")

    def usable(self) -> tuple[bool, str]:
        """(ok, why): the binary runs, ``criu check`` passes, no known incompatibility."""
        import platform

        try:
            version = self.version()
        except CheckpointError as exc:
            return False, str(exc)
        problem = compatibility_problem(version, platform.release())
        if problem:
            return False, problem
        ok, detail = self.check()
        return ok, f"CRIU {version}: criu check: {detail}"

    # ---- RPC ------------------------------------------------------------------
    def _client(self):
        import pycriu  # lazy: protobuf import is ~30 ms

        client = pycriu.criu()
        client.use_binary(self.binary)
        client.opts.network_lock = _network_lock(client.opts)
        client.opts.tcp_established = True
        client.opts.manage_cgroups_mode = _CG_IGNORE
        client.opts.log_level = self.log_level
        return client

    def dump(self, pid: int, images_dir: Path, work_dir: Path, *, netns_inode: int,
             pidns_inode: int | None = None, unix_inodes: list[int],
             fork_in: Callable | None = None) -> DumpResult:
        """Checkpoint the tree rooted at ``pid`` into ``images_dir``; the tree is killed.

        ``fork_in(fn)`` runs ``fn`` (which forks ``criu swrk`` and talks to it) where
        CRIU must run: the sandbox's mount namespace, so CRIU has none to dump.
        """
        import pycriu

        images_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        client = self._client()
        img_fd = os.open(images_dir, os.O_DIRECTORY)
        work_fd = os.open(work_dir, os.O_DIRECTORY)
        try:
            os.set_inheritable(img_fd, True)
            os.set_inheritable(work_fd, True)
            opts = client.opts
            opts.pid = pid
            opts.images_dir_fd = img_fd
            opts.work_dir_fd = work_fd
            opts.log_file = "dump.log"
            opts.leave_running = False
            opts.external.append(f"net[{netns_inode}]:{NETNS_KEY}")
            if pidns_inode:     # the sandbox's PID 1 (snapinit) is not in the image
                opts.external.append(f"pid[{pidns_inode}]:{PIDNS_KEY}")
            for ino in unix_inodes:
                opts.external.append(f"unix[{ino}]")
            try:
                if fork_in is None:
                    client.dump()
                else:
                    fork_in(client.dump)
            except pycriu.CRIUExceptionExternal as exc:
                raise DumpError("CRIU could not checkpoint the sandbox", request="dump",
                                errno=exc.errno, log_tail=_log_tail(work_dir, "dump.log")) from exc
            except pycriu.CRIUException as exc:
                raise DumpError(f"CRIU dump failed: {exc}", request="dump",
                                log_tail=_log_tail(work_dir, "dump.log")) from exc
        finally:
            os.close(img_fd)
            os.close(work_fd)
            keep_log(work_dir, "dump.log")
        # The sandbox's cgroups are the manager's (manage_cgroups ignore): without this
        # image a restore does not fork CRIU's cgroup daemon (~0.3 ms) for nothing.
        (images_dir / "cgroup.img").unlink(missing_ok=True)
        size = sum(p.stat().st_size for p in images_dir.iterdir() if p.is_file())
        return DumpResult(image_bytes=size)

    def spawn_worker(self, work_dir: Path, *, netns_fd: int, ctl_fd: int,
                     pidns_fd: int = -1, cgroup=None) -> "Worker":
        """Start ``criu swrk`` for one restore, ahead of the request, on the calling
        thread (its namespaces: a restore slot's mount, IPC and UTS namespaces, where
        CRIU restores the tree).

        The worker gets exactly the clone's netns fd, control socket end, PID
        namespace fd and work dir, besides its RPC socket (``posix_spawn``-like, not a
        fork of this big process); with ``cgroup`` it is moved into the clone's group,
        so every restored task is born inside the clone's limits.
        """
        work_dir.mkdir(parents=True, exist_ok=True)
        work_fd = os.open(work_dir, os.O_DIRECTORY | os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = None
        try:
            fds = [fd for fd in (work_fd, netns_fd, ctl_fd, pidns_fd, theirs.fileno())
                   if fd >= 0]
            proc = subprocess.Popen([self.binary, "swrk", str(theirs.fileno())],
                                    pass_fds=fds, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            theirs.close()
            worker = Worker(sock=ours, proc=proc, work_dir=work_dir, work_fd=work_fd,
                            netns_fd=netns_fd, ctl_fd=ctl_fd, pidns_fd=pidns_fd)
            if cgroup is not None:
                cgroup.add(worker.pid)
            return worker
        except BaseException as exc:
            os.close(work_fd)
            ours.close()
            theirs.close()
            if proc is not None:
                proc.kill()
                proc.wait()
            if isinstance(exc, OSError):
                raise RestoreError(f"cannot start criu swrk: {exc}") from exc
            raise

    def restore_with(self, worker: "Worker", images_dir: Path, *, ctl_inode: int) -> int:
        """Send the restore request to a prepared worker; return the clone root's pid.

        The request is encoded by checkpoint/rpc.py (no protobuf import on the
        restore path); criu opens the images directory through /proc/<our pid>/fd."""
        from . import rpc

        img_fd = os.open(images_dir, os.O_DIRECTORY | os.O_CLOEXEC)
        inherit = [(NETNS_KEY, worker.netns_fd), (f"socket:[{ctl_inode}]", worker.ctl_fd)]
        if worker.pidns_fd >= 0:
            inherit.append((PIDNS_KEY, worker.pidns_fd))
        request = rpc.encode_restore(rpc.RestoreOpts(
            images_dir_fd=img_fd, work_dir_fd=worker.work_fd, log_file="restore.log",
            log_level=self.log_level, network_lock=self._network_lock_value(),
            inherit_fd=tuple(inherit), manage_cgroups_mode=_CG_IGNORE,
            mmap_page_image=self.map_pages))
        try:
            # blocks until swrk answers, or returns when swrk dies (see _SwrkSocket)
            sock = _SwrkSocket(worker.sock, worker.pid)
            sock.send(request)
            answer = sock.recv(1 << 16)
            if not answer:
                raise ConnectionAbortedError(f"criu swrk (pid {worker.pid}) closed its "
                                             "socket without answering")
            resp = rpc.decode_response(answer)
        except (OSError, rpc.RpcDecodeError) as exc:
            raise RestoreError(f"CRIU restore failed: {exc}", request="restore",
                               log_tail=_log_tail(worker.work_dir, "restore.log")) from exc
        finally:
            worker.close()
            os.close(img_fd)
            keep_log(worker.work_dir, "restore.log")
        if not resp.success or resp.pid is None:
            raise RestoreError("CRIU could not restore the snapshot", request="restore",
                               errno=resp.cr_errno or 0,
                               log_tail=_log_tail(worker.work_dir, "restore.log"))
        return resp.pid

    def _network_lock_value(self) -> int:
        """SKIP on CRIU >= 4 (its RPC has it); NFTABLES before (see _network_lock)."""
        try:
            major = int(self.version().split(".")[0])
        except (CheckpointError, ValueError):
            major = 4
        return _NETWORK_LOCK_SKIP if major >= 4 else _NETWORK_LOCK_NFTABLES



_WORKERS: set[int] = set()       # pids of live swrk workers (Worker.close reaps them)
_WORKERS_LOCK = threading.Lock()


class _SwrkSocket:
    """A worker's RPC socket, whose ``recv`` also returns when ``criu swrk`` dies.

    The tasks CRIU has half-restored inherit swrk's end of the socketpair, so when
    swrk dies mid-restore (killed, OOM in the clone's cgroup) no EOF ever comes and
    a plain recv would wait forever. A pidfd of swrk becomes readable when it exits.
    """

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self._pid = pid

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, n: int, flags: int = 0) -> bytes:
        poller = select.poll()            # not select(): fds above 1023 are normal here
        poller.register(self._sock, select.POLLIN)
        try:
            pidfd = os.pidfd_open(self._pid)
        except ProcessLookupError:        # already gone: only an answer it left counts
            pidfd = -1
        try:
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
                poller.poll()
            ready = {fd for fd, _ in poller.poll(0)}
            if self._sock.fileno() not in ready:
                raise ConnectionAbortedError(f"criu swrk (pid {self._pid}) exited "
                                             "without answering")
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return self._sock.recv(n, flags)


def reap_restore_leftovers(timeout_s: float = 1.0) -> int:
    """Reap what a failed restore leaves as zombies of this process; returns how many.

    CRIU forks the clone's root and helpers; when a restore fails half-way (criu
    killed, tree killed) they are reparented to this process (a subreaper) and die
    unreaped, and no pid of theirs was ever returned. They still carry CRIU's
    process name, which a completed clone never does. Call after the clone's
    cgroup is destroyed (its tasks are dying). Live swrk workers are left to their
    Worker (Worker.close reaps them).
    """
    reaped = 0
    deadline = time.monotonic() + timeout_s
    while True:
        pending = False
        for pid in _own_children():
            with _WORKERS_LOCK:
                if pid in _WORKERS:
                    continue
            state = _comm_and_state(pid)
            if state is None or state[0] != "criu":
                continue
            if state[1] not in "ZX":
                pending = True            # still exiting
                continue
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
            except ChildProcessError:
                pass
        if not pending or time.monotonic() > deadline:
            return reaped
        time.sleep(0.005)


def _own_children() -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def _comm_and_state(pid: int) -> tuple[str, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.find("(") + 1:stat.rfind(")")]
    return comm, stat[stat.rfind(")") + 2:][:1]


@dataclass
class Worker:
    """A ``criu swrk`` process waiting for exactly one restore request."""

    sock: socket.socket        # our end of its RPC socketpair (SOCK_SEQPACKET)
    proc: subprocess.Popen
    work_dir: Path
    work_fd: int
    netns_fd: int
    ctl_fd: int
    pidns_fd: int = -1         # the slot's PID namespace (owned by its InitProcess)
    closed: bool = False

    def __post_init__(self) -> None:
        with _WORKERS_LOCK:
            _WORKERS.add(self.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        """End the worker: it exits when its RPC socket closes; reap it."""
        if self.closed:
            return
        self.closed = True
        try:
            os.close(self.work_fd)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.proc.wait()
        with _WORKERS_LOCK:
            _WORKERS.discard(self.pid)
