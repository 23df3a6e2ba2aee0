"""Prometheus metrics, summed over gunicorn's workers by prometheus_client's multiprocess mode.

prometheus_client decides at import time, from PROMETHEUS_MULTIPROC_DIR, whether values live
in memory or in per-process mmap files; gunicorn.conf.py sets that variable before anything
can import it. That is why prometheus_client is imported inside these functions, never at the
top of a module the app or gunicorn.conf.py loads first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

UNMATCHED_ROUTE = "unmatched"


class Metrics:
    """The service's metrics for one app: request counts and durations by URL rule, audit
    events, Redis errors, changes the replicas did not confirm, and (multiprocess) the
    workers alive."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client import Counter
        from prometheus_client import Gauge
        from prometheus_client import Histogram

        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, URL rule and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "http_request_duration_seconds",
            "Time the app took to answer, by URL rule.",
            ["route"],
            registry=self.registry,
        )
        self._events = Counter(
            "auth_events_total", "Audit events, by event.", ["event"], registry=self.registry
        )
        self._redis_errors = Counter(
            "redis_errors_total",
            "Requests answered 503 because Redis failed.",
            registry=self.registry,
        )
        self._wait_timeouts = Counter(
            "redis_wait_timeouts",
            "Changes answered 503 because too few Redis replicas acknowledged them in time.",
            registry=self.registry,
        )
        # Labelled children, looked up once per label set: labels() locks and validates.
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}
        if multiprocess_dir:
            workers = Gauge(
                "gunicorn_workers",
                "gunicorn workers alive (a dead worker's share is dropped by child_exit).",
                registry=self.registry,
                multiprocess_mode="livesum",
            )
            workers.set(1)

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one answered request and its duration under its URL rule."""
        route = route or UNMATCHED_ROUTE
        key = (method, route, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(
                method, route, str(status)
            )
        counter.inc()
        histogram = self._duration_children.get(route)
        if histogram is None:
            histogram = self._duration_children[route] = self._duration.labels(route)
        histogram.observe(seconds)

    def count_event(self, event: str) -> None:
        """Count one audit event."""
        self._events.labels(event).inc()

    def count_redis_error(self) -> None:
        """Count one request that Redis failed."""
        self._redis_errors.inc()

    def count_wait_timeout(self) -> None:
        """Count one change that too few replicas acknowledged (REDIS_WAIT_TIMEOUT_MS)."""
        self._wait_timeouts.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition (body, content type): every worker's values in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST
        from prometheus_client import generate_latest

        return generate_latest(self._exposed_registry()), CONTENT_TYPE_LATEST

    def _exposed_registry(self) -> CollectorRegistry:
        if not self.multiprocess_dir:
            return self.registry
        from prometheus_client import CollectorRegistry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return registry


def mark_worker_dead(pid: int, multiprocess_dir: str) -> None:
    """gunicorn's ``child_exit``: drop a dead worker's live gauges (its counters stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, multiprocess_dir)
