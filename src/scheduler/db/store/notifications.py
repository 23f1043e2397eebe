"""The queries of `sql/queries/notifications.sql`: the outbox of job events, delivered, read, forgotten.

The rows are written by `run_complete_many` (runs.sql), beside the outcomes that cause them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn
from scheduler.db.rows import column, fetch_all, fetch_one, struct
from scheduler.domain.notifications import FailedRun, Notification, NotificationEvent, NotificationStatus

# ------------------------------------------------------------------------------------ delivering


class ClaimedNotification(msgspec.Struct, kw_only=True, frozen=True):
    """An event a notifier claimed for one delivery attempt, with what the body and the call need."""

    id: UUID
    job_id: UUID
    namespace: str
    event: NotificationEvent
    run_id: UUID
    run_scheduled_for: datetime
    failed_slots: int
    paused: bool
    url: str
    attempts: int
    """This attempt's number (the claim counted it): the outcome is written under it."""
    payload: str | None
    """The body of an earlier attempt, sent again as it was; None on the first."""
    created_at: datetime
    job_name: str
    labels: dict[str, str]
    timeout_s: int


_CLAIMED = struct(ClaimedNotification, "notification_claim_due")
_FAILED_RUN = struct(FailedRun, "notification_failed_runs")
_STATUS = column("status", str, "notification_attempted")


async def notification_claim_due(
    conn: AsyncConn, *, limit: int, lease_s: float, now: datetime | None = None
) -> list[ClaimedNotification]:
    """Claim up to ``limit`` due events, each job's oldest first.

    A claimed event is due again after its job's timeout plus ``lease_s``, should this attempt
    never report.
    """
    params = {"limit": limit, "lease_s": lease_s, "now": now}
    return await fetch_all(conn, _CLAIMED, "notification_claim_due", params)


async def notification_failed_runs(
    conn: AsyncConn, *, job_id: UUID, until: datetime, limit: int
) -> list[FailedRun]:
    """The job's newest failed attempts of slots up to ``until``, newest first."""
    params = {"job_id": job_id, "until": until, "limit": limit}
    return await fetch_all(conn, _FAILED_RUN, "notification_failed_runs", params)


async def notification_attempted(
    conn: AsyncConn,
    *,
    notification_id: UUID,
    attempt: int,
    delivered: bool,
    give_up: bool,
    retry_in_s: float,
    max_age_s: float,
    http_status: int | None,
    error: str | None,
    payload: str,
    now: datetime | None = None,
) -> NotificationStatus | None:
    """Record how attempt ``attempt`` went; return the event's status now.

    None when the attempt was no longer the event's current one (its claim ran out meanwhile).
    """
    params = {
        "id": notification_id,
        "attempt": attempt,
        "delivered": delivered,
        "give_up": give_up,
        "retry_in_s": retry_in_s,
        "max_age_s": max_age_s,
        "http_status": http_status,
        "error": error,
        "payload": payload,
        "now": now,
    }
    status = await fetch_one(conn, _STATUS, "notification_attempted", params)
    return None if status is None else NotificationStatus(status)


# --------------------------------------------------------------------------------------- reading

_NOTIFICATION = struct(Notification, "notification_list_for_job", "notification_list_for_runs")
# Past every seq: the first page.
_FIRST_PAGE = 2**63 - 1


async def notification_list_for_job(
    conn: AsyncConn, *, namespace: str, job_id: UUID, before_seq: int | None, limit: int
) -> list[Notification]:
    """A page of the job's events newest first, before ``before_seq`` (from the newest when None)."""
    params = {
        "namespace": namespace,
        "job_id": job_id,
        "before_seq": _FIRST_PAGE if before_seq is None else before_seq,
        "limit": limit,
    }
    return await fetch_all(conn, _NOTIFICATION, "notification_list_for_job", params)


async def notification_list_for_runs(
    conn: AsyncConn, *, namespace: str, job_id: UUID, run_ids: Sequence[UUID]
) -> list[Notification]:
    """The events these runs of the job caused, newest first."""
    if not run_ids:
        return []
    params = {"namespace": namespace, "job_id": job_id, "run_ids": list(run_ids)}
    return await fetch_all(conn, _NOTIFICATION, "notification_list_for_runs", params)


# ------------------------------------------------------------------------------------- retention

_DELETED = column("id", UUID, "notification_delete_expired")


async def notification_delete_expired(
    conn: AsyncConn, *, retention_days: int, limit: int = 10_000, today: date | None = None
) -> int:
    """Delete up to ``limit`` events older than ``retention_days`` before ``today`` (the database's date)."""
    params = {"retention_days": retention_days, "limit": limit, "today": today}
    return len(await fetch_all(conn, _DELETED, "notification_delete_expired", params))
