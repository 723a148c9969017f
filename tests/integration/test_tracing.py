"""Tracing (issue 13): each invocation is one OpenTelemetry trace -- dispatch, the
restore's phases or the cold init, the runtime invoke -- recorded with the real SDK
(in-memory exporter), and exported by `snapstart serve` over OTLP/HTTP to a receiver
on loopback, continuing the caller's X-Amzn-Trace-Id / traceparent, which the
function sees as _X_AMZN_TRACE_ID."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from snapstart import tracing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import publish as cli_publish  # noqa: E402
from test_serve import serve  # noqa: E402,F401 - the serve fixture

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


def _tree(finished) -> dict[str, list[str]]:
    """span name -> the names of its children (one trace)."""
    by_id = {s.context.span_id: s for s in finished}
    tree: dict[str, list[str]] = {s.name: [] for s in finished}
    for s in finished:
        if s.parent is not None and s.parent.span_id in by_id:
            tree[by_id[s.parent.span_id].name].append(s.name)
    return {k: sorted(v) for k, v in tree.items()}


def test_restored_warm_and_cold_invocations_are_one_trace_each(manager, publish, spans):
    publish("hello")
    spans.clear()
    restored = manager.invoke("hello", force_new=True)
    assert restored.start_type == "restored"
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1
    tree = _tree(finished)
    assert tree["dispatch"] == ["restore", "resume", "runtime invoke"]
    assert tree["restore"] == ["criu restore", "materialize", "slot"]
    dispatch = next(s for s in finished if s.name == "dispatch")
    assert dispatch.parent is None
    assert dict(dispatch.attributes) == {
        "faas.name": "hello", "faas.version": "1", "faas.invocation_id": restored.request_id,
        "snapstart.start_type": "restored", "faas.coldstart": True}
    resume = next(s for s in finished if s.name == "resume")
    invoke = next(s for s in finished if s.name == "runtime invoke")
    assert resume.end_time <= invoke.start_time + 1000 and invoke.end_time <= dispatch.end_time

    spans.clear()
    warm = manager.invoke("hello")
    tree = _tree(spans.get_finished_spans())
    assert warm.start_type == "warm" and tree["dispatch"] == ["runtime invoke"]

    spans.clear()
    cold = manager.invoke("hello", no_snapshot=True, force_new=True)
    finished = spans.get_finished_spans()
    assert cold.start_type == "cold" and _tree(finished)["dispatch"] == ["init", "runtime invoke"]
    assert next(s for s in finished if s.name == "dispatch").attributes["faas.coldstart"]

    # a function error marks the runtime invoke span, not the dispatch
    publish("errors")
    spans.clear()
    manager.invoke("errors", b'{"action": "raise"}')
    invoke = next(s for s in spans.get_finished_spans() if s.name == "runtime invoke")
    assert invoke.status.status_code.name == "ERROR"


class _OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback: POST /v1/traces, protobuf
    ExportTraceServiceRequest (opentelemetry-proto's messages), as a collector takes it."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        self.spans: list = []
        self.content_types: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.content_types.add(self.headers["Content-Type"])
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    service = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            receiver.spans.append((service.get("service.name"), span))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, trace_hex: str, names: set[str], timeout_s: float = 20.0) -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = [s for _, s in self.spans if s.trace_id.hex() == trace_hex]
            if names <= {s.name for s in got}:
                return got
            time.sleep(0.05)
        raise AssertionError(f"spans of {trace_hex} not received: "
                             f"{sorted({s.name for _, s in self.spans})}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_serve_exports_over_otlp_http_and_continues_the_callers_trace(home, serve):
    receiver = _OtlpReceiver()
    try:
        cli_publish(home, "marker")
        server = serve(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                            "OTEL_SERVICE_NAME": "snapstart-test",
                            "OTEL_BSP_SCHEDULE_DELAY": "50"})

        def invoke(headers: dict[str, str]) -> dict:
            req = urllib.request.Request(
                f"{server.url}/2015-03-31/functions/marker/invocations", data=b"{}",
                headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())

        # Lambda's own header
        root = "5759e988bd862e3fe1be46a994272793"
        seen = invoke({"X-Amzn-Trace-Id":
                       f"Root=1-{root[:8]}-{root[8:]};Parent=53995c3f42cd8ad8;Sampled=1"})
        got = receiver.wait_for(root, {"Invoke", "dispatch", "restore", "criu restore",
                                       "resume", "runtime invoke", "response"})
        invoke_span = next(s for s in got if s.name == "Invoke")
        assert invoke_span.parent_span_id.hex() == "53995c3f42cd8ad8"
        assert invoke_span.kind == invoke_span.SPAN_KIND_SERVER
        dispatch = next(s for s in got if s.name == "dispatch")
        attrs = {a.key: a.value for a in dispatch.attributes}
        assert attrs["faas.name"].string_value == "marker"
        assert attrs["snapstart.start_type"].string_value == "restored"
        # the function sees the same trace, its parent our Invoke span
        assert seen["trace_id"] == (f"Root=1-{root[:8]}-{root[8:]};"
                                    f"Parent={invoke_span.span_id.hex()};Sampled=1")
        assert {svc for svc, _ in receiver.spans} == {"snapstart-test"}
        assert receiver.content_types == {"application/x-protobuf"}

        # W3C traceparent, warm this time
        w3c = "0af7651916cd43dd8448eb211c80319c"
        seen = invoke({"traceparent": f"00-{w3c}-b7ad6b7169203331-01"})
        got = receiver.wait_for(w3c, {"Invoke", "dispatch", "runtime invoke"})
        assert "restore" not in {s.name for s in got}
        assert seen["trace_id"].startswith(f"Root=1-{w3c[:8]}-{w3c[8:]};Parent=")
    finally:
        receiver.close()


def test_without_otlp_settings_nothing_is_traced_but_the_header_is_continued(home, serve):
    cli_publish(home, "marker")
    server = serve()
    w3c = "4bf92f3577b34da6a3ce929d0e0e4736"
    req = urllib.request.Request(
        f"{server.url}/2015-03-31/functions/marker/invocations", data=b"{}",
        headers={"traceparent": f"00-{w3c}-00f067aa0ba902b7-01"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        seen = json.loads(resp.read())
    assert seen["trace_id"] == f"Root=1-{w3c[:8]}-{w3c[8:]};Parent=00f067aa0ba902b7;Sampled=1"
    assert not tracing.enabled()            # this process: no endpoint, no provider
