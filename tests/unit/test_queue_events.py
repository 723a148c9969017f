"""Event source mappings without a broker: event shapes, partial batch responses, the
mapping state machine and state file, config following, and what a poller does with
each outcome (fake channel, fake SQS client, fake service)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from snapstart.errors import (ConfigError, FunctionNotFoundError, InvalidTransition,
                              SandboxTimeoutError, ThrottledError)
from snapstart.results import InvokeResult
from snapstart.triggers import config as trigger_config
from snapstart.triggers import queues
from snapstart.triggers.queues import (MappingSpec, MappingState, MappingStatus, Mappings,
                                       Outcome, StatusBoard, describe, describe_lines,
                                       redact, run_invocation)
from snapstart.triggers.rabbitmq import (AttemptCounter, Delivery, RabbitPoller,
                                         java_timestamp, rmq_event)
from snapstart.triggers.sqs import (SqsPoller, batch_item_failures, endpoint_for,
                                    parse_arn, sqs_record)

import pika  # noqa: E402 - a dependency of snapstart (pyproject.toml)


def mq_entry(mid: str = "m1", **kw) -> dict:
    entry = {"id": mid, "function": "fn", "qualifier": None, "type": "MQ",
             "source": "amqp://u:pw@127.0.0.1:5672/%2F", "queues": ["q"], "batch_size": 2,
             "batching_window_s": 0, "enabled": True, "options": {"max_retries": 1}}
    entry.update(kw)
    return entry


def sqs_entry(mid: str = "s1", **kw) -> dict:
    entry = {"id": mid, "function": "fn", "type": "SQS",
             "source": "http://127.0.0.1:4566/000000000000/jobs", "batch_size": 10,
             "options": {"function_response_types": ["ReportBatchItemFailures"]}}
    entry.update(kw)
    return entry


class FakeService:
    """invoke_sync returns (or raises) what ``behave`` says for each call."""

    def __init__(self, home: Path, behave=None) -> None:
        self.settings = SimpleNamespace(home=home, region="us-east-1",
                                        account_id="000000000000")
        self.calls: list[dict] = []
        self.behave = behave or (lambda event: b"null")

    def invoke_sync(self, name, qualifier, body, *, trace_id, client_context, **kw):
        event = json.loads(body)
        self.calls.append(event)
        out = self.behave(event)
        if isinstance(out, Exception):
            raise out
        error = None
        if isinstance(out, tuple):
            error, out = out
        return InvokeResult(request_id="r", payload=out, function_error=error,
                            duration_ms=1.0), "1", b""


# ---- shapes ----------------------------------------------------------------------------
def test_java_timestamp_is_lambdas_medium_us_format():
    assert java_timestamp(2001) == "Jan 1, 1970, 12:33:21 AM"
    assert java_timestamp(1_700_000_000) == "Nov 14, 2023, 10:13:20 PM"
    assert java_timestamp(12 * 3600) == "Jan 1, 1970, 12:00:00 PM"
    assert java_timestamp(None) is None


def test_rmq_event_shape():
    props = pika.BasicProperties(content_type="text/plain", headers={
        "h": "v", "b": b"\x01", "n": 10, "t": {"x": "y"}, "l": ["a", 2]},
        delivery_mode=2, message_id="id-1", timestamp=2001, priority=4)
    d = Delivery(queue="orders", delivery_tag=1, redelivered=True, properties=props,
                 body=b'{"a":1}')
    event = rmq_event("arn:aws:mq:us-east-1:0:broker:b:b-1", "/", [d])
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == "arn:aws:mq:us-east-1:0:broker:b:b-1"
    (msg,) = event["rmqMessagesByQueue"]["orders::/"]
    assert msg["redelivered"] is True
    assert base64.b64decode(msg["data"]) == b'{"a":1}'
    bp = msg["basicProperties"]
    assert bp["headers"] == {"h": {"bytes": [118]}, "b": {"bytes": [1]}, "n": 10,
                             "t": {"x": {"bytes": [121]}}, "l": [{"bytes": [97]}, 2]}
    assert bp["timestamp"] == "Jan 1, 1970, 12:33:21 AM"
    assert (bp["contentType"], bp["deliveryMode"], bp["priority"], bp["messageId"],
            bp["bodySize"]) == ("text/plain", 2, 4, "id-1", 7)
    assert set(bp) == {"contentType", "contentEncoding", "headers", "deliveryMode", "priority",
                       "correlationId", "replyTo", "expiration", "messageId", "timestamp",
                       "type", "userId", "appId", "clusterId", "bodySize"}


def test_sqs_record_shape():
    msg = {"MessageId": "m1", "ReceiptHandle": "rh", "Body": "hello", "MD5OfBody": "5d",
           "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
           "MessageAttributes": {"s": {"DataType": "String", "StringValue": "v"},
                                 "b": {"DataType": "Binary", "BinaryValue": b"\xff"}}}
    rec = sqs_record(msg, "arn:aws:sqs:us-east-1:0:jobs", "us-east-1")
    assert rec == {
        "messageId": "m1", "receiptHandle": "rh", "body": "hello", "md5OfBody": "5d",
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
        "messageAttributes": {
            "s": {"stringValue": "v", "stringListValues": [], "binaryListValues": [],
                  "dataType": "String"},
            "b": {"binaryValue": "/w==", "stringListValues": [], "binaryListValues": [],
                  "dataType": "Binary"}},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:0:jobs",
        "awsRegion": "us-east-1"}


@pytest.mark.parametrize("payload,expected", [
    (b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', {"b"}),
    (b'{"batchItemFailures": []}', set()),
    (b'{"batchItemFailures": null}', set()),
    (b'{}', set()),
    (b'null', set()),
    (b'', set()),
    (b'"done"', set()),
    (b'{"batchItemFailures": [{"itemIdentifier": ""}]}', None),
    (b'{"batchItemFailures": [{"itemIdentifier": null}]}', None),
    (b'{"batchItemFailures": [{"itemIdentifier": "zz"}]}', None),
    (b'{"batchItemFailures": [{"id": "a"}]}', None),
    (b'{"batchItemFailures": "a"}', None),
    (b'not json', None),
], ids=lambda v: v.decode() if isinstance(v, bytes) else str(v))
def test_partial_batch_response_rules(payload, expected):
    assert batch_item_failures(payload, ["a", "b", "c"]) == expected


def test_endpoint_and_arn():
    assert parse_arn("arn:aws:sqs:eu-west-1:123:jobs") == ("eu-west-1", "123", "jobs")
    env: dict[str, str] = {}
    assert endpoint_for("http://127.0.0.1:9324/000/q", {}, env) == "http://127.0.0.1:9324"
    assert endpoint_for("https://sqs.us-east-1.amazonaws.com/1/q", {}, env) is None
    assert endpoint_for("http://127.0.0.1:9324/000/q", {}, {"AWS_ENDPOINT_URL_SQS": "x"}) is None
    assert endpoint_for("arn:aws:sqs:us-east-1:1:q", {"endpoint_url": "http://e"}, env) \
        == "http://e"


def test_redact():
    assert redact("amqp://user:secret@host:5672/v") == "amqp://user:***@host:5672/v"
    assert redact("amqp://host/v") == "amqp://host/v"


# ---- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    ({"id": ""}, "needs an id"),
    ({"type": "Kafka"}, "type must be one of"),
    ({"queues": []}, "needs at least one queue"),
    ({"batch_size": 0}, "batch_size"),
    ({"batching_window_s": 301}, "batching_window_s"),
    ({"source": "http://x"}, "amqp://"),
    ({"options": {"dead_letter": "drop"}}, "dead_letter"),
    ({"options": {"max_retries": -1}}, "max_retries"),
    ({"enabled": "yes"}, "enabled"),
])
def test_invalid_mq_mappings_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        MappingSpec.from_entry(mq_entry(**change))


def test_invalid_sqs_mappings_are_named():
    with pytest.raises(ConfigError, match="queue URL"):
        MappingSpec.from_entry(sqs_entry(source="amqp://x"))
    with pytest.raises(ConfigError, match="function_response_types"):
        MappingSpec.from_entry(sqs_entry(options={"function_response_types": ["X"]}))
    spec = MappingSpec.from_entry(sqs_entry())
    assert spec.batch_size == 10 and spec.enabled and spec.queues == ()
    assert MappingSpec.from_entry(mq_entry(batch_size=None) | {"batch_size": 100}).batch_size \
        == 100


# ---- state --------------------------------------------------------------------------------
def test_state_machine_and_state_file(tmp_path):
    board = StatusBoard(tmp_path)
    spec = MappingSpec.from_entry(mq_entry())
    board.add(MappingStatus.of(spec))
    board.to("m1", MappingState.CONNECTING)
    with pytest.raises(InvalidTransition):
        board.to("m1", MappingState.DISABLED)
    board.to("m1", MappingState.POLLING)
    board.count("m1", received=3, acked=2)
    board.problem("m1", "boom")
    path = tmp_path / queues.STATE_FILE
    assert os.stat(path).st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    (m,) = data["mappings"]
    assert data["format"] == 1 and data["pid"] == os.getpid() and data["running"]
    assert m["state"] == "Polling" and m["source"] == "amqp://u:***@127.0.0.1:5672/%2F"
    assert m["counts"]["received"] == 3 and m["counts"]["acked"] == 2
    assert m["last_processing_result"] == "PROBLEM: boom"
    # every state has its row in the table, and STOPPED is final
    assert set(queues.TRANSITIONS) == set(MappingState)
    assert not queues.TRANSITIONS[MappingState.STOPPED]
    # a removed mapping's late poller changes nothing
    board.remove("m1")
    board.to("m1", MappingState.STOPPED)
    board.count("m1", acked=1)
    assert json.loads(path.read_text())["mappings"] == []


def test_describe_running_and_not_running(tmp_path):
    trigger_config.save(tmp_path, trigger_config.Triggers(mappings=[mq_entry(),
                                                                    sqs_entry(type="X")]))
    board = StatusBoard(tmp_path)
    board.add(MappingStatus.of(MappingSpec.from_entry(mq_entry())))
    board.count("m1", acked=4)
    rows = {r["id"]: r for r in describe(tmp_path)}
    assert rows["m1"]["serve"] == "running" and rows["m1"]["state"] == "Starting"
    assert rows["s1"]["state"] == "Invalid" and "type must be" in rows["s1"]["last_error"]
    board.close()
    rows = {r["id"]: r for r in describe(tmp_path)}
    assert rows["m1"]["state"] == "NotRunning" and rows["m1"]["counts"]["acked"] == 4
    lines = describe_lines(list(rows.values()))
    assert lines[0].startswith("m1\tMQ\tamqp://u:***@") and "acked=4" in lines[0]
    # a serve that died (kill -9) is not running either
    board2 = StatusBoard(tmp_path, pid=2 ** 22 + 12345)
    board2.add(MappingStatus.of(MappingSpec.from_entry(mq_entry())))
    assert describe(tmp_path)[0]["serve"] == "not running"


# ---- invocation outcomes --------------------------------------------------------------------
@pytest.mark.parametrize("behave,kind", [
    (lambda e: b'{"ok": 1}', "ok"),
    (lambda e: ("Unhandled", b'{"errorType": "E", "errorMessage": "m"}'), "function_error"),
    (lambda e: SandboxTimeoutError("timed out"), "function_error"),
    (lambda e: ThrottledError("Rate Exceeded."), "throttled"),
    (lambda e: FunctionNotFoundError("no fn"), "unavailable"),
    (lambda e: ValueError("bug"), "function_error"),
])
def test_outcomes(tmp_path, behave, kind):
    service = FakeService(tmp_path, behave)
    out = run_invocation(service, MappingSpec.from_entry(mq_entry()), b"{}", "rabbitmq")
    assert out.kind == kind
    assert out.counts_attempt == (kind == "function_error")
    if kind == "function_error" and out.payload:
        assert out.error == "E: m"


def test_attempt_counter_uses_message_id_digest_and_delivery_count():
    c = AttemptCounter(limit=2)
    p = pika.BasicProperties(message_id="a")
    d = Delivery("q", 1, False, p, b"x")
    assert c.failed(d) == 1 and c.failed(d) == 2
    anon = Delivery("q", 2, False, pika.BasicProperties(), b"y")
    assert c.failed(anon) == 1 and c.failed(Delivery("q", 3, True, pika.BasicProperties(),
                                                     b"y")) == 2
    quorum = Delivery("q", 4, True, pika.BasicProperties(headers={"x-delivery-count": 5}), b"z")
    assert c.failed(quorum) == 6
    assert len(c) == 2            # bounded: the oldest key went


# ---- what a RabbitMQ poller does with each outcome -------------------------------------------
class FakeChannel:
    def __init__(self, unroutable: bool = False) -> None:
        self.log: list[tuple] = []
        self.unroutable = unroutable

    def basic_ack(self, tag):
        self.log.append(("ack", tag))

    def basic_nack(self, tag, requeue=True):
        self.log.append(("nack", tag, requeue))

    def basic_publish(self, exchange, key, body, props, mandatory=False):
        if self.unroutable:
            raise pika.exceptions.UnroutableError([])
        self.log.append(("publish", exchange, key, body, props.headers))


def rabbit(tmp_path, **options) -> tuple[RabbitPoller, StatusBoard]:
    board = StatusBoard(tmp_path)
    spec = MappingSpec.from_entry(mq_entry(options={"max_retries": 1, **options}))
    board.add(MappingStatus.of(spec))
    return RabbitPoller(spec, board, FakeService(tmp_path), ThreadPoolExecutor(1)), board


def test_rabbit_settle_ack_retry_dead_letter(tmp_path):
    poller, board = rabbit(tmp_path)
    msgs = [Delivery("q", t, False, pika.BasicProperties(message_id=f"id{t}"), b"b")
            for t in (1, 2)]
    ch = FakeChannel()
    poller._settle(ch, msgs, Outcome("ok"))
    assert ch.log == [("ack", 1), ("ack", 2)]
    fail = Outcome("function_error", error="E: m")
    ch = FakeChannel()
    poller._settle(ch, msgs, fail)                # attempt 1 <= max_retries 1: requeue
    assert ch.log == [("nack", 1, True), ("nack", 2, True)]
    ch = FakeChannel()
    poller._settle(ch, msgs, fail)                # attempt 2: dead-lettered, then acked
    assert [e[0] for e in ch.log] == ["publish", "ack", "publish", "ack"]
    assert ch.log[0][1:3] == ("snapstart.dlx", "q")
    assert ch.log[0][4]["x-snapstart-attempts"] == 2
    assert ch.log[0][4]["x-snapstart-dead-letter"]["error"] == "E: m"
    ch = FakeChannel()
    poller._settle(ch, msgs, Outcome("throttled"))   # no attempt counted
    assert ch.log == [("nack", 1, True), ("nack", 2, True)]
    c = board.get("m1").counts
    assert (c["acked"], c["retried"], c["dead_lettered"]) == (2, 2, 2)


def test_rabbit_dead_letter_reject_mode_and_unroutable(tmp_path):
    poller, board = rabbit(tmp_path, max_retries=0, dead_letter="reject")
    msg = Delivery("q", 7, False, pika.BasicProperties(), b"b")
    ch = FakeChannel()
    poller._settle(ch, [msg], Outcome("function_error"))
    assert ch.log == [("nack", 7, False)]
    poller, board = rabbit(tmp_path, max_retries=0)
    ch = FakeChannel(unroutable=True)
    poller._settle(ch, [msg], Outcome("function_error"))
    assert ch.log == [("nack", 7, True)]          # kept, never dropped
    assert "cannot dead-letter" in board.get("m1").last_error


# ---- what an SQS poller does with each outcome -----------------------------------------------
class FakeSqs:
    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []

    def delete_message_batch(self, QueueUrl, Entries):
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    def change_message_visibility_batch(self, QueueUrl, Entries):
        self.visibility += [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries]
        return {"Successful": []}


def sqs_poller(tmp_path, behave, **kw):
    board = StatusBoard(tmp_path)
    spec = MappingSpec.from_entry(sqs_entry(**kw))
    board.add(MappingStatus.of(spec))
    poller = SqsPoller(spec, board, FakeService(tmp_path, behave), ThreadPoolExecutor(2))
    poller.url, poller.arn, poller.vt, poller.max_receive = "u", "arn", 30, 3
    return poller, board


def held(n: int, receives: int = 1):
    from snapstart.triggers.sqs import _Held
    return [_Held({"MessageId": f"m{i}", "ReceiptHandle": f"rh{i}", "Body": "{}",
                   "Attributes": {"ApproximateReceiveCount": str(receives)}},
                  time.monotonic() + 30) for i in range(n)]


def test_sqs_partial_batch_deletes_only_successes(tmp_path):
    poller, board = sqs_poller(tmp_path, lambda e: json.dumps(
        {"batchItemFailures": [{"itemIdentifier": "m1"}]}).encode())
    client = FakeSqs()
    poller._process(client, held(3))
    assert client.deleted == ["rh0", "rh2"]
    c = board.get("s1").counts
    assert (c["acked"], c["retried"], c["dead_lettered"]) == (2, 1, 0)


def test_sqs_invalid_partial_response_fails_the_batch(tmp_path):
    poller, board = sqs_poller(tmp_path, lambda e: b'{"batchItemFailures": [{"itemIdentifier": "x"}]}')
    client = FakeSqs()
    poller._process(client, held(2, receives=3))
    assert client.deleted == []
    assert board.get("s1").counts["dead_lettered"] == 2        # at maxReceiveCount
    assert "partial batch response" in board.get("s1").last_error


def test_sqs_errors_and_throttles(tmp_path):
    poller, board = sqs_poller(tmp_path, lambda e: ("Unhandled", b'{"errorType": "E"}'))
    client = FakeSqs()
    poller._process(client, held(2))
    assert client.deleted == [] and client.visibility == []    # wait out the timeout
    poller, board = sqs_poller(tmp_path, lambda e: ThrottledError("Rate Exceeded."))
    poller._process(client, held(2))
    assert client.deleted == []
    assert client.visibility == [("rh0", 1), ("rh1", 1)]       # back soon, no attempt
    assert board.get("s1").counts["retried"] == 0
    # without ReportBatchItemFailures the response is ignored: all deleted
    poller, board = sqs_poller(tmp_path, lambda e: b'{"batchItemFailures": [{"itemIdentifier": "m0"}]}',
                               options={})
    client = FakeSqs()
    poller._process(client, held(2))
    assert client.deleted == ["rh0", "rh1"]


def test_sqs_visibility_extended_while_invoking(tmp_path):
    release = threading.Event()
    poller, board = sqs_poller(tmp_path, lambda e: release.wait(5) and b"null")
    poller.vt = 2
    client = FakeSqs()
    batch = held(1)
    batch[0].visible_until = time.monotonic() + 2
    t = threading.Thread(target=poller._process, args=(client, batch))
    t.start()
    time.sleep(1.6)
    release.set()
    t.join(5)
    assert ("rh0", 2) in client.visibility and client.deleted == ["rh0"]


# ---- following triggers.json -----------------------------------------------------------------
class FakePoller:
    started: list[str] = []
    stopped: list[str] = []

    def __init__(self, spec, board, service, pool):
        self.spec, self.board = spec, board

    def start(self):
        FakePoller.started.append(self.spec.id)
        self.board.to(self.spec.id, MappingState.CONNECTING)

    def stop(self):
        FakePoller.stopped.append(self.spec.id)
        self.board.to(self.spec.id, MappingState.STOPPED)

    def join(self, timeout):
        return True


def test_mappings_follow_the_file(tmp_path, monkeypatch):
    FakePoller.started, FakePoller.stopped = [], []
    monkeypatch.setattr(Mappings, "_poller", lambda self, spec: FakePoller(
        spec, self.board, self.service, self.pool))
    m = Mappings(FakeService(tmp_path))

    def write(entries):
        trigger_config.save(tmp_path, trigger_config.Triggers(mappings=entries))
        m.refresh()

    m.refresh()
    assert m.board.snapshot() == []
    write([mq_entry("a"), sqs_entry("b")])
    assert FakePoller.started == ["a", "b"]
    m.refresh()                                             # unchanged: nothing happens
    assert FakePoller.started == ["a", "b"]
    write([mq_entry("a", batch_size=5), sqs_entry("c"), mq_entry("d", enabled=False),
           mq_entry("e", type="nope")])
    assert FakePoller.stopped == ["a", "b"] and FakePoller.started[2:] == ["a", "c"]
    states = {s["id"]: s["state"] for s in m.board.snapshot()}
    assert states == {"a": "Connecting", "c": "Connecting", "d": "Disabled", "e": "Invalid"}
    (tmp_path / "triggers.json").write_text("{not json")
    m.refresh()                                             # kept as they are
    assert {s["id"] for s in m.board.snapshot()} == {"a", "c", "d", "e"}
    write([])
    assert m.board.snapshot() == []
    m.stop()
    assert json.loads((tmp_path / queues.STATE_FILE).read_text())["running"] is False


def test_a_failure_while_stopping_is_not_an_attempt(tmp_path):
    poller, board = rabbit(tmp_path, max_retries=0)
    poller.service.behave = lambda e: ("Unhandled", b'{"errorType": "E"}')
    poller.stopping.set()
    outcome = poller.invoke({"x": 1}, 1, tick=lambda: None)
    assert outcome.kind == "interrupted" and not outcome.counts_attempt
    ch = FakeChannel()
    poller._settle(ch, [Delivery("q", 1, False, pika.BasicProperties(), b"b")], outcome)
    assert ch.log == [("nack", 1, True)]          # back to the queue, not dead-lettered
