"""The sample application (examples/sam-app, issue 15) deployed by `snapstart deploy`
and driven through every trigger by a real `snapstart serve`: its HttpApi routes and
function URLs (Python and Node), a schedule, a RabbitMQ queue on a private real
broker, and an SQS queue on moto's SQS server on loopback (the one SQS implementation
that installs here)."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import cli as _cli, function_logs, wait_for  # noqa: E402
from test_destinations import sqs  # noqa: E402,F401 - moto's SQS server
from test_rabbitmq import broker  # noqa: E402,F401 - a private rabbitmq-server
from test_serve import serve  # noqa: E402,F401 - the serve fixture

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sam-app"


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_sample_app_through_every_trigger(home, serve, broker, sqs, tmp_path):
    sqs_url, sqs_client = sqs
    queue = sqs_client.create_queue(QueueName="orders")["QueueUrl"]
    app = tmp_path / "sam-app"
    shutil.copytree(EXAMPLE, app)
    tmp_path.chmod(0o755)
    conn, channel = broker.channel()
    channel.queue_declare("orders", durable=True)
    out = _cli(home, "deploy", str(app / "template.yaml"), "--json", "--parameter-overrides",
               f"BrokerUrl={broker.url} QueueUrl={queue}")
    deployed = json.loads(out.stdout)
    assert deployed["published"] == {"Api": 1, "Worker": 1, "Web": 1}
    server = serve(env={"AWS_ENDPOINT_URL_SQS": sqs_url, "SNAPSTART_SCHEDULE_SPEEDUP": "30"})
    port = server.port

    # HttpApi routes and the function URLs
    status, body = _request(port, "PUT", "/items/7", b'{"name": "seventh"}')
    assert status == 201, (body, function_logs(home, "Api")[-3000:].splitlines())
    assert json.loads(body) == {"id": "7", "name": "seventh"}
    status, body = _request(port, "GET", "/items/1")
    assert status == 200 and json.loads(body)["name"] == "first"
    status, body = _request(port, "GET", "/lambda-url/Api/hello")
    assert status == 200 and json.loads(body)["greeting"] == "hello from sam-app (dev)"
    status, body = _request(port, "GET", "/lambda-url/Web/page")
    assert status == 200 and body.startswith(b"hello from node at /page")
    status, _ = _request(port, "GET", "/lambda-url/Worker/x")      # no URL configured
    assert status == 403

    # RabbitMQ and SQS, into the worker
    for i in range(3):
        channel.basic_publish("", "orders", f"order-{i}".encode())
    conn.close()
    for body_text in ("job-a", "job-b", "fail"):
        sqs_client.send_message(QueueUrl=queue, MessageBody=body_text)

    def worker_lines() -> list[str]:
        return [line for line in function_logs(home, "Worker").splitlines()
                if "WORKER " in line]

    lines = wait_for(lambda: (ls := worker_lines()) and
                     sum("WORKER rmq" in line for line in ls) >= 3 and
                     sum("WORKER sqs" in line for line in ls) >= 3 and
                     any("WORKER event tick" in line for line in ls) and ls,
                     90, "the worker's RabbitMQ, SQS and schedule records")
    assert {line.split("WORKER rmq ", 1)[1] for line in lines if "WORKER rmq" in line} == \
        {"orders::/ order-0", "orders::/ order-1", "orders::/ order-2"}
    conn, channel = broker.channel()
    assert channel.queue_declare("orders", passive=True).method.message_count == 0
    conn.close()
    # the two successes are deleted; the reported failure is not (redelivered until
    # the queue's redrive policy moves it; this queue has none)
    def sqs_counts() -> dict:
        return {m["id"]: m for m in _mappings(home)}["Worker-Jobs"]

    state = wait_for(lambda: (st := sqs_counts()) and st.get("counts", {}).get("acked", 0) >= 2
                     and st, 60, "two SQS messages deleted")
    assert state["counts"]["acked"] == 2, state

    # every trigger went through the normal dispatch: counted in /metrics
    status, metrics = _request(port, "GET", "/metrics")
    text = metrics.decode()
    for fn in ("Api", "Worker", "Web"):
        assert f'snapstart_invocations_total{{function="{fn}"' in text, fn
    assert {m["id"] for m in _mappings(home)} >= {"Worker-Orders", "Worker-Jobs"}


def _mappings(home) -> list[dict]:
    out = json.loads(_cli(home, "mappings", "ls", "--json").stdout)
    return out if isinstance(out, list) else out.get("mappings", [])
