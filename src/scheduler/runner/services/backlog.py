"""The due backlog gauge: how many jobs are due and not yet claimed, as the metrics show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec

from scheduler.db import store
from scheduler.db.connections import ConnectionSource
from scheduler.metrics import RunnerMetrics

INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BacklogConfig:
    """How often the backlog is counted."""

    interval_s: float = INTERVAL_S
    """Seconds between two counts (each is one bounded index scan)."""

    def __post_init__(self) -> None:
        """Refuse an interval that would count without pause."""
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")


class BacklogCounts(msgspec.Struct, frozen=True):
    """What one count found."""

    due: int
    """Jobs due and not yet claimed (at most a million are counted)."""


class BacklogGauge:
    """Counts the due backlog into the runner's metrics."""

    name = "backlog"

    def __init__(self, config: BacklogConfig, pool: ConnectionSource, *, metrics: RunnerMetrics) -> None:
        """Count through ``pool`` into ``metrics``."""
        self.config = config
        self._pool = pool
        self._metrics = metrics

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.interval_s

    async def run_once(self, now: datetime | None = None) -> BacklogCounts:
        """Count the jobs due at ``now`` (the database's clock unless passed) and set the gauge."""
        async with self._pool.connection() as conn:
            due = await store.job_due_backlog(conn, now=now)
        self._metrics.due_backlog.set(due)
        return BacklogCounts(due=due)
