"""Leak checks for the fault tests: what a test may not leave behind.

``LeakCheck(settings)`` takes a snapshot when it is created (or ``start()``-ed) and
``check()`` compares against it, after the test has closed its managers and
stopped its servers. It looks at:

- processes: every descendant of this process and of the roots given to
  ``watch()`` (a ``snapstart serve`` subprocess), and every process of the test's
  sandboxes (their snapinit names the test's SNAPSTART_HOME: sandbox/procs.py),
  wherever their manager went;
- network namespaces and sockets held by this process (``/proc/self/fd``);
- cgroups: entries of ``/sys/fs/cgroup/{memory,pids,cpu}/snapstart`` (and the v2
  ``/sys/fs/cgroup/snapstart``) whose owner pid (``<kind>-<pid>-<id>``) is this
  process or one of the watched processes;
- ``/dev/shm``: new top-level entries, and under the test's SNAPSTART_SHM any CRIU
  work dir (``run/*``), publish staging dir, or unfinished L1 entry
  (``l1/.build.*``, ``l1/.trash.*``);
- mounts: new mount points in ``/proc/self/mountinfo``.

``ServerProcess`` runs ``snapstart serve`` as a subprocess on a free loopback port
(the fault and fuzz tests kill it, restart it and watch its processes).
``MotoServer`` runs moto's S3/SQS server on loopback (the one S3 and SQS
implementation that installs here). ``cli``, ``publish``, ``wait_for``,
``write_mappings`` and ``mapping_state`` are the integration tests' shared helpers.

Other sessions may share the machine: only what this test can own is compared
(``FOREIGN_SHM`` names other test sessions' private tmpfs dirs).

``record()`` appends one row of the fault table (fault, what the caller saw, time
to recover, leak result) to the JSON-lines file named by ``SNAPSTART_FAULT_TABLE``,
if set; the suite's closing note is printed from it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LeakCheck", "Leaks", "ServerProcess", "MotoServer", "descendants", "reap_adopted",
           "record", "sandbox_processes", "sandbox_files", "wait_sandbox_file",
           "function_logs", "free_port", "wait_for", "cli", "publish", "write_mappings",
           "mapping_state"]

CGROUP_BASES = [Path("/sys/fs/cgroup") / c / "snapstart" for c in ("memory", "pids", "cpu")] \
    + [Path("/sys/fs/cgroup/snapstart")]
# the private tmpfs dirs of other pytest / bench sessions on a shared machine
FOREIGN_SHM = re.compile(r"^snapstart-(test|bench|try)-[0-9a-zA-Z]+$")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        out.update(int(x) for x in _read(f"/proc/{pid}/task/{tid}/children").split())
    return out


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (all threads' children, recursively)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def sandbox_processes(settings) -> list[int]:
    """Every process inside this installation's sandboxes (not their snapinit)."""
    from snapstart.sandbox.procs import find_inits, members, owner_tag

    return sorted(p for init in find_inits(owner_tag(settings.home)) for p in members(init))


def sandbox_files(settings, path: str) -> list[Path]:
    """``path`` (absolute, as a function sees it, e.g. /tmp/x) in every live sandbox
    of this installation, through /proc/PID/root (sandboxes run chroot-ed)."""
    return [Path(f"/proc/{pid}/root{path}") for pid in sandbox_processes(settings)]


def wait_sandbox_file(settings, path: str, timeout_s: float = 20.0) -> Path:
    """The first sandbox file ``path`` to appear (a function's marker in its /tmp)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for candidate in sandbox_files(settings, path):
            try:
                if candidate.exists():
                    return candidate
            except OSError:
                continue
        assert time.monotonic() < deadline, f"no sandbox wrote {path}"
        time.sleep(0.01)


def function_logs(settings, name: str) -> str:
    """What `snapstart logs NAME` holds (every stream), as text."""
    root = settings.home / "logs" / name
    return "".join(p.read_text(errors="replace") for p in sorted(root.glob("*.log"))) \
        if root.is_dir() else ""


def _state(pid: int) -> str:
    stat = _read(f"/proc/{pid}/stat")
    return stat[stat.rfind(")") + 2:][:1] if stat else ""


def _describe(pid: int) -> str:
    status = _read(f"/proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    cmd = _read(f"/proc/{pid}/cmdline").replace("\0", " ")[:100]
    return (f"{pid} {fields.get('Name', '?').strip()} state={fields.get('State', '?').strip()[:1]}"
            f" ppid={fields.get('PPid', '?').strip()} {cmd}")


def reap_adopted(pids: set[int], timeout_s: float = 10.0) -> int:
    """Reap processes of a killed parent that this process adopted (it is a child
    subreaper once it created a Manager); init would reap them in production."""
    reaped = 0
    deadline = time.monotonic() + timeout_s
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    pending.discard(pid)          # gone (reaped by someone else)
                elif _state(pid) != "Z":
                    pending.discard(pid)          # alive: check() will report it
                continue
            if done == pid:
                reaped += 1
                pending.discard(pid)
        if pending:
            time.sleep(0.02)
    return reaped


@dataclass
class Leaks:
    processes: list[str] = field(default_factory=list)
    fds: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    shm: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.fds or self.cgroups or self.shm or self.mounts)

    def summary(self) -> str:
        if not self:
            return "clean"
        parts = [f"{k}: {v}" for k, v in vars(self).items() if v]
        return "LEAKED " + "; ".join(parts)


class LeakCheck:
    def __init__(self, settings, *, sockets: bool = True) -> None:
        self.settings = settings
        self.sockets = sockets
        self.roots: set[int] = set()
        self.owners: set[int] = {os.getpid()}
        self.start()

    # ---- snapshot ---------------------------------------------------------------
    def start(self) -> None:
        self._procs = self._processes()
        self._fds = self._fd_kinds()
        self._cgroups = self._cgroup_entries()
        self._shm = set(os.listdir("/dev/shm"))
        self._mounts = self._mount_points()

    def watch(self, pid: int) -> None:
        """Also own ``pid`` (a server subprocess): its descendants and cgroups count."""
        self.roots.add(pid)
        self.owners.add(pid)

    def _processes(self) -> set[int]:
        out = descendants(os.getpid())
        for root in self.roots:
            out |= descendants(root) | ({root} if os.path.exists(f"/proc/{root}") else set())
        # this installation's sandboxes, wherever their manager went (snapinit's
        # --owner tag names the home), and their processes
        from snapstart.sandbox.procs import find_inits, owner_tag

        inits = find_inits(owner_tag(self.settings.home))
        return out | set(inits) | set(sandbox_processes(self.settings))

    def _fd_kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            kind = target.split(":", 1)[0] if target.endswith("]") else "file"
            if kind in ("net", "socket", "pid", "anon_inode"):
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    @staticmethod
    def _cgroup_entries() -> set[str]:
        out = set()
        for base in CGROUP_BASES:
            try:
                out.update(str(base / name) for name in os.listdir(base)
                           if (base / name).is_dir())
            except OSError:
                continue
        return out

    @staticmethod
    def _mount_points() -> set[str]:
        return {line.split()[4] for line in _read("/proc/self/mountinfo").splitlines()
                if len(line.split()) > 4}

    # ---- compare ----------------------------------------------------------------
    def leaks(self, settle_s: float = 10.0) -> Leaks:
        """What is left now that was not there at ``start()`` (waits up to ``settle_s``
        for processes that are already dying)."""
        deadline = time.monotonic() + settle_s
        while True:
            new = {p for p in self._processes() - self._procs if os.path.exists(f"/proc/{p}")}
            if not new or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out = Leaks(processes=[_describe(p) for p in sorted(new)])
        fds = self._fd_kinds()
        for kind, n in fds.items():
            if kind == "socket" and not self.sockets:
                continue
            if n > self._fds.get(kind, 0):
                out.fds.append(f"{n - self._fds.get(kind, 0)} more {kind} fd(s)")
        for entry in sorted(self._cgroup_entries() - self._cgroups):
            parts = Path(entry).name.split("-")
            if len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) in self.owners:
                out.cgroups.append(entry)
        for name in sorted(set(os.listdir("/dev/shm")) - self._shm):
            if Path("/dev/shm", name) != self.settings.shm and not FOREIGN_SHM.match(name):
                out.shm.append(f"/dev/shm/{name}")
        shm = self.settings.shm
        for pattern in ("run/*", "staging/*", "l1/.build.*", "l1/.trash.*"):
            out.shm += [str(p) for p in shm.glob(pattern)]
        out.mounts = sorted(self._mount_points() - self._mounts)
        return out

    def check(self, settle_s: float = 10.0) -> Leaks:
        found = self.leaks(settle_s)
        assert not found, found.summary()
        return found

    def finish(self, fault: str, saw: str, recover_s: float | None) -> Leaks:
        """``check()``, with the fault's table row recorded first (pass or fail)."""
        found = self.leaks()
        record(fault, saw, recover_s, found)
        assert not found, found.summary()
        return found


def record(fault: str, saw: str, recover_s: float | None, leaks: Leaks | str) -> None:
    """One row of the fault table (see the module docstring)."""
    path = os.environ.get("SNAPSTART_FAULT_TABLE")
    if not path:
        return
    row = {"fault": fault, "saw": saw[:160],
           "recover_s": None if recover_s is None else round(recover_s, 3),
           "leaks": leaks if isinstance(leaks, str) else leaks.summary()}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


# ---- a `snapstart serve` subprocess ------------------------------------------------
PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, interval: float = 0.1):
    """``cond()``'s first true value, polled; an AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def cli(settings, *args: str, check: bool = True,
        timeout: float = 180) -> subprocess.CompletedProcess:
    """``snapstart ARGS`` in the test's home; ``check``: it must exit 0."""
    proc = subprocess.run([sys.executable, "-m", "snapstart.cli", *args],
                          env=serve_env(settings), capture_output=True, text=True,
                          timeout=timeout, cwd=str(PROJECT))
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def publish(settings, directory: str, name: str | None = None, timeout: float = 3) -> int:
    """``snapstart publish tests/functions/DIRECTORY`` (handler app.handler): its version."""
    out = cli(settings, "publish", str(PROJECT / "tests" / "functions" / directory),
              "--name", name or directory, "--handler", "app.handler", "--timeout",
              str(timeout), "--json")
    return json.loads(out.stdout)["version"]


def write_mappings(settings, mappings: list[dict]) -> None:
    """Replace the event source mappings of triggers.json."""
    from snapstart.triggers import config

    with config.locked(settings.home):
        triggers = config.load(settings.home)
        triggers.mappings = mappings
        config.save(settings.home, triggers)


def mapping_state(settings, mid: str) -> dict:
    """One mapping's row of mappings-state.json (``snapstart mappings ls``)."""
    from snapstart.triggers.queues import load_state
    data = load_state(settings.home) or {}
    return next((m for m in data.get("mappings", []) if m["id"] == mid), {})


class MotoServer:
    """moto's server (S3, SQS, ...) on 127.0.0.1, started and waited for."""

    def __init__(self, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.start()

    def start(self) -> None:
        out = open(self.log, "a") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
             str(self.port)], stdout=out, stderr=subprocess.STDOUT)
        if self.log:
            out.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("moto_server did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, service: str):
        return self.client_of(self.url, service)

    @staticmethod
    def client_of(url: str, service: str):
        """A boto3 client of moto's server at ``url`` (test credentials)."""
        import boto3
        return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def serve_env(settings) -> dict:
    env = dict(os.environ, SNAPSTART_HOME=str(settings.home), SNAPSTART_SHM=str(settings.shm),
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=str(PROJECT))
    env.pop("AWS_PROFILE", None)
    return env


class ServerProcess:
    """``snapstart serve --port P`` on 127.0.0.1, started and waited for."""

    def __init__(self, settings, *args: str, log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snapstart.cli", "serve", "--port", str(self.port), *args],
            env={**serve_env(settings), **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
            cwd=str(PROJECT))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/metrics", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("server did not start: " + self.output())
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def client(self, read_timeout: float = 60):
        import boto3
        from botocore.config import Config
        return boto3.client("lambda", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"total_max_attempts": 1},
                                          read_timeout=read_timeout))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """GET /metrics, as {sample name with labels: value}."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
