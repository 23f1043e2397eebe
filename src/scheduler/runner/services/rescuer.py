"""The rescuer: end runs whose lease ran out, so a runner that died or froze loses no slot.

A running run whose lease expired belongs to no live runner. The rescuer records it `lost`
through the completer, which gives it its next attempt when the retry policy allows, exactly as
for a failed call. Any runner may rescue any run; the fence (the lease must still be expired when
the outcome is written) makes two rescuers, or a rescuer and a waking runner, harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from structlog.typing import FilteringBoundLogger

from scheduler.db import store
from scheduler.db.connections import ConnectionSource
from scheduler.domain.models import Outcome, RunStatus
from scheduler.domain.retry import gets_another_attempt
from scheduler.metrics import RunnerMetrics
from scheduler.runner.completer import Completer, Completion
from scheduler.runner.supervise import retry_conflicts

# Runs rescued per round; a larger backlog is worked off a batch per interval.
BATCH = 500
# A dead runner's runs are found within this long after their lease expired (SPEC 4: lease + sweep).
LONGEST_INTERVAL_S = 5.0
SHORTEST_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class RescuerConfig:
    """How the rescuer sweeps for expired leases."""

    lease_s: float
    """The runners' lease: sweeping more often than a third of it finds nothing more."""
    interval_s: float | None = None
    """Seconds between sweeps; a third of the lease, between 0.2 and 5 s, unless set."""
    batch: int = BATCH
    """Most runs rescued per sweep."""

    def __post_init__(self) -> None:
        """Refuse values the rescuer cannot work with."""
        if self.lease_s <= 0:
            raise ValueError("lease_s must be positive")
        if self.interval_s is not None and self.interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")

    @property
    def every_s(self) -> float:
        """Seconds between sweeps."""
        if self.interval_s is not None:
            return self.interval_s
        return max(SHORTEST_INTERVAL_S, min(LONGEST_INTERVAL_S, self.lease_s / 3))


class RescueCounts(msgspec.Struct, frozen=True):
    """What one sweep did."""

    found: int
    """Running runs whose lease had expired."""
    rescued: int
    """Of those, the ones this sweep recorded `lost` (another rescuer may have taken the rest)."""
    retried: int
    """Next attempts recorded for the rescued runs."""


class Rescuer:
    """Finds runs whose lease expired and ends them through the completer."""

    name = "rescue"

    def __init__(
        self,
        config: RescuerConfig,
        pool: ConnectionSource,
        completer: Completer,
        *,
        metrics: RunnerMetrics,
        log: FilteringBoundLogger,
    ) -> None:
        """Sweep through ``pool``; write through ``completer``."""
        self.config = config
        self._pool = pool
        self._completer = completer
        self._metrics = metrics
        self._log = log

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.every_s

    async def run_once(self, now: datetime | None = None) -> RescueCounts:
        """Rescue the runs whose lease expired before ``now`` (the database's clock unless passed)."""
        async with self._pool.connection() as conn:
            expired = await store.run_find_expired(conn, limit=self.config.batch, now=now)
        if not expired:
            return RescueCounts(found=0, rescued=0, retried=0)
        items = [
            Completion(
                fenced=store.FencedOutcome(
                    run_id=run.run_id,
                    job_id=run.job_id,
                    scheduled_for=run.scheduled_for,
                    lease_token=None,
                    outcome=Outcome(
                        status=RunStatus.LOST,
                        duration_ms=None,
                        error=f"lease expired: runner {run.runner} stopped renewing it",
                    ),
                ),
                attempt=run.attempt,
                retry=run.retry,
                overlap=run.overlap,
                namespace=run.namespace,
                job_name=run.job_name,
            )
            for run in expired
        ]
        counts = await retry_conflicts(lambda: self._completer.complete(items, now=now))
        self._metrics.rescues.inc(counts.written)
        for run in expired:
            if run.run_id in counts.accepted:
                self._log.warning(
                    "run_rescued",
                    job_id=str(run.job_id),
                    job_name=run.job_name,
                    namespace=run.namespace,
                    run_id=str(run.run_id),
                    attempt=run.attempt,
                    dead_runner=run.runner,
                    retried=gets_another_attempt(run.retry, RunStatus.LOST, run.attempt),
                )
        return RescueCounts(found=len(expired), rescued=counts.written, retried=counts.retries)
