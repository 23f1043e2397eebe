"""What a fire becomes, for both ways a job fires: a runner's claim and a manual trigger.

The overlap decision itself is pure (`domain.overlap`); here are the steps around it that touch
the database: asking whether a run already waits, and cancelling the unfinished runs a `replace`
fire displaces. Also the two rows that follow a run's end: the next attempt of a slot, and the
queued run a `queue` job starts next.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import overlap
from scheduler.domain.models import OverlapPolicy, RunStatus, RunTrigger
from scheduler.ids import uuid7

# Read once: an enum member looked up on its class costs a descriptor call on Python 3.11.
_QUEUE = OverlapPolicy.QUEUE
_REPLACE = OverlapPolicy.REPLACE


def needs_database(policy: OverlapPolicy, active_runs: int) -> bool:
    """Whether deciding a locked job's fires asks or changes the database (`decide_fires`).

    Only a job with unfinished runs under `queue` (a run may already wait) or `replace` (its runs
    are cancelled) does; every other job's fires are decided by `overlap.decide` alone.
    """
    return active_runs > 0 and (policy is _QUEUE or policy is _REPLACE)


async def decide_fires(
    conn: AsyncConn,
    *,
    job_id: UUID,
    policy: OverlapPolicy,
    active_runs: int,
    fires: int = 1,
    finishes_at_once: bool = False,
) -> list[overlap.Decision]:
    """Decide ``fires`` fires of a locked job, oldest first; a `replace` fire cancels the runs it displaces.

    Only a `queue` job with unfinished runs can have a run waiting, so no other asks the database.
    """
    has_queued = (
        policy is OverlapPolicy.QUEUE and active_runs > 0 and await store.run_has_queued(conn, job_id=job_id)
    )
    decisions = overlap.decide(
        policy, active_runs=active_runs, has_queued=has_queued, fires=fires, finishes_at_once=finishes_at_once
    )
    if decisions[-1] is overlap.Decision.REPLACE:
        await store.run_cancel_active_for_job(conn, job_id=job_id, reason=overlap.REPLACE_REASON)
    return decisions


def next_attempt(
    *, job_id: UUID, scheduled_for: datetime, attempt: int, available_in_s: float
) -> store.NewRun:
    """The row of a slot's next attempt: a retry, pending until ``available_in_s`` from the commit."""
    return store.NewRun(
        id=uuid7(scheduled_for),
        job_id=job_id,
        scheduled_for=scheduled_for,
        trigger=RunTrigger.RETRY,
        attempt=attempt,
        status=RunStatus.PENDING,
        available_in_s=available_in_s,
    )


async def runs_ended(conn: AsyncConn, *, queue_job_ids: Sequence[UUID]) -> int:
    """After running runs of `queue` jobs ended: make each job's waiting run available now."""
    return await store.run_promote_queued(conn, job_ids=sorted(set(queue_job_ids)))
