"""``snapstart serve``: real boto3 and aws-cli against a real server subprocess on
127.0.0.1, serving real restored clones (root, CRIU)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import (ServerProcess, cli as _cli, function_logs, publish,  # noqa: E402
                   sandbox_processes, serve_env)

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PROJECT = Path(__file__).resolve().parent.parent.parent


def _sandbox_pids(home) -> list[int]:
    """This test's sandboxes: their snapinit and every process in them."""
    from snapstart.sandbox.procs import find_inits, owner_tag

    return find_inits(owner_tag(home.home)) + sandbox_processes(home)


@pytest.fixture
def serve(home):
    """serve(*args) -> a running ServerProcess; every server is stopped and every clone gone after."""
    servers: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(home, *args, log_dir=home.home.parent, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    deadline = time.monotonic() + 10
    while _sandbox_pids(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sandbox_pids(home), "sandbox processes left behind"
    run_dir = home.shm / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir()), "CRIU work dirs left behind"


def _payload(response) -> dict:
    return json.loads(response["Payload"].read())


def _start_type(response) -> str:
    return response["ResponseMetadata"]["HTTPHeaders"]["x-snapstart-start-type"]


# ---- invoke path --------------------------------------------------------------------
def test_boto3_invoke_success_and_function_error(home, serve):
    publish(home, "hello")
    publish(home, "errors")
    publish(home, "marker")
    client = serve().client()

    ok = client.invoke(FunctionName="hello", Payload=b'{"k": 1}', LogType="Tail")
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert ok["ExecutedVersion"] == "1"
    assert _payload(ok)["event"] == {"k": 1}
    tail = base64.b64decode(ok["LogResult"]).decode()
    lines = tail.splitlines()
    assert lines[0].startswith("START RequestId: ") and lines[0].endswith("Version: 1")
    assert any(line.startswith("END RequestId: ") for line in lines)
    assert lines[-1].startswith("REPORT RequestId: ") and "Restore Duration:" in lines[-1]
    assert "hello: handling {'k': 1}" in tail

    err = client.invoke(FunctionName="errors", Payload=b'{"action": "raise"}')
    assert err["StatusCode"] == 200 and err["FunctionError"] == "Unhandled"
    body = _payload(err)
    assert body["errorType"] == "CustomError" and body["errorMessage"] == "something went wrong"

    # qualified names: partial NAME:QUAL, full ARN, ?Qualifier=
    arn = "arn:aws:lambda:us-east-1:000000000000:function:hello:1"
    assert client.invoke(FunctionName=arn)["ExecutedVersion"] == "1"
    assert client.invoke(FunctionName="hello", Qualifier="1")["ExecutedVersion"] == "1"
    assert client.invoke(FunctionName="hello", InvocationType="DryRun")["StatusCode"] == 204

    # client context and trace id reach the runtime
    ctx = base64.b64encode(json.dumps({"custom": {"who": "test"}}).encode()).decode()
    res = _payload(client.invoke(FunctionName="marker", ClientContext=ctx))
    assert res.get("client_context") == {"who": "test"}, res
    assert res["trace_id"] and res["trace_id"].startswith("Root=1-")


def test_aws_cli_invoke(home, serve, tmp_path):
    publish(home, "hello")
    server = serve()
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "awscli", "lambda", "invoke", "--function-name", "hello",
         "--payload", '{"from": "cli"}',
         "--log-type", "Tail", "--endpoint-url", server.url, "--region", "us-east-1",
         str(out)], env=serve_env(home), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["StatusCode"] == 200 and meta["ExecutedVersion"] == "1"
    assert "START RequestId" in base64.b64decode(meta["LogResult"]).decode()
    assert json.loads(out.read_text())["event"] == {"from": "cli"}


def test_timeout_and_crash_are_unhandled_function_errors(home, serve):
    """On a fresh clone (restored: a thread) and on a warm one (serve's event loop)."""
    publish(home, "errors", timeout=1)
    client = serve().client()

    def ok() -> None:
        again = client.invoke(FunctionName="errors", Payload=b'{"action": "none"}')
        assert "FunctionError" not in again and _payload(again) == {"ok": True}

    cases = ((b'{"action": "sleep", "seconds": 5}', "Sandbox.Timedout",
              (b"errors: about to sleep", b"Task timed out after 1.00 seconds")),
             (b'{"action": "exit"}', "Runtime.ExitError",
              (b"errors: about to exit", b"exit status 3")))
    for warm in (False, True):
        for payload, error_type, printed in cases:
            if warm:
                ok()                      # a clone is idle now: the event goes to it
            out = client.invoke(FunctionName="errors", Payload=payload, LogType="Tail")
            assert out["StatusCode"] == 200 and out["FunctionError"] == "Unhandled"
            assert _payload(out)["errorType"] == error_type
            tail = base64.b64decode(out["LogResult"])
            assert all(text in tail for text in printed), tail
    ok()


def test_api_errors_and_bad_input_keep_the_server_up(home, serve):
    publish(home, "hello")
    server = serve()
    client = server.client()
    from botocore.exceptions import ClientError

    def error_of(**kw) -> tuple[str, int]:
        with pytest.raises(ClientError) as info:
            client.invoke(**kw)
        resp = info.value.response
        return resp["Error"]["Code"], resp["ResponseMetadata"]["HTTPStatusCode"]

    assert error_of(FunctionName="missing") == ("ResourceNotFoundException", 404)
    assert error_of(FunctionName="hello", Qualifier="7") == ("ResourceNotFoundException", 404)
    assert error_of(FunctionName="hello", Payload=b"{not json") == \
        ("InvalidRequestContentException", 400)
    big = b'"' + b"x" * (6 * 1024 * 1024 + 10) + b'"'
    assert error_of(FunctionName="hello", Payload=big) == ("RequestTooLargeException", 413)
    big_event = b'"' + b"x" * (256 * 1024 + 10) + b'"'
    assert error_of(FunctionName="hello", Payload=big_event, InvocationType="Event") == \
        ("RequestTooLargeException", 413)

    # raw HTTP garbage: path traversal, bad headers, bad JSON control bodies
    def raw(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> int:
        req = urllib.request.Request(server.url + path, data=body or None, method=method,
                                     headers=headers or {})
        try:
            return urllib.request.urlopen(req, timeout=30).status
        except urllib.error.HTTPError as exc:
            assert exc.headers.get("x-amzn-ErrorType"), exc.headers
            json.loads(exc.read())
            return exc.code

    assert raw("POST", "/2015-03-31/functions/..%2F..%2Fetc/invocations", b"{}") in (400, 404)
    assert raw("POST", "/2015-03-31/functions/hel.lo/invocations", b"{}") == 400
    assert raw("POST", "/2015-03-31/functions/hello/invocations", b"{}",
               {"X-Amz-Invocation-Type": "Bogus"}) == 400
    assert raw("POST", "/2015-03-31/functions/hello/invocations", b"{}",
               {"X-Amz-Client-Context": "%%%"}) == 400
    assert raw("PUT", "/2017-10-31/functions/hello/concurrency", b"[1,2") == 400
    assert raw("PUT", "/2017-10-31/functions/hello/concurrency",
               b'{"ReservedConcurrentExecutions": "x"}') == 400
    assert raw("GET", "/nope") == 404
    # malformed HTTP (framing, headers, garbage): 400, and no traceback in the log
    import socket
    from urllib.parse import urlsplit
    where = urlsplit(server.url)
    for bad in (b"GARBAGE\r\n\r\n", b"\x00\x01\xff\r\n\r\n",
                b"POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"):
        with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
            sock.sendall(bad)
            assert sock.recv(64).startswith(b"HTTP/1.0 400"), bad
    ok = client.invoke(FunctionName="hello")
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert "Traceback" not in server.output(), server.output()


# ---- concurrency --------------------------------------------------------------------
def test_reserved_concurrency_throttles_exactly_one(home, serve):
    publish(home, "marker", timeout=30)
    client = serve().client()
    client.put_function_concurrency(FunctionName="marker", ReservedConcurrentExecutions=1)
    assert client.get_function_concurrency(FunctionName="marker")[
        "ReservedConcurrentExecutions"] == 1
    from botocore.exceptions import ClientError
    outcomes: list = []
    barrier = threading.Barrier(2)

    def call() -> None:
        barrier.wait()
        try:
            r = client.invoke(FunctionName="marker", Payload=b'{"sleep": 3}')
            outcomes.append(("ok", r["StatusCode"]))
        except ClientError as exc:
            outcomes.append((exc.response["Error"]["Code"], exc.response))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    oks = [o for o in outcomes if o[0] == "ok"]
    throttled = [o for o in outcomes if o[0] == "TooManyRequestsException"]
    assert len(oks) == 1 and len(throttled) == 1, outcomes
    resp = throttled[0][1]
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert resp["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["retry-after"]
    client.delete_function_concurrency(FunctionName="marker")
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(
        FunctionName="marker")


def test_provisioned_concurrency_first_invoke_is_warm(home, serve):
    publish(home, "hello")
    server = serve()
    client = server.client()
    cfg = client.put_provisioned_concurrency_config(FunctionName="hello", Qualifier="1",
                                                    ProvisionedConcurrentExecutions=2)
    assert cfg["Status"] == "READY" and cfg["AllocatedProvisionedConcurrentExecutions"] == 2
    got = client.get_provisioned_concurrency_config(FunctionName="hello", Qualifier="1")
    assert got["AvailableProvisionedConcurrentExecutions"] == 2
    assert server.metrics()["snapstart_provisioned_clones_ready"] == 2
    first = client.invoke(FunctionName="hello", Qualifier="1")
    assert _start_type(first) == "warm"
    assert _payload(first)["calls"] == 1           # a fresh clone, restored ahead of time


# ---- async events -------------------------------------------------------------------
def test_event_invoke_survives_kill9_and_runs_after_restart(home, serve):
    publish(home, "marker", timeout=30)
    server = serve()
    resp = server.client().invoke(FunctionName="marker", InvocationType="Event",
                                  Payload=json.dumps({"sleep": 3, "marker": True}))
    assert resp["StatusCode"] == 202
    event_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    server.kill9()
    assert f"MARKER done {event_id}" not in function_logs(home, "marker")
    pending = json.loads(_cli(home, "events", "ls", "--json").stdout)
    assert [e["id"] for e in pending] == [event_id]

    serve()
    deadline = time.monotonic() + 90
    while (f"MARKER done {event_id}" not in function_logs(home, "marker")
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert f"MARKER done {event_id}" in function_logs(home, "marker"), \
        "the event did not run after the restart"
    deadline = time.monotonic() + 10
    while json.loads(_cli(home, "events", "ls", "--json").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(_cli(home, "events", "ls", "--json").stdout) == []


def test_event_retried_twice_then_failed(home, serve):
    publish(home, "marker", timeout=30)
    server = serve("--event-backoff", "0.1")
    resp = server.client().invoke(FunctionName="marker", InvocationType="Event",
                                  Payload=json.dumps({"fail": True}))
    assert resp["StatusCode"] == 202
    deadline = time.monotonic() + 60
    failed = []
    while time.monotonic() < deadline:
        failed = json.loads(_cli(home, "events", "ls", "--failed", "--json").stdout)
        if failed:
            break
        time.sleep(0.3)
    assert len(failed) == 1 and failed[0]["attempts"] == 3
    assert "asked to fail" in failed[0]["error"]
    assert function_logs(home, "marker").count("MARKER attempt ") == 3


# ---- observability & control plane ----------------------------------------------------
def test_metrics_logs_and_cli_endpoint(home, serve):
    publish(home, "hello")
    publish(home, "errors")
    server = serve()
    client = server.client()
    for _ in range(3):
        client.invoke(FunctionName="hello")
    client.invoke(FunctionName="errors", Payload=b'{"action": "raise"}')
    cli = _cli(home, "invoke", "hello", "--endpoint", server.url, "--json", "--log-type", "Tail")
    row = json.loads(cli.stdout)
    assert row["start_type"] == "warm" and row["function_error"] is None
    assert "REPORT RequestId" in row["logs"]

    m = server.metrics()
    hello = sum(v for k, v in m.items()
                if k.startswith('snapstart_invocations_total{function="hello"'))
    assert hello == 4
    assert m['snapstart_invocations_total{function="errors",start_type="restored"}'] == 1
    assert m['snapstart_errors_total{error_type="CustomError",function="errors"}'] == 1
    assert m['snapstart_invocation_duration_seconds_count{start_type="warm"}'] == 3
    assert m["snapstart_restore_duration_seconds_count"] == 2
    assert m["snapstart_concurrent_executions"] == 0

    # invocation logs are written on the server's log thread, after each response
    deadline = time.monotonic() + 10
    while (text := _cli(home, "logs", "hello").stdout).count("\tREPORT RequestId: ") < 4 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text.count("\tSTART RequestId: ") == 4 and text.count("\tREPORT RequestId: ") == 4
    assert "hello: handling" in text
    assert _cli(home, "logs", "hello", "--since", "3600").stdout.count("START") == 4


def test_list_functions_and_versions(home, serve):
    publish(home, "hello")
    publish(home, "hello")
    publish(home, "errors")
    client = serve().client()
    names = sorted(f["FunctionName"] for f in client.list_functions()["Functions"])
    assert names == ["errors", "hello"]
    versions = [v["Version"] for v in
                client.list_versions_by_function(FunctionName="hello")["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    fn = client.get_function(FunctionName="hello", Qualifier="2")
    assert fn["Configuration"]["Handler"] == "app.handler"
    assert fn["Configuration"]["FunctionArn"].endswith(":function:hello:2")
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as info:
        client.get_function(FunctionName="nope")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
