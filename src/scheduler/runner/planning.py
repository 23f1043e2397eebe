"""Planning a claim: what each locked due job's slots become, by its misfire and overlap policies.

Runs inside the claim's transaction, on the jobs it locked; the rows it plans are written by the
claim in one statement, with the jobs' new next slots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from structlog.typing import FilteringBoundLogger

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import misfire, overlap
from scheduler.domain.models import RunStatus, RunTrigger
from scheduler.domain.schedule import ScheduleError
from scheduler.ids import uuid7
from scheduler.operations import fires
from scheduler.runner.actions import is_local

# What the overlap policy made of a fire, as the fires metric names it.
_FIRE_OUTCOME = {
    RunStatus.RUNNING: "started",
    RunStatus.SUCCEEDED: "started",
    RunStatus.SKIPPED: "skipped",
    RunStatus.PENDING: "queued",
}


@dataclass(slots=True)
class ClaimCounts:
    """What one claim transaction did."""

    limit: int = 0
    """Most due jobs or pending runs the claim could take; 0 when too few HTTP slots were free."""
    jobs: int = 0
    """Due jobs locked, or pending runs started."""
    at_capacity: bool = False
    """Too few HTTP slots are free for a claim until calls end (their end wakes the loop)."""
    fired_in: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Fires by (namespace, trigger, what the overlap policy made of them), for the metrics."""
    lateness_s: list[float] = field(default_factory=list)
    """How late each started fire was, for the metrics."""

    @property
    def fired(self) -> Counter[tuple[str, str]]:
        """Fires by (trigger, what the overlap policy made of them), all namespaces together."""
        total: Counter[tuple[str, str]] = Counter()
        for (_, trigger, outcome), number in self.fired_in.items():
            total[trigger, outcome] += number
        return total

    @property
    def full(self) -> bool:
        """Whether the claim took all it was allowed to, so more may be due right now."""
        return self.limit > 0 and self.jobs >= self.limit


async def plan_claim(
    conn: AsyncConn,
    due: Sequence[store.DueJob],
    now: datetime,
    counts: ClaimCounts,
    log: FilteringBoundLogger,
) -> tuple[list[store.NewRun], list[store.Move], dict[UUID, tuple[store.DueJob, RunTrigger]]]:
    """Apply misfire and overlap policies to each locked job (inside the claim transaction)."""
    runs: list[store.NewRun] = []
    moves: list[store.Move] = []
    owners: dict[UUID, tuple[store.DueJob, RunTrigger]] = {}
    for job in due:
        if job.unreadable is not None:
            # Written by hand or by a newer version: stop the job, as for a broken schedule,
            # rather than fail every claim of the batch (and of every later batch).
            log.error(
                "job_action_unreadable",
                job_id=str(job.id),
                job_name=job.name,
                namespace=job.namespace,
                error=job.unreadable[:500],
            )
            moves.append(store.Move(job_id=job.id, moves=True, next_run_at=None))
            continue
        try:
            slots = misfire.plan(job.timing, job.misfire, job.next_run_at, now)
        except (ScheduleError, OverflowError) as exc:
            # The zone database changed under a stored job, or its next slot lies past year
            # 9999: stop the job rather than the runner.
            log.error(  # noqa: TRY400 - a trace adds nothing to a bad expression
                "job_schedule_broken",
                job_id=str(job.id),
                job_name=job.name,
                namespace=job.namespace,
                error=str(exc),
            )
            moves.append(store.Move(job_id=job.id, moves=True, next_run_at=None))
            continue
        if slots.fires:
            local = is_local(job.action)
            decisions = await fires.decide_fires(
                conn,
                job_id=job.id,
                policy=job.overlap,
                active_runs=job.active_runs,
                fires=len(slots.fires),
                finishes_at_once=local,
            )
            started = RunStatus.SUCCEEDED if local else RunStatus.RUNNING
            for fire, decision in zip(slots.fires, decisions, strict=True):
                row = overlap.recorded_as(decision, job.overlap, started=started)
                if row.status is started:
                    counts.lateness_s.append((now - fire.slot).total_seconds())
                counts.fired_in[job.namespace, fire.trigger, _FIRE_OUTCOME[row.status]] += 1
                run_id = uuid7(fire.slot)
                owners[run_id] = (job, fire.trigger)
                runs.append(
                    store.NewRun(
                        id=run_id,
                        job_id=job.id,
                        scheduled_for=fire.slot,
                        trigger=fire.trigger,
                        attempt=1,
                        status=row.status,
                        error=row.error,
                    )
                )
        moves.append(store.Move(job_id=job.id, moves=True, next_run_at=slots.next_run_at))
    return runs, moves, owners
