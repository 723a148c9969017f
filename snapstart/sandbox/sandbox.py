"""One sandbox: its namespaces, its process tree, and the host's handle on it.

A sandbox is created either *cold* (``Sandbox.spawn``: a new runtime that runs
init) or *restored* (``Sandbox.restore``: CRIU clones a published snapshot into
fresh namespaces prepared ahead, a ``RestoreSlot``). Either way the host talks to
it only through the control channel (``bootstrap.protocol``), only from this
module, and its lifecycle is the explicit state machine in ``state.py``.

Process layout (bootstrap/protocol.py explains the two layouts)::

    PID 1  snapinit (bootstrap/init): mounts the sandbox's /proc, chroots into the
           sandbox root (mountns.py), reaps orphans. Never in a snapshot.
    PID 2  the snapshot's root: the Python runtime with the agent on a thread
           (inproc), or the agent (agent layout) with the runtime as its child.

Every sandbox has its own PID, time, IPC, UTS, network and mount namespaces. A
cold sandbox is started through ``nsenter``/``unshare`` from a thread inside its new
mount namespace; a restored one gets its PID namespace from the slot (snapinit
started ahead), CRIU restores PID 2 into it (an external PID namespace), and PID 2
is then a direct child of the manager (CRIU ``rst_sibling``). Killing snapinit
(SIGKILL) ends every process in the sandbox.

This module must not know about versions, stores or pools: that is the manager's.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from bootstrap import protocol

from .. import tracing
from ..checkpoint.criu import Criu, DumpResult, Worker, reap_restore_leftovers
from ..checkpoint.hotset import HotSet
from ..config import CRIU_RUNDIR, PROJECT_ROOT
from ..errors import (AfterRestoreError, InitError, OutOfMemoryError, RuntimeExitError,
                      SandboxError, SandboxTimeoutError)
from ..results import InvokeRequest, InvokeResult
from ..runtimes import RuntimeSpec
from . import mountns
from .cgroups import Cgroup, favor_dynmods
from .mountns import SandboxFs
from .nsutil import check, libc, on_thread
from .procs import children_of, lifeline_fd
from .netns import Egress, NetNs, add_egress, new_netns
from .state import Lifecycle, SandboxState

__all__ = ["Sandbox", "RestoreSlot", "InitProcess", "children_of", "reseed_crng",
           "LOG_TAIL_BYTES", "describe_status"]

T = TypeVar("T")
RNDRESEEDCRNG = 0x5207
LOG_TAIL_BYTES = 256 * 1024      # per-invocation log kept in memory (Tail needs 4 KB)
S = SandboxState


def reseed_crng() -> None:
    """Force the kernel CRNG to reseed so restored clones rekey (PLATFORM.md)."""
    fd = os.open("/dev/urandom", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    except OSError as exc:
        raise SandboxError(f"cannot reseed the kernel CRNG (RNDRESEEDCRNG): {exc}") from exc
    finally:
        os.close(fd)


SNAPINIT = PROJECT_ROOT / ".snapstart" / "snapinit"      # built by `make` (bootstrap/init)
AGENT = f"{mountns.RUNTIME_DIR}/snapstart/snapagent"      # bootstrap/native, in the sandbox
CLONE_NEWPID = 0x20000000
HOSTNAME = "localhost"       # every sandbox's (its own UTS namespace): nothing of the host


@dataclass
class InitProcess:
    """A sandbox's PID 1 (snapinit) started by the manager for a restore slot: an
    empty PID namespace with its /proc mounted in the slot's root."""

    proc: subprocess.Popen
    pidns_fd: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, owner: str) -> "InitProcess":
        """Start snapinit as PID 1 of a new PID namespace; call on a thread inside
        the slot's mount namespace. The fork happens on a helper thread: the PID
        namespace for children sticks to the thread that unshares it."""

        def fork() -> subprocess.Popen:
            check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
            return _start_snapinit([], owner=owner)

        try:
            proc = on_thread(fork, "snapstart-pidns")
            fd = os.open(f"/proc/{proc.pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox's init: {exc}") from exc
        return cls(proc=proc, pidns_fd=fd)

    def kill(self) -> None:
        """SIGKILL snapinit and wait for it. A dying PID 1 waits until every other
        task of its namespace has been reaped, and tasks CRIU restored there are
        this process's children (it is their subreaper): reap those meanwhile."""
        ns = os.fstat(self.pidns_fd).st_ino if self.pidns_fd >= 0 else None
        if self.pidns_fd >= 0:
            os.close(self.pidns_fd)
            self.pidns_fd = -1
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        while True:
            try:
                self.proc.wait(timeout=0.02)
                return
            except subprocess.TimeoutExpired:
                if ns is not None:
                    _reap_members(ns, exclude=self.proc.pid)


def _reap_members(pidns_inode: int, *, exclude: int) -> None:
    """Reap this process's zombie children that lived in PID namespace ``pidns_inode``."""
    for pid in children_of(os.getpid()):
        if pid == exclude:
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != pidns_inode:
                continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    continue
            os.waitpid(pid, os.WNOHANG)
        except (OSError, IndexError):
            continue


def _start_snapinit(program: list[str], *, owner: str) -> subprocess.Popen:
    """Popen of snapinit (PID 1: the caller unshared the PID namespace), waiting
    until it has mounted /proc and chroot-ed (it writes "R" on its ready fd)."""
    if not SNAPINIT.exists():
        raise SandboxError(f"{SNAPINIT} is missing: run `make`")
    r, w = os.pipe()
    life = lifeline_fd()
    try:
        argv = snapinit_argv(owner=owner, ready_fd=w) + program
        proc = subprocess.Popen(argv, pass_fds=(w, life), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        os.close(w)
        w = -1
        if os.read(r, 1) != b"R":
            proc.wait()
            raise SandboxError(f"the sandbox's init failed (exit status {proc.returncode})")
        return proc
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def snapinit_argv(*, owner: str, ready_fd: int | None = None,
                  keep_fds: tuple[int, ...] = ()) -> list[str]:
    """snapinit's options (bootstrap/init/snapinit.c), up to and including ``--``."""
    argv = [str(SNAPINIT), "--proc", mountns.SANDBOX_ROOT + "/proc",
            "--chroot", mountns.SANDBOX_ROOT, "--hostname", HOSTNAME,
            "--lifeline-fd", str(lifeline_fd()), "--owner", owner]
    if ready_fd is not None:
        argv += ["--ready-fd", str(ready_fd)]
    for fd in keep_fds:
        argv += ["--keep-fd", str(fd)]
    return argv + ["--"]


def prepare_host(shm: Path) -> Path:
    """What restore slots need on this host, made if missing (tmpfs: a reboot
    empties it); returns their work root, ``shm/run``. Cheap cgroup migrations for
    this boot (cgroups.favor_dynmods; its marker lives on tmpfs), and CRIU's run dir:
    without it, its kernel-feature cache is gone and every CRIU call re-probes the
    kernel (~30 ms)."""
    favor_dynmods(Path(CRIU_RUNDIR) / "favordynmods")
    run = shm / "run"
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.makedirs(CRIU_RUNDIR, mode=0o755, exist_ok=True)
    return run


@dataclass
class RestoreSlot:
    """Everything a restore needs before the snapshot is known: a fresh network
    namespace with its control socketpair, a cgroup (limits set at use), a mount
    namespace with an empty sandbox root, a PID namespace whose init (snapinit)
    has mounted the root's /proc, and a ``criu swrk`` worker already started inside
    them. Preparing one costs a few ms; pools keep them ready."""

    netns: NetNs
    cgroup: Cgroup | None
    worker: Worker
    work_dir: Path
    fs: SandboxFs
    init: InitProcess
    attached: bool = False          # the function's code is mounted (attach)

    @classmethod
    def prepare(cls, criu: Criu, work_dir: Path, *, owner: str, cgroups: bool = True,
                fs: SandboxFs | None = None) -> "RestoreSlot":
        """``fs``: the sandbox filesystem (its /tmp size); code comes at restore.
        ``owner``: the installation's tag (procs.owner_tag)."""
        fs = fs or SandboxFs()
        netns = new_netns()
        cgroup = None
        init: list[InitProcess] = []

        def in_ns() -> Worker:
            # on the new namespaces' thread: snapinit, then criu swrk beside it
            init.append(InitProcess.start(owner))
            return criu.spawn_worker(work_dir, netns_fd=netns.fd,
                                     ctl_fd=netns.agent_sock.fileno(),
                                     pidns_fd=init[0].pidns_fd, cgroup=cgroup)

        try:
            if cgroups:
                cgroup = Cgroup.create(f"rs-{os.getpid()}-{netns.inode}", memory_mb=None)
            worker = mountns.run_in_new(fs, in_ns, ipc_uts=True)
        except BaseException:
            netns.close()
            for i in init:
                i.kill()
            if cgroup is not None:
                cgroup.destroy()
            raise
        return cls(netns=netns, cgroup=cgroup, worker=worker, work_dir=work_dir, fs=fs,
                   init=init[0])

    def attach(self, task: os.PathLike | str, packages: os.PathLike | str | None) -> None:
        """Mount the function's code (and packages) into the slot's root."""
        mountns.attach_task(self.worker.pid, task, packages)
        self.attached = True

    def discard(self) -> None:
        self.worker.close()
        self.init.kill()
        self.netns.close()
        if self.cgroup is not None:
            self.cgroup.destroy()


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


_SIGNAL_NAMES = {9: "killed", 11: "segmentation fault", 6: "aborted", 15: "terminated",
                 7: "bus error", 4: "illegal instruction", 8: "floating point exception"}


def describe_status(status: int) -> str:
    """An exit status as Lambda words it: ``exit status 3``, ``signal: killed``."""
    if status < 0:
        return f"signal: {_SIGNAL_NAMES.get(-status, f'signal {-status}')}"
    return f"exit status {status}"


def _error_fields(body: bytes, header_type: str, *, header_wins: bool = False) -> dict:
    """Parse a runtime's error body into Lambda's shape (errorMessage/errorType/stackTrace).

    For init/restore errors the Lambda-Runtime-Function-Error-Type header is
    authoritative (awslambdaric sends Runtime.BeforeSnapshotError there while the
    body names the hook's exception); for invocation errors the body's type is.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        data = {"errorMessage": body.decode("utf-8", "replace")[:4096]}
    body_type = data.get("errorType")
    error_type = header_type if (header_wins or not body_type) else body_type
    out: dict[str, Any] = {"errorMessage": str(data.get("errorMessage", "")),
                           "errorType": str(error_type)}
    trace = data.get("stackTrace", data.get("trace"))
    if trace is not None:
        out["stackTrace"] = trace if isinstance(trace, list) else [str(trace)]
    return out


class Sandbox:
    """The host's handle on one sandbox, and the only code that talks to its agent.

    ``pid`` is the snapshot's root (the runtime in the inproc layout, the agent in
    the agent layout: PID 2 of the sandbox); ``init_pid`` is the sandbox's PID 1
    (snapinit), whose death ends every process in it.
    """

    def __init__(self, *, pid: int, init_pid: int, ctl: socket.socket, state: SandboxState,
                 proc: subprocess.Popen | None, log_sink: Callable[[bytes], None] | None,
                 name: str, cgroup: Cgroup | None = None,
                 init: InitProcess | None = None) -> None:
        self.pid = pid
        self.init_pid = init_pid
        self.ctl = ctl
        self.lifecycle = Lifecycle(state)
        self.proc = proc                # cold: the nsenter/unshare process (ends with it)
        self.init = init                # restored: the slot's snapinit
        self.log_sink = log_sink
        self.name = name
        self.created = time.monotonic()
        self.last_used = self.created
        self.invocations = 0
        self._memory_at_death: int | None = None   # read by kill() before its cgroup goes
        self._kill_lock = threading.Lock()
        self.layout: str | None = None          # "inproc" | "agent", from the agent's hello
        self.protocol_version: int | None = None
        self._netns_inode = 0
        self._pidns_inode = 0
        self._ctl_inode = 0
        self._netns: NetNs | None = None
        self.cgroup = cgroup
        self.fs = SandboxFs()
        self.egress: Egress | None = None
        # pages to fault in ahead (restored inproc clones of protocol >= 4 only), or
        # the L1 entry to record them for after this clone's first invocation
        self.hot: HotSet | None = None
        self.record_hot: Path | None = None

    # ---- creation ----------------------------------------------------------------
    @classmethod
    def spawn(cls, spec: RuntimeSpec, *, owner: str, name: str = "sandbox",
              deterministic: bool = False,
              hash_seed: int | None = None, memory_mb: int | None = None,
              fs: SandboxFs | None = None, egress: bool = False,
              log_sink: Callable[[bytes], None] | None = None) -> "Sandbox":
        """Start a cold sandbox: new namespaces, snapinit, the runtime (init).

        ``fs``: the sandbox's filesystem (mountns.py: code, packages, /tmp size).
        ``egress``: a veth to the host with link-local addresses (netns.py).

        ``deterministic`` (publish): address-space randomization off for the tree, so
        two publishes of one function lay out memory alike and their snapshots
        deduplicate. Every clone of a snapshot shares its layout anyway (as on
        Lambda SnapStart); cold sandboxes keep ASLR. ``hash_seed`` fixes the
        interpreter's PYTHONHASHSEED for the same reason.

        Layout::

            manager ── nsenter --net=<anon netns> ── unshare --pid --time --ipc --uts --fork
                └ snapinit (PID 1, /proc, chroot) └ PID 2: runtime+agent | agent ── runtime
        """
        fs = fs or SandboxFs()
        netns = new_netns()
        nsenter, unshare = shutil.which("nsenter"), shutil.which("unshare")
        if not nsenter or not unshare:
            netns.close()
            raise SandboxError("nsenter/unshare (util-linux) not found on PATH")
        try:
            link = add_egress(netns.fd) if egress else None
        except SandboxError:
            netns.close()
            raise
        agent_fd = netns.agent_sock.fileno()
        argv = [nsenter, f"--net=/proc/self/fd/{netns.fd}", unshare, "--pid", "--time",
                "--ipc", "--uts", "--fork", "--"]
        if deterministic:
            argv += [shutil.which("setarch") or "setarch", os.uname().machine, "-R"]
        argv += snapinit_argv(owner=owner, keep_fds=(agent_fd,))
        if spec.inproc:     # PID 2 is the runtime's interpreter, the agent a thread of it
            argv += spec.launch_argv(agent_fd)
            env = dict(spec.exec_env)
        else:               # PID 2 is the agent; it starts the runtime on `start`
            argv += [AGENT, "--ctl-fd", str(agent_fd)]
            env = {"PATH": "/usr/bin:/bin"}
        try:
            if hash_seed is not None:
                env["PYTHONHASHSEED"] = str(hash_seed)
            proc = mountns.run_in_new(fs, lambda: subprocess.Popen(
                argv, pass_fds=(netns.fd, agent_fd, lifeline_fd()), env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/"))
        except SandboxError:
            netns.close()
            raise
        except OSError as exc:
            netns.close()
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        init_pid = pid = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kids = children_of(proc.pid)
            if kids:
                init_pid = kids[0]
                grandkids = children_of(init_pid)
                if grandkids:
                    pid = grandkids[0]
                    break
            if proc.poll() is not None:
                break
            time.sleep(0.0005)
        if not pid:
            proc.kill()
            proc.wait()
            netns.close()
            raise SandboxError("the sandbox did not start (snapinit or its program failed: "
                               f"exit status {proc.returncode})")
        sandbox = cls(pid=pid, init_pid=init_pid, ctl=netns.host_sock, state=S.CREATED,
                      proc=proc, log_sink=log_sink, name=name)
        sandbox._netns_inode = netns.inode
        sandbox._pidns_inode = os.stat(f"/proc/{pid}/ns/pid").st_ino
        sandbox._ctl_inode = os.fstat(agent_fd).st_ino
        sandbox._netns = netns
        sandbox.fs = fs
        sandbox.egress = link
        netns.close_fd()            # the sandbox keeps the namespace alive
        try:
            if memory_mb is not None:   # the agent layout's runtime inherits the group
                sandbox.cgroup = Cgroup.create(f"sb-{os.getpid()}-{pid}", memory_mb=memory_mb)
                sandbox.cgroup.add(pid)
            protocol.send(sandbox.ctl, spec.to_frame())
        except (OSError, SandboxError) as exc:
            sandbox.kill()
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        sandbox.lifecycle.to(S.INITIALIZING)
        return sandbox

    @classmethod
    def restore(cls, criu: Criu, images_dir: Path, work_dir: Path, *, ctl_inode: int,
                owner: str, task: os.PathLike | str, packages: os.PathLike | str | None = None,
                name: str = "clone", memory_mb: int | None = None,
                fs: SandboxFs | None = None, egress: bool = False,
                slot: "RestoreSlot | None" = None,
                log_sink: Callable[[bytes], None] | None = None) -> "Sandbox":
        """Clone a snapshot into fresh namespaces (state RESTORING).

        ``slot``: prepared namespaces + cgroup + init + criu worker (``RestoreSlot``),
        so the restore only mounts the code and sends the request; without one it is
        prepared here. ``task``/``packages``: the function's code and packages on the
        host (mounted at /var/task, /var/packages). ``fs``: the clone's /tmp size
        (the slot's tmpfs is resized if it differs). ``egress``: add a veth to the
        host (netns.py) before the tree resumes.
        """
        if slot is None:
            slot = RestoreSlot.prepare(criu, work_dir, owner=owner,
                                       cgroups=memory_mb is not None, fs=fs)
            fs = slot.fs
        try:
            if slot.cgroup is not None and memory_mb is not None:
                slot.cgroup.limit(memory_mb)
            if not slot.attached:
                slot.attach(task, packages)
            if fs is not None and fs.size_mb != slot.fs.size_mb:
                mountns.resize_tmp(slot.worker.pid, fs)
            archive = images_dir / mountns.TMP_ARCHIVE
            if archive.exists():        # what init left in /tmp (publish saved it)
                mountns.restore_tmp(slot.worker.pid, archive)
            reseed_crng()
        except BaseException:
            slot.discard()
            raise
        # The egress veth (~13 ms of netlink) is built while CRIU restores: CRIU never
        # looks inside the (external) network namespace, and the tree stays parked
        # until the first invoke resumes it.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapstart-egress") \
            if egress else None
        link_job = pool.submit(add_egress, slot.netns.fd) if pool else None
        pid = 0
        try:
            pid = criu.restore_with(slot.worker, images_dir, ctl_inode=ctl_inode)
            link = link_job.result() if link_job else None
        except BaseException:
            if pid:
                _kill_and_reap(pid)
            slot.discard()              # kills what CRIU restored so far (the cgroup)
            reap_restore_leftovers()    # ... and reaps it: those tasks are our children
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        netns = slot.netns
        netns.close_agent_end()
        netns.close_fd()
        sandbox = cls(pid=pid, init_pid=slot.init.pid, ctl=netns.host_sock,
                      state=S.RESTORING, proc=None, log_sink=log_sink, name=name,
                      cgroup=slot.cgroup, init=slot.init)
        sandbox._netns_inode = netns.inode
        sandbox.fs = slot.fs if fs is None else fs
        sandbox.egress = link
        return sandbox

    # ---- facts -------------------------------------------------------------------
    @property
    def state(self) -> SandboxState:
        return self.lifecycle.state

    @property
    def netns_inode(self) -> int:
        return self._netns_inode

    @property
    def ctl_inode(self) -> int:
        return self._ctl_inode

    def runtime_pids(self) -> list[int]:
        return children_of(self.pid)

    def max_memory_used_mb(self) -> int | None:
        """Peak memory of the sandbox: its cgroup's high-water mark, else VmHWM (after
        kill(): the mark read just before its cgroup went)."""
        if self.state is S.DEAD:
            return self._memory_at_death
        if self.cgroup is not None:
            used = self.cgroup.max_memory_used_mb()
            if used is not None:
                return used
        total = 0
        for pid in [self.pid] + self.runtime_pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return round(total / 1024) if total else None

    # ---- channel (Sandbox is the only code that talks to the agent) -----------------
    def _recv(self, deadline: float | None) -> dict:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout is not None and timeout <= 0:
            raise socket.timeout()
        self.ctl.settimeout(timeout)
        return protocol.recv(self.ctl)

    def _message(self, deadline: float | None, logs: bytearray | None) -> dict:
        """The next frame that is not output (``log``) or the agent's ``hello``.

        Raises socket.timeout at ``deadline`` and ProtocolError/OSError at EOF."""
        while True:
            msg = self._recv(deadline)
            op = msg["op"]
            if op == "log":
                self._log(msg["data"], logs)
            elif op == "hello":
                self.layout = str(msg.get("layout"))
                self.protocol_version = int(msg.get("v", 0))
            else:
                return msg

    def exit_status(self, wait_s: float = 0.2) -> int | None:
        """The sandbox's PID 1 exit status (negative: killed by that signal) once it
        has ended, waiting up to ``wait_s``; None if it is still running or unknown.
        For a channel that ended without an ``exit`` frame (os._exit, a fatal signal)."""
        deadline = time.monotonic() + wait_s
        if self.proc is not None:      # cold: `unshare` ends as snapinit did, which
            try:                       # says 128 + N for signal N, as a shell does
                code = self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                return None
            return -(code - 128) if 128 < code < 128 + 65 else code
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def _died(self, request_id: str | None) -> SandboxError:
        """The error for a runtime that ended without answering (kills the rest)."""
        oom = self.cgroup is not None and self.cgroup.oom_kills() > 0
        status = None if oom else self.exit_status()
        self.kill()
        prefix = f"RequestId: {request_id} Error: " if request_id else ""
        if oom:
            return OutOfMemoryError(f"{prefix}Runtime exited with error: signal: killed "
                                    "(out of memory)")
        if status is None:
            return RuntimeExitError(f"{prefix}Runtime exited without providing a reason")
        return RuntimeExitError(f"{prefix}Runtime exited with error: {describe_status(status)}")

    def _log(self, data: bytes, buf: bytearray | None) -> None:
        if buf is not None:
            buf += data
            if len(buf) > LOG_TAIL_BYTES:
                del buf[:len(buf) - LOG_TAIL_BYTES]
        if self.log_sink is not None:
            self.log_sink(data)

    def wait_init(self, timeout_s: float, logs: bytearray | None = None) -> str:
        """Wait until init is done. Returns "ready" (on-demand) or "snapshot" (snap-start).

        Raises ``InitError`` with the runtime's own error type when init fails.
        """
        deadline = time.monotonic() + timeout_s
        init_error: dict | None = None
        while True:
            try:
                msg = self._message(deadline, logs)
            except socket.timeout:
                self.kill()
                raise InitError(f"Init timed out after {timeout_s:.2f} seconds",
                                error_type="Sandbox.Timedout") from None
            except (protocol.ProtocolError, OSError) as exc:
                self.kill()
                if init_error:
                    raise InitError(init_error["errorMessage"], error_type=init_error["errorType"],
                                    stack_trace=init_error.get("stackTrace")) from None
                raise InitError(f"Runtime exited during init: {exc}",
                                error_type="Runtime.ExitError") from None
            op = msg["op"]
            if op == "ready":
                self.lifecycle.to(S.IDLE)
                return "ready"
            elif op == "snapshot":
                return "snapshot"
            elif op == "init_error":
                init_error = _error_fields(msg["body"], msg.get("type") or "Runtime.Unknown",
                                           header_wins=bool(msg.get("type")))
            elif op in ("exit", "fatal"):
                self.kill()
                if init_error:
                    raise InitError(init_error["errorMessage"], error_type=init_error["errorType"],
                                    stack_trace=init_error.get("stackTrace"))
                detail = (f"exit status {msg['status']}" if op == "exit"
                          else msg.get("message", "agent failed"))
                raise InitError(f"Runtime exited without providing a reason ({detail})",
                                error_type="Runtime.ExitError")

    def checkpoint(self, criu: Criu, images_dir: Path, work_dir: Path) -> DumpResult:
        """Dump the tree rooted at PID 2 (parked in GET /restore/next or the first
        GET /next); the sandbox dies.

        CRIU runs inside the sandbox's mount namespace but outside its root
        (mountns.py explains why), with the PID namespace external: snapinit is not
        in the image, every clone gets its own. What init left in /tmp is archived
        next to the images first.
        """
        self.lifecycle.to(S.SNAPSHOTTING)
        try:
            images_dir.mkdir(parents=True, exist_ok=True)
            mountns.save_tmp(self.pid, images_dir / mountns.TMP_ARCHIVE)
            result = criu.dump(self.pid, images_dir, work_dir, netns_inode=self._netns_inode,
                               pidns_inode=self._pidns_inode, unix_inodes=[self._ctl_inode],
                               fork_in=lambda fn: mountns.run_in_mntns_of(self.pid, fn,
                                                                          ipc_uts=True))
        finally:
            self.kill()
        return result

    # ---- resume and invoke -----------------------------------------------------------
    def resume(self, timeout_s: float = 30.0) -> float:
        """Resume a restored clone without an event (RESTORING -> IDLE): the runtime
        leaves GET /restore/next, runs its after-restore hooks and asks for work.
        Returns how long that took (ms). Raises AfterRestoreError, RuntimeExitError
        (the sandbox is killed); the clone is then gone."""
        self._check_resumable()
        started = time.monotonic()
        try:
            self.ctl.sendall(protocol.encode(self._resume_frame()))
        except OSError:
            raise self._died(None) from None
        deadline = started + timeout_s
        while True:
            msg = self._await(deadline, None, None, timeout_message=(
                f"the after-restore phase did not finish within {timeout_s:.0f} seconds"))
            if msg["op"] == "ready":
                self.lifecycle.to(S.IDLE)
                self.last_used = time.monotonic()
                return (self.last_used - started) * 1000

    def _resume_frame(self) -> dict:
        if self.hot is None:
            return {"op": "resume"}
        return {"op": "resume", "populate": self.hot.frame()}

    def prefault(self) -> None:
        """Fault in the hot set now (a clone parked ahead of demand): its resume then
        finds those pages ready. Fire and forget; the agent handles frames in order."""
        if self.hot is None or self.state is not S.RESTORING:
            return
        try:
            self.ctl.sendall(protocol.encode({"op": "populate", **self.hot.frame()}))
        except OSError:
            return          # dead: the resume finds out
        self.hot = None

    def _check_resumable(self) -> None:
        if self.state is not S.RESTORING:
            raise SandboxError(f"resume needs a RESTORING sandbox, not {self.state.name}")

    def _await(self, deadline: float, logs: bytearray | None, request_id: str | None, *,
               timeout_message: str) -> dict:
        """The next meaningful frame; a dead, silent or failing runtime becomes the
        matching SandboxError (the sandbox is killed first)."""
        try:
            msg = self._message(deadline, logs)
        except socket.timeout:
            raise self._timed_out(request_id, timeout_message) from None
        except (protocol.ProtocolError, OSError):
            raise self._died(request_id) from None
        failure = self._failure(msg, request_id)
        if failure is not None:
            raise failure
        return msg

    def _timed_out(self, request_id: str | None, message: str) -> SandboxError:
        self.kill()
        prefix = f"RequestId: {request_id} Error: " if request_id else ""
        return SandboxTimeoutError(prefix + message)

    def _failure(self, msg: dict, request_id: str | None) -> SandboxError | None:
        """The error a frame reports (the sandbox is killed), or None."""
        op = msg["op"]
        if op == "restore_error":
            err = _error_fields(msg["body"], msg.get("type") or "Runtime.AfterRestoreError",
                                header_wins=True)
            self.kill()
            return AfterRestoreError(f"{err['errorMessage']}", error_type=err["errorType"])
        if op in ("exit", "fatal"):
            if self.cgroup is not None and self.cgroup.oom_kills() > 0:
                return self._died(request_id)
            self.kill()
            prefix = f"RequestId: {request_id} Error: " if request_id else ""
            if op == "fatal":
                return RuntimeExitError(f"{prefix}{msg.get('message', 'the agent failed')}")
            exc = RuntimeExitError(f"{prefix}Runtime exited with error: "
                                   f"{describe_status(int(msg.get('status', 0)))}")
            # The runtime died before this event reached it: safe to run elsewhere.
            exc.retryable = request_id is not None and msg.get("inflight") != request_id
            return exc
        return None

    def invoke(self, req: InvokeRequest, *, resume: bool = False) -> InvokeResult:
        """Run one invocation. ``resume``: the first invoke of a restored clone, sent
        together with the resume (the after-restore phase is timed separately and is
        not billed against the function's timeout)."""
        if resume:
            self._check_resumable()
        else:
            self.lifecycle.to(S.BUSY)
        ex = _Exchange(self, req, resume)
        try:
            self.ctl.sendall(ex.outgoing)
        except OSError:
            raise self._died(req.request_id) from None
        while True:
            try:
                msg = self._await(ex.deadline, ex.logs, req.request_id,
                                  timeout_message=ex.timeout_message)
            except SandboxError as exc:
                ex.failed(exc)
                raise
            result = ex.feed(msg)
            if result is not None:
                return result

    async def invoke_async(self, req: InvokeRequest) -> InvokeResult:
        """``invoke`` of an IDLE clone on the caller's event loop: no thread between
        the request and the agent. The same exchange (``_Exchange``) as ``invoke``;
        what ends it abnormally (timeout, exit, a broken channel: the sandbox is
        killed) is settled on a thread, as ``invoke`` would, and raised here."""
        import asyncio          # serve's; not on the one-shot CLI's import path

        loop = asyncio.get_running_loop()
        self.lifecycle.to(S.BUSY)
        ex = _Exchange(self, req, False)
        request_id = req.request_id
        settle: Callable[[], SandboxError | None]
        self.ctl.setblocking(False)
        try:
            await loop.sock_sendall(self.ctl, ex.outgoing)
            async with asyncio.timeout(max(0.0, ex.deadline - time.monotonic())):
                while True:
                    msg = await protocol.recv_async(loop, self.ctl)
                    op = msg["op"]
                    if op == "log":
                        self._log(msg["data"], ex.logs)
                    elif op in ("restore_error", "exit", "fatal"):
                        settle = functools.partial(self._failure, msg, request_id)
                        break
                    elif op != "hello":
                        result = ex.feed(msg)
                        if result is not None:
                            return result
        except TimeoutError:
            settle = functools.partial(self._timed_out, request_id, ex.timeout_message)
        except (protocol.ProtocolError, OSError):
            settle = functools.partial(self._died, request_id)
        except BaseException:           # cancelled mid-exchange: the clone is unusable
            self.kill()
            raise
        finally:
            if self.state is not S.DEAD:
                self.ctl.setblocking(True)
        exc = await loop.run_in_executor(None, settle)
        assert exc is not None
        ex.failed(exc)
        raise exc

    def healthy(self) -> bool:
        """Before reusing an idle clone: drain what the agent said while idle.

        A runtime that exited after its last response (e.g. after a 413) reports
        ``exit`` asynchronously, or its channel simply ends; such a clone is killed
        here instead of being reused.
        """
        if self.state is not S.IDLE:
            return False
        while True:
            try:
                self.ctl.setblocking(False)
                try:
                    head = self.ctl.recv(1, socket.MSG_PEEK)
                finally:
                    self.ctl.setblocking(True)
            except BlockingIOError:
                return True
            except OSError:
                head = b""
            if not head:
                self.kill()
                return False
            try:
                msg = self._recv(time.monotonic() + 1.0)
            except (socket.timeout, protocol.ProtocolError, OSError):
                self.kill()
                return False
            if msg["op"] == "log":
                self._log(msg["data"], None)
            elif msg["op"] in ("exit", "fatal"):
                self.kill()
                return False

    # ---- teardown ----------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the tree (PID 1 dies, so does the namespace) and reap it. Idempotent:
        the lifecycle's DEAD state says it is done."""
        with self._kill_lock:
            if self.state is S.DEAD:
                return
            self.lifecycle.try_to(S.DRAINING)
            self.lifecycle.to(S.DEAD)
            for pid in (self.init_pid, self.pid):   # PID 1 first: its death ends the rest
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.proc is not None:
                # unshare reaps snapinit and exits by itself. Killing unshare first
                # would reparent the dying tree to us (we are a subreaper).
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            try:
                # restored clones (first: a dying PID 1 waits until every other task
                # of its namespace is reaped, and this one is ours to reap)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            if self.init is not None:
                self.init.kill()
            if self.cgroup is not None:
                self._memory_at_death = self.cgroup.max_memory_used_mb()
            try:
                self.ctl.close()
            except OSError:
                pass
            if self._netns is not None:
                self._netns.close()
                self._netns = None
            if self.cgroup is not None:
                self.cgroup.destroy()

    @property
    def alive(self) -> bool:
        return self.state is not S.DEAD


class _Exchange:
    """One invocation's exchange with the agent, without I/O (``Sandbox.invoke`` drives
    it with blocking reads, ``Sandbox.invoke_async`` from an event loop): the frames
    to send (``outgoing``), then ``feed`` each meaningful frame the agent sends until
    it returns the result. ``log`` frames go to ``logs`` (the reader's job);
    ``failed`` completes an error with what the function printed, its duration and
    memory."""

    def __init__(self, sandbox: Sandbox, req: InvokeRequest, resume: bool) -> None:
        self.sandbox = sandbox
        self.req = req
        self.resume = resume
        self.logs = bytearray()
        self.started = self.invoke_start = time.monotonic()
        self.started_ns = tracing.now_ns()
        self.deadline = self.started + req.timeout_s + (30.0 if resume else 0.0)
        self.timeout_message = f"Task timed out after {req.timeout_s:.2f} seconds"
        self.restore_ms: float | None = None
        self.content_type: str | None = None     # set once the runtime streams its response
        self.streamed = bytearray()              # ... and its bytes, without a sink
        frame = protocol.encode({
            "op": "invoke", "id": req.request_id, "payload": req.payload,
            "deadline_ms": int(time.time() * 1000 + req.timeout_s * 1000), "arn": req.arn,
            "trace_id": req.trace_id, "client_context": req.client_context})
        self.outgoing = (protocol.encode(sandbox._resume_frame()) + frame) if resume else frame

    def failed(self, exc: SandboxError) -> None:
        """Keep what the function printed, how long it ran and its memory."""
        exc.logs = bytes(self.logs)
        exc.duration_ms = (time.monotonic() - self.invoke_start) * 1000
        exc.max_memory_used_mb = self.sandbox.max_memory_used_mb()
        _trace(self.started, self.started_ns, self.invoke_start, self.restore_ms, self.req,
               error=exc.error_type)

    def feed(self, msg: dict) -> InvokeResult | None:
        sandbox, req = self.sandbox, self.req
        op = msg["op"]
        if op == "ready":
            if self.resume and sandbox.state is S.RESTORING:
                self.invoke_start = time.monotonic()
                self.restore_ms = (self.invoke_start - self.started) * 1000
                self.deadline = self.invoke_start + req.timeout_s
                sandbox.lifecycle.to(S.IDLE)
                sandbox.lifecycle.to(S.BUSY)
        elif op == "stream" and msg.get("id") == req.request_id:
            self.content_type = str(msg.get("content_type") or "application/octet-stream")
            if req.sink is not None:
                req.sink.begin(self.content_type)
        elif op == "stream_chunk" and msg.get("id") == req.request_id:
            if req.sink is not None:
                req.sink.chunk(msg["data"])
            else:
                self.streamed += msg["data"]
        elif op in ("response", "error") and msg.get("id") == req.request_id:
            duration = (time.monotonic() - self.invoke_start) * 1000
            sandbox.invocations += 1
            sandbox.last_used = time.monotonic()
            sandbox.lifecycle.to(S.IDLE)
            _trace(self.started, self.started_ns, self.invoke_start, self.restore_ms, req,
                   error=msg.get("type") if op == "error" else None)
            if op == "response":
                payload, ferr = msg["payload"], None
                if self.content_type is not None and req.sink is None:
                    payload = bytes(self.streamed)
            else:
                payload = json.dumps(_error_fields(msg["body"], msg.get("type") or
                                                   "Runtime.Unknown")).encode()
                ferr = "Unhandled"
            return InvokeResult(request_id=req.request_id, payload=payload,
                                function_error=ferr, duration_ms=duration, logs=bytes(self.logs),
                                restore_duration_ms=self.restore_ms,
                                max_memory_used_mb=sandbox.max_memory_used_mb(),
                                stream_content_type=self.content_type)
        return None


def _trace(started: float, started_ns: int, invoke_start: float, restore_ms: float | None,
           req: InvokeRequest, *, error: str | None) -> None:
    """The spans of one ``Sandbox.invoke`` (tracing.py): ``resume`` for a restored clone's
    after-restore phase, then ``runtime invoke``, from the times it measured."""
    if not tracing.enabled():
        return
    at = started_ns + int((invoke_start - started) * 1e9)
    if restore_ms is not None:
        tracing.record("resume", started_ns, at)
    tracing.record("runtime invoke", at, started_ns + int((time.monotonic() - started) * 1e9),
                   request_id=req.request_id, error=error)
