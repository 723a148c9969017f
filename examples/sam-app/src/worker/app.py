"""The sample app's worker: schedules, RabbitMQ and SQS batches. Prints one line per
record it handled (the tests count them); an SQS body "fail" is reported back as a
batch item failure."""
import base64


def handler(event, context):
    if "rmqMessagesByQueue" in event:
        for queue, messages in event["rmqMessagesByQueue"].items():
            for m in messages:
                print(f"WORKER rmq {queue} {base64.b64decode(m['data']).decode()}", flush=True)
        return {"ok": True}
    if "Records" in event:
        failures = []
        for r in event["Records"]:
            print(f"WORKER sqs {r['messageId']} {r['body']}", flush=True)
            if r["body"] == "fail":
                failures.append({"itemIdentifier": r["messageId"]})
        return {"batchItemFailures": failures}
    print(f"WORKER event {event.get('source') or event.get('detail-type')}", flush=True)
    return {"ok": True}
