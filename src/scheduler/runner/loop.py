"""The runner's cycle: claim due work, execute it with no connection held, complete it under a lease.

1. **Claim** — one short transaction locks due jobs with ``FOR UPDATE SKIP LOCKED``, applies the
   misfire and overlap policies, moves each job to its next slot and records one run row per
   (job, slot) with a lease and a fencing token; ``log`` actions finish inside this transaction and
   their runs are recorded final. Pending runs (retries, manual triggers, queued runs) are started
   the same way. Under load a helper loop claims beside the main one.
2. **Execute** — HTTP actions run concurrently as tasks, holding no database connection, each
   attempt cut off at the job's ``timeout_s``.
3. **Complete** — outcomes are written in batches, fenced by the lease token, and failed attempts
   get their next attempt after a jittered backoff.

Beside the cycle, small services keep the promises: heartbeats renew the leases of calls still
running, the rescuer ends runs whose lease ran out, the listener wakes the loop on LISTEN/NOTIFY and
stops cancelled calls, and partition upkeep creates and drops the daily run partitions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec
import psycopg
import structlog
from psycopg_pool import PoolTimeout

from scheduler.config import Settings
from scheduler.db import connections, store
from scheduler.domain import misfire, overlap
from scheduler.domain.models import Action, LogAction, OverlapPolicy, RetryPolicy, RunStatus, RunTrigger
from scheduler.domain.schedule import ScheduleError
from scheduler.domain.webhooks import new_secret
from scheduler.ids import uuid7
from scheduler.metrics import RunnerMetrics
from scheduler.runner.actions import (
    OUTPUT_LIMIT,
    Attempt,
    Result,
    is_local,
    run_http_action,
    run_log_action,
)
from scheduler.runner.outbound import OutboundClient

log = structlog.get_logger("scheduler.runner")

DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
# What one outcome's own values can make a completion statement fail with (client-side encoding,
# a value out of range): the batch is halved until the row is found, and the rest written.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, ValueError)
COMPLETE_BATCH = 1000
# Leases renewed per statement: 10,000 calls in flight make a few statements, not one huge one.
HEARTBEAT_BATCH = 2000
RESCUE_BATCH = 500
UPKEEP_INTERVAL_S = 3600.0
BACKLOG_INTERVAL_S = 5.0
# Claim loops beside the main one, active only while claims come back full (see _help_claim).
CLAIM_HELPERS = 1
PARTITION_DAYS_AHEAD = 7
# When due rows exist but other runners hold them, look again this soon.
_CONTENDED_SLEEP_S = 0.01
_RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})
# What the overlap policy made of a fire, as the fires metric names it.
_OUTCOME = {
    RunStatus.RUNNING: "started",
    RunStatus.SUCCEEDED: "started",
    RunStatus.SKIPPED: "skipped",
    RunStatus.PENDING: "queued",
}


def backoff_s(retry: RetryPolicy, failed_attempt: int) -> float:
    """Delay before the attempt after ``failed_attempt``: exponential, full jitter in [min, cap]."""
    cap = min(retry.max_backoff_s, retry.min_backoff_s * 2 ** (failed_attempt - 1))
    return random.uniform(retry.min_backoff_s, max(cap, retry.min_backoff_s))


class StopReason(StrEnum):
    """Why an executing call was stopped before it finished."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


@dataclass(slots=True)
class Work:
    """A run this runner owns and executes."""

    attempt: Attempt
    lease: store.Lease
    action: Action
    retry: RetryPolicy
    overlap: OverlapPolicy
    trigger: RunTrigger
    started_at: datetime


@dataclass(slots=True)
class Finished:
    """An attempt's outcome waiting to be written."""

    outcome: store.Outcome
    attempt: int
    retry: RetryPolicy
    overlap: OverlapPolicy
    retryable: bool = True
    """False for failures no retry can mend (a refused address, an invalid URL): final at once."""


@dataclass(slots=True)
class _InFlight:
    work: Work
    task: asyncio.Task[None]
    stop_reason: StopReason | None = None


@dataclass(slots=True)
class ClaimCounts:
    """What one claim transaction did."""

    jobs: int = 0
    started: int = 0
    skipped: int = 0
    queued: int = 0
    catchup: int = 0
    limit: int = 0
    """Most due jobs the claim could take; 0 when too few HTTP slots were free to claim at all."""
    at_capacity: bool = False
    """Too few HTTP slots are free for a claim until calls end (their end wakes the loop)."""
    fired: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Fires by (trigger, outcome), for the metrics."""
    lateness_s: list[float] = field(default_factory=list)
    """How late each started fire was, for the metrics."""

    @property
    def full(self) -> bool:
        """Whether the claim took all it was allowed to, so more may be due right now."""
        return self.limit > 0 and self.jobs >= self.limit


@dataclass(slots=True)
class CompleteCounts:
    """What one completion transaction did."""

    written: int = 0
    refused: int = 0
    retries: int = 0
    accepted: set[UUID] = field(default_factory=set)


@dataclass(slots=True)
class _Backoff:
    """Exponential backoff for database trouble: 0.1 s doubling to 1 s.

    The cap keeps the promise that claims resume within 2 s of the database accepting connections
    again (SPEC 4); a try while it is down costs one failed connection attempt.
    """

    delay: float = 0.0
    failures: int = field(default=0)

    def next(self) -> float:
        self.failures += 1
        self.delay = min(1.0, 0.1 * 2 ** (min(self.failures, 8) - 1))
        return self.delay

    def reset(self) -> None:
        self.failures = 0
        self.delay = 0.0


class SigningKeys:
    """Each namespace's signing secrets, cached briefly; a namespace without one gets one.

    A rotation notifies the runners, which drop their copy at once; the cache lifetime only bounds
    how stale a runner that missed the notification (disconnected at the time) can be.
    """

    TTL_S = 30.0

    def __init__(self, pool: connections.ConnectionSource) -> None:
        """Start with an empty cache."""
        self._pool = pool
        self._cache: dict[str, tuple[list[str], float]] = {}
        # One load per namespace at a time: thousands of calls starting together share it rather
        # than each taking a connection (no database round trip per call).
        self._loading: dict[str, asyncio.Task[list[str]]] = {}

    async def for_namespace(self, namespace: str) -> list[str]:
        """The secrets to sign a call of ``namespace`` with (a stale copy if the database is away)."""
        cached = self._cache.get(namespace)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        task = self._loading.get(namespace)
        if task is None:
            task = asyncio.create_task(self._load(namespace), name=f"signing-{namespace}")
            self._loading[namespace] = task
            task.add_done_callback(lambda done: self._loaded(namespace, done))
        try:
            # Shielded: a call stopped while waiting must not cancel the load the others wait on.
            return await asyncio.shield(task)
        except DB_ERRORS:
            if cached is not None:
                return cached[0]
            raise

    async def _load(self, namespace: str) -> list[str]:
        async with self._pool.connection() as conn:
            found = await store.signing_secrets_current(conn, namespace=namespace)
            if not found:
                async with conn.transaction():
                    await store.signing_secret_create(
                        conn, namespace=namespace, secret=new_secret(), grace_s=None
                    )
                found = await store.signing_secrets_current(conn, namespace=namespace)
        self._cache[namespace] = (found, time.monotonic() + self.TTL_S)
        return found

    def _loaded(self, namespace: str, done: asyncio.Task[list[str]]) -> None:
        if self._loading.get(namespace) is done:
            del self._loading[namespace]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have been stopped meanwhile

    def forget(self, namespace: str) -> None:
        """Drop the cached secrets of a namespace (its secrets changed)."""
        self._cache.pop(namespace, None)


class Runner:
    """One runner process's worth of claiming, executing and completing."""

    def __init__(
        self,
        settings: Settings,
        pool: connections.ConnectionSource,
        client: OutboundClient,
        metrics: RunnerMetrics | None = None,
    ) -> None:
        """Wire the runner to its pool (a few connections), its HTTP client and its metrics."""
        if settings.database_url is None:
            raise ValueError("the runner needs SCHEDULER_DATABASE_URL")
        self.settings = settings
        self.pool = pool
        self.client = client
        self.name = settings.runner_id()
        self.log = log.bind(runner=self.name)
        self._inflight: dict[UUID, _InFlight] = {}
        self._finished: list[Finished] = []
        self._finished_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._busy = asyncio.Event()  # set while claims come back full: the helpers claim too
        self._busy_slots = 0
        # Slots promised to a claim still in flight: two claim loops must not both count them free.
        self._reserved_slots = 0
        # At capacity, claim again only once this many slots are free: a claim per freed slot would
        # cost a transaction per call.
        self._refill = max(1, min(settings.claim_batch, settings.runner_concurrency // 10))
        self._stopping = False
        self._next_pending_check = 0.0  # monotonic time to look for due pending runs
        self.signing = SigningKeys(pool)
        self.metrics = metrics or RunnerMetrics()
        self.sweep_interval_s = max(0.2, min(5.0, settings.lease_s / 3))
        self.heartbeat_interval_s = max(0.2, settings.lease_s / 3)

    # ------------------------------------------------------------------------------ 1. claim

    def _free_slots(self) -> int:
        return self.settings.runner_concurrency - self._busy_slots - self._reserved_slots

    def _claim_limit(self) -> int:
        """How many due jobs or pending runs the next claim may take: 0 while slots are refilling.

        A claim takes no more jobs than there are free HTTP slots, so every job it locks fires: a
        claim that locked its whole batch to start the few calls there was room for would hold the
        other jobs back from other runners and spend a transaction per freed slot.
        """
        free = self._free_slots()
        return min(self.settings.claim_batch, free) if free >= self._refill else 0

    def _at_capacity(self) -> bool:
        """Whether calls in flight, not a claim beside this one, leave too few slots to claim."""
        return self.settings.runner_concurrency - self._busy_slots < self._refill

    async def claim_due_once(self) -> ClaimCounts:
        """Claim and record one batch of due fires, then start executing them.

        Log actions finish inline, inside the claim transaction: they need no lease, because nothing
        can come between their start and their end, and if the commit fails the slot stays due and
        is logged again (at least once). They take no concurrency slot, but count against the batch
        like HTTP fires: the claim cannot know a job's action before locking it.
        """
        limit = self._claim_limit()
        counts = ClaimCounts(limit=limit)
        if limit <= 0:
            counts.at_capacity = self._at_capacity()
            return counts
        self._reserved_slots += limit
        try:
            return await self._claim_due(limit, counts)
        finally:
            self._reserved_slots -= limit

    async def _claim_due(self, limit: int, counts: ClaimCounts) -> ClaimCounts:
        # Pipelined: BEGIN travels with the claim, the two writes together, then COMMIT.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            due, now = await store.job_claim_due(conn, limit=limit)
            if not due or now is None:
                return counts
            counts.jobs = len(due)
            runs, moves, owners = await self._plan(conn, due, now, counts)
            inserted = await store.run_record_many(
                conn, runs, moves, runner=self.name, lease_s=self.settings.lease_s
            )
            for row in inserted:
                job, _ = owners[row.id]
                if row.status is RunStatus.SUCCEEDED and isinstance(job.action, LogAction):
                    run_log_action(
                        job.action,
                        job_id=job.id,
                        run_id=row.id,
                        scheduled_for=row.scheduled_for,
                        namespace=job.namespace,
                        job_name=job.name,
                        runner=self.name,
                    )
        self._record_claim(counts, inserted)
        works: list[Work] = []
        for row in inserted:
            if row.status is not RunStatus.RUNNING or row.lease_token is None or row.started_at is None:
                continue
            job, trigger = owners[row.id]
            works.append(
                Work(
                    attempt=Attempt(
                        run_id=row.id,
                        job_id=job.id,
                        namespace=job.namespace,
                        job_name=job.name,
                        scheduled_for=row.scheduled_for,
                        attempt=1,
                        timeout_s=job.timeout_s,
                    ),
                    lease=store.Lease(
                        run_id=row.id, scheduled_for=row.scheduled_for, lease_token=row.lease_token
                    ),
                    action=job.action,
                    retry=job.retry,
                    overlap=job.overlap,
                    trigger=trigger,
                    started_at=row.started_at,
                )
            )
        self._dispatch(works)
        return counts

    def _record_claim(self, counts: ClaimCounts, inserted: Sequence[store.InsertedRun]) -> None:
        metrics = self.metrics
        metrics.claim_batch.observe(counts.jobs)
        for (trigger, outcome), number in counts.fired.items():
            metrics.fires.labels(trigger, outcome).inc(number)
        for lateness in counts.lateness_s:
            metrics.lateness.observe(lateness)
        inline = sum(1 for row in inserted if row.status is RunStatus.SUCCEEDED)
        if inline:
            metrics.runs_completed.labels(RunStatus.SUCCEEDED.value).inc(inline)
            metrics.duration.observe(0.0)

    async def _plan(
        self,
        conn: connections.AsyncConn,
        due: Sequence[store.DueJob],
        now: datetime,
        counts: ClaimCounts,
    ) -> tuple[list[store.NewRun], list[store.Move], dict[UUID, tuple[store.DueJob, RunTrigger]]]:
        """Apply misfire and overlap policies to each locked job (inside the claim transaction)."""
        runs: list[store.NewRun] = []
        moves: list[store.Move] = []
        owners: dict[UUID, tuple[store.DueJob, RunTrigger]] = {}
        for job in due:
            if job.unreadable is not None:
                # Written by hand or by a newer version: stop the job, as for a broken schedule,
                # rather than fail every claim of the batch (and of every later batch).
                self.log.error("job_action_unreadable", job_id=str(job.id), error=job.unreadable[:500])
                moves.append(store.Move(job_id=job.id, moves=True, next_run_at=None))
                continue
            try:
                slots = misfire.plan(job.timing, job.misfire, job.next_run_at, now)
            except (ScheduleError, OverflowError) as exc:
                # The zone database changed under a stored job, or its next slot lies past year
                # 9999: stop the job rather than the runner.
                self.log.error(  # noqa: TRY400 - a trace adds nothing to a bad expression
                    "job_schedule_broken", job_id=str(job.id), error=str(exc)
                )
                moves.append(store.Move(job_id=job.id, moves=True, next_run_at=None))
                continue
            replaced = 0
            if slots.fires:
                has_queued = (
                    job.overlap is OverlapPolicy.QUEUE
                    and job.active_runs > 0
                    and await store.run_has_queued(conn, job_id=job.id)
                )
                local = is_local(job.action)
                decisions = overlap.in_claim(
                    job.overlap,
                    overlap.decide(job.overlap, active_runs=job.active_runs, has_queued=has_queued),
                    len(slots.fires),
                    finishes_at_once=local,
                )
                if decisions[-1] is overlap.Decision.REPLACE:
                    cancelled = await store.run_cancel_active_for_job(
                        conn, job_id=job.id, reason="replaced by a newer run (overlap policy replace)"
                    )
                    replaced = len(cancelled)
                for fire, decision in zip(slots.fires, decisions, strict=True):
                    status, available_in_s, error = RunStatus.RUNNING, None, None
                    if decision is overlap.Decision.SKIP:
                        status, error = RunStatus.SKIPPED, overlap.SKIP_REASON.format(policy=job.overlap)
                        counts.skipped += 1
                    elif decision is overlap.Decision.QUEUE:
                        status = RunStatus.PENDING
                        counts.queued += 1
                    else:
                        counts.started += 1
                        counts.lateness_s.append((now - fire.slot).total_seconds())
                        if local:
                            status = RunStatus.SUCCEEDED
                    if fire.trigger is RunTrigger.CATCHUP:
                        counts.catchup += 1
                    counts.fired[fire.trigger, _OUTCOME[status]] += 1
                    run_id = uuid7(fire.slot)
                    owners[run_id] = (job, fire.trigger)
                    runs.append(
                        store.NewRun(
                            id=run_id,
                            job_id=job.id,
                            scheduled_for=fire.slot,
                            trigger=fire.trigger,
                            attempt=1,
                            status=status,
                            available_in_s=available_in_s,
                            error=error,
                        )
                    )
            moves.append(
                store.Move(job_id=job.id, moves=True, next_run_at=slots.next_run_at, active_delta=-replaced)
            )
        return runs, moves, owners

    async def claim_pending_once(self) -> ClaimCounts:
        """Start pending runs whose time has come (retries, manual triggers, queued runs)."""
        limit = self._claim_limit()
        counts = ClaimCounts(limit=limit)
        if limit <= 0:
            counts.at_capacity = self._at_capacity()
            return counts
        self._reserved_slots += limit
        try:
            async with self.pool.connection() as conn:
                claimed = await store.run_claim_pending(
                    conn, limit=limit, runner=self.name, lease_s=self.settings.lease_s
                )
        finally:
            self._reserved_slots -= limit
        for run in claimed:
            self.metrics.fires.labels(run.trigger.value, "started").inc()
        self._dispatch(
            [
                Work(
                    attempt=Attempt(
                        run_id=c.run_id,
                        job_id=c.job_id,
                        namespace=c.namespace,
                        job_name=c.job_name,
                        scheduled_for=c.scheduled_for,
                        attempt=c.attempt,
                        timeout_s=c.timeout_s,
                    ),
                    lease=store.Lease(
                        run_id=c.run_id, scheduled_for=c.scheduled_for, lease_token=c.lease_token
                    ),
                    action=c.action,
                    retry=c.retry,
                    overlap=c.overlap,
                    trigger=c.trigger,
                    started_at=c.started_at,
                )
                for c in claimed
            ]
        )
        counts.jobs = counts.started = len(claimed)
        return counts

    # ---------------------------------------------------------------------------- 2. execute

    def _dispatch(self, works: Sequence[Work]) -> None:
        for work in works:
            if isinstance(work.action, LogAction):
                attempt = work.attempt
                result = run_log_action(
                    work.action,
                    job_id=attempt.job_id,
                    run_id=attempt.run_id,
                    scheduled_for=attempt.scheduled_for,
                    namespace=attempt.namespace,
                    job_name=attempt.job_name,
                    runner=self.name,
                )
                self._finish(work, result)
                continue
            self._busy_slots += 1
            # Unnamed: formatting a name per call costs more than the task itself (the run id is
            # the key of _inflight anyway).
            task = asyncio.create_task(self._execute(work))
            self._inflight[work.attempt.run_id] = _InFlight(work=work, task=task)
        self.metrics.in_flight.set(len(self._inflight))

    async def _execute(self, work: Work) -> None:
        run_id = work.attempt.run_id
        try:
            secrets = await self.signing.for_namespace(work.attempt.namespace)
            result = await run_http_action(self.client, work.action, work.attempt, secrets)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            entry = self._inflight.get(run_id)
            reason = entry.stop_reason if entry else None
            self.log.info(
                "run_stopped",
                job_id=str(work.attempt.job_id),
                run_id=str(run_id),
                reason=str(reason or StopReason.SHUTDOWN),
            )
            if reason is StopReason.SHUTDOWN:
                return  # the shutdown hands the run back; keep its entry for that
            self._release_slot(run_id)
            return
        except Exception as exc:
            result = Result(status=RunStatus.FAILED, duration_ms=0, error=f"{type(exc).__name__}: {exc}")
        self._release_slot(run_id)
        self._finish(work, result)

    def _release_slot(self, run_id: UUID) -> None:
        if self._inflight.pop(run_id, None) is not None:
            self._busy_slots -= 1
            self.metrics.in_flight.set(len(self._inflight))
            if self.settings.runner_concurrency - self._busy_slots == self._refill:
                self._wake.set()  # the claim loop may have been waiting for free slots

    def _finish(self, work: Work, result: Result) -> None:
        attempt = work.attempt
        if result.status is not RunStatus.SUCCEEDED:
            self.log.info(
                "run_failed",
                job_id=str(attempt.job_id),
                run_id=str(attempt.run_id),
                attempt=attempt.attempt,
                status=str(result.status),
                http_status=result.http_status,
                error=result.error,
            )
        self._finished.append(
            Finished(
                outcome=store.Outcome(
                    run_id=attempt.run_id,
                    job_id=attempt.job_id,
                    scheduled_for=attempt.scheduled_for,
                    lease_token=work.lease.lease_token,
                    status=result.status,
                    duration_ms=result.duration_ms,
                    http_status=result.http_status,
                    output=result.output,
                    error=result.error,
                ),
                attempt=attempt.attempt,
                retry=work.retry,
                overlap=work.overlap,
                retryable=result.retryable,
            )
        )
        self._finished_ready.set()

    def stop_local(self, run_id: UUID, reason: StopReason) -> bool:
        """Stop an executing call (cancel notified, lease lost, shutdown); False if not ours."""
        entry = self._inflight.get(run_id)
        if entry is None or entry.task.done():
            return False
        entry.stop_reason = reason
        entry.task.cancel()
        return True

    # --------------------------------------------------------------------------- 3. complete

    async def complete(self, finished: Sequence[Finished]) -> CompleteCounts:
        """Write outcomes (fenced) and schedule the retries they call for, in one transaction."""
        counts = CompleteCounts()
        if not finished:
            return counts
        # Pipelined: BEGIN, the locks and the outcomes travel together; the retries and COMMIT follow.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await store.job_lock_many(conn, [f.outcome.job_id for f in finished])
            accepted = await store.run_complete_many(conn, [f.outcome for f in finished])
            retries: list[store.NewRun] = []
            queue_jobs: set[UUID] = set()
            for item in finished:
                outcome = item.outcome
                if outcome.run_id not in accepted:
                    continue
                if item.overlap is OverlapPolicy.QUEUE:
                    queue_jobs.add(outcome.job_id)
                if item.retryable and outcome.status in _RETRYABLE and item.attempt < item.retry.max_attempts:
                    retries.append(
                        store.NewRun(
                            id=uuid7(outcome.scheduled_for),
                            job_id=outcome.job_id,
                            scheduled_for=outcome.scheduled_for,
                            trigger=RunTrigger.RETRY,
                            attempt=item.attempt + 1,
                            status=RunStatus.PENDING,
                            available_in_s=backoff_s(item.retry, item.attempt),
                        )
                    )
            if retries:
                # A retry leaves its job's next slot alone; its count of unfinished runs grows by
                # the retries actually recorded.
                keep = [store.Move(job_id=job_id, moves=False) for job_id in {r.job_id for r in retries}]
                inserted = await store.run_record_many(
                    conn, retries, keep, runner=self.name, lease_s=self.settings.lease_s
                )
                counts.retries = len(inserted)
            if queue_jobs:
                await store.run_promote_queued(conn, job_ids=sorted(queue_jobs))
        counts.accepted = accepted
        counts.written = len(accepted)
        counts.refused = len(finished) - len(accepted)
        self._record_completion(finished, accepted)
        return counts

    def _record_completion(self, finished: Sequence[Finished], accepted: set[UUID]) -> None:
        ended: Counter[str] = Counter()
        for item in finished:
            outcome = item.outcome
            if outcome.run_id in accepted:
                ended[outcome.status.value] += 1
                if outcome.duration_ms is not None:
                    self.metrics.duration.observe(outcome.duration_ms / 1000)
            elif outcome.lease_token is not None:  # ours, refused: someone else ended it
                self.metrics.completions_refused.inc()
                self.log.warning(
                    "run_completion_refused",
                    job_id=str(outcome.job_id),
                    run_id=str(outcome.run_id),
                    reason="the run is no longer ours (cancelled, or rescued after our lease ran out)",
                )
        for status, number in ended.items():
            self.metrics.runs_completed.labels(status).inc(number)

    async def flush_finished(self) -> int:
        """Write every outcome gathered so far; return how many were taken.

        One bad row never holds the others back: when a batch fails on its own values, it is halved
        until the row is found, which is recorded without what made it fail (`_write_alone`).
        """
        taken = 0
        while self._finished:
            # Take the batch out first: the completer task and a draining shutdown may flush at once.
            batch = self._finished[:COMPLETE_BATCH]
            del self._finished[: len(batch)]
            parts = [batch]
            part: list[Finished] = []
            try:
                while parts:
                    part = parts.pop()
                    try:
                        await self._with_deadlock_retry(lambda part=part: self.complete(part))  # type: ignore[misc]
                    except ROW_ERRORS as exc:
                        if len(part) == 1:
                            await self._write_alone(part[0], exc)
                        else:
                            middle = len(part) // 2
                            parts += [part[middle:], part[:middle]]
                    part = []
            except BaseException:
                # Keep what was not written for the next try (a lost connection, a shutdown).
                self._finished[:0] = [item for chunk in (part, *reversed(parts)) for item in chunk]
                raise
            taken += len(batch)
        return taken

    async def _write_alone(self, item: Finished, exc: Exception) -> None:
        """Record an outcome the database refused, keeping its status and saying why its output is gone.

        If even that is refused, the outcome is dropped: the run's lease runs out and the rescuer
        ends it like a run whose runner died, which is still a final state.
        """
        outcome = item.outcome
        self.log.error(
            "run_outcome_refused",
            job_id=str(outcome.job_id),
            run_id=str(outcome.run_id),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        error = store.storable_text(
            f"the outcome could not be recorded as received ({type(exc).__name__}: {exc})"
        )
        plain = msgspec.structs.replace(
            outcome,
            duration_ms=None,
            http_status=None,
            output=None,
            error=(error or "")[:OUTPUT_LIMIT],
        )
        try:
            await self._with_deadlock_retry(lambda: self.complete([dataclasses.replace(item, outcome=plain)]))
        except ROW_ERRORS:
            self.log.exception("run_outcome_dropped", job_id=str(outcome.job_id), run_id=str(outcome.run_id))

    async def _with_deadlock_retry(self, action: Callable[[], Awaitable[object]]) -> None:
        for tries in range(5):
            try:
                await action()
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if tries == 4:  # noqa: PLR2004
                    raise
                await asyncio.sleep(0.01 * (tries + 1))
            else:
                return

    # ------------------------------------------------------------------ services beside the cycle

    async def heartbeat_once(self) -> tuple[int, int]:
        """Renew the leases of executing calls; stop those whose lease is gone. Returns (renewed, lost)."""
        works = [entry.work for entry in self._inflight.values() if not entry.task.done()]
        if not works:
            return 0, 0
        kept: set[UUID] = set()
        async with self.pool.connection() as conn:
            for start in range(0, len(works), HEARTBEAT_BATCH):
                leases = [work.lease for work in works[start : start + HEARTBEAT_BATCH]]
                kept |= await store.run_heartbeat_many(conn, leases, lease_s=self.settings.lease_s)
        lost = 0
        for work in works:
            run_id = work.attempt.run_id
            if run_id not in kept and self.stop_local(run_id, StopReason.LEASE_LOST):
                lost += 1
                self.log.warning("run_lease_lost", run_id=str(run_id), job_id=str(work.attempt.job_id))
        return len(kept), lost

    async def rescue_once(self) -> int:
        """End runs whose lease expired (their runner died or froze): retry them or mark them lost."""
        async with self.pool.connection() as conn:
            expired = await store.run_find_expired(conn, limit=RESCUE_BATCH)
        if not expired:
            return 0
        finished = [
            Finished(
                outcome=store.Outcome(
                    run_id=run.run_id,
                    job_id=run.job_id,
                    scheduled_for=run.scheduled_for,
                    lease_token=None,
                    status=RunStatus.LOST,
                    duration_ms=None,
                    error=f"lease expired: runner {run.runner} stopped renewing it",
                ),
                attempt=run.attempt,
                retry=run.retry,
                overlap=run.overlap,
            )
            for run in expired
        ]
        counts = CompleteCounts()

        async def write() -> None:
            nonlocal counts
            counts = await self.complete(finished)

        await self._with_deadlock_retry(write)
        self.metrics.rescues.inc(counts.written)
        for run in expired:
            if run.run_id not in counts.accepted:
                continue
            self.log.warning(
                "run_rescued",
                job_id=str(run.job_id),
                run_id=str(run.run_id),
                attempt=run.attempt,
                dead_runner=run.runner,
                retried=run.attempt < run.retry.max_attempts,
            )
        return counts.written

    async def upkeep_once(self) -> store.PartitionUpkeep:
        """Create run partitions ahead and drop expired ones (one runner at a time)."""
        async with self.pool.connection() as conn:
            done = await store.run_partitions_upkeep(
                conn, days_ahead=PARTITION_DAYS_AHEAD, retention_days=self.settings.run_retention_days
            )
        if done.created or done.dropped:
            self.log.info("run_partitions_upkeep", created=done.created, dropped=done.dropped)
        return done

    def _recovered(self, backoff: _Backoff, service: str) -> None:
        if backoff.failures:
            self.log.info("database_reconnected", service=service, after_failures=backoff.failures)
            self.metrics.db_reconnects.inc()
        backoff.reset()

    async def due_backlog_once(self) -> int:
        """Count the jobs due now and not yet claimed, for the backlog gauge."""
        async with self.pool.connection() as conn:
            backlog = await store.job_due_backlog(conn)
        self.metrics.due_backlog.set(backlog)
        return backlog

    async def _every(self, interval_s: float, name: str, action: Callable[[], Awaitable[object]]) -> None:
        backoff = _Backoff()
        while not self._stopping:
            try:
                await self._with_deadlock_retry(action)
                self._recovered(backoff, name)
                await asyncio.sleep(interval_s)
            except DB_ERRORS as exc:
                self.log.warning("database_unavailable", service=name, error=str(exc)[:200])
                await asyncio.sleep(backoff.next())
            except psycopg.errors.LockNotAvailable:
                await asyncio.sleep(interval_s)
            except Exception:
                # A bug must not silently end a service the runner's promises depend on.
                self.log.exception("service_failed", service=name)
                await asyncio.sleep(backoff.next())

    async def _complete_forever(self) -> None:
        backoff = _Backoff()
        while True:
            await self._finished_ready.wait()
            self._finished_ready.clear()
            try:
                await self.flush_finished()
                self._recovered(backoff, "complete")
            except DB_ERRORS as exc:
                self.log.warning("database_unavailable", service="complete", error=str(exc)[:200])
                await asyncio.sleep(backoff.next())
                self._finished_ready.set()
            except Exception:
                self.log.exception("service_failed", service="complete")
                await asyncio.sleep(backoff.next())
                self._finished_ready.set()

    async def _listen_forever(self) -> None:
        url = self.settings.database_url
        if url is None:  # pragma: no cover - checked in __init__
            return
        backoff = _Backoff()
        while not self._stopping:
            try:
                conn = await connections.connect(url, application_name="scheduler-runner-listen")
                async with conn:
                    await store.listen(conn)
                    self._recovered(backoff, "listen")
                    self._next_pending_check = 0.0
                    self._wake.set()  # notifications may have been missed while disconnected
                    async for note in conn.notifies():
                        if note.channel == "scheduler_cancel":
                            try:
                                self.stop_local(UUID(note.payload), StopReason.CANCELLED)
                            except ValueError:
                                continue
                        elif note.channel == "scheduler_secrets":
                            self.signing.forget(note.payload)
                        else:
                            self._next_pending_check = 0.0  # a manual run or a hand-back may wait
                            self._wake.set()
            except DB_ERRORS as exc:
                self.log.warning("database_unavailable", service="listen", error=str(exc)[:200])
                await asyncio.sleep(backoff.next())
            except Exception:
                self.log.exception("service_failed", service="listen")
                await asyncio.sleep(backoff.next())

    # ------------------------------------------------------------------------------ the loop

    async def _idle_delay(self) -> float:
        async with self.pool.connection() as conn:
            due = await store.job_next_due(conn)
        if due.pending_in_s is not None:
            # Look for pending runs again when the earliest one comes due, not before.
            at = time.monotonic() + max(0.0, due.pending_in_s)
            self._next_pending_check = min(self._next_pending_check, at)
        waits = [w for w in (due.slot_in_s, due.pending_in_s) if w is not None]
        if not waits:
            return self.settings.poll_interval_s
        wait = min(waits)
        if wait <= 0:
            return _CONTENDED_SLEEP_S
        return min(wait, self.settings.poll_interval_s)

    def _pending_due(self) -> bool:
        return time.monotonic() >= self._next_pending_check

    async def _sleep(self, delay: float, stop: asyncio.Event) -> None:
        if self._wake.is_set() or stop.is_set():
            self._wake.clear()
            return
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def _help_claim(self, stop: asyncio.Event) -> None:
        """Claim beside the main loop while claims come back full.

        While the main loop waits on the database for one batch, a helper prepares or writes
        another, so a runner keeps its share of the CPU busy under load. When idle, helpers sleep
        until the main loop finds a full batch: polling stays one loop's worth.
        """
        while not stop.is_set():
            await self._busy.wait()
            if stop.is_set():
                return
            try:
                fires = await self.claim_due_once()
            except DB_ERRORS:
                fires = ClaimCounts()  # the main loop reports and backs off
            except Exception:
                self.log.exception("claim_failed", loop="helper")
                fires = ClaimCounts()
            if not fires.full:
                self._busy.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and execute until ``stop`` is set, then drain and hand back what is left."""
        self.log.info(
            "runner_started",
            concurrency=self.settings.runner_concurrency,
            claim_batch=self.settings.claim_batch,
            lease_s=self.settings.lease_s,
        )
        services = [
            asyncio.create_task(self._listen_forever(), name="listen"),
            asyncio.create_task(self._complete_forever(), name="complete"),
            asyncio.create_task(self._every(self.heartbeat_interval_s, "heartbeat", self.heartbeat_once)),
            asyncio.create_task(self._every(self.sweep_interval_s, "rescue", self.rescue_once)),
            asyncio.create_task(self._every(UPKEEP_INTERVAL_S, "upkeep", self.upkeep_once)),
            asyncio.create_task(self._every(BACKLOG_INTERVAL_S, "backlog", self.due_backlog_once)),
        ]
        helpers = [asyncio.create_task(self._help_claim(stop)) for _ in range(CLAIM_HELPERS)]
        backoff = _Backoff()
        try:
            while not stop.is_set():
                try:
                    fires = await self.claim_due_once()
                    if fires.full:
                        self._busy.set()
                    pending = ClaimCounts()
                    if self._pending_due():
                        # Pending runs are looked for when one comes due, when notified, and at
                        # least every poll interval, so a busy runner still gets to them.
                        self._next_pending_check = time.monotonic() + self.settings.poll_interval_s
                        pending = await self.claim_pending_once()
                        if pending.full:
                            self._next_pending_check = 0.0
                    self._recovered(backoff, "claim")
                    if fires.full or pending.full:
                        await asyncio.sleep(0)
                        continue
                    # At capacity, wait for slots (their release wakes us) rather than spin; slots
                    # held by the helper's claim come back within a transaction.
                    delay = self.settings.poll_interval_s if fires.at_capacity else await self._idle_delay()
                except DB_ERRORS as exc:
                    delay = backoff.next()
                    self.log.warning(
                        "database_unavailable", service="claim", error=str(exc)[:200], retry_in_s=delay
                    )
                except Exception:
                    delay = backoff.next()
                    self.log.exception("claim_failed", retry_in_s=delay)
                await self._sleep(delay, stop)
            self._busy.set()  # let the helpers see the stop
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._drain()
        finally:
            self._stopping = True
            for task in [*services, *helpers]:
                task.cancel()
            await asyncio.gather(*services, *helpers, return_exceptions=True)
        self.log.info("runner_stopped")

    async def _drain(self) -> None:
        """Let in-flight calls finish within the grace period, hand back the rest, write outcomes."""
        tasks = [entry.task for entry in self._inflight.values()]
        if tasks:
            self.log.info("runner_draining", in_flight=len(tasks), grace_s=self.settings.shutdown_grace_s)
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
        left = [entry for entry in self._inflight.values() if not entry.task.done()]
        for entry in left:
            entry.stop_reason = StopReason.SHUTDOWN
            entry.task.cancel()
        await asyncio.gather(*(entry.task for entry in left), return_exceptions=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if left:
                    async with self.pool.connection() as conn:
                        released = await store.run_release_many(conn, [entry.work.lease for entry in left])
                    self.log.info("runs_handed_back", count=released)
                    left = []
                await self.flush_finished()
                break
            except DB_ERRORS as exc:
                self.log.warning("database_unavailable", service="drain", error=str(exc)[:200])
                await asyncio.sleep(0.5)
            except Exception:
                # A bug must not turn a graceful stop into a crash: what was not written is rescued
                # by another runner when its lease runs out.
                self.log.exception("drain_failed", unwritten=len(self._finished))
                break
