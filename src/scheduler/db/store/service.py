"""The queries of `sql/queries/service.sql`: readiness, channels, partition upkeep, the console's secret."""

from __future__ import annotations

from datetime import date

import msgspec

from scheduler.db.connections import AsyncConn, SyncConn
from scheduler.db.queries import q
from scheduler.db.rows import column, execute, fetch_one

# ------------------------------------------------------------------------ readiness and channels


_WRITABLE = column("writable", bool, "health_check")


async def session_time_zone_utc(conn: AsyncConn) -> None:
    """Name a new session's zone UTC; only where it is UTC under another name (Etc/UTC)."""
    await execute(conn, "session_time_zone_utc")


def session_time_zone_utc_sync(conn: SyncConn) -> None:
    """The same on a blocking connection (migrations, command-line tools)."""
    conn.execute(q("session_time_zone_utc"))


async def health_check(conn: AsyncConn) -> bool:
    """Whether the database answers as a writable primary (False: a standby, or read-only)."""
    writable = await fetch_one(conn, _WRITABLE, "health_check")
    return writable is True


async def listen(conn: AsyncConn) -> None:
    """Subscribe a runner's listening connection to the wake, cancel and secrets channels."""
    await execute(conn, "listen_wake")
    await execute(conn, "listen_cancel")
    await execute(conn, "listen_secrets")


# ------------------------------------------------------------------------------ partition upkeep


class PartitionUpkeep(msgspec.Struct, kw_only=True, frozen=True):
    """What one round of partition upkeep did."""

    locked: bool
    created: int = 0
    dropped: int = 0


_LOCKED = column("locked", bool, "maintenance_try_lock")
_CREATED = column("created", int, "run_partitions_ensure")
_DROPPED = column("dropped", int, "run_partitions_drop_expired")


async def run_partitions_upkeep(
    conn: AsyncConn, *, days_ahead: int, retention_days: int, today: date | None = None
) -> PartitionUpkeep:
    """Create partitions ahead and drop expired ones, if no other runner is doing it right now.

    Inside the caller's transaction, which the upkeep lock and the short lock timeout last for.
    Days count from ``today``, the database's date unless a test passes one.
    """
    if not await fetch_one(conn, _LOCKED, "maintenance_try_lock"):
        return PartitionUpkeep(locked=False)
    await execute(conn, "lock_timeout_short")
    created = await fetch_one(
        conn, _CREATED, "run_partitions_ensure", {"days_ahead": days_ahead, "today": today}
    )
    dropped = await fetch_one(
        conn, _DROPPED, "run_partitions_drop_expired", {"retention_days": retention_days, "today": today}
    )
    return PartitionUpkeep(locked=True, created=created or 0, dropped=dropped or 0)


# ------------------------------------------------------------------------------- the web console


_CONSOLE_SECRET = column("secret", bytes, "console_secret_ensure")


async def console_secret(conn: AsyncConn, *, candidate: bytes) -> bytes:
    """The database's console signing secret, storing ``candidate`` when there is none yet."""
    found = await fetch_one(conn, _CONSOLE_SECRET, "console_secret_ensure", {"secret": candidate})
    if found is None:  # pragma: no cover - the insert or the existing row always answers
        raise RuntimeError("console secret neither made nor found")
    return found
