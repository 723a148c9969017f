"""The demo function: expensive init once, cheap invokes, SnapStart hooks.

Init does what real functions do: it imports the AWS SDK and creates a client
(boto3 comes with the runtime, as on Lambda; no request is sent) and warms a cache
(a table). With snapstart that work happens once at publish and every restored
clone starts with it done. The after-restore hook refreshes per-clone state (a
connection, a credential or, here, a clone id) because everything else was copied
from the snapshot.
"""
import hashlib
import json
import os
import time
import uuid

import boto3
from snapshot_restore_py import register_after_restore, register_before_snapshot

STARTED = time.time()
S3 = boto3.client("s3", region_name=os.environ.get("AWS_REGION", "us-east-1"))
TABLE = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in range(50_000)}
INIT_SECONDS = time.time() - STARTED
CLONE = {"id": "origin"}


@register_before_snapshot
def before_snapshot():
    print("before-snapshot: closing connections")


@register_after_restore
def after_restore():
    CLONE["id"] = uuid.uuid4().hex[:8]
    print(f"after-restore: clone {CLONE['id']} ready")


def handler(event, context):
    name = event.get("name", "world")
    return {
        "message": f"hello, {name}",
        "init_seconds": round(INIT_SECONDS, 3),
        "init_at": STARTED,                # when init ran: the same in every clone
        "clone": CLONE["id"],
        "entry": TABLE[len(name)][:12],
        "request_id": context.aws_request_id,
        "version": context.function_version,
        "initialization_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "s3_endpoint": S3.meta.endpoint_url,
        "event": json.loads(json.dumps(event)),
    }
