"""The database gauges: the due backlog every few seconds, the failing jobs of each namespace less often."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec

from scheduler.db import store
from scheduler.db.connections import ConnectionSource
from scheduler.metrics import RunnerMetrics

INTERVAL_S = 5.0
# The failing jobs are counted every this many rounds (30 s by default): a partial index of the
# failing jobs serves the count (migration 0013; 2 ms at a million jobs, of which 1 % fail), and
# alerts on it wait for minutes anyway.
FAILING_EVERY = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class BacklogConfig:
    """How often the gauges are counted."""

    interval_s: float = INTERVAL_S
    """Seconds between two counts of the backlog (each is one bounded index scan)."""
    failing_every: int = FAILING_EVERY
    """Rounds between two counts of the failing jobs (an index scan of them); the first round counts."""

    def __post_init__(self) -> None:
        """Refuse an interval that would count without pause."""
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if self.failing_every < 1:
            raise ValueError("failing_every must be at least 1")


class BacklogCounts(msgspec.Struct, frozen=True):
    """What one count found."""

    due: int
    """Jobs due and not yet claimed (at most a million are counted)."""
    failing: dict[str, int] | None = None
    """Jobs with consecutive failures, by namespace (namespaces with none are absent); None in the
    rounds that did not count them."""


class BacklogGauge:
    """Counts the due backlog and the failing jobs into the runner's metrics.

    Both are facts of the database, not of this runner: every runner exports the same values (the
    help texts tell alerts to aggregate with max()).
    """

    name = "backlog"

    def __init__(self, config: BacklogConfig, pool: ConnectionSource, *, metrics: RunnerMetrics) -> None:
        """Count through ``pool`` into ``metrics``."""
        self.config = config
        self._pool = pool
        self._metrics = metrics
        self._rounds = 0

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.interval_s

    async def run_once(self, now: datetime | None = None) -> BacklogCounts:
        """Count the jobs due at ``now`` (the database clock unless given); every few rounds, the failing."""
        counting_failing = self._rounds % self.config.failing_every == 0
        failing: dict[str, int] | None = None
        async with self._pool.connection() as conn:
            due = await store.job_due_backlog(conn, now=now)
            if counting_failing:
                failing = {row.namespace: row.failing for row in await store.job_count_failing(conn)}
        self._rounds += 1
        self._metrics.due_backlog.set(due)
        if failing is not None:
            self._metrics.set_jobs_failing(failing)
        return BacklogCounts(due=due, failing=failing)
