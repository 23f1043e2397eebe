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

# Enum members read once: on Python 3.11 each `RunStatus.X` lookup costs a descriptor call, per fire.
_SUCCEEDED = RunStatus.SUCCEEDED
_RUNNING = RunStatus.RUNNING
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
    """How late each started fire was at the claim."""
    inline_lateness_s: list[float] = field(default_factory=list)
    """The same for the fires finished inside the claim (log), which the lateness metric takes now;
    an HTTP fire's is observed when its call starts (`Runner._execute`)."""

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
    # Bound once: this loop runs per fire, thousands of times a second.
    late, late_inline = counts.lateness_s.append, counts.inline_lateness_s.append
    fired_in, new_run = counts.fired_in, store.NewRun
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
            # A job claimed ahead (its slot after now) is planned at its slot: it fires that slot, on time.
            slots = misfire.plan(job.timing, job.misfire, job.next_run_at, max(now, job.next_run_at))
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
        fired = slots.fires
        if fired:
            local = is_local(job.action)
            policy = job.overlap
            if fires.needs_database(policy, job.active_runs):
                decisions = await fires.decide_fires(
                    conn,
                    job_id=job.id,
                    policy=policy,
                    active_runs=job.active_runs,
                    fires=len(fired),
                    finishes_at_once=local,
                )
            else:
                # Nothing can be waiting and nothing is displaced: the pure decision, no coroutine.
                decisions = overlap.decide(
                    policy,
                    active_runs=job.active_runs,
                    has_queued=False,
                    fires=len(fired),
                    finishes_at_once=local,
                )
            started = _SUCCEEDED if local else _RUNNING
            namespace, job_id = job.namespace, job.id
            for fire, decision in zip(fired, decisions, strict=True):
                status, _, error = overlap.recorded_as(decision, policy, started=started)
                slot, trigger = fire.slot, fire.trigger
                if status is started:
                    lateness = max(0.0, (now - slot).total_seconds())
                    late(lateness)
                    if local:  # an HTTP fire's lateness is observed when its call starts
                        late_inline(lateness)
                    fired_in[namespace, trigger, "started"] += 1
                else:
                    fired_in[namespace, trigger, _FIRE_OUTCOME[status]] += 1
                run_id = uuid7(slot)
                owners[run_id] = (job, trigger)
                runs.append(
                    new_run(
                        id=run_id,
                        job_id=job_id,
                        scheduled_for=slot,
                        trigger=trigger,
                        attempt=1,
                        status=status,
                        error=error,
                    )
                )
        moves.append(store.Move(job_id=job.id, moves=True, next_run_at=slots.next_run_at))
    return runs, moves, owners
