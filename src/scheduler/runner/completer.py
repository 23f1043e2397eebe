"""Step 3 of the cycle: write the outcomes of attempts in batches, fenced by their leases.

An outcome is accepted only while its run is still running under the lease it was started with,
so a runner that lost its lease cannot overwrite what another runner or a person did. In the same
transaction the completer records the retries the retry policy calls for and starts a run queued
behind the one that ended (overlap ``queue``). One outcome the database refuses never holds the
others back: a failing batch is halved until the row is found, and that row is recorded without
what made it fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import msgspec
import psycopg
from structlog.typing import FilteringBoundLogger

from scheduler.db import store
from scheduler.db.connections import ConnectionSource
from scheduler.domain.models import OverlapPolicy, RetryPolicy
from scheduler.domain.retry import next_attempt_in
from scheduler.metrics import RunnerMetrics
from scheduler.operations import fires
from scheduler.runner.actions import OUTPUT_LIMIT
from scheduler.runner.supervise import retry_conflicts

# Outcomes written per transaction.
BATCH = 1000
# What one outcome's own values can make a completion statement fail with (client-side encoding,
# a value out of range): the batch is halved until the row is found, and the rest written.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, ValueError)


@dataclass(slots=True)
class Completion:
    """An attempt's outcome waiting to be written, with what deciding its retry needs."""

    fenced: store.FencedOutcome
    attempt: int
    retry: RetryPolicy
    overlap: OverlapPolicy
    namespace: str = ""
    """The job's namespace and name, for the metrics and the log lines (empty when not known)."""
    job_name: str = ""


@dataclass(slots=True)
class CompleteCounts:
    """What one completion transaction did."""

    written: int = 0
    """Outcomes accepted."""
    retries: int = 0
    """Next attempts recorded."""
    accepted: set[UUID] = field(default_factory=set)
    """The runs whose outcome was accepted; the others were no longer running under that lease."""


class Completer:
    """Gathers a runner's outcomes and writes them, one transaction per batch."""

    def __init__(
        self,
        pool: ConnectionSource,
        *,
        runner: str,
        lease_s: float,
        metrics: RunnerMetrics,
        log: FilteringBoundLogger,
    ) -> None:
        """Write through ``pool`` as runner ``runner``, counting into ``metrics``."""
        self._pool = pool
        self._runner = runner
        self._lease_s = lease_s
        self._metrics = metrics
        self._log = log
        self._waiting: list[Completion] = []
        self._ready = asyncio.Event()
        # The completer's loop and a draining shutdown may flush at once: one waits for the other,
        # so a drain never returns while the loop still holds outcomes it took and has not written.
        self._flushing = asyncio.Lock()

    def add(self, item: Completion) -> None:
        """Queue an outcome; the completer's loop writes it with the others that gathered meanwhile."""
        self._waiting.append(item)
        self._ready.set()

    @property
    def waiting(self) -> int:
        """Outcomes not written yet."""
        return len(self._waiting)

    async def write_waiting(self) -> float:
        """One step of the completer's loop: wait for outcomes, then write every one gathered."""
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        await self.flush()
        return 0.0

    async def flush(self) -> int:
        """Write every outcome gathered so far; return how many were taken.

        One bad row never holds the others back: when a batch fails on its own values, it is halved
        until the row is found, which is recorded without what made it fail (`_write_alone`).
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        taken = 0
        while self._waiting:
            batch = self._waiting[:BATCH]
            del self._waiting[: len(batch)]
            parts = [batch]
            part: list[Completion] = []
            try:
                while parts:
                    part = parts.pop()
                    try:
                        await retry_conflicts(lambda part=part: self.complete(part))  # type: ignore[misc]
                    except ROW_ERRORS as exc:
                        if len(part) == 1:
                            await self._write_alone(part[0], exc)
                        else:
                            middle = len(part) // 2
                            parts += [part[middle:], part[:middle]]
                    part = []
            except BaseException:
                # Keep what was not written for the next try (a lost connection, a shutdown).
                self._waiting[:0] = [item for chunk in (part, *reversed(parts)) for item in chunk]
                raise
            taken += len(batch)
        return taken

    async def complete(self, items: Sequence[Completion], *, now: datetime | None = None) -> CompleteCounts:
        """Write outcomes (fenced) and the retries they call for, in one transaction.

        ``now`` is the database's clock unless a test (or the rescuer's sweep) passes one.
        """
        counts = CompleteCounts()
        if not items:
            return counts
        # Decided before the outcomes are written: an attempt no retry follows ends its slot, and
        # the statement counts the slots that failed so (what notifications follow).
        delays = [
            next_attempt_in(
                item.retry, item.fenced.outcome.status, item.attempt, mendable=item.fenced.outcome.retryable
            )
            for item in items
        ]
        # Pipelined: BEGIN, the locks and the outcomes travel together; the retries and COMMIT follow.
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            await store.job_lock_many(conn, [item.fenced.job_id for item in items])
            accepted = await store.run_complete_many(
                conn, [item.fenced for item in items], now=now, finals=[delay is None for delay in delays]
            )
            retries: list[store.NewRun] = []
            queue_jobs: set[UUID] = set()
            for item, delay in zip(items, delays, strict=True):
                run = item.fenced
                if run.run_id not in accepted:
                    continue
                if item.overlap is OverlapPolicy.QUEUE:
                    queue_jobs.add(run.job_id)
                if delay is not None:
                    retries.append(
                        fires.next_attempt(
                            job_id=run.job_id,
                            scheduled_for=run.scheduled_for,
                            attempt=item.attempt + 1,
                            available_in_s=delay,
                        )
                    )
            if retries:
                # A retry leaves its job's next slot alone; its count of unfinished runs grows by
                # the retries actually recorded.
                keep = [store.Move(job_id=job_id, moves=False) for job_id in {r.job_id for r in retries}]
                inserted = await store.run_record_many(
                    conn, retries, keep, runner=self._runner, lease_s=self._lease_s, now=now
                )
                counts.retries = len(inserted)
            if queue_jobs:
                await fires.runs_ended(conn, queue_job_ids=list(queue_jobs))
        counts.accepted = accepted
        counts.written = len(accepted)
        self._record(items, accepted)
        return counts

    def _record(self, items: Sequence[Completion], accepted: set[UUID]) -> None:
        ended: Counter[tuple[str, str]] = Counter()
        for item in items:
            run, outcome = item.fenced, item.fenced.outcome
            if run.run_id in accepted:
                ended[item.namespace, outcome.status.value] += 1
                if outcome.duration_ms is not None:
                    self._metrics.duration.observe(outcome.duration_ms / 1000)
            elif run.lease_token is not None:  # ours, refused: someone else ended it
                self._metrics.completions_refused.inc()
                self._log.warning(
                    "run_completion_refused",
                    job_id=str(run.job_id),
                    job_name=item.job_name,
                    namespace=item.namespace,
                    run_id=str(run.run_id),
                    reason="the run is no longer ours (cancelled, or rescued after our lease ran out)",
                )
        for (namespace, status), number in ended.items():
            self._metrics.count_completed(namespace, status, number)

    async def _write_alone(self, item: Completion, exc: Exception) -> None:
        """Record an outcome the database refused, keeping its status and saying why its output is gone.

        If even that is refused, the outcome is dropped: the run's lease runs out and the rescuer
        ends it like a run whose runner died, which is still a final state.
        """
        run = item.fenced
        self._log.error(
            "run_outcome_refused",
            job_id=str(run.job_id),
            job_name=item.job_name,
            namespace=item.namespace,
            run_id=str(run.run_id),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        error = store.storable_text(
            f"the outcome could not be recorded as received ({type(exc).__name__}: {exc})"
        )
        plain = msgspec.structs.replace(
            run.outcome,
            duration_ms=None,
            http_status=None,
            output=None,
            error=(error or "")[:OUTPUT_LIMIT],
            request=None,
            response_headers=None,
        )
        alone = dataclasses.replace(item, fenced=msgspec.structs.replace(run, outcome=plain))
        try:
            await retry_conflicts(lambda: self.complete([alone]))
        except ROW_ERRORS:
            self._log.exception(
                "run_outcome_dropped",
                job_id=str(run.job_id),
                job_name=item.job_name,
                namespace=item.namespace,
                run_id=str(run.run_id),
            )
