"""Asynchronous (``InvocationType: Event``) invocations: a durable queue and its worker."""

from .store import EventRecord, EventStore
from .worker import EventWorker, RetryPolicy

__all__ = ["EventStore", "EventRecord", "EventWorker", "RetryPolicy"]
