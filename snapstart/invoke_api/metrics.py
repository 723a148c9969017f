"""Prometheus metrics of one ``snapstart serve`` process (its own registry).

Counters are per function; durations are histograms in seconds by start type.
Gauges are read at scrape time from the Manager (concurrent executions,
provisioned clones ready), the event queue and, if the store has it, the L1
cache's ``l1_stats()``.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300,
            900)


class _L1Collector:
    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def collect(self):
        try:
            stats = self._stats() or {}
        except Exception:  # noqa: BLE001 - a scrape must never fail on the store
            return
        for key, value in sorted(stats.items()):
            if isinstance(value, (int, float)):
                yield GaugeMetricFamily(f"snapstart_l1_{key}", f"L1 cache {key}", value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("snapstart_invocations", "Invocations that reached a function",
                                   ["function", "start_type"], registry=r)
        self.errors = Counter("snapstart_errors", "Invocations that ended in a function error",
                              ["function", "error_type"], registry=r)
        self.throttles = Counter("snapstart_throttles", "Invocations refused by a concurrency limit",
                                 ["function", "reason"], registry=r)
        self.api_errors = Counter("snapstart_api_errors", "API error responses",
                                  ["error_type"], registry=r)
        self.events = Counter("snapstart_async_events", "Event invocations accepted (202)",
                              ["function"], registry=r)
        self.duration = Histogram("snapstart_invocation_duration_seconds",
                                  "Function duration (REPORT Duration)", ["start_type"],
                                  buckets=_BUCKETS, registry=r)
        self.restore = Histogram("snapstart_restore_duration_seconds",
                                 "Restore Duration of restored starts", buckets=_BUCKETS,
                                 registry=r)
        self.init = Histogram("snapstart_init_duration_seconds", "Init Duration of cold starts",
                              buckets=_BUCKETS, registry=r)
        self.concurrent = Gauge("snapstart_concurrent_executions",
                                "Invocations running now", registry=r)
        self.provisioned = Gauge("snapstart_provisioned_clones_ready",
                                 "Provisioned clones allocated", registry=r)
        self.pending = Gauge("snapstart_async_events_pending", "Queued Event invocations",
                             registry=r)

    def bind(self, *, concurrent: Callable[[], float], provisioned: Callable[[], float],
             pending: Callable[[], float], l1_stats: Callable[[], dict] | None) -> None:
        self.concurrent.set_function(concurrent)
        self.provisioned.set_function(provisioned)
        self.pending.set_function(pending)
        if l1_stats is not None:
            self.registry.register(_L1Collector(l1_stats))

    def observe(self, name: str, result) -> None:
        self.invocations.labels(name, result.start_type).inc()
        if result.function_error:
            try:
                import json
                error_type = json.loads(result.payload).get("errorType", "Unhandled")
            except Exception:  # noqa: BLE001
                error_type = "Unhandled"
            self.errors.labels(name, str(error_type)[:64]).inc()
        self.duration.labels(result.start_type).observe((result.duration_ms or 0.0) / 1000)
        if result.restore_duration_ms is not None:
            self.restore.observe(result.restore_duration_ms / 1000)
        if result.init_duration_ms is not None:
            self.init.observe(result.init_duration_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
