"""The sample app's HTTP function: HttpApi routes /items/{id} and a function URL."""
import base64
import json
import os
import time

STARTED = time.time()
ITEMS = {"1": {"id": "1", "name": "first"}}


def handler(event, context):
    method = event.get("requestContext", {}).get("http", {}).get("method", "GET")
    item_id = (event.get("pathParameters") or {}).get("id")
    if method == "PUT" and item_id:
        body = event.get("body") or "{}"
        if event.get("isBase64Encoded"):      # API Gateway does this for non-text types
            body = base64.b64decode(body)
        ITEMS[item_id] = {"id": item_id, **json.loads(body)}
        return {"statusCode": 201, "body": json.dumps(ITEMS[item_id])}
    if item_id:
        item = ITEMS.get(item_id)
        return ({"statusCode": 200, "body": json.dumps(item)} if item else
                {"statusCode": 404, "body": json.dumps({"error": f"no item {item_id}"})})
    return {"greeting": os.environ.get("GREETING"), "path": event.get("rawPath"),
            "init_at": STARTED}
