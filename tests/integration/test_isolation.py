"""Isolation (issue 6): every clone's private, size-capped /tmp and the optional
egress veth. Real namespaces, real CRIU, real sockets on link-local addresses the
test's own clones own."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig
from snapstart.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import LeakCheck  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]


def _out(result) -> dict:
    assert result.function_error is None, result.payload
    return json.loads(result.payload)


def test_each_clone_has_a_private_tmp_carrying_what_init_left(manager, publish, settings):
    leaks = LeakCheck(settings)
    publish("tmpfiles")
    probe = f"clone-file-{os.getpid()}-{time.monotonic_ns()}"
    a = manager.invoke("tmpfiles", json.dumps({"write": probe + "-a"}).encode(), force_new=True)
    b = manager.invoke("tmpfiles", json.dumps({"write": probe + "-b"}).encode(), force_new=True)
    assert a.start_type == b.start_type == "restored"
    out_a, out_b = _out(a), _out(b)
    # what init left (file, directory, symlink as a symlink) is in every clone
    for out in (out_a, out_b):
        assert {"init.txt", "assets", "etc-link"} <= set(out["ls"])
        uid = manager.registry.identity("tmpfiles")[0]
        assert out["init"] == f"written at init by uid {uid}"
        assert out["model_bytes"] == 7000 and out["link"] == "/etc"
        assert out["tmp_mb"] == 512
        # /tmp is the only writable place: the host's other world-writable dirs are
        # empty and read-only inside (no channel between clones or to the host)
        assert out["elsewhere"] == {"/var/tmp": "Read-only file system",
                                    "/dev/shm": "Read-only file system",
                                    "/run/lock": "Read-only file system"}
    # ... but what one clone writes, no other clone and not the host sees
    assert probe + "-a" in out_a["ls"] and probe + "-b" not in out_a["ls"]
    assert probe + "-b" in out_b["ls"] and probe + "-a" not in out_b["ls"]
    assert out_a["mnt_ns"] != out_b["mnt_ns"]
    for name in (probe + "-a", probe + "-b", "init.txt", "etc-link"):
        assert not os.path.lexists(f"/tmp/{name}")
    # a cold sandbox is private too, and a clone's /tmp dies with it
    cold = _out(manager.invoke("tmpfiles", b"{}", no_snapshot=True, force_new=True))
    assert probe + "-a" not in cold["ls"] and "init.txt" in cold["ls"]
    again = _out(manager.invoke("tmpfiles", b"{}", force_new=True))
    assert not any(name.startswith(probe) for name in again["ls"])
    manager.close()
    assert not leaks.check()


def test_ephemeral_storage_sets_the_tmp_size(manager, publish):
    publish("tmpfiles", ephemeral_storage_mb=1024)
    restored = manager.invoke("tmpfiles", b"{}", force_new=True)    # slot tmpfs resized
    cold = manager.invoke("tmpfiles", b"{}", no_snapshot=True, force_new=True)
    assert restored.start_type == "restored"
    assert _out(restored)["tmp_mb"] == _out(cold)["tmp_mb"] == 1024
    with pytest.raises(ConfigError, match="ephemeral storage"):
        FunctionConfig(name="x", handler="app.handler", ephemeral_storage_mb=100)


def _links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def test_egress_veth_reaches_the_host_end_only(manager, publish, settings):
    leaks = LeakCheck(settings)
    before = _links()
    publish("egress", egress=True)
    publish("egress", name="noegress")
    first = manager.invoke("egress", b"{}", force_new=True)
    assert first.start_type == "restored"
    info = _out(first)
    gw, addr = info["gateway"], info["links"]["eth0"]
    assert sorted(info["links"]) == ["eth0", "lo"]
    assert gw.startswith("169.254.") and addr.startswith("169.254.")
    block = (int.from_bytes(socket.inet_aton(gw), "big") - (169 << 24 | 254 << 16)) // 4
    host_if = f"snp{block - 128 * 64}"
    assert host_if in _links()
    with open(f"/proc/sys/net/ipv4/conf/{host_if}/forwarding") as f:
        assert f.read().strip() == "0"      # never routes a clone to another clone
    # a service listening on the host end is reachable from the (warm) clone
    with socket.socket() as srv:
        srv.bind((gw, 0))
        srv.listen(1)
        srv.settimeout(5)
        port = srv.getsockname()[1]
        warm = manager.invoke("egress", json.dumps({"connect": [gw, port]}).encode())
        assert warm.start_type == "warm" and _out(warm)["connect"] == "connected"
        conn, peer = srv.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(100) == f"hello from {addr}".encode()
        assert peer[0] == addr
        # a second clone gets its own block, and cannot reach the first one
        second = manager.invoke("egress", json.dumps({"listen": 7000}).encode(),
                                force_new=True)
        other = _out(second)["links"]["eth0"]
        assert other != addr and _out(second)["gateway"] != gw
        probe = _out(manager.invoke("egress", json.dumps({"connect": [other, 7000]}).encode(),
                                    force_new=True))
        assert probe["connect"] != "connected", probe
        # ... nor any host address but its own host end: a host service listening on
        # every address (as an Invoke API on the machine's address would) is reached
        # through the clone's own gateway only, not through another clone's
        with socket.socket() as every:
            every.bind(("0.0.0.0", 0))
            every.listen(4)
            any_port = every.getsockname()[1]
            own = _out(manager.invoke("egress", json.dumps(
                {"connect": ["gateway", any_port]}).encode()))
            assert own["connect"] == "connected", own
            other_gw = gw if own["gateway"] != gw else _out(second)["gateway"]
            cross = _out(manager.invoke("egress", json.dumps(
                {"connect": [other_gw, any_port]}).encode()))
            assert cross["gateway"] != other_gw and cross["connect"] != "connected", cross
        # without egress there is only lo
        plain = _out(manager.invoke("noegress", json.dumps({"connect": [gw, port]}).encode()))
        assert sorted(plain["links"]) == ["lo"] and plain["gateway"] is None
        assert plain["connect"] == "OSError: Network is unreachable"
    manager.close()
    deadline = time.monotonic() + 10
    while _links() - before and time.monotonic() < deadline:
        time.sleep(0.05)                    # veth pairs die with their namespaces
    assert _links() - before == set()
    assert not leaks.check()
