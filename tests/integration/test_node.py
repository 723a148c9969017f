"""Node.js functions: the real npm aws-lambda-ric 3.x in real sandboxes, checkpointed
by real CRIU at the runtime's first GET /invocation/next (it has no restore/next).
Needs `make node-ric`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig, Settings
from snapstart.errors import PublishError
from snapstart.runtimes import runtime_spec

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

NODE = {"handler": "index.handler", "runtime": "node"}


def _payload(result) -> dict:
    return json.loads(result.payload)


def test_node_spec_checkpoints_at_first_next_with_preload_only_for_snap_start(tmp_path):
    config = FunctionConfig(name="n", environment={"NODE_OPTIONS": "--max-old-space-size=100"},
                            **NODE)
    tmp_path.chmod(0o755)                        # the code dir, as publish shares it
    settings = Settings.from_env({"SNAPSTART_HOME": str(tmp_path)})
    common = dict(identity=(800000, 800000), code_dir=tmp_path, packages_dir=None,
                  version="1")
    snap = runtime_spec(config, settings, snap_start=True, **common)
    cold = runtime_spec(config, settings, snap_start=False, **common)
    assert snap.snapshot_on_next and cold.snapshot_on_next
    assert snap.argv[1].endswith("aws-lambda-ric/bin/index.mjs") and snap.argv[2] == "index.handler"
    assert snap.env["UV_USE_IO_URING"] == cold.env["UV_USE_IO_URING"] == "0"
    assert "snapstart-preload.js" in snap.env["NODE_OPTIONS"]
    assert "--openssl-config=" in snap.env["NODE_OPTIONS"]
    assert snap.env["NODE_OPTIONS"].endswith("--max-old-space-size=100")     # the user's kept
    assert cold.env["NODE_OPTIONS"] == "--max-old-space-size=100"            # no preload cold
    assert "bootstrap/node/modules" in cold.env["NODE_PATH"]


def test_node_publish_restored_warm_and_cold(manager, publish):
    pub = publish("node-hello", **NODE)
    assert pub.version == 1 and pub.image_bytes > 1_000_000
    first = manager.invoke("node-hello", b'{"k": 1}', force_new=True)
    second = manager.invoke("node-hello", b'{"k": 2}')
    a, b = _payload(first), _payload(second)
    assert first.start_type == "restored" and second.start_type == "warm"
    assert first.function_error is None and a["event"] == {"k": 1}
    assert a["init_type"] == "snap-start" and a["function_version"] == "1"
    assert a["execution_env"].startswith("AWS_Lambda_nodejs") and a["io_uring"] == "0"
    # snapinit is PID 1 (not in the snapshot), the agent PID 2, node its child
    assert (a["pid"], a["ppid"]) == (3, 2)
    assert b["calls"] == 2 and b["netns"] == a["netns"] and b["init_at"] == a["init_at"]
    assert b"node-hello: handling" in first.logs and b"init ran" not in first.logs
    other = manager.invoke("node-hello", force_new=True)
    assert other.start_type == "restored"
    assert _payload(other)["init_at"] == a["init_at"] and _payload(other)["calls"] == 1

    cold = manager.invoke("node-hello", no_snapshot=True, force_new=True)
    c = _payload(cold)
    assert cold.start_type == "cold" and cold.init_duration_ms > 0
    assert c["init_type"] == "on-demand" and c["init_at"] != a["init_at"]
    assert b"init ran" in cold.logs


def test_node_function_error_shape_restored_warm_cold(manager, publish):
    publish("node-errors", **NODE)
    restored = manager.invoke("node-errors", b'{"action": "raise"}')
    warm = manager.invoke("node-errors", b'{"action": "raise"}')
    cold = manager.invoke("node-errors", b'{"action": "raise"}', no_snapshot=True,
                          force_new=True)
    assert [r.start_type for r in (restored, warm, cold)] == ["restored", "warm", "cold"]
    for result in (restored, warm, cold):
        assert result.function_error == "Unhandled"
        err = _payload(result)
        assert err["errorType"] == "CustomError"
        assert err["errorMessage"] == "something went wrong"
        # aws-lambda-ric sends "trace"; callers get Lambda's "stackTrace" list
        assert isinstance(err["stackTrace"], list) and "trace" not in err
        assert any("index.js" in line for line in err["stackTrace"])
    ok = manager.invoke("node-errors", b'{"action": "none"}')
    assert ok.function_error is None and ok.start_type == "warm"
    crash = manager.invoke("node-errors", b'{"action": "exit"}')
    assert _payload(crash)["errorType"] == "Runtime.ExitError"


@pytest.mark.parametrize("directory,handler,env,error_type", [
    ("node-initerror", "index.handler", {}, "ConfigMissing"),
    ("node-hello", "index.missing", {}, "Runtime.HandlerNotFound"),
    ("node-hello", "nomodule.handler", {}, "Runtime.ImportModuleError"),
    ("node-hookfail", "index.handler", {"FAIL_PHASE": "before"}, "Runtime.BeforeSnapshotError"),
])
def test_node_init_failures_fail_publish_with_runtime_error_type(manager, publish, directory,
                                                                 handler, env, error_type):
    with pytest.raises(PublishError) as info:
        publish(directory, name="broken", handler=handler, runtime="node", environment=env)
    assert info.value.error_type == error_type
    assert manager.registry.versions("broken") == []
    assert manager.store.versions("broken") == []


@pytest.mark.parametrize("handler,expected", [
    ("index.handler", {"sync", "async", "later", "handle"}),   # CommonJS, init promise
    ("esm.handler", {"tla"}),                                   # ES module, top-level await
])
def test_node_file_io_at_init_checkpoints_and_restores(manager, publish, handler, expected):
    publish("node-fileio", handler=handler, runtime="node")
    text = "hello from a file read at init\n"
    results = [manager.invoke("node-fileio", force_new=True) for _ in range(2)]
    results.append(manager.invoke("node-fileio"))
    assert [r.start_type for r in results] == ["restored", "restored", "warm"]
    outs = [_payload(r) for r in results]
    for out in outs:
        assert {k: out[k] for k in expected} == {k: text if k != "handle" else "hello"
                                                 for k in expected}
    if "async_at" in outs[0]:
        # the init promise settled before the checkpoint: clones did not redo it
        assert len({o["async_at"] for o in outs}) == 1


def test_node_32_clones_get_unique_randomness(manager, publish):
    publish("node-hello", **NODE)
    results = manager.invoke_clones("node-hello", 32)
    assert all(not isinstance(r, Exception) for r in results), \
        [r for r in results if isinstance(r, Exception)][:3]
    outs = [_payload(r) for r in results]
    assert all(r.start_type == "restored" for r in results)
    assert len({o["netns"] for o in outs}) == 32
    for key in ("random_bytes", "random_uuid", "web_uuid", "get_random_values", "random_int",
                "math_random", "captured_random", "ecdh"):
        values = [str(o[key]) for o in outs]
        assert len(set(values)) == 32, f"{key} repeated across clones: {sorted(values)[:4]}"
    # what init drew is part of the snapshot, the same in every clone
    for key in ("init_at", "init_random", "init_uuid", "init_int"):
        assert len({str(o[key]) for o in outs}) == 1, key


def test_node_hooks_order_and_once_per_phase(manager, publish):
    publish("node-hooks", **NODE)
    r1 = manager.invoke("node-hooks", force_new=True)
    r2 = manager.invoke("node-hooks", force_new=True)
    warm = manager.invoke("node-hooks")
    # before-snapshot LIFO once at publish; after-restore FIFO in each clone, before
    # the handler; never again on warm invokes
    for result in (r1, r2, warm):
        out = _payload(result)
        assert out["order"] == ["b2", "b1", "a1", "a2"] and out["ready"] is True
    assert warm.start_type == "warm"
    assert b"hook a1" in r1.logs and b"hook b1" not in r1.logs and b"hook a1" not in warm.logs
    # after-restore hooks see the reseeded Math.random
    assert _payload(r1)["random_in_hook"] != _payload(r2)["random_in_hook"]
    cold = manager.invoke("node-hooks", no_snapshot=True, force_new=True)
    assert _payload(cold)["order"] == [] and _payload(cold)["ready"] is False


def test_node_after_restore_failure_discards_clone(manager, publish):
    publish("node-hookfail", handler="index.handler", runtime="node",
            environment={"FAIL_PHASE": "after"})
    result = manager.invoke("node-hookfail")
    assert result.function_error == "Unhandled"
    assert _payload(result)["errorType"] == "Runtime.AfterRestoreError"
    assert manager.idle_count("node-hookfail") == 0


def test_node_handler_in_subdirectory(manager, tmp_path):
    code = tmp_path / "fn"
    (code / "src").mkdir(parents=True)
    (code / "src" / "app.js").write_text("exports.run = async (e) => ({ sub: true, e });\n")
    code.chmod(0o755)
    manager.publish(Path(code), FunctionConfig(name="node-sub", handler="src/app.run",
                                               runtime="node"))
    out = _payload(manager.invoke("node-sub", b'{"x": 1}'))
    assert out == {"sub": True, "e": {"x": 1}}
