"""Asynchronous invocation settings and destinations (Lambda's EventInvokeConfig).

Per function, from the ``destinations`` entries of ``triggers.json``
(triggers/config.py, written by ``snapstart deploy`` from a SAM ``EventInvokeConfig``):
``maximum_retry_attempts`` (0-2, replaces serve's default of 2 for that function),
``maximum_event_age_s`` (60-21600: an event older than that when its turn comes is
not run; it fails with ``EventAgeExceeded``), ``on_success`` and ``on_failure``.

When an Event invocation ends -- it succeeded, or it failed its last attempt, or it
expired -- the matching destination gets Lambda's invocation record::

    {"version": "1.0", "timestamp": ISO-8601 UTC,
     "requestContext": {"requestId", "functionArn", "condition": "Success" |
                        "RetriesExhausted" | "EventAgeExceeded", "approximateInvokeCount"},
     "requestPayload": the event (JSON, or the raw text if it is not JSON),
     "responseContext": {"statusCode": 200, "executedVersion", "functionError"?},
     "responsePayload": the function's response or error (JSON, or text)}

A ``function`` destination receives it as an asynchronous invocation of its own
(queued like any Event); an ``sqs`` destination as a message sent with boto3 to the
queue URL (the endpoint from ``AWS_ENDPOINT_URL_SQS`` or the SQS default, so moto,
ElasticMQ and real SQS all work). A destination that cannot be reached is logged;
the event itself is settled either way.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import SnapStartError

__all__ = ["Destinations", "record"]

log = logging.getLogger("snapstart.events")


def _json_or_text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def record(*, request_id: str, function_arn: str, condition: str, attempts: int,
           payload: bytes, result: Any = None) -> dict[str, Any]:
    """Lambda's destination record for one settled Event invocation."""
    response: dict[str, Any] = {"statusCode": 200}
    if result is not None:
        response["executedVersion"] = result.executed_version or "$LATEST"
        if result.function_error:
            response["functionError"] = result.function_error
    return {"version": "1.0",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "requestContext": {"requestId": request_id, "functionArn": function_arn,
                               "condition": condition, "approximateInvokeCount": attempts},
            "requestPayload": _json_or_text(payload),
            "responseContext": response,
            "responsePayload": _json_or_text(result.payload if result is not None else None)}


class Destinations:
    """The settings of each function, read from triggers.json when it changes."""

    def __init__(self, home: Path, enqueue: Any) -> None:
        """``enqueue(function, payload)``: queue an Event invocation (function targets)."""
        self.home = Path(home)
        self.enqueue = enqueue
        self._lock = threading.Lock()
        self._follower: Any = None
        self._by_name: dict[str, dict[str, Any]] = {}
        self._sqs: Any = None

    def settings(self, function: str) -> dict[str, Any] | None:
        from ..triggers import config

        with self._lock:
            if self._follower is None:
                self._follower = config.Follower(self.home)
            try:
                triggers = self._follower.poll()
            except (SnapStartError, OSError) as exc:
                log.error("destinations not reloaded: %s", exc)
            else:
                if triggers is not None:
                    self._by_name = {e["function"]: e for e in triggers.destinations}
            return self._by_name.get(function)

    def send(self, target: dict[str, Any], body: dict[str, Any]) -> None:
        data = json.dumps(body)
        try:
            if target.get("type") == "function":
                self.enqueue(str(target["name"]), data.encode())
            elif target.get("type") == "sqs":
                if self._sqs is None:
                    import boto3
                    self._sqs = boto3.client("sqs")
                self._sqs.send_message(QueueUrl=str(target["queue_url"]), MessageBody=data)
            else:
                log.error("unknown destination %r", target)
        except Exception as exc:  # noqa: BLE001 - a destination never fails the event
            log.error("destination %s not reached: %s: %s", target, type(exc).__name__, exc)
