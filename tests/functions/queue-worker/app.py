"""Consumes queue batches (RabbitMQ or SQS events) for the event source mapping tests.

Each message body is JSON: {"id": STR, "fail": bool, "sleep": seconds, "partial": bool}.
Prints one line per batch (``EVENT <the event as JSON>``) and one per message
(``MARKER ok ID`` / ``MARKER fail ID``), which the tests read from the function's logs.
A message with "fail" fails the whole batch (raises), unless it also has "partial":
then only it is reported in an SQS partial batch response.
"""
import base64
import json
import time


def _messages(event):
    if "rmqMessagesByQueue" in event:
        for msgs in event["rmqMessagesByQueue"].values():
            for m in msgs:
                yield None, json.loads(base64.b64decode(m["data"]))
    else:
        for r in event.get("Records", []):
            yield r["messageId"], json.loads(r["body"])


def handler(event, context):
    print("EVENT " + json.dumps(event, separators=(",", ":")), flush=True)
    items = list(_messages(event))
    time.sleep(max([float(b.get("sleep", 0)) for _, b in items] or [0]))
    failures = []
    raise_ids = []
    for mid, body in items:
        if body.get("fail") and body.get("partial") and mid:
            failures.append({"itemIdentifier": mid})
            print(f"MARKER fail {body['id']}", flush=True)
        elif body.get("fail"):
            raise_ids.append(body["id"])
            print(f"MARKER fail {body['id']}", flush=True)
    if raise_ids:
        raise RuntimeError("poison: " + ",".join(raise_ids))
    for mid, body in items:
        if not body.get("fail"):
            print(f"MARKER ok {body['id']}", flush=True)
    return {"batchItemFailures": failures}
