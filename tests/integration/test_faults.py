"""Faults (issue 6): killed processes, timeouts, runaway handlers, damaged snapshots,
full disks. Each case asserts (a) a clear error in Lambda's shapes reaches the
caller, (b) the platform keeps serving (the next invoke succeeds), (c) nothing is
lost or leaked: processes, namespaces, cgroups, CRIU work dirs, /dev/shm files,
mounts (tests/leaks.py). The memory hog is test_limits.py's.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig
from snapstart.errors import PublishError, SnapStartError
from snapstart.sandbox.procs import find_inits, members, owner_tag
from snapstart.sandbox.sandbox import LOG_TAIL_BYTES
from snapstart.store import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import (LeakCheck, ServerProcess, descendants, function_logs,  # noqa: E402
                   reap_adopted, sandbox_processes, serve_env, wait_sandbox_file)

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"
PROJECT = Path(__file__).resolve().parents[2]


def _payload(result) -> dict:
    return json.loads(result.payload)


def _lambda_error(result) -> dict:
    assert result.function_error == "Unhandled", result.payload
    err = _payload(result)
    assert isinstance(err.get("errorMessage"), str) and isinstance(err.get("errorType"), str)
    return err


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _stat(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return []
    return [text[text.find("(") + 1:text.rfind(")")]] + text[text.rfind(")") + 2:].split()


def _cli(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapstart.cli", *args],
                          env=serve_env(settings), capture_output=True, text=True,
                          timeout=timeout, cwd=str(PROJECT))


class _Call(threading.Thread):
    """manager.invoke(...) in a thread; .result or .error afterwards."""

    def __init__(self, manager, *args, **kw) -> None:
        super().__init__(daemon=True)
        self.args, self.kw, self.manager = args, kw, manager
        self.result = self.error = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.manager.invoke(*self.args, **self.kw)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def outcome(self, timeout_s: float = 60):
        self.join(timeout_s)
        assert not self.is_alive(), "the invoke hung"
        assert self.error is None, repr(self.error)
        return self.result


# ---- killed processes ------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["runtime", "init"])
def test_sigkill_mid_invoke_is_runtime_exit_error(manager, publish, settings, victim):
    leaks = LeakCheck(settings)
    publish("fault-actions", timeout_s=60)
    call = _Call(manager, "fault-actions", json.dumps(
        {"action": "block", "marker": "/tmp/started", "seconds": 60}).encode())
    wait_sandbox_file(settings, "/tmp/started", 30)         # the handler runs
    # PID 2: the runtime, its agent a thread (the publish sandbox may still be dying)
    live = [p for p in sandbox_processes(settings) if _stat(p)[1:2] not in (["Z"], [])]
    [runtime] = live
    # PID 1: its snapinit (the manager's prepared restore slots have their own)
    [init] = [i for i in find_inits(owner_tag(settings.home)) if runtime in members(i)]
    pid = runtime if victim == "runtime" else init
    if victim == "init":
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "snapinit"
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    result = call.outcome()
    err = _lambda_error(result)
    assert err["errorType"] == "Runtime.ExitError"
    assert result.request_id in err["errorMessage"]
    assert manager.idle_count("fault-actions") == 0          # the dead clone is not reused
    ok = manager.invoke("fault-actions", b"{}")
    recover = time.monotonic() - t0
    assert _payload(ok)["ok"] is True and ok.start_type == "restored"
    manager.close()
    leaks.finish(f"SIGKILL {victim} mid-invoke",
                 f"{err['errorType']}: {err['errorMessage'].split('Error: ')[-1]}", recover)


def _criu_victim(kind: str, work_root: Path) -> int | None:
    """The criu process to kill while a restore runs, or None (not yet / already done).

    "restored-root": the clone's root while CRIU is still restoring it (our child by
    rst_sibling, PID 1 of a new PID namespace, still named criu). "swrk": the worker
    serving the request (it has written restore.log into its work dir).
    """
    busy = {str(p.parent) for p in work_root.glob("*/restore.log")}
    candidates = []
    for pid in descendants(os.getpid()):
        stat = _stat(pid)
        if not stat or stat[0] != "criu" or stat[1] == "Z":
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nested = any(line.startswith("NSpid:") and len(line.split()) > 2
                     for line in status.splitlines())
        if kind == "restored-root" and nested:
            return pid
        if kind == "swrk" and not nested and stat[2] == str(os.getpid()):
            try:
                fds = {os.readlink(f"/proc/{pid}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue
            if fds & busy:
                candidates.append((int(stat[20]), pid))      # start time: swrk is oldest
    return min(candidates)[1] if candidates else None


@pytest.mark.parametrize("kind", ["swrk", "restored-root"])
def test_sigkill_criu_mid_restore_falls_back_cold(manager, publish, settings, kind):
    leaks = LeakCheck(settings)
    publish("hello")
    manager.invoke("hello", force_new=True)       # L1 built, restore slots prepared
    work_root = settings.shm / "run"
    for attempt in range(10):
        stop = threading.Event()
        killed: list[int] = []

        def watch() -> None:
            while not stop.is_set():
                pid = _criu_victim(kind, work_root)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        call = _Call(manager, "hello", b"{}", force_new=True)
        result = call.outcome(60)                  # never a hang
        stop.set()
        watcher.join()
        if killed and result.start_type == "cold":
            break
    else:
        pytest.fail(f"could not kill criu ({kind}) during a restore in 10 attempts")
    assert result.function_error is None and _payload(result)["calls"] == 1   # cold fallback
    assert len(result.notes) == 1 and "hello:1" in result.notes[0]
    assert "RestoreError" in result.notes[0], result.notes
    ok = manager.invoke("hello", force_new=True)
    recover = time.monotonic() - t0
    assert ok.start_type == "restored" and ok.function_error is None
    manager.close()
    leaks.finish(f"SIGKILL criu ({kind}) mid-restore",
                 "cold fallback; note: " + result.notes[0].split("(", 1)[1][:90], recover)


def test_server_kill9_with_warm_clones_then_restart(manager, publish, settings):
    leaks = LeakCheck(settings, sockets=False)
    publish("marker", timeout_s=30)
    manager.close()
    log_dir = settings.home.parent
    first = ServerProcess(settings, log_dir=log_dir)
    leaks.watch(first.pid)
    client = first.client()
    calls = [threading.Thread(target=client.invoke,
                              kwargs={"FunctionName": "marker", "Payload": b'{"sleep": 1}'})
             for _ in range(2)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    resp = client.invoke(FunctionName="marker", InvocationType="Event",
                         Payload=json.dumps({"sleep": 2, "marker": True}))
    assert resp["StatusCode"] == 202
    event_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    old = descendants(first.pid)
    identity = {p: _stat(p)[20] for p in old if _stat(p)}       # pid -> start time
    runtimes_before = [p for p in sandbox_processes(settings) if p in old]
    assert len(runtimes_before) >= 2, "expected two warm clones (and the event's)"
    t0 = time.monotonic()
    first.kill9()

    second = ServerProcess(settings, log_dir=log_dir)
    leaks.watch(second.pid)
    # no sandbox of the dead server survives the restart (orphans.py, agents' EOF)
    def survivors() -> list[str]:
        # this process is a subreaper: it adopted the dead server's clones, whose
        # PID 1 (snapinit) only finishes exiting once they are reaped
        for p in identity:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        return [f"{p} {_stat(p)[:3]}" for p, start in identity.items()
                if _stat(p)[20:21] == [start] and _stat(p)[1] != "Z"]
    _wait_for(lambda: not survivors(), 10, "the dead server's sandboxes to go")
    client = second.client()
    _wait_for(lambda: f"MARKER done {event_id}" in function_logs(settings, "marker"), 90,
              "the pending Event invoke to run after the restart")
    ok = client.invoke(FunctionName="marker", Payload=b"{}")
    recover = time.monotonic() - t0
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    mine = descendants(second.pid)
    strays = [p for p in sandbox_processes(settings) if p not in mine]
    assert not strays, f"sandboxes of the killed server still run: {strays}"
    second.stop()
    reap_adopted(old)             # this process is a subreaper: it adopted the dead server's
    leaks.finish("kill -9 of `snapstart serve` with warm clones",
                 f"restart: old clones gone, pending Event {event_id[:8]}.. ran", recover)


# ---- runaway handlers ------------------------------------------------------------------
def test_handler_timeout_is_sandbox_timedout(manager, publish, settings):
    leaks = LeakCheck(settings)
    publish("fault-actions", timeout_s=1)
    t0 = time.monotonic()
    result = manager.invoke("fault-actions", b'{"action": "sleep", "seconds": 30}')
    err = _lambda_error(result)
    assert err["errorType"] == "Sandbox.Timedout"
    assert err["errorMessage"] == (f"RequestId: {result.request_id} Error: "
                                   "Task timed out after 1.00 seconds")
    ok = manager.invoke("fault-actions", b"{}")
    recover = time.monotonic() - t0
    assert _payload(ok)["ok"] is True
    manager.close()
    leaks.finish("handler sleeps past its 1 s timeout", f"{err['errorType']}: "
                 f"{err['errorMessage'].split('Error: ')[-1]}", recover)


def test_infinite_loop_in_init_fails_publish(manager, settings):
    leaks = LeakCheck(settings)
    t0 = time.monotonic()
    with pytest.raises(PublishError) as info:
        manager.publish(FUNCTIONS / "fault-initloop",
                        FunctionConfig(name="initloop", handler="app.handler"),
                        init_timeout_s=3)
    assert info.value.error_type == "Sandbox.Timedout"
    assert "Init timed out after 3.00 seconds" in info.value.message
    # nothing half-published: no version, no snapshot, no version directory
    assert manager.registry.versions("initloop") == []
    assert manager.store.versions("initloop") == []
    vroot = settings.home / "functions" / "initloop" / "versions"
    assert not vroot.exists() or not any(vroot.iterdir())
    pub = manager.publish(FUNCTIONS / "hello", FunctionConfig(name="hello",
                                                              handler="app.handler"))
    ok = manager.invoke("hello", b"{}")
    recover = time.monotonic() - t0
    assert pub.version == 1 and ok.start_type == "restored" and ok.function_error is None
    manager.close()
    leaks.finish("infinite loop in init (publish, init_timeout_s=3)",
                 f"PublishError {info.value.error_type}: {info.value.message[:60]}", recover)


def test_handler_writing_1gb_to_tmp(manager, publish, settings):
    """The clone's /tmp is a private tmpfs capped at the ephemeral storage size
    (512 MB): writing 1 GB ends with ENOSPC inside the handler, the host's /tmp never
    sees the file, the clone keeps serving and a new clone starts with an empty /tmp.
    Memory is 2 GB because tmpfs pages count against the clone's memory."""
    leaks = LeakCheck(settings)
    publish("fault-actions", timeout_s=120, memory_mb=2048)
    name = f"snapstart-fill-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.monotonic()
    result = manager.invoke("fault-actions", json.dumps(
        {"action": "fill", "path": f"/tmp/{name}", "mb": 1024}).encode())
    out = _payload(result)
    assert result.function_error is None, out
    assert out["error"] == "OSError: errno 28 No space left on device", out
    assert 500 <= out["written_mb"] <= 512, out
    saw = f"handler's write failed: {out['error']} after {out['written_mb']} MB"
    assert not os.path.exists(f"/tmp/{name}")
    ok = manager.invoke("fault-actions", b"{}")              # the same (warm) clone
    recover = time.monotonic() - t0
    assert ok.start_type == "warm" and _payload(ok)["ok"] is True
    fresh = manager.invoke("fault-actions", json.dumps(
        {"action": "fill", "path": f"/tmp/{name}", "mb": 4}).encode(), force_new=True)
    assert fresh.start_type == "restored"
    assert _payload(fresh) == {"written_mb": 4, "error": None}   # 508 MB were not there
    manager.close()
    leaks.finish("handler writes 1 GB to /tmp", saw, recover)


def test_handler_closing_stdout_and_stderr(manager, publish, settings):
    leaks = LeakCheck(settings)
    publish("fault-actions", timeout_s=10)
    t0 = time.monotonic()
    result = manager.invoke("fault-actions", b'{"action": "close_stdio"}')
    assert result.function_error is None and _payload(result) == {"closed": True}
    ok = manager.invoke("fault-actions", b"{}")             # the same clone, no output
    recover = time.monotonic() - t0
    assert ok.start_type == "warm" and _payload(ok)["ok"] is True
    fresh = manager.invoke("fault-actions", b"{}", force_new=True)
    assert fresh.start_type == "restored" and _payload(fresh)["calls"] == 1
    manager.close()
    leaks.finish("handler closes its stdout and stderr", "invocation completed; clone reused",
                 recover)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_handler_flooding_stdout(manager, publish, settings):
    leaks = LeakCheck(settings)
    publish("fault-actions", timeout_s=120)
    rss_before = _rss_mb()
    t0 = time.monotonic()
    result = manager.invoke("fault-actions", b'{"action": "flood", "mb": 50}')
    assert result.function_error is None, result.payload
    out = _payload(result)
    assert out["bytes"] >= 50 << 20
    # logs truncated to the tail, which ends with the last line
    assert len(result.logs) <= LOG_TAIL_BYTES
    assert result.logs.endswith(f"flood done after {out['lines']} lines\n".encode())
    growth = _rss_mb() - rss_before
    assert growth < 25, f"the manager grew by {growth:.0f} MB for 50 MB of logs"
    assert result.max_memory_used_mb is not None and result.max_memory_used_mb < 256
    ok = manager.invoke("fault-actions", b"{}")
    recover = time.monotonic() - t0
    assert ok.start_type == "warm" and _payload(ok)["ok"] is True
    manager.close()
    leaks.finish("handler floods 50 MB to stdout",
                 f"completed; logs cut to {len(result.logs) // 1024} KiB tail; manager "
                 f"+{max(growth, 0):.0f} MB, clone peak {result.max_memory_used_mb} MB", recover)


# ---- damaged snapshots -------------------------------------------------------------------
def _chunk_path(store: LocalStore, manifest) -> Path:
    refs = manifest.chunk_refs()
    h = max(refs, key=lambda h: refs[h].stored_size)          # a big, real chunk
    return store.root / "chunks" / h[:2] / f"{h}.zst"


def _damage(kind: str, manager, settings, tmp_path: Path) -> str:
    """Damage hello's newest version; returns the label the error must name."""
    store = manager.store
    versions = manager.registry.versions("hello")
    label = f"hello:{versions[-1]}"
    manifest = store.manifest("hello", versions[-1])
    mpath = store.root / "manifests" / "hello" / f"{versions[-1]}.msgpack"
    if kind == "chunk-corrupt":
        path = _chunk_path(store, manifest)
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    elif kind == "chunk-truncated":
        path = _chunk_path(store, manifest)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "chunk-missing":
        _chunk_path(store, manifest).unlink()
    elif kind == "manifest-tampered":
        data = bytearray(mpath.read_bytes())
        data[len(data) // 2] ^= 0x01
        mpath.write_bytes(bytes(data))
    elif kind == "manifest-of-other-version":
        mpath.write_bytes((mpath.parent / f"{versions[0]}.msgpack").read_bytes())
    elif kind == "manifest-from-foreign-store":
        # the same version published into another store (another key), copied in
        images = store.materialize("hello", versions[-1])
        foreign = LocalStore(tmp_path / "foreign", tmp_path / "foreign-l1")
        foreign.put("hello", versions[-1], images, {"ctl_inode": 1})
        shutil.copyfile(tmp_path / "foreign" / "manifests" / "hello"
                        / f"{versions[-1]}.msgpack", mpath)
    else:  # pragma: no cover
        raise ValueError(kind)
    return label


DAMAGES = ["chunk-corrupt", "chunk-truncated", "chunk-missing", "manifest-tampered",
           "manifest-of-other-version", "manifest-from-foreign-store"]


@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_snapshot_falls_back_cold_and_verify_names_it(manager, publish, settings,
                                                              tmp_path, kind):
    leaks = LeakCheck(settings)
    publish("hello")
    if kind == "manifest-of-other-version":
        publish("hello")
    label = _damage(kind, manager, settings, tmp_path)
    manager.store.clear_l1()
    t0 = time.monotonic()
    result = manager.invoke("hello", b'{"k": 1}')
    recover = time.monotonic() - t0
    assert result.start_type == "cold" and result.function_error is None
    assert _payload(result)["event"] == {"k": 1}
    assert len(result.notes) == 1, result.notes
    note = result.notes[0]
    assert f"snapshot of {label} unusable (SnapshotIntegrityError: {label}" in note, note
    assert "fell back to a cold init" in note
    l1 = settings.shm / "l1"
    assert not [p for p in l1.iterdir() if p.name.startswith((".build", ".trash"))]
    again = manager.invoke("hello", b"{}", force_new=True)   # keeps serving (cold again)
    assert again.start_type == "cold" and again.function_error is None
    verify = _cli(settings, "snapshots", "verify", label)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert f"DAMAGED {label}" in verify.stdout, verify.stdout
    everything = _cli(settings, "snapshots", "verify")
    assert everything.returncode == 1 and f"DAMAGED {label}" in everything.stdout
    manager.close()
    leaks.finish(f"snapshot damaged: {kind}",
                 "cold fallback; verify: " + verify.stdout.splitlines()[0][8:100], recover)


# ---- full disks ---------------------------------------------------------------------------
class _Tmpfs:
    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0711",
                        "tmpfs", str(path)], check=True)

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave_bytes: int) -> Path:
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, self.free() - leave_bytes))
        return filler

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True)
        self.path.rmdir()


def _publish_on_a_full_disk(managers, cramped, small: _Tmpfs) -> tuple[str, float]:
    with managers(cramped) as manager:
        filler = small.fill(leave_bytes=1 << 20)
        with pytest.raises(SnapStartError) as info:
            manager.publish(FUNCTIONS / "hello", FunctionConfig(name="hello",
                                                                handler="app.handler"))
        err = info.value
        saw = f"{type(err).__name__} {err.error_type}: {err.message[:70]}"
        assert "No space left on device" in err.message, err.message
        del info, err
        assert manager.registry.versions("hello") == []
        assert manager.store.versions("hello") == []
        vroot = cramped.home / "functions" / "hello" / "versions"
        assert not vroot.exists() or not any(vroot.iterdir())
        t0 = time.monotonic()
        filler.unlink()                       # free the space: publishing works again
        pub = manager.publish(FUNCTIONS / "hello", FunctionConfig(name="hello",
                                                                  handler="app.handler"))
        ok = manager.invoke("hello", b"{}")
        recover = time.monotonic() - t0
        assert pub.version == 1 and ok.start_type == "restored"
    assert _cli(cramped, "snapshots", "verify").returncode == 0
    return saw, recover


def test_disk_full_while_publishing(settings, managers):
    cramped = dataclasses.replace(settings, home=settings.home.parent / "small-home" / "home")
    leaks = LeakCheck(cramped)
    small = _Tmpfs(cramped.home.parent, 64)
    try:
        saw, recover = _publish_on_a_full_disk(managers, cramped, small)
    finally:
        gc.collect()           # the store keeps its chunk directory open until collected
        small.unmount()
    leaks.finish("disk full while publishing (64 MB tmpfs home)", saw, recover)


def _invoke_with_a_full_l1(managers, cramped) -> tuple[str, float]:
    with managers(cramped) as m:
        t0 = time.monotonic()
        result = m.invoke("hello", b"{}")
        recover = time.monotonic() - t0
        assert result.start_type == "cold" and result.function_error is None
        assert len(result.notes) == 1 and "hello:1" in result.notes[0]
        assert "No space left on device" in result.notes[0], result.notes
        assert not list((cramped.shm / "l1").glob(".build.*"))   # no partial L1 entry
        again = m.invoke("hello", b"{}", force_new=True)
        assert again.start_type == "cold" and again.function_error is None
    return "cold fallback; note: " + result.notes[0].split("(", 1)[1][:80], recover


def test_l1_tmpfs_full_falls_back_cold(manager, publish, settings, managers):
    publish("hello")
    manager.close()
    cramped = dataclasses.replace(settings, shm=settings.home.parent / "tiny-shm")
    leaks = LeakCheck(cramped)
    tiny = _Tmpfs(cramped.shm, 8)
    try:
        saw, recover = _invoke_with_a_full_l1(managers, cramped)
    finally:
        gc.collect()
        tiny.unmount()
    leaks.finish("L1 tmpfs full (8 MB SNAPSTART_SHM)", saw, recover)
