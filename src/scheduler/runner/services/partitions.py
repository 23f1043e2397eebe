"""Partition upkeep: the daily partitions of runs, made a week ahead and dropped past the retention.

Retention is a partition drop, never a DELETE storm (SPEC 4). One runner at a time does the work
(an advisory lock); the others find the lock taken and skip the round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import psycopg
from structlog.typing import FilteringBoundLogger

from scheduler.db import store
from scheduler.db.connections import ConnectionSource

INTERVAL_S = 3600.0
DAYS_AHEAD = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionConfig:
    """Which partitions of runs exist."""

    retention_days: int
    """Days of run history kept; older partitions are dropped."""
    days_ahead: int = DAYS_AHEAD
    """Days ahead for which partitions are made, so inserts never wait on DDL."""
    interval_s: float = INTERVAL_S
    """Seconds between two rounds."""

    def __post_init__(self) -> None:
        """Refuse values that would drop today's history or leave tomorrow without a partition."""
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if self.days_ahead < 1:
            raise ValueError("days_ahead must be at least 1")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")


class PartitionCounts(msgspec.Struct, frozen=True):
    """What one round of upkeep did."""

    locked: bool
    """Whether this runner did the round (another one held the upkeep lock otherwise)."""
    created: int = 0
    """Partitions made."""
    dropped: int = 0
    """Partitions dropped past the retention."""
    busy: bool = False
    """Whether the round gave up because queries held the runs table (it is tried again next round)."""
    notifications_deleted: int = 0
    """Notifications forgotten past the run retention."""


class PartitionKeeper:
    """Makes the partitions of the coming days and drops the expired ones."""

    name = "upkeep"

    def __init__(self, config: PartitionConfig, pool: ConnectionSource, *, log: FilteringBoundLogger) -> None:
        """Work through ``pool``."""
        self.config = config
        self._pool = pool
        self._log = log

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.interval_s

    async def run_once(self, now: datetime | None = None) -> PartitionCounts:
        """Make and drop partitions counted from ``now``'s UTC day (the database's date unless passed)."""
        today = None if now is None else now.astimezone(UTC).date()
        forgotten = 0
        try:
            # One transaction: the upkeep lock and the short lock timeout last until it ends.
            async with self._pool.connection() as conn, conn.transaction():
                done = await store.run_partitions_upkeep(
                    conn,
                    days_ahead=self.config.days_ahead,
                    retention_days=self.config.retention_days,
                    today=today,
                )
                if done.locked:  # the same upkeep forgets idempotency keys past their 24 hours
                    await store.idempotency_expire(conn)
                    # and notifications past the run retention, as the runs they name go
                    forgotten = await store.notification_delete_expired(
                        conn, retention_days=self.config.retention_days, today=today
                    )
        except psycopg.errors.LockNotAvailable:
            # Partition DDL waits briefly for the runs table and gives up rather than queue every
            # claim behind it; the partitions ahead leave a week to try again.
            self._log.info("run_partitions_busy")
            return PartitionCounts(locked=True, busy=True)
        if done.created or done.dropped:
            self._log.info("run_partitions_upkeep", created=done.created, dropped=done.dropped)
        if done.locked and forgotten:
            self._log.info("notifications_forgotten", deleted=forgotten)
        return PartitionCounts(
            locked=done.locked, created=done.created, dropped=done.dropped, notifications_deleted=forgotten
        )
