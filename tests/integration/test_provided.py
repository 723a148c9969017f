"""`provided` runtimes: an executable `bootstrap` (here a stdlib Python script)
speaking the Runtime API itself, checkpointed at its first GET /invocation/next, or
at GET /restore/next when it calls that."""

from __future__ import annotations

import json

import pytest

from snapstart.errors import ConfigError, PublishError

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

PROVIDED = {"handler": "echo.handler", "runtime": "provided"}


def _payload(result) -> dict:
    return json.loads(result.payload)


def test_provided_published_restored_warm_and_cold(manager, publish):
    pub = publish("provided-echo", **PROVIDED)
    assert pub.version == 1
    first = manager.invoke("provided-echo", b'{"n": 1}', force_new=True)
    second = manager.invoke("provided-echo", b'{"n": 2}', force_new=True)
    warm = manager.invoke("provided-echo", b'{"n": 3}')
    a, b, w = _payload(first), _payload(second), _payload(warm)
    assert (first.start_type, second.start_type, warm.start_type) == \
        ("restored", "restored", "warm")
    assert a["event"] == {"n": 1} and w["event"] == {"n": 3}
    assert a["handler"] == "echo.handler" and a["cwd"] == a["task_root"]
    assert a["init_type"] == "snap-start" and a["restored_via_restore_next"] is False
    assert a["init_at"] == b["init_at"] == w["init_at"]          # init ran once, at publish
    assert a["calls"] == b["calls"] == 1 and w["calls"] == 2
    assert a["netns"] != b["netns"] and a["urandom"] != b["urandom"]
    assert b"provided-echo: init" not in first.logs

    failed = manager.invoke("provided-echo", b'{"fail": true}')
    assert failed.function_error == "Unhandled" and failed.start_type == "warm"
    assert _payload(failed) == {"errorMessage": "asked to fail", "errorType": "Custom.Failure",
                                "stackTrace": ["bootstrap: line 1"]}

    cold = manager.invoke("provided-echo", no_snapshot=True, force_new=True)
    assert cold.start_type == "cold" and _payload(cold)["init_type"] == "on-demand"


def test_provided_runtime_using_restore_next(manager, publish):
    publish("provided-echo", **PROVIDED, environment={"USE_RESTORE_NEXT": "1"})
    first = manager.invoke("provided-echo", force_new=True)
    warm = manager.invoke("provided-echo")
    assert (first.start_type, warm.start_type) == ("restored", "warm")
    assert _payload(first)["restored_via_restore_next"] is True
    assert _payload(warm)["calls"] == 2


def test_provided_init_error_and_missing_bootstrap(manager, publish):
    with pytest.raises(PublishError) as info:
        publish("provided-echo", name="broken", **PROVIDED, environment={"FAIL_INIT": "1"})
    assert info.value.error_type == "Custom.InitFailed"
    assert manager.registry.versions("broken") == []
    with pytest.raises(ConfigError) as missing:
        publish("node-hello", name="nobootstrap", **PROVIDED)
    assert missing.value.error_type == "Runtime.InvalidEntrypoint"
