"""SQS event source mappings against moto's SQS server on loopback (the one SQS
implementation that installs here; the poller only speaks the SQS API, by endpoint
URL). Functions are published and served by real ``snapstart serve`` subprocesses
(root, CRIU)."""

from __future__ import annotations

import functools
import json
import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import (MotoServer, cli as _cli, free_port as _free_port,  # noqa: E402
                   function_logs, mapping_state as state, publish as _publish,
                   wait_for as _wait_for,
                   write_mappings)

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
publish = functools.partial(_publish, timeout=10)   # these functions batch slowly

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PROJECT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's server on 127.0.0.1: its endpoint URL. Stopped afterwards."""
    server = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log")
    yield server.url
    server.stop()


@pytest.fixture
def sqs(moto):
    client = MotoServer.client_of(moto, "sqs")
    made: list[str] = []

    def queue(name: str | None = None, **attributes) -> str:
        url = client.create_queue(QueueName=name or f"q-{uuid.uuid4().hex[:10]}",
                                  Attributes={k: str(v) for k, v in attributes.items()}
                                  )["QueueUrl"]
        made.append(url)
        return url
    client.make_queue = queue
    yield client
    for url in made:
        client.delete_queue(QueueUrl=url)


def mapping(mid: str, queue_url: str, **kw) -> dict:
    options = kw.pop("options", {})
    return {"id": mid, "function": "queue-worker", "qualifier": None, "type": "SQS",
            "source": queue_url, "queues": [], "batch_size": kw.pop("batch_size", 10),
            "batching_window_s": kw.pop("window", 0.0), "enabled": True,
            "options": {"wait_time_s": 1, "backoff_s": 0.2, "max_backoff_s": 1.0, **options},
            **kw}


def counts(home, mid: str) -> dict:
    return state(home, mid).get("counts", {})


def events_of(home) -> list[dict]:
    return [json.loads(line.split("EVENT ", 1)[1])
            for line in function_logs(home, "queue-worker").splitlines() if "EVENT {" in line]


def markers(home, kind: str) -> list[str]:
    return re.findall(rf"MARKER {kind} (\S+)", function_logs(home, "queue-worker"))


def visible(client, url: str) -> int:
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + \
        int(attrs["ApproximateNumberOfMessagesNotVisible"])


# ---- tests --------------------------------------------------------------------------------
def test_batches_are_deleted_and_shaped_like_lambda(home, sqs, serve):
    url = sqs.make_queue(VisibilityTimeout=30)
    publish(home, "queue-worker")
    write_mappings(home, [mapping("jobs", url, batch_size=5, window=2.0)])
    ids = [f"s{i:02d}" for i in range(12)]
    for i in ids:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": i}), MessageAttributes={
            "tenant": {"DataType": "String", "StringValue": "acme"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    server = serve()

    _wait_for(lambda: counts(home, "jobs").get("acked") == 12, 90, "12 deletes")
    _wait_for(lambda: len(markers(home, "ok")) == 12, 10, "the function's logs")
    assert visible(sqs, url) == 0
    events = events_of(home)
    sizes = [len(e["Records"]) for e in events]
    assert sum(sizes) == 12 and max(sizes) <= 5, sizes
    assert sorted(markers(home, "ok")) == ids
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == "us-east-1"
    assert record["eventSourceARN"] == sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes",
                           "messageAttributes", "md5OfBody"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert "SentTimestamp" in record["attributes"]
    assert record["messageAttributes"]["tenant"] == {
        "stringValue": "acme", "stringListValues": [], "binaryListValues": [],
        "dataType": "String"}
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    st = state(home, "jobs")
    assert st["state"] == "Polling" and st["counts"]["received"] == 12
    assert st["counts"]["invoked"] == len(events) and st["counts"]["retried"] == 0
    metrics = server.metrics()
    total = sum(v for k, v in metrics.items()
                if k.startswith("snapstart_invocations_total") and "queue-worker" in k)
    assert total == len(events)
    print(f"\nSQS batches: in=12 invocations={len(events)} sizes={sizes} deleted=12 "
          "retried=0 dead-lettered=0")


def test_partial_batch_response_and_redrive_policy(home, sqs, serve):
    dlq = sqs.make_queue()
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]
                                       )["Attributes"]["QueueArn"]
    url = sqs.make_queue(VisibilityTimeout=1, RedrivePolicy=json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    publish(home, "queue-worker")
    write_mappings(home, [mapping("partial", url, batch_size=10, window=1.0, options={
        "function_response_types": ["ReportBatchItemFailures"]})])
    bodies = [{"id": "p-ok-1"}, {"id": "p-bad", "fail": True, "partial": True},
              {"id": "p-ok-2"}, {"id": "p-ok-3"}]
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(n), "MessageBody": json.dumps(b)} for n, b in enumerate(bodies)])
    serve()

    # the failure is received twice (maxReceiveCount 2), then SQS moves it to the DLQ
    _wait_for(lambda: markers(home, "fail").count("p-bad") == 2, 60, "two attempts")
    _wait_for(lambda: visible(sqs, dlq) == 1 and visible(sqs, url) == 0, 60,
              "the redrive to the DLQ")
    moved = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["id"] for m in moved] == ["p-bad"]
    assert sorted(markers(home, "ok")) == ["p-ok-1", "p-ok-2", "p-ok-3"]
    c = counts(home, "partial")
    assert (c["acked"], c["retried"], c["dead_lettered"]) == (3, 1, 1), c
    print(f"\nSQS partial batch: in=4 invocations={c['invoked']} deleted={c['acked']} "
          f"retried={c['retried']} dead-lettered (by the redrive policy)={c['dead_lettered']}")


def test_visibility_extended_while_the_function_runs(home, sqs, serve):
    url = sqs.make_queue(VisibilityTimeout=2)
    publish(home, "queue-worker", timeout=30)
    write_mappings(home, [mapping("slow", url, batch_size=1)])
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": "slow-1", "sleep": 6}))
    serve()
    _wait_for(lambda: counts(home, "slow").get("acked") == 1, 90, "the delete")
    _wait_for(lambda: markers(home, "ok"), 10, "the function's logs")
    # three visibility timeouts long, yet received and invoked once
    assert markers(home, "ok") == ["slow-1"]
    c = counts(home, "slow")
    assert (c["received"], c["invoked"]) == (1, 1), c
    assert visible(sqs, url) == 0


def test_unreachable_endpoint_keeps_serving(home, sqs, serve, moto):
    publish(home, "hello")
    dead = f"http://127.0.0.1:{_free_port()}"
    write_mappings(home, [
        mapping("down", f"{dead}/000000000000/nowhere"),
        mapping("noq", f"{moto}/000000000000/missing-{uuid.uuid4().hex[:6]}")])
    server = serve()
    _wait_for(lambda: state(home, "down").get("last_error"), 30, "the connection error")
    _wait_for(lambda: state(home, "noq").get("last_error"), 30, "the missing queue error")
    rows = {r["id"]: r for r in json.loads(_cli(home, "mappings", "ls", "--json").stdout)}
    assert "cannot reach the SQS endpoint" in rows["down"]["last_error"], rows["down"]
    assert "does not exist" in rows["noq"]["last_error"], rows["noq"]
    assert rows["down"]["state"] in ("BackingOff", "Connecting")
    resp = server.client().invoke(FunctionName="hello", Payload=b"{}")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
