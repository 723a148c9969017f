"""Async destinations (issue 15): EventInvokeConfig's MaximumRetryAttempts and
OnSuccess / OnFailure, through a real `snapstart serve`: a success's record is an
Event invocation of another function, an exhausted failure's record a message on an
SQS queue (moto's SQS server on loopback: the one SQS implementation that installs
here; the code sends with boto3 to any endpoint)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import MotoServer, function_logs, publish  # noqa: E402
from test_serve import serve  # noqa: E402,F401 - the serve fixture

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]


@pytest.fixture
def sqs():
    """moto's SQS server on loopback: (endpoint URL, boto3 SQS client)."""
    server = MotoServer()
    yield server.url, server.client("sqs")
    server.stop()


def test_success_goes_to_a_function_failure_to_a_queue(home, serve, sqs):
    url, client = sqs
    queue = client.create_queue(QueueName="failures")["QueueUrl"]
    publish(home, "marker", timeout=30)
    publish(home, "dest-sink")
    (home.home / "triggers.json").write_text(json.dumps({"format": 1, "destinations": [{
        "function": "marker", "qualifier": None, "maximum_retry_attempts": 1,
        "maximum_event_age_s": 3600,
        "on_success": {"type": "function", "name": "dest-sink"},
        "on_failure": {"type": "sqs", "queue_url": queue}}]}))
    server = serve("--event-backoff", "0.05", env={"AWS_ENDPOINT_URL_SQS": url})
    lam = server.client()
    assert lam.invoke(FunctionName="marker", InvocationType="Event",
                      Payload=json.dumps({"marker": True}))["StatusCode"] == 202
    assert lam.invoke(FunctionName="marker", InvocationType="Event",
                      Payload=json.dumps({"fail": True}))["StatusCode"] == 202
    deadline = time.monotonic() + 60
    messages: list = []
    records: list = []
    while time.monotonic() < deadline and not (messages and records):
        if not messages:
            messages = client.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get(
                "Messages", [])
        records = [json.loads(line.split("DEST ", 1)[1]) for line in
                   function_logs(home, "dest-sink").splitlines() if "DEST {" in line]
        time.sleep(0.2)
    assert records and messages, (records, messages, function_logs(home, "dest-sink"),
                                  server.output()[-3000:])
    ok = records[0]
    assert ok["requestContext"]["condition"] == "Success"
    assert ok["requestContext"]["functionArn"].endswith(":function:marker")
    assert ok["requestPayload"] == {"marker": True}
    assert ok["responsePayload"]["calls"] >= 1 and ok["version"] == "1.0"
    assert ok["responseContext"] == {"statusCode": 200, "executedVersion": "1"}
    failed = json.loads(messages[0]["Body"])
    assert failed["requestContext"]["condition"] == "RetriesExhausted"
    assert failed["requestContext"]["approximateInvokeCount"] == 2    # 1 retry, not 2
    assert failed["responseContext"]["functionError"] == "Unhandled"
    assert failed["responsePayload"]["errorMessage"] == "asked to fail"
    assert function_logs(home, "marker").count("MARKER attempt ") == 2
