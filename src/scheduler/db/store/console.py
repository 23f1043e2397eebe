"""The queries of `sql/queries/console.sql`: the web console's reads of jobs beyond the API's listing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn
from scheduler.db.rows import built, fetch_all, fetch_one, struct
from scheduler.db.store.runs import RecentOutcomes
from scheduler.domain.models import RUN_STATUS, Job

_json_encoder = msgspec.json.Encoder()
# Names are 1-128 of [A-Za-z0-9._-], so a prefix's range ends before the prefix followed by this.
_PAST_NAMES = "\x7f"
# Runs exist only for slots that came due (and manual runs, slotted at their trigger): a read starts
# just past now, so the partitions made ahead for the coming week are pruned.
_FIRST_PAGE_SLACK = timedelta(hours=1)


class JobOrder(StrEnum):
    """The orders of the console's jobs page other than by name (the API's job_list)."""

    NEXT = "next"
    """Soonest next run first, none last."""
    LAST = "last"
    """Newest last run first, never run last."""
    CREATED = "created"
    """Newest job first."""


_JOB_IN_ORDER = struct(
    Job, "console_job_list_by_next", "console_job_list_by_last", "console_job_list_by_created"
)


async def console_job_list_ordered(
    conn: AsyncConn,
    *,
    namespace: str,
    order: JobOrder,
    after: tuple[str, str] | None,
    limit: int,
    name_prefix: str | None = None,
    paused: bool | None = None,
    labels: dict[str, str] | None = None,
    failing: bool = False,
) -> list[Job]:
    """One page of the namespace's jobs in ``order``, after the keyset ``after``: (time, name).

    The time is RFC 3339 text or `infinity` / `-infinity` (a job with no next run, one never run),
    as the page before it ended; None starts at the first page.
    """
    if after is None:
        after = ("-infinity", "") if order is JobOrder.NEXT else ("infinity", "")
    prefix = name_prefix or ""
    params = {
        "namespace": namespace,
        "prefix_low": prefix,
        "prefix_high": prefix + _PAST_NAMES,
        "labels": _json_encoder.encode(labels or {}).decode(),
        "paused": paused,
        "failing": failing,
        "after_at": after[0],
        "after_name": after[1],
        "limit": limit,
    }
    # One literal name per query, as everywhere in the store (a test finds the queries run by them).
    if order is JobOrder.NEXT:
        return await fetch_all(conn, _JOB_IN_ORDER, "console_job_list_by_next", params)
    if order is JobOrder.LAST:
        return await fetch_all(conn, _JOB_IN_ORDER, "console_job_list_by_last", params)
    return await fetch_all(conn, _JOB_IN_ORDER, "console_job_list_by_created", params)


class JobCounts(msgspec.Struct, kw_only=True, frozen=True):
    """How many of the jobs a search matches are in each state of the jobs page."""

    total: int
    active: int
    paused: int
    failing: int
    """Jobs whose newest finished run did not succeed (active or paused)."""


_COUNTS = struct(JobCounts, "console_job_counts")


async def console_job_counts(
    conn: AsyncConn, *, namespace: str, name_prefix: str | None = None, labels: dict[str, str] | None = None
) -> JobCounts:
    """The state counts of the namespace's jobs that match a name prefix and labels."""
    prefix = name_prefix or ""
    params = {
        "namespace": namespace,
        "prefix_low": prefix,
        "prefix_high": prefix + _PAST_NAMES,
        "labels": _json_encoder.encode(labels or {}).decode(),
    }
    counts = await fetch_one(conn, _COUNTS, "console_job_counts", params)
    return counts if counts is not None else JobCounts(total=0, active=0, paused=0, failing=0)


def _recent_slots(
    id: UUID,  # noqa: A002 - named after its column
    outcomes: list[str],
    p95_lateness_s: float | None,
) -> tuple[UUID, RecentOutcomes]:
    return id, RecentOutcomes(
        outcomes=[RUN_STATUS[status] for status in outcomes],
        p95_lateness_s=None if p95_lateness_s is None else float(p95_lateness_s),
    )


_RECENT_SLOTS = built(_recent_slots, "console_job_recent_slots")


async def console_job_recent_slots(
    conn: AsyncConn, *, job_ids: Sequence[UUID], now: datetime
) -> dict[UUID, RecentOutcomes]:
    """Each job's last 50 slots as outcomes (its newest attempt's status), oldest first, and p95 lateness.

    The ids are ones the caller already scoped to its namespace; a job with no runs is left out.
    """
    if not job_ids:
        return {}
    params = {"ids": list(job_ids), "before_slot": now + _FIRST_PAGE_SLACK}
    return dict(await fetch_all(conn, _RECENT_SLOTS, "console_job_recent_slots", params))
