"""Which CRIUs snapstart accepts (checkpoint/criu.py: compatibility_problem, usable,
the network-lock capability of its RPC). No root, no CRIU."""

from __future__ import annotations

import pytest

from snapstart.checkpoint import criu as criu_mod
from snapstart.checkpoint.criu import Criu, compatibility_problem


@pytest.mark.parametrize("criu_version, kernel, ok", [
    ("3.17.1", "6.1.0-28-arm64", True),      # Debian 12 on its own kernel (the VM)
    ("4.1.1", "6.12.0", True),
    ("4.2.1", "6.18.44-fc-v782", True),       # this project's hosts
    ("4.2", "6.16.0", True),
    ("4.1.1", "6.16.0", False),               # TCP sockets cannot be dumped (issue 2705)
    ("3.17.1", "6.18.44-fc-v782", False),
    ("5.0", "7.0.0", True),
    ("garbage", "6.1.0", False),
])
def test_compatibility_problem(criu_version, kernel, ok):
    problem = compatibility_problem(criu_version, kernel)
    assert (problem is None) == ok, problem
    if not ok and criu_version != "garbage":
        assert "TCP" in problem and criu_version in problem


def _fake_criu(monkeypatch, version, kernel, check):
    c = Criu("/nonexistent/criu")
    monkeypatch.setattr(c, "version", lambda: version)
    monkeypatch.setattr(c, "check", lambda: check)
    monkeypatch.setattr("platform.release", lambda: kernel)
    return c


def test_usable_accepts_any_criu_whose_check_passes(monkeypatch):
    ok, detail = _fake_criu(monkeypatch, "3.17.1", "6.1.0-28-arm64",
                            (True, "Looks good.")).usable()
    assert ok and "3.17.1" in detail


def test_usable_refuses_failed_check_and_known_breakage(monkeypatch):
    ok, detail = _fake_criu(monkeypatch, "4.2.1", "6.18.0",
                            (False, "vdso: Unexpected rt vDSO area bounds")).usable()
    assert not ok and "vDSO" in detail
    ok, detail = _fake_criu(monkeypatch, "3.17.1", "6.18.0", (True, "Looks good.")).usable()
    assert not ok and "TCP" in detail


def test_usable_reports_missing_binary():
    ok, detail = Criu("/nonexistent/criu").usable()
    assert not ok and "/nonexistent/criu" in detail


def _fake_opts(fields, lock_values):
    """Just enough of a criu_opts protobuf message for the capability checks."""
    from types import SimpleNamespace as NS
    enum = NS(values_by_name={k: NS(number=v) for k, v in lock_values.items()})
    by_name = {f: NS(enum_type=enum if f == "network_lock" else None) for f in fields}
    return NS(DESCRIPTOR=NS(fields_by_name=by_name))


def test_network_lock_by_rpc_capability():
    v4 = _fake_opts(["network_lock", "images_dir"],
                    {"IPTABLES": 1, "NFTABLES": 2, "SKIP": 3})
    v3 = _fake_opts(["network_lock"], {"IPTABLES": 1, "NFTABLES": 2})   # CRIU 3.17
    assert criu_mod._network_lock(v4) == 3
    assert criu_mod._network_lock(v3) == 2
