"""RabbitMQ event source mappings (``"type": "MQ"``): AMQP 0-9-1 with pika.

The mapping (triggers.json, config.py)::

    {"id": "orders", "function": "worker", "type": "MQ",
     "source": "amqp://USER:PASSWORD@HOST:5672/VHOST"      (amqps:// for TLS; or the
               broker's ARN, with the URL in options.url)
     "queues": ["orders"], "batch_size": 100, "batching_window_s": 0.5, "enabled": true,
     "options": {"max_retries": 3,          failed attempts redelivered before a message
                                            is dead-lettered (default 3)
                 "dead_letter": "publish",  "publish" (default): snapstart publishes it to
                                            dead_letter_exchange with publisher confirms,
                                            then acks it; "reject": basic.nack without
                                            requeue, so the broker routes it through the
                                            queue's own x-dead-letter-exchange (a queue
                                            without one drops it: RabbitMQ's rule)
                 "dead_letter_exchange": "snapstart.dlx",   declared direct, durable
                 "dead_letter_queue": "QUEUE.dlq",          declared durable, bound to the
                                            exchange with the routing key QUEUE
                 "broker_arn": ARN,         eventSourceArn (default: derived from the URL)
                 "heartbeat_s": 30, "backoff_s": 1, "max_backoff_s": 30}}

The event (Lambda's Amazon MQ for RabbitMQ shape)::

    {"eventSource": "aws:rmq", "eventSourceArn": "arn:aws:mq:REGION:ACCOUNT:broker:...",
     "rmqMessagesByQueue": {"QUEUE::VHOST": [
        {"basicProperties": {"contentType", "contentEncoding", "headers", "deliveryMode",
                             "priority", "correlationId", "replyTo", "expiration",
                             "messageId", "timestamp": "Jan 1, 1970, 12:33:41 AM",
                             "type", "userId", "appId", "clusterId", "bodySize"},
         "redelivered": bool, "data": BASE64(body)}]}}

Header values are as Lambda gives them: strings (AMQP long strings) as
``{"bytes": [utf-8 byte values]}``, numbers and booleans as they are, tables and arrays
recursively; ``timestamp`` in Java's medium US date format, UTC.

Ack and redelivery rules. One channel per mapping, manual acks, prefetch (basic.qos,
per consumer) = batch_size: the broker never has more than one batch of a queue out to
us. A batch is invoked once, then, per message:

    function returned           basic.ack
    failed attempt n <= max_retries
                                basic.nack requeue=true (redelivered=true next time)
    failed attempt n >  max_retries
                                dead-lettered (above), then acked ("publish" mode)
    throttled / no such function
                                basic.nack requeue=true, no attempt counted

RabbitMQ keeps no delivery count on classic queues, so attempts are counted in memory,
keyed by the message id (or a digest of body and headers), bounded to
``ATTEMPT_KEYS`` keys; a quorum queue's ``x-delivery-count`` header is used when it is
higher. A restart forgets the memory: a poison message then gets more attempts,
never fewer, and is never lost.

Why ``kill -9`` of serve loses nothing and acks nothing twice: a message is acked only
after the invocation that processed it returned success (or after its dead-letter copy
was confirmed by the broker). Until its ack reaches the broker it is unacknowledged
there, and when the connection drops (the process died; the kernel closes its socket)
the broker puts every unacknowledged message of the channel back in its queue with
``redelivered`` set, for the next consumer: the restarted serve. An ack is sent once
per delivery tag, and a delivery tag belongs to one channel: after a reconnect the old
tags are void, so an ack can never apply to a message twice. A batch that was running
when serve died is thus processed again (at least once, as Lambda) and acked once.
Dead-lettering in "publish" mode publishes before it acks: a crash between the two
leaves the message both in the dead-letter queue and (again) in its queue, which is a
duplicate, never a loss.

An unreachable broker, a refused login or a missing queue is an EventSourceError: the
mapping shows it (``snapstart mappings ls``), logs it, and connects again with backoff;
serve keeps serving everything else.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from .queues import MAX_BATCH_BYTES, MappingSpec, Outcome, Poller, redact

__all__ = ["RabbitPoller", "Delivery", "rmq_event", "basic_properties", "encode_headers",
           "java_timestamp", "broker_arn", "AttemptCounter"]

ATTEMPT_KEYS = 100_000
HEADER_ATTEMPTS = "x-snapstart-attempts"


def _pika() -> Any:
    """pika, imported when a mapping first connects (serve without MQ mappings never
    loads it)."""
    import logging

    import pika  # type: ignore[import-untyped]
    import pika.exceptions  # type: ignore[import-untyped]  # noqa: F401
    # pika logs every failed connection attempt at ERROR, with tracebacks, several
    # times over; the poller reports each failure itself, in one line (queues.py)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    return pika


def java_timestamp(seconds: int | float | None) -> str | None:
    """``Jan 1, 1970, 12:33:41 AM``: how Lambda renders an AMQP timestamp (UTC)."""
    if seconds is None:
        return None
    t = dt.datetime.fromtimestamp(int(seconds), dt.timezone.utc)
    hour = t.hour % 12 or 12
    return f"{t:%b} {t.day}, {t.year}, {hour}:{t:%M:%S} {'AM' if t.hour < 12 else 'PM'}"


def encode_headers(value: Any) -> Any:
    """AMQP header values as Lambda's event carries them."""
    if isinstance(value, bytes):
        return {"bytes": list(value)}
    if isinstance(value, str):
        return {"bytes": list(value.encode("utf-8"))}
    if isinstance(value, dict):
        return {str(k): encode_headers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_headers(v) for v in value]
    if isinstance(value, dt.datetime):
        return java_timestamp(value.replace(tzinfo=value.tzinfo or dt.timezone.utc).timestamp())
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)        # decimal.Decimal and the like


def basic_properties(props: Any, body_size: int) -> dict[str, Any]:
    """pika's ``BasicProperties`` in Lambda's ``basicProperties`` shape."""
    def get(name: str) -> Any:
        return getattr(props, name, None)
    headers = get("headers")
    return {"contentType": get("content_type"), "contentEncoding": get("content_encoding"),
            "headers": encode_headers(headers) if headers else None,
            "deliveryMode": get("delivery_mode"), "priority": get("priority"),
            "correlationId": get("correlation_id"), "replyTo": get("reply_to"),
            "expiration": get("expiration"), "messageId": get("message_id"),
            "timestamp": java_timestamp(get("timestamp")), "type": get("type"),
            "userId": get("user_id"), "appId": get("app_id"), "clusterId": get("cluster_id"),
            "bodySize": body_size}


@dataclass
class Delivery:
    queue: str
    delivery_tag: int
    redelivered: bool
    properties: Any
    body: bytes
    received_at: float = 0.0

    @property
    def size(self) -> int:
        return len(self.body) * 4 // 3 + 512      # base64 and its properties

    def key(self) -> str:
        """What identifies the message across redeliveries (for the attempt count)."""
        mid = getattr(self.properties, "message_id", None)
        if mid:
            return f"{self.queue}\0id\0{mid}"
        headers = getattr(self.properties, "headers", None) or {}
        digest = hashlib.sha256(self.body)
        digest.update(json.dumps(encode_headers(headers), sort_keys=True, default=str).encode())
        return f"{self.queue}\0sha\0{digest.hexdigest()}"

    def broker_count(self) -> int:
        """Deliveries before this one, as the broker counts them (quorum queues)."""
        headers = getattr(self.properties, "headers", None) or {}
        try:
            return int(headers.get("x-delivery-count", 0))
        except (TypeError, ValueError):
            return 0


def rmq_event(source_arn: str, vhost: str, deliveries: list[Delivery]) -> dict[str, Any]:
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_queue.setdefault(f"{d.queue}::{vhost}", []).append({
            "basicProperties": basic_properties(d.properties, len(d.body)),
            "redelivered": bool(d.redelivered),
            "data": base64.b64encode(d.body).decode("ascii")})
    return {"eventSource": "aws:rmq", "eventSourceArn": source_arn,
            "rmqMessagesByQueue": by_queue}


def broker_arn(url: str, region: str, account: str) -> str:
    """A stable ARN for a broker known by URL (Lambda's events always carry one)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"amqp://{host}:{parts.port or 5672}")
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in host)
    return f"arn:aws:mq:{region}:{account}:broker:{name}:b-{ident}"


class AttemptCounter:
    """Failed attempts per message key, bounded (oldest forgotten first)."""

    def __init__(self, limit: int = ATTEMPT_KEYS) -> None:
        self.limit = limit
        self._counts: collections.OrderedDict[str, int] = collections.OrderedDict()

    def failed(self, delivery: Delivery) -> int:
        """Record one more failed attempt; the number of failed attempts so far."""
        key = delivery.key()
        n = max(self._counts.pop(key, 0), delivery.broker_count()) + 1
        self._counts[key] = n
        while len(self._counts) > self.limit:
            self._counts.popitem(last=False)
        return n

    def forget(self, delivery: Delivery) -> None:
        self._counts.pop(delivery.key(), None)

    def __len__(self) -> int:
        return len(self._counts)


class RabbitPoller(Poller):
    system = "rabbitmq"

    def __init__(self, spec: MappingSpec, *args: Any) -> None:
        super().__init__(spec, *args)
        opts = spec.options
        # MappingSpec.from_entry checked the URL and the options
        self.url = str(opts.get("url") or spec.source) if spec.source.startswith("arn:") \
            else spec.source
        settings = self.service.settings
        self.arn = str(opts.get("broker_arn") or (spec.source if spec.source.startswith("arn:")
                       else broker_arn(self.url, settings.region, settings.account_id)))
        self.max_retries = int(opts.get("max_retries", 3))
        self.dead_letter = str(opts.get("dead_letter", "publish"))
        self.dlx = str(opts.get("dead_letter_exchange", "snapstart.dlx"))
        self.dlq = opts.get("dead_letter_queue")
        self.attempts = AttemptCounter()
        self.pending: list[Delivery] = []
        self.queue_of: dict[str, str] = {}
        self.vhost = "/"

    def source_errors(self) -> tuple[type[BaseException], ...]:
        return (_pika().exceptions.AMQPError,)

    def describe_error(self, exc: BaseException) -> str:
        px = _pika().exceptions
        where = redact(self.url)
        if isinstance(exc, px.ProbableAuthenticationError):
            return f"broker {where} refused the login (ACCESS_REFUSED)"
        if isinstance(exc, px.ProbableAccessDeniedError):
            return f"broker {where} refused access to the virtual host"
        if isinstance(exc, px.ChannelClosedByBroker):
            return f"broker {where}: {exc.reply_code} {exc.reply_text}"
        if isinstance(exc, px.AMQPConnectionError):
            detail = "; ".join(str(a) for a in exc.args) or type(exc).__name__
            return f"cannot connect to broker {where}: {detail}"[:500]
        if isinstance(exc, (px.StreamLostError, px.ConnectionClosed)):
            return f"connection to broker {where} lost: {exc}"[:500]
        return super().describe_error(exc)

    # ---- a connection ---------------------------------------------------------------
    def session(self) -> None:
        pika = _pika()

        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 60
        params.heartbeat = int(self.spec.options.get("heartbeat_s", 30))
        params.client_properties = {"connection_name": f"snapstart mapping {self.spec.id}"}
        self.vhost = params.virtual_host
        self.pending, self.queue_of = [], {}
        conn = pika.BlockingConnection(params)
        try:
            channel = conn.channel()
            for queue in self.spec.queues:
                channel.queue_declare(queue, passive=True)      # NOT_FOUND: a clear error
            if self.dead_letter == "publish":
                channel.confirm_delivery()
                channel.exchange_declare(self.dlx, exchange_type="direct", durable=True)
                for queue in self.spec.queues:
                    dlq = str(self.dlq or f"{queue}.dlq")
                    channel.queue_declare(dlq, durable=True)
                    channel.queue_bind(dlq, self.dlx, routing_key=queue)
            channel.basic_qos(prefetch_count=self.spec.batch_size)
            for queue in self.spec.queues:
                tag = channel.basic_consume(queue, self._on_message, auto_ack=False)
                self.queue_of[tag] = queue
            self.polling()
            self._consume(conn, channel)
        finally:
            try:
                if conn.is_open:
                    conn.close()          # unacked deliveries go back to their queues
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.pending.append(Delivery(queue=self.queue_of.get(method.consumer_tag, ""),
                                     delivery_tag=method.delivery_tag,
                                     redelivered=bool(method.redelivered),
                                     properties=properties, body=body,
                                     received_at=time.monotonic()))
        self.board.count(self.spec.id, received=1)

    def _consume(self, conn: Any, channel: Any) -> None:
        window = self.spec.batching_window_s
        pause_until = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < pause_until:
                conn.process_data_events(time_limit=min(0.2, pause_until - now))
                continue
            conn.process_data_events(time_limit=0.02 if self.pending else 0.2)
            if not self.pending:
                continue
            full = len(self.pending) >= self.spec.batch_size \
                or sum(d.size for d in self.pending) >= MAX_BATCH_BYTES
            if not full and time.monotonic() - self.pending[0].received_at < window:
                continue
            batch = self._take()
            outcome = self.invoke(rmq_event(self.arn, self.vhost, batch), len(batch),
                                  tick=lambda: conn.process_data_events(time_limit=0.05))
            self._settle(channel, batch, outcome)
            pause_until = time.monotonic() + self.pause_after(outcome)

    def _take(self) -> list[Delivery]:
        batch: list[Delivery] = []
        size = 0
        while self.pending and len(batch) < self.spec.batch_size:
            if batch and size + self.pending[0].size > MAX_BATCH_BYTES:
                break
            size += self.pending[0].size
            batch.append(self.pending.pop(0))
        return batch

    # ---- after the invocation ----------------------------------------------------------
    def _settle(self, channel: Any, batch: list[Delivery], outcome: Outcome) -> None:
        mid = self.spec.id
        if outcome.ok:
            for d in batch:
                channel.basic_ack(d.delivery_tag)
                self.attempts.forget(d)
            self.board.count(mid, acked=len(batch))
            return
        if not outcome.counts_attempt:
            for d in batch:
                channel.basic_nack(d.delivery_tag, requeue=True)
            return
        for d in batch:
            failed = self.attempts.failed(d)
            if failed <= self.max_retries:
                channel.basic_nack(d.delivery_tag, requeue=True)
                self.board.count(mid, retried=1)
            else:
                self._dead_letter(channel, d, failed, outcome)

    def _dead_letter(self, channel: Any, d: Delivery, attempts: int, outcome: Outcome) -> None:
        pika = _pika()
        px = pika.exceptions
        mid = self.spec.id
        if self.dead_letter == "reject":
            channel.basic_nack(d.delivery_tag, requeue=False)
            self.attempts.forget(d)
            self.board.count(mid, dead_lettered=1)
            return
        p = d.properties
        headers = dict(getattr(p, "headers", None) or {})
        headers[HEADER_ATTEMPTS] = attempts
        headers["x-snapstart-dead-letter"] = {
            "queue": d.queue, "mapping": mid, "function": self.spec.function,
            "reason": "max_retries", "error": outcome.error[:1000],
            "time": int(time.time())}
        props = pika.BasicProperties(
            content_type=p.content_type, content_encoding=p.content_encoding, headers=headers,
            delivery_mode=p.delivery_mode or 2, priority=p.priority,
            correlation_id=p.correlation_id, reply_to=p.reply_to, message_id=p.message_id,
            timestamp=p.timestamp, type=p.type, user_id=p.user_id, app_id=p.app_id,
            cluster_id=p.cluster_id)        # not expiration: it would expire in the DLQ
        try:
            channel.basic_publish(self.dlx, d.queue, d.body, props, mandatory=True)
        except (px.UnroutableError, px.NackError) as exc:
            channel.basic_nack(d.delivery_tag, requeue=True)
            self.board.problem(mid, f"cannot dead-letter a message of {d.queue} to exchange "
                               f"{self.dlx}: {type(exc).__name__}; it stays in its queue")
            return
        channel.basic_ack(d.delivery_tag)
        self.attempts.forget(d)
        self.board.count(mid, dead_lettered=1)

