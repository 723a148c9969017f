"""Resource limits enforced by per-clone cgroups (real cgroups, real CRIU)."""

from __future__ import annotations

import json

import pytest

from snapstart.sandbox.cgroups import PIDS_MAX, cgroup_mode

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]


def test_memory_hog_gets_out_of_memory_and_clone_is_discarded(manager, publish):
    assert cgroup_mode() != "none"
    publish("hog", memory_mb=128, timeout_s=20)
    result = manager.invoke("hog", b'{"action": "memory", "mb": 1024}')
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Runtime.OutOfMemory"
    assert manager.idle_count("hog") == 0
    ok = manager.invoke("hog", b'{"action": "memory", "mb": 16}')     # platform keeps serving
    assert json.loads(ok.payload) == {"allocated_mb": 16}
    assert 16 <= ok.max_memory_used_mb <= 128


def test_fork_bomb_is_contained_by_pids_limit(manager, publish):
    publish("hog", timeout_s=20, memory_mb=3008)
    result = manager.invoke("hog", json.dumps({"action": "fork", "n": PIDS_MAX * 2}).encode())
    out = json.loads(result.payload)
    assert result.function_error is None, out
    assert out["fork_failed"] == 1 and out["forked"] < PIDS_MAX
    again = manager.invoke("hog", b'{}')
    assert json.loads(again.payload) == {"ok": True}


def test_max_memory_used_comes_from_the_cgroup(manager, publish):
    publish("hello", memory_mb=256)
    result = manager.invoke("hello")
    # the cgroup's peak: what the clone wrote since the restore (snapshot pages it only
    # reads are mapped from the shared image and charged to no clone)
    assert result.max_memory_used_mb is not None and 0 < result.max_memory_used_mb <= 256
