"""Prometheus metrics of the runner and the API, each on a registry of its own."""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds; lateness is usually milliseconds, a stuck fleet shows minutes.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Namespaces labelled one by one per process before the rest share `OTHER_NAMESPACE`: every series
# with a namespace label is multiplied by their number, and a Prometheus server pays per series.
MAX_NAMESPACES = 100
OTHER_NAMESPACE = "_other"


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """Observe each of ``amounts`` as ``histogram.observe`` would, one bucket increment per bucket.

    A claim observes hundreds of lateness values at once, and observe() takes two locks for each;
    here each value costs a bisection. A test checks the samples match observe()'s one by one.
    """
    bounds: Sequence[float] | None = getattr(histogram, "_upper_bounds", None)
    buckets: Sequence[Any] | None = getattr(histogram, "_buckets", None)
    total: Any = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:  # another prometheus_client layout: the public way
            histogram.observe(amount)
        return
    if not amounts:
        return
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]  # noqa: SLF001 - as observe() checks
    counts = [0] * len(bounds)
    last = len(bounds)
    for amount in amounts:
        at = bisect_left(bounds, amount)  # the first bound >= amount, as observe() finds it
        if at < last and amount <= bounds[at]:  # NaN falls in no bucket, as in observe()
            counts[at] += 1
    total.inc(math.fsum(amounts))
    for at, number in enumerate(counts):
        if number:
            buckets[at].inc(number)


class NamespaceLabels:
    """The namespace label of a series: the namespace itself for the first ``limit`` seen, then `_other`.

    The first namespaces a process meets keep their own label for its lifetime; later ones are
    counted together, so a fleet with many tenants costs a bounded number of series. Job ids are
    never labels.
    """

    def __init__(self, limit: int = MAX_NAMESPACES) -> None:
        """Label up to ``limit`` namespaces by name."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._named: set[str] = set()

    def __call__(self, namespace: str) -> str:
        """The label value ``namespace`` is counted under."""
        if namespace in self._named:
            return namespace
        if len(self._named) < self.limit:
            self._named.add(namespace)
            return namespace
        return OTHER_NAMESPACE


class RunnerMetrics:
    """What a runner counts; served on SCHEDULER_METRICS_PORT."""

    def __init__(self, *, max_namespaces: int = MAX_NAMESPACES) -> None:
        """Create the series on a fresh registry, labelling at most ``max_namespaces`` namespaces."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.namespaces = NamespaceLabels(max_namespaces)
        self.fires = Counter(
            "scheduler_fires",
            "Slots fired, by namespace, trigger and what the overlap policy made of them",
            ["namespace", "trigger", "outcome"],
            registry=r,
        )
        self.runs_completed = Counter(
            "scheduler_runs_completed",
            "Runs this runner ended, by namespace and final status",
            ["namespace", "status"],
            registry=r,
        )
        self.jobs_failing = Gauge(
            "scheduler_jobs_failing",
            "Jobs whose latest finished runs failed (consecutive_failures > 0), by namespace. Counted "
            "from the database: every runner exports the same value, so aggregate with max().",
            ["namespace"],
            registry=r,
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
        # Labelled children by label values: looking them up on the metric takes a lock each time.
        self._fired: dict[tuple[str, str, str], Any] = {}
        self._ended: dict[tuple[str, str], Any] = {}
        self._failing: set[str] = set()  # the namespace labels jobs_failing has a series for

    def count_fires(self, namespace: str, trigger: str, outcome: str, number: int) -> None:
        """Count ``number`` fires of one namespace, trigger and overlap outcome."""
        key = (namespace, trigger, outcome)
        child = self._fired.get(key)
        if child is None:
            child = self._fired[key] = self.fires.labels(self.namespaces(namespace), trigger, outcome)
        child.inc(number)

    def count_completed(self, namespace: str, status: str, number: int) -> None:
        """Count ``number`` runs of one namespace ended with ``status``."""
        key = (namespace, status)
        child = self._ended.get(key)
        if child is None:
            child = self._ended[key] = self.runs_completed.labels(self.namespaces(namespace), status)
        child.inc(number)

    def set_jobs_failing(self, failing: Mapping[str, int]) -> None:
        """Set the failing jobs of each namespace; a namespace no longer failing loses its series.

        Beyond the cap, namespaces are added up under `_other`. The series are replaced one by one,
        never cleared first, so a scrape in between never sees the gauge empty.
        """
        values: dict[str, int] = {}
        for namespace, number in failing.items():
            label = self.namespaces(namespace)
            values[label] = values.get(label, 0) + number
        for label, number in values.items():
            self.jobs_failing.labels(label).set(number)
        for label in self._failing - values.keys():
            self.jobs_failing.remove(label)
        self._failing = set(values)

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
            "HTTP requests answered, by method, route template, status and the namespace the request "
            "was authenticated for (empty when it was not)",
            ["method", "route", "status", "namespace"],
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
