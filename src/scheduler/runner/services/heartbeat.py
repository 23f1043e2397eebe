"""Heartbeats: renew the leases of the calls a runner is executing, and stop those it lost.

A call's lease is what makes its run this runner's: while it is renewed, no rescuer touches the
run. A renewal that finds the run no longer running under our lease (it was cancelled, or rescued
after we froze past the lease) stops the call, so two runners never go on executing one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import msgspec

from scheduler.db import store
from scheduler.db.connections import ConnectionSource
from scheduler.domain.models import RunStatus

# Leases renewed per statement: 10,000 calls in flight make a few statements, not one huge one.
BATCH = 2000
# Renew three times per lease: two renewals can fail (a slow database, a lost connection) before
# the lease runs out.
RENEWALS_PER_LEASE = 3
SHORTEST_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatConfig:
    """How the heartbeat renews leases."""

    lease_s: float
    """The lease each renewal grants, from the moment of the renewal."""
    interval_s: float | None = None
    """Seconds between renewals; a third of the lease (at least 0.2 s) unless set."""
    batch: int = BATCH
    """Leases renewed per statement."""

    def __post_init__(self) -> None:
        """Refuse values the heartbeat cannot keep its promise with."""
        if self.lease_s <= 0:
            raise ValueError("lease_s must be positive")
        if self.interval_s is not None and not 0 < self.interval_s < self.lease_s:
            raise ValueError("interval_s must be positive and shorter than the lease")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")

    @property
    def every_s(self) -> float:
        """Seconds between renewals."""
        if self.interval_s is not None:
            return self.interval_s
        return max(SHORTEST_INTERVAL_S, self.lease_s / RENEWALS_PER_LEASE)


class HeartbeatCounts(msgspec.Struct, frozen=True):
    """What one round of renewals did."""

    renewed: int
    """Leases renewed."""
    lost: int
    """Calls stopped because their run was no longer ours."""


class Heartbeat:
    """Renews the leases of executing calls, every third of a lease."""

    name = "heartbeat"

    def __init__(
        self,
        config: HeartbeatConfig,
        pool: ConnectionSource,
        *,
        leases: Callable[[], Sequence[store.Lease]],
        lose: Callable[[UUID], bool],
        cancel: Callable[[UUID], bool] | None = None,
    ) -> None:
        """Renew what ``leases`` returns; ``lose`` stops (and logs) the call of a run whose lease is gone.

        ``cancel`` stops the call of a run found cancelled (a runner without LISTEN learns of cancels
        here); without it, such a call is stopped by ``lose`` too. Both return False when the call
        had ended meanwhile (nothing to stop).
        """
        self.config = config
        self._pool = pool
        self._leases = leases
        self._lose = lose
        self._cancel = cancel

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.every_s

    async def run_once(self, now: datetime | None = None) -> HeartbeatCounts:
        """Renew every executing call's lease from ``now`` (the database's clock unless passed)."""
        leases = list(self._leases())
        if not leases:
            return HeartbeatCounts(renewed=0, lost=0)
        kept: set[UUID] = set()
        cancelled: set[UUID] = set()
        async with self._pool.connection() as conn:
            for start in range(0, len(leases), self.config.batch):
                part = leases[start : start + self.config.batch]
                kept |= await store.run_heartbeat_many(conn, part, lease_s=self.config.lease_s, now=now)
            gone = [(lease.run_id, lease.scheduled_for) for lease in leases if lease.run_id not in kept]
            if gone and self._cancel is not None:
                states = await store.run_status_many(conn, gone)
                cancelled = {run_id for run_id, status in states.items() if status is RunStatus.CANCELLED}
        lost = 0
        for lease in leases:
            if lease.run_id in kept:
                continue
            # Either way the call is stopped; a cancel is only told apart so it is not warned of.
            stop = self._cancel if self._cancel is not None and lease.run_id in cancelled else self._lose
            lost += stop(lease.run_id)
        return HeartbeatCounts(renewed=len(kept), lost=lost)
