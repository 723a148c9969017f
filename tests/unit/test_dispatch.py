"""The manager's dispatch order (snapstart/manager/manager.py ``_dispatch``/``_run``)
with fake sandboxes: warm, then restored ahead of demand, then restored now, then
cold; a clone that died idle is skipped; an unusable snapshot falls back to cold with
a note. No root, no CRIU: the manager's collaborators are replaced."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig
from snapstart.errors import RuntimeExitError, SnapshotIntegrityError
from snapstart.manager.clones import Clones
from snapstart.manager.manager import Manager
from snapstart.registry import VersionInfo
from snapstart.results import InvokeRequest, InvokeResult, StartType
from snapstart.sandbox.state import SandboxState

KEY = ("f", "1")


class FakeSandbox:
    def __init__(self, label: str, *, dies: bool = False) -> None:
        self.label = label
        self.dies = dies
        self.state = SandboxState.IDLE
        self.killed = False
        self.resumed: bool | None = None
        self.record_hot = None          # no hot set to record (checkpoint/hotset.py)

    def healthy(self) -> bool:
        return True

    def kill(self) -> None:
        self.killed = True

    def invoke(self, req: InvokeRequest, *, resume: bool) -> InvokeResult:
        self.resumed = resume
        if self.dies:
            exc = RuntimeExitError("died before the event")
            exc.retryable = True
            raise exc
        return InvokeResult(request_id=req.request_id, payload=self.label.encode(),
                            function_error=None, duration_ms=1.0,
                            restore_duration_ms=2.0 if resume else None)


class FakeAhead:
    def __init__(self, pooled: FakeSandbox | None = None) -> None:
        self.pooled = pooled
        self.noted = 0

    def note(self, info) -> None:
        self.noted += 1

    def take(self, key):
        got, self.pooled = self.pooled, None
        return got


class FakeSlots:
    @contextlib.contextmanager
    def busy(self):
        yield


def _manager(*, pooled=None, restore=None, cold=None) -> tuple[Manager, list[str]]:
    calls: list[str] = []
    m = object.__new__(Manager)            # no __init__: no CRIU, no cgroups, no home
    m.keep_warm, m._closed = True, False
    m.clones = Clones()
    m.ahead = FakeAhead(pooled)
    m.slots = FakeSlots()

    def _restore(info):
        calls.append("restore")
        if isinstance(restore, Exception):
            raise restore
        return m.clones.track(restore or FakeSandbox("restored"))

    def _cold(info, key, req, notes):
        calls.append("cold")
        sandbox = m.clones.track(cold or FakeSandbox("cold"))
        result = m._run(sandbox, key, req, StartType.COLD)
        import dataclasses
        return dataclasses.replace(result, notes=tuple(notes))

    m._restore, m._cold = _restore, _cold
    return m, calls


INFO = VersionInfo(name="f", version="1", config=FunctionConfig(name="f", handler="app.h"),
                   code_dir=Path("/nonexistent"), packages_dir=None,
                   snapshot={"ctl_inode": 1, "uid": 800000}, uid=800000)
REQ = InvokeRequest(request_id="r", payload=b"{}", arn="arn", timeout_s=3)


def _go(m: Manager, info: VersionInfo = INFO, **kw) -> InvokeResult:
    return m._dispatch(info, REQ, no_snapshot=kw.get("no_snapshot", False),
                       force_new=kw.get("force_new", False))


def test_a_warm_clone_wins_and_is_parked_again():
    m, calls = _manager()
    warm = FakeSandbox("warm")
    m.clones.track(warm)
    m.clones.park(KEY, warm)
    result = _go(m)
    assert result.start_type == StartType.WARM and result.payload == b"warm"
    assert result.executed_version == "1"
    assert warm.resumed is False and calls == []
    assert m.clones.pop_idle(KEY) is warm                 # parked for the next call


def test_force_new_skips_warm_and_restores():
    m, calls = _manager()
    warm = FakeSandbox("warm")
    m.clones.track(warm)
    m.clones.park(KEY, warm)
    result = _go(m, force_new=True)
    assert result.start_type == StartType.RESTORED and calls == ["restore"]
    assert result.restore_duration_ms is not None and result.restore_duration_ms >= 2.0


def test_a_clone_that_died_idle_is_dropped_and_the_next_tier_serves():
    m, calls = _manager()
    dead = FakeSandbox("dead", dies=True)
    m.clones.track(dead)
    m.clones.park(KEY, dead)
    result = _go(m)
    assert result.start_type == StartType.RESTORED and dead.killed
    assert calls == ["restore"]


def test_restored_ahead_comes_before_a_restore_now():
    pooled = FakeSandbox("pooled")
    m, calls = _manager(pooled=pooled)
    result = _go(m)
    assert result.start_type == StartType.RESTORED_POOL and result.payload == b"pooled"
    assert pooled.resumed is True and calls == [] and m.ahead.noted == 1


def test_an_unusable_snapshot_falls_back_to_cold_with_a_note():
    m, calls = _manager(restore=SnapshotIntegrityError("chunk abc: hash mismatch"))
    result = _go(m)
    assert result.start_type == StartType.COLD and calls == ["restore", "cold"]
    assert len(result.notes) == 1 and "hash mismatch" in result.notes[0]
    assert "fell back to a cold init" in result.notes[0]


@pytest.mark.parametrize("info, kw", [
    (VersionInfo(name="f", version="$LATEST", config=INFO.config, code_dir=INFO.code_dir,
                 packages_dir=None, snapshot=None, uid=800000), {}),
    (INFO, {"no_snapshot": True}),
])
def test_no_snapshot_means_cold(info, kw):
    m, calls = _manager()
    result = _go(m, info, **kw)
    assert result.start_type == StartType.COLD and calls == ["cold"]
