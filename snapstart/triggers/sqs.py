"""SQS event source mappings (``"type": "SQS"``): any SQS-API endpoint, with boto3.

Works against Amazon SQS, ElasticMQ, moto's server or any other implementation of the
SQS API by endpoint URL (the tests use moto's SQS server on loopback: the one that
installs here). The endpoint is, in order: ``options.endpoint_url``; else boto3's own
``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL`` (read by boto3); else, for a queue URL
that is not on amazonaws.com, the URL's scheme and host; else AWS's regional endpoint.
Credentials come from boto3's usual chain (environment, profile, instance role).

The mapping (triggers.json, config.py)::

    {"id": "jobs", "function": "worker", "type": "SQS",
     "source": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"
               | "arn:aws:sqs:us-east-1:123456789012:jobs",
     "batch_size": 10, "batching_window_s": 0, "enabled": true,
     "options": {"endpoint_url": URL, "region": "us-east-1",
                 "function_response_types": ["ReportBatchItemFailures"],
                 "visibility_timeout_s": N,   ReceiveMessage's VisibilityTimeout
                                              (default: the queue's own)
                 "wait_time_s": 10,           long polling while the queue is empty (<= 20)
                 "backoff_s": 1, "max_backoff_s": 30}}

The event (Lambda's SQS shape)::

    {"Records": [{"messageId", "receiptHandle", "body",
                  "attributes": {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                 "ApproximateFirstReceiveTimestamp", ...},
                  "messageAttributes": {NAME: {"stringValue" | "binaryValue" (base64),
                                               "stringListValues": [],
                                               "binaryListValues": [], "dataType"}},
                  "md5OfBody", "eventSource": "aws:sqs", "eventSourceARN": QUEUE-ARN,
                  "awsRegion"}]}

Batching: ReceiveMessage (at most 10 a call) until batch_size messages, or until
batching_window_s passed since the first one; with a window of 0, the first non-empty
receive is the batch. Lambda's 6 MB payload limit also ends a batch.

Deletion and redelivery rules:

    function returned                     every message deleted
    ... with ReportBatchItemFailures      all but those named in
                                          {"batchItemFailures": [{"itemIdentifier": ID}]};
                                          an empty or missing list, a null or non-object
                                          response: all deleted; an identifier that is
                                          empty, null or not in the batch, or a response
                                          that is not JSON: none deleted (Lambda's rules)
    function error / crash                none deleted
    throttled / no such function          none deleted; made visible again after a pause

A message that is not deleted becomes visible again when its visibility timeout ends
and is received again; the queue's own redrive policy (maxReceiveCount ->
deadLetterTargetArn) moves a poison message to its dead-letter queue. That is done by
the SQS service, not here: ``dead_lettered`` counts the failures at or past
maxReceiveCount, ``retried`` the others.

Visibility timeout: the queue's (or ``visibility_timeout_s``). While a batch is gathered
and while its invocation runs, every message whose timeout is less than half left is
extended by a whole timeout (ChangeMessageVisibilityBatch), so a long invocation does not
hand its messages to another consumer. Nothing is deleted before the invocation
returned, so ``kill -9`` of serve loses nothing: the messages of the batch in flight
reappear when their visibility timeout ends (processed again: at least once).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .queues import MAX_BATCH_BYTES, EventSourceError, MappingSpec, Outcome, Poller

__all__ = ["SqsPoller", "sqs_record", "sqs_event", "batch_item_failures", "parse_arn",
           "endpoint_for"]

log = logging.getLogger("snapstart.mappings")

# a batch stops growing once it could not take one more message of the largest size
MAX_MESSAGE_BYTES = 1024 * 1024


def parse_arn(arn: str) -> tuple[str, str, str]:
    """arn:aws:sqs:REGION:ACCOUNT:NAME -> (region, account, name)."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"] or not parts[5]:
        raise EventSourceError(f"not an SQS queue ARN: {arn}")
    return parts[3], parts[4], parts[5]


def endpoint_for(source: str, options: dict[str, Any], environ: dict[str, str]) -> str | None:
    """The endpoint URL to give boto3, or None to let it choose (see the module)."""
    if options.get("endpoint_url"):
        return str(options["endpoint_url"])
    if environ.get("AWS_ENDPOINT_URL_SQS") or environ.get("AWS_ENDPOINT_URL"):
        return None
    if source.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(source)
        if not (parts.hostname or "").endswith("amazonaws.com"):
            return f"{parts.scheme}://{parts.netloc}"
    return None


def _region_of(source: str) -> str | None:
    if source.startswith("arn:"):
        return parse_arn(source)[0]
    host = urllib.parse.urlsplit(source).hostname or ""
    labels = host.split(".")
    if host.endswith("amazonaws.com") and len(labels) >= 4 and labels[0] == "sqs":
        return labels[1]
    return None


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    out["stringListValues"] = list(value.get("StringListValues", []))
    out["binaryListValues"] = [base64.b64encode(b).decode("ascii")
                               for b in value.get("BinaryListValues", [])]
    out["dataType"] = value.get("DataType")
    return out


def sqs_record(message: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage message (boto3's shape) as one record of Lambda's event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""), "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {k: _attribute(v)
                              for k, v in message.get("MessageAttributes", {}).items()},
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": region}
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def sqs_event(messages: list[dict[str, Any]], arn: str, region: str) -> dict[str, Any]:
    return {"Records": [sqs_record(m, arn, region) for m in messages]}


def batch_item_failures(payload: bytes, ids: list[str]) -> set[str] | None:
    """The message ids a partial batch response names as failed; None: the whole batch
    failed (Lambda's rules, in the module docstring)."""
    try:
        data = json.loads(payload) if payload.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return set()
    failures = data.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(ids)
    out: set[str] = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident or ident not in known:
            return None
        out.add(ident)
    return out


@dataclass
class _Held:
    message: dict[str, Any]
    visible_until: float            # monotonic

    @property
    def id(self) -> str:
        return str(self.message["MessageId"])

    @property
    def size(self) -> int:
        return len(self.message.get("Body", "")) + 1024


class SqsPoller(Poller):
    system = "aws_sqs"
    tick_wait = 0.2

    def __init__(self, spec: MappingSpec, *args: Any) -> None:
        super().__init__(spec, *args)
        opts = spec.options
        self.rbif = "ReportBatchItemFailures" in (opts.get("function_response_types") or [])
        self.wait_s = int(opts.get("wait_time_s", 10))
        self.vt_option = opts.get("visibility_timeout_s")
        # read once, here: boto3 reads the same variables itself
        self.endpoint = endpoint_for(spec.source, opts, dict(os.environ))
        self.region = str(opts.get("region") or _region_of(spec.source)
                          or self.service.settings.region)
        self.url = ""
        self.arn = ""
        self.vt = 30
        self.max_receive: int | None = None

    def source_errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError
        return (BotoCoreError, ClientError)

    def describe_error(self, exc: BaseException) -> str:
        from botocore.exceptions import (ClientError, EndpointConnectionError,
                                         NoCredentialsError)
        where = self.endpoint or "AWS's endpoint"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = err.get("Code", "?")
            if "NonExistentQueue" in code or code == "QueueDoesNotExist":
                return f"queue {self.spec.source} does not exist at {where}"
            return f"SQS {where}: {code}: {err.get('Message', '')}"[:500]
        if isinstance(exc, EndpointConnectionError):
            return f"cannot reach the SQS endpoint {where}: {exc}"[:500]
        if isinstance(exc, NoCredentialsError):
            return "no AWS credentials for SQS (environment, profile or role)"
        return super().describe_error(exc)

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5,
                        read_timeout=self.wait_s + 15)
        kwargs: dict[str, Any] = {"region_name": self.region, "config": config}
        if self.endpoint:
            kwargs["endpoint_url"] = self.endpoint
        return boto3.session.Session().client("sqs", **kwargs)

    def _resolve(self, client: Any) -> None:
        source = self.spec.source
        if source.startswith("arn:"):
            _, account, name = parse_arn(source)
            kw = {"QueueOwnerAWSAccountId": account} if account else {}
            self.url = client.get_queue_url(QueueName=name, **kw)["QueueUrl"]
        else:
            self.url = source
        attrs = client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["QueueArn", "VisibilityTimeout",
                                               "RedrivePolicy"])["Attributes"]
        self.arn = attrs.get("QueueArn") or source
        self.vt = int(self.vt_option if self.vt_option is not None
                      else attrs.get("VisibilityTimeout", 30))
        self.max_receive = None
        if attrs.get("RedrivePolicy"):
            try:
                self.max_receive = int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"])
            except (ValueError, KeyError, TypeError):
                self.max_receive = None

    # ---- a session: resolve, then gather and process until stopped -------------------
    def session(self) -> None:
        client = self._client()
        self._resolve(client)
        self.polling()
        pause_until = 0.0
        while not self.stopping.is_set():
            if time.monotonic() < pause_until:
                self.stopping.wait(pause_until - time.monotonic())
                continue
            batch = self._gather(client)
            if not batch:
                continue
            if self.stopping.is_set():          # not invoked: let others have them now
                self._release(client, batch, 0)
                break
            outcome = self._process(client, batch)
            pause_until = time.monotonic() + self.pause_after(outcome)

    def _gather(self, client: Any) -> list[_Held]:
        batch: list[_Held] = []
        first = 0.0
        size = 0
        while not self.stopping.is_set() and len(batch) < self.spec.batch_size:
            if batch:
                remaining = self.spec.batching_window_s - (time.monotonic() - first)
                if remaining <= 0 or size + MAX_MESSAGE_BYTES > MAX_BATCH_BYTES:
                    break
                wait = int(min(remaining, max(self.vt / 2 - 1, 0), 20))
                self._extend(client, batch)
            else:
                wait = self.wait_s
            kw: dict[str, Any] = {}
            if self.vt_option is not None:
                kw["VisibilityTimeout"] = self.vt
            resp = client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=min(10, self.spec.batch_size - len(batch)),
                WaitTimeSeconds=wait, AttributeNames=["All"], MessageAttributeNames=["All"],
                **kw)
            now = time.monotonic()
            messages = resp.get("Messages", [])
            if messages:
                first = first or now
                batch += [_Held(m, now + self.vt) for m in messages]
                size += sum(h.size for h in batch[-len(messages):])
                self.board.count(self.spec.id, received=len(messages))
                if self.spec.batching_window_s <= 0:
                    break
            elif batch and wait == 0:
                self.stopping.wait(0.1)
        return batch

    def _process(self, client: Any, batch: list[_Held]) -> Outcome:
        mid = self.spec.id
        event = sqs_event([h.message for h in batch], self.arn, self.region)
        outcome = self.invoke(event, len(batch), tick=lambda: self._extend(client, batch))
        ids = [h.id for h in batch]
        failed: set[str]
        if outcome.ok:
            failed = set()
            if self.rbif:
                named = batch_item_failures(outcome.payload, ids)
                if named is None:
                    failed = set(ids)
                    self.board.problem(mid, "the function's partial batch response is not "
                                       "valid (an itemIdentifier that is empty or not in the "
                                       "batch, or not JSON): the whole batch failed")
                else:
                    failed = named
        elif outcome.counts_attempt:
            failed = set(ids)
        else:                                   # throttled / no such function
            self._release(client, batch, int(self.pause_after(outcome)))
            return outcome
        self._delete(client, [h for h in batch if h.id not in failed])
        for h in batch:
            if h.id not in failed:
                continue
            received = int(h.message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            if self.max_receive is not None and received >= self.max_receive:
                self.board.count(mid, dead_lettered=1)
            else:
                self.board.count(mid, retried=1)
        return outcome

    # ---- SQS calls on held messages -------------------------------------------------------
    def _delete(self, client: Any, done: list[_Held]) -> None:
        for i in range(0, len(done), 10):
            chunk = done[i:i + 10]
            resp = client.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(n), "ReceiptHandle": h.message["ReceiptHandle"]}
                for n, h in enumerate(chunk)])
            ok = len(resp.get("Successful", []))
            self.board.count(self.spec.id, acked=ok)
            for failure in resp.get("Failed", []):
                # e.g. the receipt handle expired: the message comes back and is
                # processed again (at least once)
                self.board.problem(self.spec.id, f"DeleteMessage failed: "
                                   f"{failure.get('Code')}: {failure.get('Message', '')}")

    def _extend(self, client: Any, held: list[_Held]) -> None:
        if self.vt <= 0:
            return
        now = time.monotonic()
        due = [h for h in held if h.visible_until - now < self.vt / 2]
        for i in range(0, len(due), 10):
            chunk = due[i:i + 10]
            try:
                client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": h.message["ReceiptHandle"],
                     "VisibilityTimeout": self.vt} for n, h in enumerate(chunk)])
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("mapping %s: cannot extend the visibility timeout: %s",
                            self.spec.id, exc)
                return
            for h in chunk:
                h.visible_until = now + self.vt

    def _release(self, client: Any, held: list[_Held], delay_s: int) -> None:
        """Make ``held`` visible again after ``delay_s`` (best effort)."""
        for i in range(0, len(held), 10):
            try:
                client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": h.message["ReceiptHandle"],
                     "VisibilityTimeout": delay_s} for n, h in enumerate(held[i:i + 10])])
            except Exception:  # noqa: BLE001 - they reappear after their timeout anyway
                return
