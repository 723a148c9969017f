"""Benchmark function `hello`: stdlib only, tiny init, tiny response."""
import os
import time

INIT_AT = time.time()


def handler(event, context):
    return {"hello": (event or {}).get("name", "world"), "init_at": INIT_AT,
            "pid": os.getpid()}
