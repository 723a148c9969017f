"""One sandbox: a process tree with the agent as PID 1, and the host's handle on it.

A sandbox is created either *cold* (``Sandbox.spawn``: a new agent process that
starts the runtime and runs init) or *restored* (``Sandbox.restore``: CRIU clones a
published snapshot into a fresh network namespace). Either way the host talks to
it only through the control channel (``bootstrap.protocol``), and its lifecycle is
the explicit state machine in ``state.py``.

Process layout of a cold sandbox (why: ../shared/PLATFORM.md)::

    manager ── nsenter --net=<anon netns> ── exec unshare --pid --time --ipc --uts --fork
                                                  └── agent (PID 1, setsid) ── runtime

started from a thread inside a new mount namespace whose /tmp is a private tmpfs
(mountns.py), so the whole tree has it.

A restored sandbox's agent is a direct child of the manager (CRIU ``rst_sibling``).
Killing the agent (SIGKILL) ends the whole PID namespace.

This module must not know about versions, stores or pools: that is the manager's.
"""

from __future__ import annotations

import fcntl
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bootstrap import protocol

from ..checkpoint.criu import Criu, DumpResult, Worker, reap_restore_leftovers
from ..config import PROJECT_ROOT
from ..errors import (AfterRestoreError, InitError, OutOfMemoryError, RuntimeExitError,
                      SandboxError, SandboxTimeoutError)
from ..runtimes import RuntimeSpec
from . import mountns
from .cgroups import Cgroup
from .mountns import PrivateTmp
from .netns import Egress, NetNs, add_egress, new_netns
from .state import Lifecycle, SandboxState

__all__ = ["Sandbox", "RestoreSlot", "children_of", "InvokeRequest", "InvokeResult", "reseed_crng",
           "LOG_TAIL_BYTES"]

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


@dataclass
class RestoreSlot:
    """Everything a restore needs before the snapshot is known: a fresh network
    namespace with its control socketpair, a cgroup (limits set at use), a mount
    namespace with an empty private /tmp, and a ``criu swrk`` worker already started
    inside both. Preparing one costs a few ms (fork/exec of criu, cgroup migration);
    pools keep them ready."""

    netns: NetNs
    cgroup: Cgroup | None
    worker: Worker
    work_dir: Path
    tmp: PrivateTmp

    @classmethod
    def prepare(cls, criu: Criu, work_dir: Path, *, cgroups: bool = True,
                tmp: PrivateTmp | None = None) -> "RestoreSlot":
        """``tmp``: the private /tmp (default: 512 MB, keeping snapstart, its Python
        and CRIU reachable); managers pass theirs (PrivateTmp.for_sandbox)."""
        if tmp is None:
            tmp = PrivateTmp.for_sandbox(mountns.EPHEMERAL_DEFAULT_MB,
                                         os.path.dirname(os.path.realpath(criu.binary)))
        netns = new_netns()
        cgroup = None
        try:
            if cgroups:
                cgroup = Cgroup.create(f"rs-{os.getpid()}-{netns.inode}", memory_mb=None)
            worker = criu.spawn_worker(work_dir, netns_fd=netns.fd,
                                       ctl_fd=netns.agent_sock.fileno(), cgroup=cgroup,
                                       fork_in=lambda fn: mountns.run_in_new(tmp, fn))
        except BaseException:
            netns.close()
            if cgroup is not None:
                cgroup.destroy()
            raise
        return cls(netns=netns, cgroup=cgroup, worker=worker, work_dir=work_dir, tmp=tmp)

    def discard(self) -> None:
        self.worker.close()
        self.netns.close()
        if self.cgroup is not None:
            self.cgroup.destroy()


@dataclass
class InvokeRequest:
    request_id: str
    payload: bytes
    arn: str
    timeout_s: float
    trace_id: str | None = None
    client_context: str | None = None
    cognito: str | None = None


@dataclass
class InvokeResult:
    request_id: str
    payload: bytes
    function_error: str | None          # None | "Unhandled"
    duration_ms: float
    logs: bytes = b""
    start_type: str = "warm"
    init_duration_ms: float | None = None
    restore_duration_ms: float | None = None
    max_memory_used_mb: int | None = None
    notes: list[str] = field(default_factory=list)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _agent_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def children_of(pid: int) -> list[int]:
    """Child pids of ``pid`` (from /proc; needs CONFIG_PROC_CHILDREN)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


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
    out = {"errorMessage": str(data.get("errorMessage", "")), "errorType": str(error_type)}
    trace = data.get("stackTrace", data.get("trace"))
    if trace is not None:
        out["stackTrace"] = trace if isinstance(trace, list) else [str(trace)]
    return out


class Sandbox:
    def __init__(self, *, pid: int, ctl: socket.socket, state: SandboxState,
                 proc: subprocess.Popen | None, log_sink: Callable[[bytes], None] | None,
                 name: str, cgroup: Cgroup | None = None) -> None:
        self.pid = pid
        self.ctl = ctl
        self.lifecycle = Lifecycle(state)
        self.proc = proc
        self.log_sink = log_sink
        self.name = name
        self.created = time.monotonic()
        self.last_used = self.created
        self.invocations = 0
        self._reaped = False
        self._kill_lock = threading.Lock()
        self._netns_inode = 0
        self._ctl_inode = 0
        self._netns: NetNs | None = None
        self.cgroup = cgroup
        self.tmp = PrivateTmp()
        self.egress: Egress | None = None

    # ---- creation ----------------------------------------------------------------
    @classmethod
    def spawn(cls, spec: RuntimeSpec, *, name: str = "sandbox", deterministic: bool = False,
              hash_seed: int | None = None, memory_mb: int | None = None,
              tmp: PrivateTmp | None = None, egress: bool = False,
              log_sink: Callable[[bytes], None] | None = None) -> "Sandbox":
        """Start a cold sandbox: new namespaces, the agent, then the runtime (init).

        ``tmp``: the sandbox's private /tmp (a new mount namespace, see mountns.py;
        default 512 MB keeping snapstart, its Python and the code reachable).
        ``egress``: a veth to the host with link-local addresses (netns.py).

        ``deterministic`` (publish): address-space randomization off for the tree, so
        two publishes of one function lay out memory alike and their snapshots
        deduplicate. Every clone of a snapshot shares its layout anyway (as on
        Lambda SnapStart); cold sandboxes keep ASLR. ``hash_seed`` fixes the agent's
        PYTHONHASHSEED for the same reason.
        """
        if tmp is None:
            tmp = PrivateTmp.for_sandbox(mountns.EPHEMERAL_DEFAULT_MB, spec.cwd)
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
        argv += [sys.executable, "-m", "bootstrap.agent", "--ctl-fd", str(agent_fd)]
        try:
            env = _agent_env()
            if hash_seed is not None:
                env["PYTHONHASHSEED"] = str(hash_seed)
            proc = mountns.run_in_new(tmp, lambda: subprocess.Popen(
                argv, pass_fds=(netns.fd, agent_fd), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/"))
        except SandboxError:
            netns.close()
            raise
        except OSError as exc:
            netns.close()
            raise SandboxError(f"cannot start the sandbox agent: {exc}") from exc
        deadline = time.monotonic() + 5
        pid = 0
        while time.monotonic() < deadline:
            kids = children_of(proc.pid)
            if kids:
                pid = kids[0]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.0005)
        if not pid:
            proc.kill()
            proc.wait()
            netns.close()
            raise SandboxError("the sandbox agent did not start")
        sandbox = cls(pid=pid, ctl=netns.host_sock, state=S.CREATED, proc=proc,
                      log_sink=log_sink, name=name)
        sandbox._netns_inode = netns.inode
        sandbox._ctl_inode = os.fstat(agent_fd).st_ino
        sandbox._netns = netns
        sandbox.tmp = tmp
        sandbox.egress = link
        netns.close_fd()            # the agent keeps the namespace alive
        try:
            if memory_mb is not None:   # before the runtime exists: it inherits the group
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
                name: str = "clone", memory_mb: int | None = None,
                tmp: PrivateTmp | None = None, egress: bool = False,
                slot: "RestoreSlot | None" = None,
                log_sink: Callable[[bytes], None] | None = None) -> "Sandbox":
        """Clone a snapshot into fresh network and mount namespaces (state RESTORING).

        ``slot``: a prepared namespace + cgroup + criu worker (``RestoreSlot``), so
        the restore only sends the request; without one it is prepared here.
        ``tmp``: the clone's /tmp size (the slot's tmpfs is resized if it differs).
        ``egress``: add a veth to the host (netns.py) before the tree resumes.
        """
        if slot is None:
            slot = RestoreSlot.prepare(criu, work_dir, cgroups=memory_mb is not None, tmp=tmp)
            tmp = slot.tmp
        try:
            if slot.cgroup is not None and memory_mb is not None:
                slot.cgroup.limit(memory_mb)
            if tmp is not None and tmp.size_mb != slot.tmp.size_mb:
                mountns.resize_tmp(slot.worker.pid, tmp)
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
        sandbox = cls(pid=pid, ctl=netns.host_sock, state=S.RESTORING, proc=None,
                      log_sink=log_sink, name=name, cgroup=slot.cgroup)
        sandbox._netns_inode = netns.inode
        sandbox.tmp = slot.tmp if tmp is None else tmp
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
        """Peak memory of the sandbox: its cgroup's high-water mark, else VmHWM."""
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

    # ---- channel -----------------------------------------------------------------
    def _recv(self, deadline: float | None) -> dict:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout is not None and timeout <= 0:
            raise socket.timeout()
        self.ctl.settimeout(timeout)
        return protocol.recv(self.ctl)

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
                msg = self._recv(deadline)
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
            if op == "log":
                self._log(msg["data"], logs)
            elif op == "ready":
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
        """Dump the whole tree (it is parked in GET /restore/next); the tree dies.

        CRIU runs inside the sandbox's mount namespace (mountns.py explains why);
        what init left in /tmp is archived next to the images first.
        """
        self.lifecycle.to(S.SNAPSHOTTING)
        try:
            images_dir.mkdir(parents=True, exist_ok=True)
            mountns.save_tmp(self.pid, images_dir / mountns.TMP_ARCHIVE, self.tmp)
            result = criu.dump(self.pid, images_dir, work_dir, netns_inode=self._netns_inode,
                               unix_inodes=[self._ctl_inode],
                               fork_in=lambda fn: mountns.run_in_mntns_of(self.pid, fn))
        finally:
            self.kill()
        return result

    # ---- invoke ------------------------------------------------------------------
    def invoke(self, req: InvokeRequest, *, resume: bool = False) -> InvokeResult:
        """Run one invocation. ``resume`` is for the first invoke of a restored clone."""
        if resume:
            if self.state is not S.RESTORING:
                raise SandboxError(f"resume needs a RESTORING sandbox, not {self.state.name}")
        else:
            self.lifecycle.to(S.BUSY)
        logs = bytearray()
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + req.timeout_s * 1000)
        frame = {"op": "invoke", "id": req.request_id, "payload": req.payload,
                 "deadline_ms": deadline_ms, "arn": req.arn, "trace_id": req.trace_id,
                 "client_context": req.client_context, "cognito": req.cognito}
        restore_ms: float | None = None
        try:
            if resume:
                self.ctl.sendall(protocol.encode({"op": "resume"}) + protocol.encode(frame))
            else:
                protocol.send(self.ctl, frame)
        except OSError as exc:
            self.kill()
            raise RuntimeExitError(f"RequestId: {req.request_id} Error: sandbox is gone ({exc})") \
                from None
        invoke_start = started
        # The restore phase (after-restore hooks) is not billed against the timeout.
        deadline = started + req.timeout_s + (30.0 if resume else 0.0)
        while True:
            try:
                msg = self._recv(deadline)
            except socket.timeout:
                self.kill()
                raise SandboxTimeoutError(
                    f"RequestId: {req.request_id} Error: Task timed out after "
                    f"{req.timeout_s:.2f} seconds") from None
            except (protocol.ProtocolError, OSError):
                oom = self.cgroup is not None and self.cgroup.oom_kills() > 0
                self.kill()
                if oom:
                    raise OutOfMemoryError(
                        f"RequestId: {req.request_id} Error: Runtime exited with error: "
                        "signal: killed (out of memory)") from None
                raise RuntimeExitError(
                    f"RequestId: {req.request_id} Error: Runtime exited without providing "
                    "a reason") from None
            op = msg["op"]
            if op == "log":
                self._log(msg["data"], logs)
            elif op == "ready":
                if resume:
                    invoke_start = time.monotonic()
                    restore_ms = (invoke_start - started) * 1000
                    deadline = invoke_start + req.timeout_s
                    self.lifecycle.to(S.IDLE)
                    self.lifecycle.to(S.BUSY)
            elif op in ("response", "error"):
                if msg.get("id") != req.request_id:
                    continue
                duration = (time.monotonic() - invoke_start) * 1000
                self.invocations += 1
                self.last_used = time.monotonic()
                self.lifecycle.to(S.IDLE)
                if op == "response":
                    payload, ferr = msg["payload"], None
                else:
                    payload = json.dumps(_error_fields(msg["body"], msg.get("type") or
                                                       "Runtime.Unknown")).encode()
                    ferr = "Unhandled"
                return InvokeResult(request_id=req.request_id, payload=payload,
                                    function_error=ferr, duration_ms=duration, logs=bytes(logs),
                                    restore_duration_ms=restore_ms,
                                    max_memory_used_mb=self.max_memory_used_mb())
            elif op == "restore_error":
                err = _error_fields(msg["body"], msg.get("type") or "Runtime.AfterRestoreError",
                                    header_wins=True)
                self.kill()
                raise AfterRestoreError(f"{err['errorMessage']}", error_type=err["errorType"])
            elif op in ("exit", "fatal"):
                oom = self.cgroup is not None and self.cgroup.oom_kills() > 0
                self.kill()
                status = msg.get("status", "?")
                if oom:
                    raise OutOfMemoryError(
                        f"RequestId: {req.request_id} Error: Runtime exited with error: "
                        f"signal: killed (out of memory)")
                exc = RuntimeExitError(
                    f"RequestId: {req.request_id} Error: Runtime exited with error: "
                    f"exit status {status}")
                # The runtime died before this event reached it: safe to run elsewhere.
                exc.retryable = op == "exit" and msg.get("inflight") != req.request_id
                raise exc

    def healthy(self) -> bool:
        """Before reusing an idle clone: drain what the agent said while idle.

        A runtime that exited after its last response (e.g. after a 413) reports
        ``exit`` asynchronously; such a clone is killed here instead of being reused.
        """
        if self._reaped or self.state is not S.IDLE:
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
        """SIGKILL the tree (PID 1 dies, so does the namespace) and reap it. Idempotent."""
        with self._kill_lock:
            if self._reaped:
                return
            self._reaped = True
            if self.state is not S.DEAD:
                self.lifecycle.try_to(S.DRAINING)
                self.lifecycle.try_to(S.DEAD)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.proc is not None:
                # unshare reaps the agent and exits by itself. Killing unshare first
                # would reparent the dying agent to us (we are a subreaper).
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            try:
                os.waitpid(self.pid, 0)       # restored clones, or a reparented agent
            except ChildProcessError:
                pass
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
        return not self._reaped
