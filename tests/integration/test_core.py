"""Core: publish into a CRIU snapshot, invoke restored / warm / cold (real CRIU,
real awslambdaric, real namespaces, as root)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from snapstart.errors import ConfigError, FunctionNotFoundError, PublishError

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "functions"


def _payload(result) -> dict:
    return json.loads(result.payload)


def test_publish_then_restored_invoke_runs_init_once(manager, publish):
    pub = publish("hello")
    assert pub.version == 1 and pub.image_bytes > 1_000_000
    assert pub.init_duration_ms > 0 and pub.dump_duration_ms > 0
    first = manager.invoke("hello", b'{"k": 1}', force_new=True)
    second = manager.invoke("hello", b'{"k": 2}', force_new=True)
    a, b = _payload(first), _payload(second)
    assert first.start_type == second.start_type == "restored"
    assert first.function_error is None and a["event"] == {"k": 1}
    # init ran once, at publish: both clones carry the same init timestamp and pid
    assert a["init_at"] == b["init_at"]
    assert a["calls"] == b["calls"] == 1
    assert a["init_type"] == "snap-start" and a["function_version"] == "1"
    # the runtime is PID 2 of its own PID namespace, whose PID 1 (snapinit) is not in
    # the snapshot: a restored runtime's parent is the manager, outside its namespace
    assert (a["pid"], a["ppid"]) == (2, 0)
    assert a["pidns"] != os.stat("/proc/self/ns/pid").st_ino
    assert first.restore_duration_ms is not None and first.restore_duration_ms > 0
    assert b"init ran" not in first.logs  # init output belongs to publish, not to a restore


def test_restored_ahead_clones_resume_unique_per_request(settings, managers):
    """restore_ahead: a version invoked once gets a clone restored ahead; a request
    that needs a new clone resumes it (start type restored-pool): its after-restore
    hooks run then, so each pooled clone is still a fresh, unique one."""
    import time

    from snapstart.config import FunctionConfig

    with managers(restore_ahead=1) as manager:
        manager.publish(FUNCTIONS_DIR / "hello", FunctionConfig(name="hello",
                                                                handler="app.handler"))
        first = manager.invoke("hello", b"{}", force_new=True)
        assert first.start_type == "restored"
        seen = {_payload(first)["uuid4"]}
        for _ in range(3):
            deadline = time.monotonic() + 20
            while manager.ahead.parked(("hello", "1")) < 1:
                assert time.monotonic() < deadline, "no clone was restored ahead"
                time.sleep(0.01)
            pooled = manager.invoke("hello", b'{"k": 2}', force_new=True)
            out = _payload(pooled)
            assert pooled.start_type == "restored-pool" and pooled.function_error is None
            assert out["event"] == {"k": 2} and out["calls"] == 1     # a fresh clone
            assert out["init_at"] == _payload(first)["init_at"]       # init ran once
            assert pooled.restore_duration_ms is not None             # its resume
            seen.add(out["uuid4"])
        assert len(seen) == 4                                         # every clone unique
    assert manager.ahead.parked() == 0                                # closed: none left


def test_warm_reuse_hits_same_clone(manager, publish):
    publish("hello")
    first = manager.invoke("hello", b"{}")
    second = manager.invoke("hello", b"{}")
    assert (first.start_type, second.start_type) == ("restored", "warm")
    a, b = _payload(first), _payload(second)
    assert a["netns"] == b["netns"] and b["calls"] == 2
    assert manager.idle_count("hello") == 1


def test_eight_concurrent_clones_isolated_and_unique(manager, publish):
    publish("netprobe")
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen(8)
    port = host.getsockname()[1]
    try:
        results = manager.invoke_clones("netprobe", 8, json.dumps({"host_port": port}).encode())
    finally:
        host.close()
    assert all(not isinstance(r, Exception) for r in results), results
    outs = [_payload(r) for r in results]
    assert len({o["netns"] for o in outs}) == 8
    assert os.stat("/proc/self/ns/net").st_ino not in {o["netns"] for o in outs}
    assert all(o["bind"] == "ok" for o in outs)          # same port in every clone
    assert all(o["host_connect"] != "connected" for o in outs)
    assert all(o["links"] == ["lo"] for o in outs)


def test_clones_get_distinct_randomness(manager, publish):
    """32 clones of one snapshot, restored at once: no two share os.urandom,
    random, uuid4 or secrets output (CRNG reseed + after-restore reseed)."""
    publish("hello")
    results = manager.invoke_clones("hello", 32)
    assert all(not isinstance(r, Exception) for r in results), results
    assert {r.start_type for r in results} == {"restored"}
    outs = [_payload(r) for r in results]
    for key in ("urandom", "random", "uuid4", "secrets"):
        values = [o[key] for o in outs]
        assert len(set(values)) == len(values), f"{key} repeated across clones: {values}"
    assert len({o["init_at"] for o in outs}) == 1


def test_hook_order_and_once_per_phase(manager, publish):
    publish("hooks")
    r1 = manager.invoke("hooks", force_new=True)
    r2 = manager.invoke("hooks", force_new=True)
    # before-snapshot LIFO once at publish, after-restore FIFO on every restore
    assert _payload(r1)["order"] == ["b2", "b1", "a1", "a2"]
    assert _payload(r2)["order"] == ["b2", "b1", "a1", "a2"]
    assert b"hook a1" in r1.logs and b"hook b1" not in r1.logs


def test_after_restore_failure_discards_clone(manager, publish):
    publish("restorefail")
    result = manager.invoke("restorefail")
    assert result.function_error == "Unhandled"
    err = _payload(result)
    assert err["errorType"] == "Runtime.AfterRestoreError"
    assert manager.idle_count("restorefail") == 0


@pytest.mark.parametrize("directory,handler,error_type", [
    ("importerror", "app.handler", "Runtime.ImportModuleError"),
    ("syntaxerror", "app.handler", "Runtime.UserCodeSyntaxError"),
    ("hello", "app.missing", "Runtime.HandlerNotFound"),
    ("initexc", "app.handler", "RuntimeError"),
    ("badhook", "app.handler", "Runtime.BeforeSnapshotError"),
])
def test_init_failures_fail_publish_with_runtime_error_type(manager, publish, directory,
                                                            handler, error_type):
    with pytest.raises(PublishError) as info:
        publish(directory, name="broken", handler=handler)
    assert info.value.error_type == error_type
    assert manager.registry.versions("broken") == []          # nothing half-published
    assert manager.store.versions("broken") == []


def test_function_error_shape(manager, publish):
    publish("errors")
    result = manager.invoke("errors", b'{"action": "raise"}')
    assert result.function_error == "Unhandled"
    err = _payload(result)
    assert err["errorType"] == "CustomError"
    assert err["errorMessage"] == "something went wrong"
    assert isinstance(err["stackTrace"], list)
    ok = manager.invoke("errors", b'{"action": "none"}')       # the clone survived
    assert ok.function_error is None and ok.start_type == "warm"


def test_runtime_crash_and_timeout_are_lambda_errors(manager, publish):
    publish("errors", timeout_s=1)
    crash = manager.invoke("errors", b'{"action": "exit"}')
    assert crash.function_error == "Unhandled"
    assert _payload(crash)["errorType"] == "Runtime.ExitError"
    # what it printed is kept, then Lambda's own lines; real duration and memory
    assert crash.logs.startswith(b"errors: about to exit\n"), crash.logs
    assert (f"RequestId: {crash.request_id} Error: Runtime exited with error: "
            "exit status 3\nRuntime.ExitError\n").encode() in crash.logs
    assert crash.duration_ms > 0 and crash.max_memory_used_mb
    slow = manager.invoke("errors", b'{"action": "sleep", "seconds": 5}')
    assert _payload(slow)["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in _payload(slow)["errorMessage"]
    assert b"errors: about to sleep\n" in slow.logs
    assert b"Task timed out after 1.00 seconds" in slow.logs
    assert slow.duration_ms >= 1000 and slow.max_memory_used_mb     # ran until the timeout
    after = manager.invoke("errors", b'{"action": "none"}')
    assert after.function_error is None and after.start_type == "restored"


def test_cold_start_without_snapshot(manager, publish):
    publish("hello")
    cold = manager.invoke("hello", no_snapshot=True, force_new=True)
    assert cold.start_type == "cold" and cold.init_duration_ms > 0
    assert _payload(cold)["init_type"] == "on-demand"
    latest = manager.invoke("hello", qualifier="$LATEST", force_new=True)
    assert latest.start_type == "cold"


def test_versions_and_aliases(manager, publish):
    assert publish("hello").version == 1
    assert publish("hello").version == 2
    manager.registry.set_alias("hello", "live", 1)
    result = manager.invoke("hello", qualifier="live", force_new=True)
    assert _payload(result)["function_version"] == "1"
    # the ARN the caller used, as on Lambda: alias, version, none, $LATEST
    arn = manager.settings.function_arn("hello")
    assert _payload(result)["invoked_arn"] == f"{arn}:live"
    assert _payload(manager.invoke("hello", qualifier="1"))["invoked_arn"] == f"{arn}:1"
    unqualified = _payload(manager.invoke("hello", force_new=True))
    assert unqualified["invoked_arn"] == arn and unqualified["function_version"] == "2"
    latest = _payload(manager.invoke("hello", qualifier="$LATEST"))
    assert latest["invoked_arn"] == f"{arn}:$LATEST"
    with pytest.raises(FunctionNotFoundError):
        manager.invoke("hello", qualifier="nope")
    with pytest.raises(FunctionNotFoundError):
        manager.invoke("missing-function")


def test_runtime_is_confined(manager, publish, settings):
    """no_new_privs, seccomp filter, no capabilities, and an unprivileged uid/gid:
    never root (the sandbox reaches its code through bind mounts, whatever the
    modes of the host directories above it)."""
    publish("hello")
    expected = manager.registry.identity("hello")
    assert 0 not in expected
    for result in (manager.invoke("hello", force_new=True),
                   manager.invoke("hello", no_snapshot=True, force_new=True)):
        out = _payload(result)
        assert (out["uid"], out["gid"]) == expected
        assert out["status"]["NoNewPrivs"] == "1"
        assert out["status"]["Seccomp"] == "2"
        assert out["status"]["CapEff"] == "0000000000000000"
        assert out["status"]["CapPrm"] == "0000000000000000"


def test_encrypted_snapshot_restores_and_hides_secrets(settings, monkeypatch, managers):
    """SNAPSTART_ENCRYPTION_KEY: chunks, manifest and the registry's environment
    variables are AES-GCM at rest; a restore works with the key; without it the
    function's environment cannot be opened: a clear error, not a start without its
    secrets."""
    from pathlib import Path

    from snapstart.config import FunctionConfig

    functions = Path(__file__).resolve().parent.parent / "functions"
    monkeypatch.setenv("SNAPSTART_ENCRYPTION_KEY", "ab" * 32)
    secret = "s3cr3t-value-in-env"
    with managers() as manager:
        manager.publish(functions / "hello", FunctionConfig(
            name="hello", handler="app.handler", environment={"DB_PASSWORD": secret}))
        result = manager.invoke("hello", force_new=True)
        assert result.start_type == "restored"
    for path in settings.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    monkeypatch.delenv("SNAPSTART_ENCRYPTION_KEY")
    with managers() as manager:
        manager.store.clear_l1()
        with pytest.raises(ConfigError, match="encrypted"):
            manager.invoke("hello", force_new=True)


def test_publish_leaves_the_images_in_l1_for_the_first_restore(manager, publish):
    """The images just dumped become the version's L1 entry (moved, not copied): the
    first restore does not decompress what the publish just compressed."""
    publish("hello")
    before = manager.store.l1_stats()
    assert before["entries"] == 1 and before["misses"] == 1    # the adoption itself
    result = manager.invoke("hello", force_new=True)
    assert result.start_type == "restored"
    after = manager.store.l1_stats()
    assert after["misses"] == before["misses"] and after["hits"] == before["hits"] + 1
    # and the entry is the stored version: verify re-hashes the store, not L1
    assert manager.store.verify("hello", 1) == []


def test_snapshot_of_another_agent_protocol_is_refused_and_falls_back_cold(manager, publish,
                                                                         monkeypatch):
    """Upgrade safety: the agent frozen in an image speaks the control protocol of the
    snapstart that published it (recorded in the manifest). A host that does not
    speak it (here: a later snapstart whose only version is the next one) refuses the
    snapshot with a clear note and starts cold; nothing is restored."""
    from bootstrap import protocol

    publish("hello")
    meta = manager.store.manifest("hello", 1).meta
    assert meta["agent_protocol"] == protocol.VERSION and meta["snapstart_version"]
    monkeypatch.setattr(protocol, "SUPPORTED", frozenset({protocol.VERSION + 1}))
    result = manager.invoke("hello", force_new=True)
    assert result.start_type == "cold" and result.function_error is None
    assert any(f"control protocol {protocol.VERSION}" in note and
               "publish the function again" in note for note in result.notes), result.notes
