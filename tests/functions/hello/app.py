"""A stdlib-only function: proves init ran once and clones are unique."""
import os
import random
import secrets
import time
import uuid

INIT_AT = time.time()
INIT_PID = os.getpid()
COUNTER = {"n": 0}
print("hello: init ran")


def handler(event, context):
    COUNTER["n"] += 1
    print(f"hello: handling {event!r}")
    return {
        "init_at": INIT_AT,
        "calls": COUNTER["n"],
        "urandom": os.urandom(16).hex(),
        "random": random.random(),
        "uuid4": str(uuid.uuid4()),
        "secrets": secrets.token_hex(16),
        "event": event,
        "request_id": context.aws_request_id,
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "netns": os.stat("/proc/self/ns/net").st_ino,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pidns": os.stat("/proc/self/ns/pid").st_ino,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "status": {k: v.strip() for k, v in (line.split(":", 1) for line in
                   open("/proc/self/status") if line.startswith(("CapEff", "CapPrm",
                                                                 "NoNewPrivs", "Seccomp")))},
    }
