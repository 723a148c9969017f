"""Malformed Runtime API traffic from inside the sandbox (issue 6).

The function ``fault-rapi`` talks raw HTTP to the agent on 127.0.0.1:9001 from its
own handler (as the unprivileged, seccomp-filtered runtime user): wrong request
ids, double and oversized responses, garbage bytes, unknown paths, wrong methods,
restore/next outside snap-start, an abandoned GET /next. Each case asserts the
agent's answer, that the real invocation still completes with a result in
Lambda's shape, that the next invokes work, and that nothing leaks
(tests/leaks.py). One publish serves the module; each test has its own Manager.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig, Settings
from snapstart.manager import Manager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import LeakCheck  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


@pytest.fixture(scope="module")
def published():
    """Settings of a private home where ``fault-rapi`` version 1 is published."""
    base = Path(tempfile.mkdtemp(prefix="snapstart-test-", dir="/tmp"))
    os.chmod(base, 0o711)
    shm = Path("/dev/shm") / f"snapstart-test-{uuid.uuid4().hex[:12]}"
    settings = Settings.from_env(dict(os.environ, SNAPSTART_HOME=str(base / "home"),
                                      SNAPSTART_SHM=str(shm)))
    try:
        with Manager(settings, keep_warm=False) as manager:
            manager.publish(FUNCTIONS / "fault-rapi",
                            FunctionConfig(name="rapi", handler="app.handler", timeout_s=10))
        yield settings
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def _printed(output: bytes, case: str) -> dict:
    """The RAPI-RESULT line the handler printed for ``case``."""
    for line in output.decode("utf-8", "replace").splitlines():
        if line.startswith("RAPI-RESULT "):
            seen = json.loads(line[len("RAPI-RESULT "):])
            if seen.get("case") == case:
                return seen
    raise AssertionError(f"the handler printed no result for {case}: {output[-2000:]!r}")


def _lambda_error(result) -> dict:
    assert result.function_error == "Unhandled"
    err = json.loads(result.payload)
    assert set(err) >= {"errorMessage", "errorType"}
    return err


def _statuses(value) -> list[int]:
    """Every HTTP status in a case's observations ([status, body] pairs, lists of them,
    lists of bare statuses)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _statuses(v)]
    if isinstance(value, list):
        if len(value) == 2 and _is_status(value[0]) and not _is_status(value[1]):
            return [value[0]]
        return [s for v in value for s in _statuses(v)]
    return [value] if _is_status(value) else []


def _is_status(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600


def _check_wrong_id(seen, result):
    assert seen["response"][0] == 400 and seen["response"][1]["errorType"] == "InvalidRequestID"
    assert seen["error"][0] == 400 and seen["error"][1]["errorType"] == "InvalidRequestID"
    assert json.loads(result.payload)["case"] == "wrong_id"       # the real result arrived


def _check_double_response(seen, result):
    assert seen["first"][0] == 202
    assert seen["second"][0] == 400
    assert seen["second"][1]["errorType"] == "InvalidStateTransition"
    assert seen["error_after"][0] == 400
    assert json.loads(result.payload) == {"from": "handler"}        # the first one counts


def _check_huge(seen, result):
    assert seen["huge"][0] == 413
    assert _lambda_error(result)["errorType"] == "Function.ResponseSizeTooLarge"


def _check_garbage(seen, result):
    for key in ("binary", "no_colon", "bad_version", "bad_length", "huge_header",
                "only_newlines"):
        statuses = _statuses(seen[key])
        assert statuses and all(400 <= s < 500 for s in statuses), (key, seen[key])
    assert seen["huge_header"][0][0] == 431
    assert json.loads(result.payload)["case"] == "garbage"


def _check_unknown_paths(seen, result):
    assert seen["paths"] == [404] * len(seen["paths"])


def _check_wrong_methods(seen, result):
    assert seen["methods"] == [405] * len(seen["methods"])


def _check_restore_next_restored(seen, result):
    # a restored clone has been resumed: restore/next answers at once (idempotent)
    assert seen["restore_next"][0] == 200
    assert seen["init_error"][0] == 403


def _check_restore_next_cold(seen, result):
    assert seen["restore_next"][0] == 403
    assert seen["restore_next"][1]["errorType"] == "InvalidStateTransition"
    assert seen["init_error"][0] == 403


def _check_pipelined(seen, result):
    assert [s for s, _ in seen["pipelined"]] == [404, 404, 404]


def _check_nothing(seen, result):
    assert json.loads(result.payload)["alive"] is True


def _check_abandoned_next(seen, result):
    assert seen["second_next"] == "parked"
    assert json.loads(result.payload)["case"] == "abandoned_next"


def _check_error_garbage(seen, result):
    assert seen["error"][0] == 202
    err = _lambda_error(result)
    assert err["errorType"].startswith("Weird.EEE") and len(err["errorType"]) <= 256
    assert "not json at all" in err["errorMessage"]


CASES = [
    # (case, cold?, check)
    ("wrong_id", False, _check_wrong_id),
    ("double_response", False, _check_double_response),
    ("huge_response", False, _check_huge),
    ("huge_chunked", False, _check_huge),
    ("garbage", False, _check_garbage),
    ("unknown_paths", False, _check_unknown_paths),
    ("wrong_methods", False, _check_wrong_methods),
    ("restore_next", False, _check_restore_next_restored),
    ("restore_next", True, _check_restore_next_cold),
    ("pipelined", False, _check_pipelined),
    ("many_connections", False, _check_nothing),
    ("abandoned_next", False, _check_abandoned_next),
    ("error_garbage", False, _check_error_garbage),
]


@pytest.mark.parametrize("case,cold,check", CASES,
                         ids=[c + ("-cold" if cold else "") for c, cold, _ in CASES])
def test_malformed_runtime_api_traffic(published, case, cold, check, managers):
    leaks = LeakCheck(published)
    output = bytearray()
    event = json.dumps({"case": case}).encode()
    with managers(published, log_sink=lambda name, stream, data: output.extend(data)) \
            as manager:
        result = manager.invoke("rapi", event, no_snapshot=cold, force_new=True)
        assert result.start_type == ("cold" if cold else "restored"), result.notes
        # the platform keeps serving: the same clone if it survived, else a new one
        t0 = time.monotonic()
        nxt = manager.invoke("rapi", b'{"case": "none"}', no_snapshot=cold)
        recover = time.monotonic() - t0
        assert nxt.function_error is None and json.loads(nxt.payload)["alive"] is True
        again = manager.invoke("rapi", b'{"case": "none"}', no_snapshot=cold)
        assert again.function_error is None and again.start_type == "warm"
    # what the handler saw, from its output: a handler that posted its own result
    # printed it after that, so it arrived with a later invocation (or the exit)
    seen = _printed(bytes(output), case)
    assert seen["alive"] is True, seen          # the agent answered after the abuse
    check(seen, result)
    label = "Runtime API: " + case + (" (cold)" if cold else "")
    saw = (f"{json.loads(result.payload).get('errorType')}" if result.function_error
           else "invocation completed") + f"; agent: {sorted(set(_statuses(seen)))}"
    leaks.finish(label, saw, recover)
