"""The runner's cycle: claim due work, execute it with no connection held, hand its outcome on.

1. **Claim** — one short transaction locks due jobs with ``FOR UPDATE SKIP LOCKED``, applies the
   misfire and overlap policies, moves each job to its next slot and records one run row per
   (job, slot) with a lease and a fencing token; ``log`` actions finish inside this transaction, their
   runs recorded final and their events written once it has committed. Pending runs (retries,
   manual triggers, queued runs) are started the same way. Under load a helper loop claims beside
   the main one.
   An HTTP job may be claimed up to ``claim_lookahead_s`` before its slot: its run is recorded as
   starting at the slot and waits in the event loop, holding its concurrency slot and its lease,
   until then, so at the slot the call starts with no claim in its way (and never before the slot).
2. **Execute** — HTTP actions run concurrently as tasks, holding no database connection, each
   attempt cut off at the job's ``timeout_s``.
3. **Complete** — each outcome goes to the completer (`scheduler.runner.completer`), which writes
   outcomes in batches, fenced by their leases, with the retries they call for.

Beside the cycle, the services of `scheduler.runner.services` keep the promises (heartbeats,
rescue, notifications, partitions, the backlog gauge); `scheduler.runner.service` wires them to
this loop and runs them all.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import structlog
from structlog.typing import FilteringBoundLogger

from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.connections import DB_ERRORS, ConnectionSource
from scheduler.domain.models import (
    Action,
    LogAction,
    Outcome,
    OverlapPolicy,
    RetryPolicy,
    RunStatus,
    RunTrigger,
)
from scheduler.metrics import RunnerMetrics, observe_many
from scheduler.runner.actions import Attempt, run_http_action, run_log_action
from scheduler.runner.completer import Completer, Completion
from scheduler.runner.outbound import OutboundClient
from scheduler.runner.planning import ClaimCounts, plan_claim
from scheduler.runner.signing import SigningSecrets
from scheduler.runner.supervise import keep_running

# Claim loops beside the main one, active only while claims come back full (see _help_claim).
CLAIM_HELPERS = 1
# When due rows exist but other runners hold them, look again this soon.
CONTENDED_SLEEP_S = 0.01


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
    planned_at: float = 0.0
    """The event loop's time matching ``started_at``: how late the call really started is counted from it."""
    late_s: float | None = None
    """How late a scheduled fire is at ``started_at`` (the lateness metric); None for pending runs."""


@dataclass(frozen=True, slots=True)
class _LogEvent:
    """A log run recorded by a claim: its event is written once the claim has committed."""

    action: LogAction
    job_id: UUID
    namespace: str
    job_name: str
    run_id: UUID
    scheduled_for: datetime


@dataclass(slots=True)
class _InFlight:
    work: Work
    task: asyncio.Task[None] | None
    """None while a run claimed ahead waits for its slot (its call has not started)."""
    stop_reason: StopReason | None = None


class Runner:
    """One runner process's worth of claiming and executing; outcomes go to its completer."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionSource,
        client: OutboundClient,
        *,
        completer: Completer,
        signing: SigningSecrets,
        metrics: RunnerMetrics,
    ) -> None:
        """Wire the runner to its pool (a few connections), HTTP client, completer and metrics."""
        self.settings = settings
        self.pool = pool
        self.client = client
        self.completer = completer
        self.signing = signing
        self.metrics = metrics
        self.name = settings.runner_id()
        self.log: FilteringBoundLogger = structlog.get_logger("scheduler.runner").bind(runner=self.name)
        self._inflight: dict[UUID, _InFlight] = {}
        self._wake = asyncio.Event()
        self._busy = asyncio.Event()  # set while claims come back full: the helpers claim too
        self._busy_slots = 0
        # Slots promised to a claim still in flight: two claim loops must not both count them free.
        self._reserved_slots = 0
        # At capacity, claim again only once this many slots are free: a claim per freed slot would
        # cost a transaction per call.
        self._refill = max(1, min(settings.claim_batch, settings.runner_concurrency // 10))
        self._next_pending_check = 0.0  # monotonic time to look for due pending runs
        # Bounded by the lease: a run claimed ahead holds its lease while it waits for its slot.
        self._lookahead_s = max(0.0, min(settings.claim_lookahead_s, settings.lease_s / 10))
        # The timers that start batches claimed ahead at their slot, by a key of their own.
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_keys = itertools.count()
        # Log runs whose claim's commit was cut: their events wait until the claim is known to stand.
        self._unconfirmed: list[_LogEvent] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and execute until ``stop`` is set, then drain and hand back what is left."""
        self.log.info(
            "runner_started",
            concurrency=self.settings.runner_concurrency,
            claim_batch=self.settings.claim_batch,
            lease_s=self.settings.lease_s,
        )
        helpers = [asyncio.create_task(self._help_claim(stop)) for _ in range(CLAIM_HELPERS)]
        try:
            await keep_running(
                "claim",
                self._claim_step,
                log=self.log,
                metrics=self.metrics,
                stop=stop,
                wake=self._wake,
                failure_event="claim_failed",
            )
            self._busy.set()  # let the helpers see the stop
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._drain()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        self.log.info("runner_stopped")

    async def _claim_step(self) -> float:
        """One round of the main claim loop; returns how long to wait before the next."""
        await self.confirm_logged()
        fires = await self.claim_due_once()  # a full claim sets _busy: the helpers claim too
        pending = ClaimCounts()
        if time.monotonic() >= self._next_pending_check:
            # Pending runs are looked for when one comes due, when notified, and at least every
            # poll interval, so a busy runner still gets to them.
            self._next_pending_check = time.monotonic() + self.settings.poll_interval_s
            pending = await self.claim_pending_once()
            if pending.full:
                self._next_pending_check = 0.0
        if fires.full or pending.full:
            return 0.0
        # At capacity, wait for slots (their release wakes us) rather than spin; slots held by the
        # helper's claim come back within a transaction.
        return self.settings.poll_interval_s if fires.at_capacity else await self._idle_delay()

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

    async def _idle_delay(self) -> float:
        """How long nothing is due, by the database clock: until the earliest slot or pending run."""
        async with self.pool.connection() as conn:
            due = await store.job_next_due(conn, lookahead_s=self._lookahead_s)
        if due.pending_in_s is not None:
            # Look for pending runs again when the earliest one comes due, not before.
            at = time.monotonic() + max(0.0, due.pending_in_s)
            self._next_pending_check = min(self._next_pending_check, at)
        waits = [w for w in (due.slot_in_s, due.pending_in_s) if w is not None]
        if not waits:
            return self.settings.poll_interval_s
        wait = min(waits)
        if wait <= 0:
            return CONTENDED_SLEEP_S
        return min(wait, self.settings.poll_interval_s)

    def wake(self) -> None:
        """Look for due work now (a notification said some may be waiting)."""
        self._next_pending_check = 0.0  # a manual run or a hand-back may wait
        self._wake.set()

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

    async def claim_due_once(self, now: datetime | None = None) -> ClaimCounts:
        """Claim and record one batch of due fires, then start executing them.

        ``now`` is the database's clock unless a test passes one. Log actions are recorded final
        inside the claim transaction (they need no lease: nothing can come between their start and
        their end) and their events written after it commits: if the commit fails the slot stays
        due and fires again, so an event is written once per slot. A commit cut off mid-way is
        settled by `confirm_logged`. They take no concurrency slot, but count against the batch
        like HTTP fires: the claim cannot know a job's action before locking it.
        """
        limit = self._claim_limit()
        counts = ClaimCounts(limit=limit)
        if limit <= 0:
            counts.at_capacity = self._at_capacity()
            return counts
        self._reserved_slots += limit
        try:
            works, claimed_at, answered = await self._claim_due(limit, counts, now)
        finally:
            self._reserved_slots -= limit
        if counts.full:
            # Before the calls start: the helper's claim then goes out ahead of this batch's
            # dispatch, and the database works on it while the event loop starts these calls.
            self._busy.set()
        self._dispatch_at_slots(works, claimed_at, answered)
        return counts

    def _dispatch_at_slots(self, works: list[Work], claimed_at: datetime | None, answered: float) -> None:
        """Start what is due now; hold what was claimed ahead until its slot, one timer per slot.

        A held run's delay is its slot minus the claim's database now, counted from the moment the
        claim's answer arrived (``answered``, loop time): that moment is after the database's now,
        so the call starts at its slot by the database clock or just after it, never before.
        """
        if claimed_at is None:
            return
        now_works: list[Work] = []
        later: dict[datetime, list[Work]] = {}
        for work in works:
            if work.started_at > claimed_at:
                later.setdefault(work.started_at, []).append(work)
            else:
                now_works.append(work)
        for work in now_works:
            work.planned_at = answered
        self._dispatch(now_works)
        loop = asyncio.get_running_loop()
        for slot, held in later.items():
            when = answered + (slot - claimed_at).total_seconds()
            for work in held:
                work.planned_at = when
                self._busy_slots += 1
                self._inflight[work.attempt.run_id] = _InFlight(work=work, task=None)
            key = next(self._timer_keys)
            self._timers[key] = loop.call_at(when, self._start_held, key, held)
        if later:
            self.metrics.in_flight.set(len(self._inflight))

    def _start_held(self, key: int, held: list[Work]) -> None:
        """At their slot: start the calls of a batch claimed ahead that are still ours to start."""
        self._timers.pop(key, None)
        for work in held:
            entry = self._inflight.get(work.attempt.run_id)
            if entry is None or entry.task is not None or entry.stop_reason is not None:
                continue  # cancelled, lost or handed back while it waited
            entry.task = asyncio.create_task(self._execute(work))

    async def _claim_due(
        self, limit: int, counts: ClaimCounts, now: datetime | None
    ) -> tuple[list[Work], datetime | None, float]:
        logged: list[_LogEvent] = []
        answered = 0.0
        try:
            # Pipelined: BEGIN travels with the claim, the two writes together, then COMMIT.
            async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
                due, claimed_at = await store.job_claim_due(
                    conn, limit=limit, now=now, lookahead_s=self._lookahead_s
                )
                answered = asyncio.get_running_loop().time()
                if not due or claimed_at is None:
                    return [], None, answered
                counts.jobs = len(due)
                runs, moves, owners = await plan_claim(conn, due, claimed_at, counts, self.log)
                inserted = await store.run_record_many(
                    conn, runs, moves, runner=self.name, lease_s=self.settings.lease_s, now=now
                )
                for row in inserted:
                    job, _ = owners[row.id]
                    if row.status is RunStatus.SUCCEEDED and isinstance(job.action, LogAction):
                        logged.append(
                            _LogEvent(
                                action=job.action,
                                job_id=job.id,
                                namespace=job.namespace,
                                job_name=job.name,
                                run_id=row.id,
                                scheduled_for=row.scheduled_for,
                            )
                        )
        except DB_ERRORS:
            # The commit may have been cut after the server made it durable: whether these runs
            # exist is asked before their events are emitted (or dropped, the slot firing again).
            self._unconfirmed.extend(logged)
            raise
        for event in logged:
            self._emit(event)
        self._record_claim(counts, inserted, owners)
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
                    late_s=max(0.0, (row.started_at - row.scheduled_for).total_seconds()),
                )
            )
        return works, claimed_at, answered

    def _emit(self, event: _LogEvent) -> None:
        """Write a log action's event: only ever for a run whose claim committed."""
        run_log_action(
            event.action,
            job_id=event.job_id,
            run_id=event.run_id,
            scheduled_for=event.scheduled_for,
            namespace=event.namespace,
            job_name=event.job_name,
            runner=self.name,
        )

    async def confirm_logged(self) -> int:
        """Emit the events of log runs whose claim's commit was cut, if the claim did commit.

        Their jobs are locked first: a commit the server was still making when our connection died
        ends before the runs are looked for. Runs that are not there were rolled back: their slots
        are due again and fire (and log) anew. Returns how many events were emitted.
        """
        if not self._unconfirmed:
            return 0
        events = self._unconfirmed
        async with self.pool.connection() as conn, conn.transaction():
            await store.job_lock_many(conn, [event.job_id for event in events])
            present = await store.run_status_many(
                conn, [(event.run_id, event.scheduled_for) for event in events]
            )
        self._unconfirmed = []
        for event in events:
            if event.run_id in present:
                self._emit(event)
        self.log.info("log_runs_confirmed", committed=len(present), rolled_back=len(events) - len(present))
        return len(present)

    def _record_claim(
        self,
        counts: ClaimCounts,
        inserted: Sequence[store.InsertedRun],
        owners: dict[UUID, tuple[store.DueJob, RunTrigger]],
    ) -> None:
        metrics = self.metrics
        metrics.claim_batch.observe(counts.jobs)
        for (namespace, trigger, outcome), number in counts.fired_in.items():
            metrics.count_fires(namespace, trigger, outcome, number)
        # In one pass per histogram: observe() per fire took two locks each, per fire.
        observe_many(metrics.lateness, counts.inline_lateness_s)
        succeeded = RunStatus.SUCCEEDED
        inline: Counter[str] = Counter()
        namespaces = {namespace for namespace, _, _ in counts.fired_in}
        if len(namespaces) == 1:  # the usual claim: one count, no lookup per row
            inline[namespaces.pop()] = sum(1 for row in inserted if row.status is succeeded)
        else:
            for row in inserted:
                if row.status is succeeded:
                    inline[owners[row.id][0].namespace] += 1
        for namespace, number in inline.items():
            if not number:
                continue
            metrics.count_completed(namespace, succeeded.value, number)
        # Each run done inside the claim took no time of its own.
        observe_many(metrics.duration, [0.0] * sum(inline.values()))

    async def claim_pending_once(self, now: datetime | None = None) -> ClaimCounts:
        """Start pending runs whose time has come (retries, manual triggers, queued runs).

        ``now`` is the database's clock unless a test passes one.
        """
        limit = self._claim_limit()
        counts = ClaimCounts(limit=limit)
        if limit <= 0:
            counts.at_capacity = self._at_capacity()
            return counts
        self._reserved_slots += limit
        try:
            async with self.pool.connection() as conn:
                claimed = await store.run_claim_pending(
                    conn, limit=limit, runner=self.name, lease_s=self.settings.lease_s, now=now
                )
        finally:
            self._reserved_slots -= limit
        for run in claimed:
            counts.fired_in[run.namespace, run.trigger.value, "started"] += 1
        for (namespace, trigger, outcome), number in counts.fired_in.items():
            self.metrics.count_fires(namespace, trigger, outcome, number)
        answered = asyncio.get_running_loop().time()
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
                    planned_at=answered,
                )
                for c in claimed
            ]
        )
        counts.jobs = len(claimed)
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
        # The run row says the call started at its claim's now or its slot; on a busy event loop
        # the task gets here later than that. The delay goes into the row's started_at with the
        # outcome, and into the lateness metric, so neither reads earlier than the call began.
        delay_s = max(0.0, asyncio.get_running_loop().time() - work.planned_at)
        if work.late_s is not None:
            self.metrics.lateness.observe(work.late_s + delay_s)
        try:
            secrets = await self.signing.for_namespace(work.attempt.namespace)
            result = await run_http_action(self.client, work.action, work.attempt, secrets)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            entry = self._inflight.get(run_id)
            reason = entry.stop_reason if entry else None
            self.log.info(
                "run_stopped",
                job_id=str(work.attempt.job_id),
                job_name=work.attempt.job_name,
                namespace=work.attempt.namespace,
                run_id=str(run_id),
                reason=str(reason or StopReason.SHUTDOWN),
            )
            if reason is StopReason.SHUTDOWN:
                return  # the shutdown hands the run back; keep its entry for that
            self._release_slot(run_id)
            return
        except Exception as exc:
            result = Outcome(status=RunStatus.FAILED, duration_ms=0, error=f"{type(exc).__name__}: {exc}")
        self._release_slot(run_id)
        self._finish(work, result, start_delay_s=delay_s)

    def _release_slot(self, run_id: UUID) -> None:
        if self._inflight.pop(run_id, None) is not None:
            self._busy_slots -= 1
            self.metrics.in_flight.set(len(self._inflight))
            if self.settings.runner_concurrency - self._busy_slots == self._refill:
                self._wake.set()  # the claim loop may have been waiting for free slots

    def _finish(self, work: Work, result: Outcome, *, start_delay_s: float = 0.0) -> None:
        attempt = work.attempt
        if result.status is not RunStatus.SUCCEEDED:
            self.log.info(
                "run_failed",
                job_id=str(attempt.job_id),
                job_name=attempt.job_name,
                namespace=attempt.namespace,
                run_id=str(attempt.run_id),
                attempt=attempt.attempt,
                status=str(result.status),
                http_status=result.http_status,
                error=result.error,
            )
        self.completer.add(
            Completion(
                fenced=store.FencedOutcome(
                    run_id=attempt.run_id,
                    job_id=attempt.job_id,
                    scheduled_for=attempt.scheduled_for,
                    lease_token=work.lease.lease_token,
                    outcome=result,
                    start_delay_s=start_delay_s,
                ),
                attempt=attempt.attempt,
                retry=work.retry,
                overlap=work.overlap,
                namespace=attempt.namespace,
                job_name=attempt.job_name,
            )
        )

    def leases(self) -> list[store.Lease]:
        """The leases of the calls still executing (what the heartbeat renews)."""
        return [
            entry.work.lease
            for entry in self._inflight.values()
            if (entry.task is None and entry.stop_reason is None)
            or (entry.task is not None and not entry.task.done())
        ]

    def stop_local(self, run_id: UUID, reason: StopReason) -> bool:
        """Stop an executing or waiting call (cancel notified, lease lost, shutdown); False if not ours."""
        entry = self._inflight.get(run_id)
        if entry is None or (entry.task is not None and entry.task.done()):
            return False
        if entry.task is None:
            if entry.stop_reason is not None:
                return False  # already stopped while it waited
            # Claimed ahead and still waiting for its slot: its call never starts.
            entry.stop_reason = reason
            if reason is not StopReason.SHUTDOWN:  # a shutdown hands it back (see _drain)
                attempt = entry.work.attempt
                self.log.info(
                    "run_stopped",
                    job_id=str(attempt.job_id),
                    job_name=attempt.job_name,
                    namespace=attempt.namespace,
                    run_id=str(run_id),
                    reason=str(reason),
                )
                self._release_slot(run_id)
            return True
        entry.stop_reason = reason
        entry.task.cancel()
        return True

    def cancel(self, run_id: UUID) -> bool:
        """Stop the call of a run that was cancelled (a notification); False if not ours."""
        return self.stop_local(run_id, StopReason.CANCELLED)

    def lose(self, run_id: UUID) -> bool:
        """Stop the call of a run whose lease is gone (the heartbeat found it); False if not ours."""
        entry = self._inflight.get(run_id)
        if not self.stop_local(run_id, StopReason.LEASE_LOST) or entry is None:
            return False
        attempt = entry.work.attempt
        self.log.warning(
            "run_lease_lost",
            run_id=str(run_id),
            job_id=str(attempt.job_id),
            job_name=attempt.job_name,
            namespace=attempt.namespace,
        )
        self.metrics.leases_lost.inc()
        return True

    # ------------------------------------------------------------------------------ the stop

    async def _drain(self) -> None:
        """Hand back held runs, let calls finish within the grace period, hand back the rest, write outcomes.

        Runs claimed ahead and still waiting for their slot go back at once, not after the grace.
        """
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        held = [entry for entry in self._inflight.values() if entry.task is None]
        for entry in held:
            entry.stop_reason = StopReason.SHUTDOWN
        if held:  # another runner then fires them at their slots
            await self._hand_back(held, flush=False)
        tasks = [entry.task for entry in self._inflight.values() if entry.task is not None]
        if tasks:
            self.log.info("runner_draining", in_flight=len(tasks), grace_s=self.settings.shutdown_grace_s)
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
        left = [
            entry for entry in self._inflight.values() if entry.task is not None and not entry.task.done()
        ]
        for entry in left:
            entry.stop_reason = StopReason.SHUTDOWN
            if entry.task is not None:
                entry.task.cancel()
        await asyncio.gather(
            *(entry.task for entry in left if entry.task is not None), return_exceptions=True
        )
        await self._hand_back(left, flush=True)

    async def _hand_back(self, left: list[_InFlight], *, flush: bool) -> None:
        """Release ``left``'s runs to pending (retrying for a while), then write outcomes if ``flush``."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if left:
                    async with self.pool.connection() as conn:
                        released = await store.run_release_many(conn, [entry.work.lease for entry in left])
                    self.log.info("runs_handed_back", count=released)
                    left = []
                if flush:
                    await self.completer.flush()
                break
            except DB_ERRORS as exc:
                self.log.warning("database_unavailable", service="drain", error=str(exc)[:200])
                await asyncio.sleep(0.5)
            except Exception:
                # A bug must not turn a graceful stop into a crash: what was not written is rescued
                # by another runner when its lease runs out.
                self.log.exception("drain_failed", unwritten=self.completer.waiting)
                break
