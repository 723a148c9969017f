"""Invoke API pieces that need no root: names, error mapping, limits, event queue."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from snapstart.errors import (ConfigError, FunctionNotFoundError, InvalidNameError,
                              PayloadError, ThrottledError)
from snapstart.events import EventStore, EventWorker, RetryPolicy
from snapstart.invoke_api.errors import from_exception
from snapstart.invoke_api.names import parse_function_ref
from snapstart.manager.limits import ConcurrencyLimits


@pytest.mark.parametrize("ref,qualifier,expected", [
    ("hello", None, ("hello", None)),
    ("hello:live", None, ("hello", "live")),
    ("hello:$LATEST", None, ("hello", "$LATEST")),
    ("123456789012:function:hello", None, ("hello", None)),
    ("arn:aws:lambda:us-east-1:123456789012:function:hello:3", None, ("hello", "3")),
    ("hello", "2", ("hello", "2")),
])
def test_function_refs(ref, qualifier, expected):
    assert parse_function_ref(ref, qualifier) == expected


@pytest.mark.parametrize("ref", ["", "../etc", "a/b", "hel.lo", "x" * 65, "a:b:c", "a:", "a\0"])
def test_bad_function_refs(ref):
    with pytest.raises(InvalidNameError):
        parse_function_ref(ref)


def test_conflicting_qualifier():
    with pytest.raises(ConfigError):
        parse_function_ref("hello:1", "2")


def test_error_mapping():
    assert from_exception(FunctionNotFoundError("x")).status == 404
    assert from_exception(PayloadError("x")).status == 400
    assert from_exception(PayloadError("x", error_type="RequestTooLargeException")).status == 413
    throttle = from_exception(ThrottledError("Rate Exceeded.", reason="R"))
    status, headers, body = throttle.parts()
    assert status == 429 and headers["Retry-After"] == "1"
    assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert json.loads(body) == {"Type": "User", "message": "Rate Exceeded.", "Reason": "R"}
    status, headers, body = from_exception(KeyError("secret")).parts()
    assert status == 500 and b"secret" not in body


def test_reserved_concurrency_caps_and_guarantees(tmp_path):
    limits = ConcurrencyLimits(3, path=tmp_path / "c.json")
    limits.set_reserved("a", 2)
    limits.acquire("a")
    limits.acquire("a")
    with pytest.raises(ThrottledError) as info:                    # capping
        limits.acquire("a")
    assert info.value.reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
    limits.acquire("b")                                            # shared pool: 3 - 2 = 1
    with pytest.raises(ThrottledError) as info:                    # guaranteed share of a
        limits.acquire("c")
    assert info.value.reason == "ConcurrentInvocationLimitExceeded"
    limits.release("b")
    limits.acquire("c")
    with pytest.raises(ConfigError):
        limits.set_reserved("b", 2)                                # 2 + 2 > 3
    assert ConcurrencyLimits(3, path=tmp_path / "c.json").reserved("a") == 2   # persisted
    limits.set_reserved("z", 0)
    with pytest.raises(ThrottledError):
        limits.acquire("z")


def _result(error: bool):
    return SimpleNamespace(function_error="Unhandled" if error else None,
                           payload=b'{"errorType": "E"}' if error else b"{}")


class FakeManager:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def invoke(self, name, payload, **kw):
        self.calls.append((name, payload, kw))
        outcome = self.outcomes.pop(0) if self.outcomes else False
        if isinstance(outcome, Exception):
            raise outcome
        return _result(outcome)


def _drain(store, worker, timeout=10.0):
    worker.start()
    deadline = time.monotonic() + timeout
    while store.count_pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop()


def test_event_retried_twice_then_failed(tmp_path):
    store = EventStore(tmp_path / "events.db")
    manager = FakeManager([True, True, True])
    store.add("fn", None, b'{"a": 1}')
    _drain(store, EventWorker(store, manager, policy=RetryPolicy(retries=2, backoff_s=0.01),
                              poll_s=0.01))
    assert len(manager.calls) == 3
    failed = store.failed()
    assert len(failed) == 1 and failed[0].attempts == 3 and "Unhandled" in failed[0].error


def test_event_success_after_throttle_and_one_failure(tmp_path):
    store = EventStore(tmp_path / "events.db")
    manager = FakeManager([ThrottledError("x"), True, False])
    event_id = store.add("fn", "1", b"{}")
    _drain(store, EventWorker(store, manager,
                              policy=RetryPolicy(retries=2, backoff_s=0.01,
                                                 throttle_delay_s=0.01), poll_s=0.01))
    assert len(manager.calls) == 3 and store.failed() == [] and store.pending() == []
    assert all(kw["request_id"] == event_id and kw["qualifier"] == "1"
               for _, _, kw in manager.calls)


def test_event_for_unknown_function_fails_at_once(tmp_path):
    store = EventStore(tmp_path / "events.db")
    manager = FakeManager([FunctionNotFoundError("gone")])
    store.add("fn", None, b"{}")
    _drain(store, EventWorker(store, manager, poll_s=0.01))
    assert len(manager.calls) == 1 and len(store.failed()) == 1


def test_events_survive_reopen(tmp_path):
    store = EventStore(tmp_path / "events.db")
    event_id = store.add("fn", None, b"{}")
    store.close()
    assert [e.id for e in EventStore(tmp_path / "events.db").pending()] == [event_id]
