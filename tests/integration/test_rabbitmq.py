"""RabbitMQ event source mappings against a real ``rabbitmq-server`` (Debian's package).

The module starts its own broker on loopback: a private epmd (a child of this process,
on a free port), and a node with its own name, AMQP and distribution ports, Mnesia and
log directories, config (127.0.0.1 only) and Erlang cookie, all under one temp dir that
is removed afterwards. Debian's own service is not used and not touched (the package's
install did not start it here: policy-rc.d). Functions are published and served by
real ``snapstart serve`` subprocesses (root, CRIU).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import (cli as _cli, free_port as _free_port,  # noqa: E402
                   function_logs, mapping_state as state, publish as _publish,
                   wait_for as _wait_for,
                   write_mappings)

import pika  # noqa: E402 - a dependency of snapstart (pyproject.toml)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")    # Debian's rabbitmq-server (the apt step)
pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
publish = functools.partial(_publish, timeout=10)   # these functions batch slowly

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PROJECT = Path(__file__).resolve().parent.parent.parent


class Broker:
    """One private RabbitMQ node on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="snapstart-rmq-"))
        self.port, self.dist_port, self.epmd_port = _free_port(), _free_port(), _free_port()
        self.node = f"snapstart-test-{self.port}@localhost"
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "log.console = false\nlog.file.level = info\n")
        # the distribution listener on loopback too
        (self.base / "advanced.config").write_text(
            "[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        self.env = dict(
            os.environ, HOME=str(self.base), RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "rabbit.pid"),
            ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.epmd: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None

    def start(self) -> None:
        # our own epmd, in the foreground: rabbitmq-server would otherwise start a
        # daemon that outlives it
        self.epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: _listening(self.epmd_port), 10, "epmd")
        self.log = open(self.base / "server.out", "w")
        self.server = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env,
                                       stdout=self.log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=str(self.base))
        proc = self.ctl("wait", "--timeout", "90", str(self.base / "rabbit.pid"), timeout=120,
                        check=False)
        if proc.returncode != 0:
            out = (self.base / "server.out").read_text()[-3000:]
            self.stop()
            raise AssertionError(f"rabbitmq-server did not start: {proc.stderr}\n{out}")

    def ctl(self, *args: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def queues(self) -> dict[str, tuple[int, int]]:
        """{queue: (ready, unacknowledged)} as the broker counts them."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged").stdout
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def channel(self):
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        return conn, conn.channel()

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.ctl("stop", timeout=60, check=False)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        if self.server is not None:
            try:                     # erl_child_setup and the like, if any survived
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.log.close()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def broker():
    b = Broker()
    b.start()
    yield b
    b.stop()
    assert not _listening(b.port) and not _listening(b.epmd_port), "broker left running"


# ---- serve, functions, triggers.json ------------------------------------------------------
def mapping(mid: str, url: str, queue: str, **kw) -> dict:
    options = kw.pop("options", {})
    return {"id": mid, "function": kw.pop("function", "queue-worker"), "qualifier": None,
            "type": "MQ", "source": url, "queues": [queue], "batch_size": kw.pop("batch_size", 10),
            "batching_window_s": kw.pop("window", 0.0), "enabled": True,
            "options": {"backoff_s": 0.2, "max_backoff_s": 1.0, **options}, **kw}


def mappings_ls(home) -> list[dict]:
    return json.loads(_cli(home, "mappings", "ls", "--json").stdout)


def events_of(home, name: str = "queue-worker") -> list[dict]:
    return [json.loads(line.split("EVENT ", 1)[1])
            for line in function_logs(home, name).splitlines() if "EVENT {" in line]


def markers(home, kind: str, name: str = "queue-worker") -> list[str]:
    return re.findall(rf"MARKER {kind} (\S+)", function_logs(home, name))


def send(channel, queue: str, bodies: list[dict], **props) -> None:
    for body in bodies:
        channel.basic_publish("", queue, json.dumps(body).encode(),
                              pika.BasicProperties(message_id=body["id"], delivery_mode=2,
                                                   **props))


@pytest.fixture
def queues(broker):
    """queues(n) -> n fresh durable queue names; deleted (with their DLQs) afterwards."""
    made: list[str] = []

    def make(n: int = 1, **arguments) -> list[str]:
        conn, ch = broker.channel()
        names = [f"q-{uuid.uuid4().hex[:10]}" for _ in range(n)]
        for name in names:
            ch.queue_declare(name, durable=True, arguments=arguments or None)
        conn.close()
        made.extend(names)
        return names

    yield make
    conn, ch = broker.channel()
    for name in made:
        for q in (name, f"{name}.dlq", f"{name}.user-dlq"):
            ch.queue_delete(q)
    conn.close()


# ---- tests --------------------------------------------------------------------------------
def test_batches_are_acked_and_shaped_like_lambda(home, broker, queues, serve):
    (queue,) = queues()
    publish(home, "queue-worker")
    write_mappings(home, [mapping("orders", broker.url, queue, batch_size=3, window=1.0)])
    server = serve()
    conn, ch = broker.channel()
    ids = [f"m{i}" for i in range(7)]
    send(ch, queue, [{"id": i} for i in ids], content_type="application/json",
         headers={"tenant": "acme", "n": 7}, timestamp=2001, priority=3)
    conn.close()

    _wait_for(lambda: state(home, "orders").get("counts", {}).get("acked") == 7, 90,
              "7 acks")
    _wait_for(lambda: broker.queues().get(queue) == (0, 0), 10, "an empty queue")
    _wait_for(lambda: len(markers(home, "ok")) == 7, 10, "the function's logs")
    events = events_of(home)
    sizes = [sum(len(v) for v in e["rmqMessagesByQueue"].values()) for e in events]
    assert sum(sizes) == 7 and max(sizes) <= 3, sizes
    assert sorted(markers(home, "ok")) == sorted(ids)
    event = events[0]
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"].startswith("arn:aws:mq:us-east-1:")
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    msg = event["rmqMessagesByQueue"][f"{queue}::/"][0]
    props = msg["basicProperties"]
    assert msg["redelivered"] is False
    assert json.loads(base64.b64decode(msg["data"]))["id"] == "m0"
    assert props["contentType"] == "application/json" and props["deliveryMode"] == 2
    assert props["headers"] == {"tenant": {"bytes": list(b"acme")}, "n": 7}
    assert props["timestamp"] == "Jan 1, 1970, 12:33:21 AM" and props["priority"] == 3
    assert props["messageId"] == "m0" and props["bodySize"] == len(b'{"id": "m0"}')

    st = state(home, "orders")
    assert st["state"] == "Polling" and st["last_processing_result"] == "OK"
    assert st["counts"] == {"received": 7, "invoked": len(events), "function_errors": 0,
                            "acked": 7, "retried": 0, "dead_lettered": 0}
    # counted as invocations of the function in /metrics, like any Invoke
    metrics = server.metrics()
    total = sum(v for k, v in metrics.items()
                if k.startswith("snapstart_invocations_total") and 'queue-worker' in k)
    assert total == len(events), {k: v for k, v in metrics.items() if "invocations" in k}
    row = next(r for r in mappings_ls(home) if r["id"] == "orders")
    assert row["state"] == "Polling" and row["counts"]["acked"] == 7
    text = _cli(home, "mappings", "ls").stdout
    assert "orders" in text and "Polling" in text
    print(f"\nRabbitMQ batches: in=7 invocations={len(events)} sizes={sizes} acked=7 "
          "retried=0 dead-lettered=0")


def test_failures_are_redelivered_then_dead_lettered(home, broker, queues, serve):
    q_pub, q_rej = queues(2)
    conn, ch = broker.channel()
    # the "reject" mapping relies on its queue's own dead-letter exchange
    ch.exchange_declare(f"{q_rej}.user-dlx", exchange_type="fanout", durable=False,
                        auto_delete=True)
    ch.queue_declare(f"{q_rej}.user-dlq", durable=True)
    ch.queue_bind(f"{q_rej}.user-dlq", f"{q_rej}.user-dlx")
    ch.queue_delete(q_rej)
    ch.queue_declare(q_rej, durable=True,
                     arguments={"x-dead-letter-exchange": f"{q_rej}.user-dlx"})
    publish(home, "queue-worker")
    write_mappings(home, [
        mapping("pub", broker.url, q_pub, batch_size=1, options={"max_retries": 2}),
        mapping("rej", broker.url, q_rej, batch_size=1,
                options={"max_retries": 1, "dead_letter": "reject"})])
    serve()
    send(ch, q_pub, [{"id": "good-1"}, {"id": "poison-1", "fail": True}, {"id": "good-2"}])
    send(ch, q_rej, [{"id": "poison-2", "fail": True}, {"id": "good-3"}])
    conn.close()

    def settled() -> bool:
        counts = broker.queues()
        return (counts.get(q_pub) == (0, 0) and counts.get(q_rej) == (0, 0)
                and counts.get(f"{q_pub}.dlq", (0, 0))[0] == 1
                and counts.get(f"{q_rej}.user-dlq", (0, 0))[0] == 1)
    _wait_for(settled, 120, "both queues drained into their dead-letter queues")
    fails = markers(home, "fail")
    assert fails.count("poison-1") == 3, fails          # 1 attempt + max_retries 2
    assert fails.count("poison-2") == 2, fails          # 1 attempt + max_retries 1
    assert sorted(markers(home, "ok")) == ["good-1", "good-2", "good-3"]
    pub, rej = state(home, "pub")["counts"], state(home, "rej")["counts"]
    assert (pub["acked"], pub["retried"], pub["dead_lettered"], pub["function_errors"]) \
        == (2, 2, 1, 3), pub
    assert (rej["acked"], rej["retried"], rej["dead_lettered"]) == (1, 1, 1), rej
    assert "poison: poison-1" in state(home, "pub")["last_error"]

    # the dead-lettered copy keeps the message and says why
    conn, ch = broker.channel()
    method, props, body = ch.basic_get(f"{q_pub}.dlq", auto_ack=True)
    assert json.loads(body)["id"] == "poison-1" and props.message_id == "poison-1"
    death = props.headers["x-snapstart-dead-letter"]
    assert death["queue"] == q_pub and death["reason"] == "max_retries"
    assert "RuntimeError" in death["error"] or "poison" in death["error"]
    assert props.headers["x-snapstart-attempts"] == 3
    method, props, body = ch.basic_get(f"{q_rej}.user-dlq", auto_ack=True)
    assert json.loads(body)["id"] == "poison-2"
    assert props.headers["x-death"][0]["reason"] == "rejected"
    ch.exchange_delete(f"{q_rej}.user-dlx")
    conn.close()
    print(f"\nRabbitMQ failures: in=5 acked={pub['acked'] + rej['acked']} "
          f"retried={pub['retried'] + rej['retried']} "
          f"dead-lettered={pub['dead_lettered'] + rej['dead_lettered']}")


def test_kill9_mid_batch_loses_nothing_and_acks_once(home, broker, queues, serve):
    (queue,) = queues()
    publish(home, "queue-worker", timeout=30)
    write_mappings(home, [mapping("k9", broker.url, queue, batch_size=5, window=0.2)])
    n = 20
    ids = [f"k{i:02d}" for i in range(n)]
    conn, ch = broker.channel()
    send(ch, queue, [{"id": i, "sleep": 1.5} for i in ids])
    conn.close()
    first = serve()

    # a batch is held by the slow function, and at least one batch was acked before it
    _wait_for(lambda: (state(home, "k9").get("in_flight", 0) > 0
                       and state(home, "k9")["counts"]["acked"] >= 5), 120,
              "a batch in flight after the first acks")
    time.sleep(0.5)
    first.kill9()
    before = state(home, "k9")["counts"]          # the killed serve's last report
    ready, unacked = _wait_for(lambda: broker.queues().get(queue), 10, "queue counts")
    assert before["acked"] < n and ready + unacked == n - before["acked"], \
        (before, ready, unacked)

    second = serve()
    _wait_for(lambda: broker.queues().get(queue) == (0, 0), 120, "the queue to drain")
    _wait_for(lambda: state(home, "k9")["counts"]["acked"] == n - before["acked"], 20,
              "the second serve's acks")
    after = state(home, "k9")["counts"]
    ok = markers(home, "ok")
    missing = set(ids) - set(ok)
    assert not missing, f"lost: {sorted(missing)}"
    # every message acked exactly once: the two servers' acks add up to n, and the
    # broker holds none of them any more (nothing ready, unacked or dead-lettered)
    assert before["acked"] + after["acked"] == n, (before, after)
    assert broker.queues().get(f"{queue}.dlq", (0, 0)) == (0, 0)
    redelivered = [m for e in events_of(home) for msgs in e["rmqMessagesByQueue"].values()
                   for m in msgs if m["redelivered"]]
    assert redelivered, "the batch in flight at the kill was delivered again"
    second.stop()
    print(f"\nRabbitMQ kill -9: in={n} acked={before['acked']}+{after['acked']} "
          f"invocations={before['invoked']}+{after['invoked']} processed twice="
          f"{len(ok) - n} redelivered={len(redelivered)} lost={len(missing)}")


def test_unreachable_broker_and_following_triggers_json(home, broker, queues, serve):
    (queue,) = queues()
    publish(home, "queue-worker")
    publish(home, "hello")
    dead = f"amqp://guest:secret@127.0.0.1:{_free_port()}/%2F"
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    write_mappings(home, [mapping("down", dead, queue), mapping("noq", broker.url, missing)])
    server = serve()

    _wait_for(lambda: state(home, "down").get("last_error"), 30, "the connection error")
    _wait_for(lambda: state(home, "noq").get("last_error"), 30, "the missing queue error")
    rows = {r["id"]: r for r in mappings_ls(home)}
    assert rows["down"]["state"] in ("BackingOff", "Connecting")
    assert "cannot connect to broker" in rows["down"]["last_error"]
    assert "secret" not in json.dumps(rows) and "***" in rows["down"]["source"]
    assert "NOT_FOUND" in rows["noq"]["last_error"] and missing in rows["noq"]["last_error"]
    text = _cli(home, "mappings", "ls").stdout
    assert "cannot connect to broker" in text
    assert "cannot connect to broker" in server.output()
    # serve keeps serving everything else
    resp = server.client().invoke(FunctionName="hello", Payload=b"{}")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    # it keeps retrying (backoff): once the queue exists, the mapping recovers
    conn, ch = broker.channel()
    ch.queue_declare(missing, durable=False, auto_delete=False)
    send(ch, missing, [{"id": "late"}])
    _wait_for(lambda: state(home, "noq").get("counts", {}).get("acked") == 1, 60,
              "the mapping to recover")
    assert state(home, "noq")["state"] == "Polling"

    # triggers.json changes are followed: "down" removed, "fixed" added, "noq" disabled
    write_mappings(home, [mapping("fixed", broker.url, queue),
                          dict(mapping("noq", broker.url, missing), enabled=False)])
    send(ch, queue, [{"id": "via-fixed"}])
    _wait_for(lambda: state(home, "fixed").get("counts", {}).get("acked") == 1, 60,
              "the new mapping to consume")
    _wait_for(lambda: not state(home, "down"), 10, "the removed mapping to go")
    assert state(home, "noq")["state"] == "Disabled"
    ch.queue_delete(missing)
    conn.close()
    server.stop()
    rows = mappings_ls(home)
    assert {r["id"] for r in rows} == {"fixed", "noq"}
    assert all(r["serve"] == "not running" for r in rows)
