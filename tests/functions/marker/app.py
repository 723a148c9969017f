"""Sleeps, then appends a line to the marker file named in the event (async tests)."""
import os
import time

_CALLS = {"n": 0}


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        with open(event["marker"], "a") as f:
            f.write(f"attempt {context.aws_request_id}\n")
        raise RuntimeError("asked to fail")
    if event.get("marker"):
        with open(event["marker"], "a") as f:
            f.write(f"done {context.aws_request_id} pid {os.getpid()}\n")
    _CALLS["n"] += 1
    cc = context.client_context
    return {"slept": event.get("sleep", 0), "calls": _CALLS["n"],
            "client_context": getattr(cc, "custom", None) if cc else None,
            "trace_id": os.environ.get("_X_AMZN_TRACE_ID")}
