"""Sleeps, then prints a marker line (the async tests read the function's logs)."""
import os
import time

_CALLS = {"n": 0}


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        print(f"MARKER attempt {context.aws_request_id}", flush=True)
        raise RuntimeError("asked to fail")
    if event.get("marker"):
        print(f"MARKER done {context.aws_request_id} pid {os.getpid()}", flush=True)
    _CALLS["n"] += 1
    cc = context.client_context
    return {"slept": event.get("sleep", 0), "calls": _CALLS["n"],
            "client_context": getattr(cc, "custom", None) if cc else None,
            "trace_id": os.environ.get("_X_AMZN_TRACE_ID")}
