"""Tenant isolation (issue 12): from inside a function, nothing of the host or of
another function is visible or reachable, and no function runs as root. Real
namespaces, real CRIU; every probe runs on a restored and on a cold clone."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig, Settings
from snapstart.runtimes import unreachable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import FUNCTIONS  # noqa: E402
from leaks import LeakCheck  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

DENIED = {"read", "listed", "opened", "signalled"}


def _out(result) -> dict:
    assert result.function_error is None, result.payload
    return json.loads(result.payload)


def _publish(manager, name: str, secret: str):
    return manager.publish(FUNCTIONS / "tenant", FunctionConfig(
        name=name, handler="app.handler", environment={"TENANT_SECRET": secret}, timeout_s=30))


def _host_pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def test_tenants_see_only_their_own_sandbox(manager, settings):
    leaks = LeakCheck(settings)
    _publish(manager, "tenant-a", "secret-a")
    _publish(manager, "tenant-b", "secret-b")
    ua = manager.registry.identity("tenant-a")
    ub = manager.registry.identity("tenant-b")
    lo, hi = settings.uid_range
    assert ua != ub and ua[0] == ua[1] and ub[0] == ub[1]
    assert lo <= ua[0] <= hi and lo <= ub[0] <= hi and 0 not in ua + ub

    # tenant-b runs (held) while tenant-a attacks its processes by host PID
    held: dict = {}
    victim = threading.Thread(target=lambda: held.update(r=manager.invoke(
        "tenant-b", json.dumps({"hold": 4}).encode(), force_new=True)))
    victim.start()
    deadline = time.monotonic() + 20
    while not (b_pids := _host_pids_of_uid(ub[0])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b_pids, "tenant-b's runtime never appeared"
    home = str(settings.home)
    b_code = manager.registry.resolve("tenant-b").code_dir
    attack = {"pids": b_pids + [os.getpid()],
              "paths": [home, str(b_code), str(b_code / "app.py"), str(settings.shm),
                        "/var/lib/snapstart", "/root", "/etc/shadow", "/sys/kernel",
                        "/sys/fs/cgroup"]}
    try:
        for kind, kw in (("restored", {}), ("cold", {"no_snapshot": True})):
            result = manager.invoke("tenant-a", json.dumps(attack).encode(), force_new=True,
                                    **kw)
            assert result.start_type == kind
            out = _out(result)
            # its own identity and secret; never root
            assert (out["uid"], out["gid"]) == ua and out["groups"] in ([], [ua[1]])
            assert out["secret"] == "secret-a"
            # /proc is its sandbox's alone: the runtime, nothing of the host
            assert out["pid"] in out["pids"] and len(out["pids"]) <= 3, out["pids"]
            assert max(out["pids"]) < 100
            # PID 1 is the sandbox's own init (snapinit, root): hidden from the
            # function by hidepid=invisible, never the host's init
            assert 1 not in out["pids"] and out["proc1"] == "No such file or directory"
            # nothing of tenant-b (or of the manager) can be read, opened or signalled
            for pid, probes in out["attacks"].items():
                assert not DENIED & set(probes.values()), (kind, pid, probes)
            for path, outcome in out["paths"].items():
                # a path is absent, refused, or an empty directory of the sandbox's root
                assert outcome == [] or (isinstance(outcome, str) and outcome not in DENIED), \
                    (kind, path, outcome)
            # /sys shows nothing of the host
            assert not out["sys"], out["sys"]
            # Lambda's layout; no host path of snapstart's home anywhere inside
            assert out["cwd"] == out["task_root"] == "/var/task"
            assert out["file"] == "/var/task/app.py"
            for key, value in out["environ"].items():
                assert home not in value and str(settings.shm) not in value, key
    finally:
        victim.join(30)
    assert _out(held["r"])["secret"] == "secret-b"
    # defence in depth on the host: tenant-a's uid cannot read tenant-b's code or the
    # registry's files, whatever the mounts
    assert unreachable(b_code / "app.py", *ua) is not None
    for meta in (settings.home / "functions/tenant-b/latest/config.json",
                 settings.home / "identities.json"):
        assert stat.S_IMODE(meta.stat().st_mode) == 0o600
    manager.close()
    assert not leaks.check(), leaks.check().summary()


def test_clones_of_one_function_share_its_identity_across_versions(manager, settings,
                                                                   managers):
    _publish(manager, "tenant-c", "c")
    first = manager.registry.identity("tenant-c")
    outs = [_out(manager.invoke("tenant-c", b"{}", force_new=True)),
            _out(manager.invoke("tenant-c", b"{}", force_new=True)),
            _out(manager.invoke("tenant-c", b"{}", no_snapshot=True, force_new=True))]
    _publish(manager, "tenant-c", "c2")                       # version 2
    outs.append(_out(manager.invoke("tenant-c", b"{}", force_new=True)))
    assert {(o["uid"], o["gid"]) for o in outs} == {first}
    # a new manager (a restart) reads the same ledger
    assert managers(Settings.from_env()).registry.identity("tenant-c") == first


def test_stack_trace_shows_var_task_not_the_host(manager, settings):
    _publish(manager, "tenant-d", "d")
    for kw in ({}, {"no_snapshot": True}):
        result = manager.invoke("tenant-d", b'{"raise": true}', force_new=True, **kw)
        assert result.function_error == "Unhandled"
        err = json.loads(result.payload)
        trace = "".join(err["stackTrace"])
        assert "/var/task/app.py" in trace, trace
        assert str(settings.home) not in result.payload.decode()


def test_a_0700_home_never_yields_a_root_function(monkeypatch, managers):
    base = Path(tempfile.mkdtemp(prefix="snapstart-0700-", dir="/tmp"))   # mode 0700
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    shm = Path("/dev/shm") / f"snapstart-test-0700-{os.getpid()}"
    monkeypatch.setenv("SNAPSTART_HOME", str(base / "home"))
    monkeypatch.setenv("SNAPSTART_SHM", str(shm))
    mgr = managers(Settings.from_env())
    try:
        _publish(mgr, "tenant-e", "e")
        ident = mgr.registry.identity("tenant-e")
        for kw in ({}, {"no_snapshot": True}):
            out = _out(mgr.invoke("tenant-e", b"{}", force_new=True, **kw))
            assert (out["uid"], out["gid"]) == ident and out["uid"] != 0
    finally:
        mgr.close()
        import shutil
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
