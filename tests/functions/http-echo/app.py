"""HTTP trigger test function (payload 2.0 and 1.0): what it returns depends on the
last path segment; anything else echoes the event back as a JSON body."""
import base64
import json
import time

COUNTER = {"n": 0}


def handler(event, context):
    COUNTER["n"] += 1
    path = event.get("rawPath") or event.get("path") or "/"
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last == "plain":                 # no statusCode: 200, application/json, as is
        return {"message": "plain", "calls": COUNTER["n"]}
    if last == "string":
        return "Hello, world!"
    if last == "list":
        return [1, 2, 3]
    if last == "custom":
        return {"statusCode": 201, "headers": {"Content-Type": "text/plain",
                                               "X-Custom": "yes"},
                "cookies": ["a=1; Path=/", "b=2; HttpOnly"], "body": "created"}
    if last == "multi":                 # 1.0: multiValueHeaders
        return {"statusCode": 200, "multiValueHeaders": {"X-Multi": ["1", "2"]},
                "headers": {"Content-Type": "text/plain"}, "body": "multi"}
    if last == "binary":                # echo the request body back as binary
        raw = event.get("body") or ""
        data = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
        return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
                "isBase64Encoded": True, "body": base64.b64encode(data[::-1]).decode()}
    if last == "raise":
        raise RuntimeError("handler failed on purpose")
    if last == "malformed":
        return {"statusCode": "not a status"}
    if last == "sleep":
        time.sleep(3)
    print(f"http-echo: {event.get('routeKey') or event.get('resource')} {path}")
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"event": event, "request_id": context.aws_request_id})}
