"""Fault injection on request (tests/integration/test_faults.py).

Every action is bounded: nothing here may run forever or fill a disk on its own.
"""
import os
import time

CALLS = {"n": 0}


def handler(event, context):
    CALLS["n"] += 1
    action = event.get("action")
    if action == "block":
        # "started": the test waits for this marker, then kills something
        with open(event["marker"], "w") as f:
            f.write(context.aws_request_id)
        time.sleep(event.get("seconds", 60))
        return {"slept": True}
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "fill":
        return _fill(event["path"], event["mb"])
    if action == "close_stdio":
        os.close(1)
        os.close(2)
        return {"closed": True}
    if action == "flood":
        return _flood(event["mb"])
    return {"ok": True, "calls": CALLS["n"]}


def _fill(path, mb):
    """Write up to ``mb`` MiB in 4 MiB chunks; stop at the first OSError."""
    block = b"\xa5" * (4 << 20)
    written, error = 0, None
    try:
        with open(path, "wb") as f:
            while written < mb << 20:
                f.write(block)
                written += len(block)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        error = f"{type(exc).__name__}: errno {exc.errno} {exc.strerror}"
    return {"written_mb": written >> 20, "error": error}


def _flood(mb):
    """``mb`` MiB of numbered log lines on stdout, then a last line."""
    line = 0
    total = 0
    while total < mb << 20:
        lines = []
        for _ in range(10000):
            lines.append(f"flood line {line:08d} " + "x" * 80 + "\n")
            line += 1
        block = "".join(lines).encode()
        os.write(1, block)
        total += len(block)
    os.write(1, f"flood done after {line} lines\n".encode())
    return {"lines": line, "bytes": total}
