"""Prints each event it gets as one line (a destination's records, for the tests)."""
import json


def handler(event, context):
    print("DEST " + json.dumps(event, sort_keys=True), flush=True)
    return {"ok": True}
