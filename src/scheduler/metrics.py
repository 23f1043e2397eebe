"""Prometheus metrics of the runner and the API, each on a registry of its own."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds; lateness is usually milliseconds, a stuck fleet shows minutes.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class RunnerMetrics:
    """What a runner counts; served on SCHEDULER_METRICS_PORT."""

    def __init__(self) -> None:
        """Create the series on a fresh registry."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fires = Counter(
            "scheduler_fires",
            "Slots fired, by trigger and what the overlap policy made of them",
            ["trigger", "outcome"],
            registry=r,
        )
        self.runs_completed = Counter(
            "scheduler_runs_completed", "Runs this runner ended, by final status", ["status"], registry=r
        )
        self.lateness = Histogram(
            "scheduler_fire_lateness_seconds",
            "started_at minus scheduled_for of runs this runner started",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "scheduler_run_duration_seconds", "How long actions ran", buckets=DURATION_BUCKETS, registry=r
        )
        self.due_backlog = Gauge(
            "scheduler_due_backlog",
            "Jobs due now and not yet claimed (the same for every runner)",
            registry=r,
        )
        self.in_flight = Gauge("scheduler_runs_in_flight", "Actions executing in this runner", registry=r)
        self.claim_batch = Histogram(
            "scheduler_claim_batch_size",
            "Due jobs locked per claim transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.rescues = Counter("scheduler_rescues", "Runs rescued after their lease expired", registry=r)
        self.completions_refused = Counter(
            "scheduler_completions_refused",
            "Outcomes refused because the run was no longer ours (fenced)",
            registry=r,
        )
        self.leases_lost = Counter(
            "scheduler_leases_lost",
            "Calls stopped because a heartbeat found their run no longer ours (fenced)",
            registry=r,
        )
        self.db_reconnects = Counter(
            "scheduler_db_reconnects",
            "Times a runner service got the database back after losing it",
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class ApiMetrics:
    """What the API counts; served on its /metrics.

    With several uvicorn workers (PROMETHEUS_MULTIPROC_DIR set by `scheduler api`), each worker writes
    its samples to that folder and /metrics adds them up, whichever worker answers the scrape.
    """

    def __init__(self) -> None:
        """Create the series (in the default registry when running multiprocess)."""
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = None if self.multiprocess else self.registry
        self.requests = Counter(
            "scheduler_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "scheduler_http_request_duration_seconds",
            "Time to answer, by method and route template",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format, summed over workers when there are several."""
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
