"""Unit tests: no root, no kernel features, seconds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bootstrap import protocol
from snapstart.config import FunctionConfig, Settings, validate_alias, validate_name
from snapstart.errors import (ConfigError, FunctionNotFoundError, InvalidNameError,
                              InvalidTransition, SandboxError, SnapStartError)
from snapstart.manager.report import report_line
from snapstart.registry import Registry, parse_ref
from snapstart.sandbox.state import TRANSITIONS, Lifecycle, SandboxState


@pytest.mark.parametrize("handler", ["app", "app.", ".handler", "app handler", "1app.h",
                                     "app.handler;rm", "../x.handler", ""])
def test_bad_handler_strings_are_refused(handler):
    with pytest.raises(ConfigError, match="invalid handler"):
        FunctionConfig(name="f", handler=handler)


@pytest.mark.parametrize("name", ["", "a" * 65, "../etc", "a/b", "a b", "fn:1", ".."])
def test_bad_function_names_are_refused(name):
    with pytest.raises(InvalidNameError):
        validate_name(name)


def test_alias_rules():
    assert validate_alias("live") == "live"
    for bad in ("123", "$LATEST", "a/b", "", "x" * 129):
        with pytest.raises(InvalidNameError):
            validate_alias(bad)


@pytest.mark.parametrize("kw,msg", [({"memory_mb": 64}, "memory"), ({"timeout_s": 0}, "timeout"),
                                    ({"timeout_s": 901}, "timeout"),
                                    ({"environment": {"AWS_REGION": "x"}}, "reserved"),
                                    ({"environment": {"1BAD": "x"}}, "invalid environment"),
                                    ({"runtime": "cobol"}, "unknown runtime")])
def test_config_limits(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        FunctionConfig(name="f", handler="app.handler", **kw)


def test_config_round_trip():
    cfg = FunctionConfig(name="f", handler="pkg.mod.fn", memory_mb=1024, timeout_s=30,
                         environment={"A": "1"})
    assert FunctionConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.module == "pkg.mod"


def test_settings_from_env(tmp_path):
    s = Settings.from_env({"SNAPSTART_HOME": str(tmp_path), "SNAPSTART_SHM": "/dev/shm/x",
                           "SNAPSTART_CRIU": "/opt/criu"})
    assert s.home == tmp_path and s.criu == "/opt/criu"
    assert s.function_arn("f", "2") == "arn:aws:lambda:us-east-1:000000000000:function:f:2"


def test_protocol_round_trip_and_partial_frames():
    msgs = [{"op": "invoke", "id": "r1", "payload": b"\x00" * 70000}, {"op": "ping"}]
    data = b"".join(protocol.encode(m) for m in msgs)
    reader = protocol.FrameReader()
    out = []
    for i in range(0, len(data), 999):  # arbitrary split points
        out += reader.feed(data[i:i + 999])
    assert out == msgs


def test_protocol_rejects_oversized_and_garbage():
    reader = protocol.FrameReader()
    with pytest.raises(protocol.ProtocolError):
        reader.feed((protocol.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader().feed(b"\x00\x00\x00\x01\xc1")     # msgpack "never used" byte
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader().feed(b"\x00\x00\x00\x01\x01")     # an int, not a map with "op"


def test_protocol_blocking_recv_over_socketpair():
    a, b = socket.socketpair()
    with a, b:
        protocol.send(a, {"op": "response", "id": "x", "payload": b"{}"})
        assert protocol.recv(b) == {"op": "response", "id": "x", "payload": b"{}"}
        a.close()
        with pytest.raises(protocol.ProtocolError):
            protocol.recv(b)


def test_state_machine_allows_only_listed_transitions():
    life = Lifecycle(SandboxState.RESTORING)
    life.to(SandboxState.IDLE)
    life.to(SandboxState.BUSY)
    life.to(SandboxState.IDLE)
    with pytest.raises(InvalidTransition) as info:
        life.to(SandboxState.RESTORING)
    assert "IDLE" in str(info.value) and "RESTORING" in str(info.value)
    life.to(SandboxState.DEAD)
    assert TRANSITIONS[SandboxState.DEAD] == frozenset()
    assert not life.try_to(SandboxState.IDLE)
    assert isinstance(info.value, SnapStartError)


def test_report_line_matches_lambda_format():
    line = report_line("abc", duration_ms=1.234, memory_mb=512, max_memory_used_mb=40,
                       restore_duration_ms=31.5)
    assert line.split("\t") == ["REPORT RequestId: abc", "Duration: 1.23 ms",
                                "Billed Duration: 2 ms", "Memory Size: 512 MB",
                                "Max Memory Used: 40 MB", "Restore Duration: 31.50 ms",
                                "Billed Restore Duration: 32 ms"]


def test_registry_versions_aliases_and_resolution(tmp_path):
    reg = Registry(Settings.from_env({"SNAPSTART_HOME": str(tmp_path)}))
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text("def handler(e, c): return 1\n")
    cfg = FunctionConfig(name="f", handler="app.handler")
    reg.set_latest(cfg, code)
    assert reg.resolve("f").version == "$LATEST"
    n, vdir = reg.allocate_version("f")
    assert n == 1 and reg.versions("f") == []          # incomplete: invisible
    reg.commit_version("f", n, cfg, {"ctl_inode": 1})
    assert reg.versions("f") == [1] and reg.resolve("f").version == "1"
    reg.set_alias("f", "live", 1)
    assert reg.resolve("f", "live").version == "1"
    assert parse_ref("f:live") == ("f", "live")
    for bad in ("nope", "7", "../../x"):
        with pytest.raises(FunctionNotFoundError):
            reg.resolve("f", bad)
    with pytest.raises(ConfigError, match="alias"):
        reg.remove_version("f", 1)
    with pytest.raises(InvalidNameError):
        reg.resolve("../f")


def test_interrupted_publish_versions_are_swept(tmp_path):
    reg = Registry(Settings.from_env({"SNAPSTART_HOME": str(tmp_path)}))
    n, vdir = reg.allocate_version("g")
    (vdir / ".incomplete").write_text("999999999")        # a publisher that is gone
    n2, _ = reg.allocate_version("g")
    assert n2 == 1 and reg.versions("g") == []


def test_sandbox_paths_map_the_runtime_tree_and_hide_the_rest(tmp_path):
    """What a sandbox sees of the host (mountns.py): /usr as it is, snapstart's
    Python and agent under /var/runtime, nothing else."""
    import sys

    from snapstart.config import PROJECT_ROOT
    from snapstart.sandbox.mountns import SandboxFs, runtime_mounts, sandbox_path

    assert sandbox_path("/usr/bin/python3") == "/usr/bin/python3"
    assert sandbox_path(PROJECT_ROOT / "bootstrap" / "python" / "sitecustomize.py") == \
        "/var/runtime/bootstrap/python/sitecustomize.py"
    if sys.prefix != sys.base_prefix:
        assert sandbox_path(sys.executable).startswith("/var/runtime/venv/bin/")
    assert set(runtime_mounts().values()) >= {"/var/runtime/bootstrap",
                                              "/var/runtime/snapstart"}
    for hidden in (tmp_path, "/root", "/var/lib/snapstart", "/dev/shm"):
        with pytest.raises(SandboxError, match="not visible inside a sandbox"):
            sandbox_path(hidden)
    assert SandboxFs(size_mb=1024)._tmpfs_options() == "size=1024m,mode=1777"


def test_ephemeral_storage_and_egress_config():
    cfg = FunctionConfig(name="f", handler="app.handler", ephemeral_storage_mb=2048, egress=True)
    again = FunctionConfig.from_dict(cfg.to_dict())
    assert again.ephemeral_storage_mb == 2048 and again.egress is True
    assert FunctionConfig.from_dict({"name": "f", "handler": "app.handler"}).egress is False
    for bad in (511, 10241, "512"):
        with pytest.raises(ConfigError, match="ephemeral storage"):
            FunctionConfig(name="f", handler="app.handler", ephemeral_storage_mb=bad)
