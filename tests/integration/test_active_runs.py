"""A job's ``active_runs`` is its pending and running runs, after every store call and runner step.

The overlap policy decides on the count instead of looking into the partitioned runs table. It is
kept by one mechanism: each statement that moves runs into or out of pending and running changes
their jobs' counts by the rows it moved, in the same statement, and nothing clamps it, so a count
that would fall below zero fails the CHECK on jobs.active_runs. Here a mix of claims, completions,
retries, cancels, queue promotion, replacement, rescue, hand-back and deletion goes through the
store and the runner's own steps, and every job's count is compared with its runs after each one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.models import (
    HttpAction,
    JobValues,
    Misfire,
    Outcome,
    OverlapPolicy,
    RetryPolicy,
    RunStatus,
    RunTrigger,
)
from scheduler.ids import uuid7
from scheduler.runner.completer import Completion
from scheduler.runner.service import RunnerParts

Sql = Callable[..., list[tuple[Any, ...]]]

DRIFT = """
SELECT j.name, j.active_runs, count(r.id)
FROM jobs j
LEFT JOIN runs r ON r.job_id = j.id AND r.status IN ('pending', 'running')
GROUP BY j.id, j.name, j.active_runs
HAVING j.active_runs <> count(r.id)
ORDER BY j.name
"""


def assert_counts_hold(sql: Sql, step: str) -> None:
    """Every job counts exactly its pending and running runs."""
    assert sql(DRIFT) == [], f"after {step}: (job, counted, really unfinished)"


def unfinished(sql: Sql, job_id: UUID, status: str) -> list[tuple[UUID, datetime, int]]:
    """The job's runs in ``status``, oldest slot first: (id, slot, attempt)."""
    return [
        (row[0], row[1], row[2])
        for row in sql(
            "SELECT id, scheduled_for, attempt FROM runs WHERE job_id = %s AND status = %s::run_status"
            " ORDER BY scheduled_for, attempt",
            (job_id, status),
        )
    ]


def make_due(sql: Sql, *job_ids: UUID) -> None:
    """Put the jobs' next slot a second in the past, each at its own instant."""
    for offset, job_id in enumerate(job_ids):
        sql(
            "UPDATE jobs SET next_run_at = now() - make_interval(secs => 1 + %s * 0.01) WHERE id = %s",
            (offset, job_id),
        )


def values(name: str, url: str, overlap: OverlapPolicy, max_attempts: int) -> JobValues:
    """An hourly HTTP job that is not due yet."""
    slot = datetime.now(UTC) + timedelta(days=1)
    return JobValues(
        id=uuid7(),
        namespace="default",
        name=name,
        description="",
        schedule="@every 1h",
        timezone="UTC",
        start_at=None,
        end_at=None,
        action=HttpAction(url=url),
        timeout_s=60,
        retry=RetryPolicy(max_attempts=max_attempts, min_backoff_s=0, max_backoff_s=0),
        misfire=Misfire(),
        overlap=overlap,
        paused=False,
        labels={},
        next_run_at=slot,
        anchor_at=slot,
    )


@dataclass
class Mix:
    """Five jobs, one per overlap behaviour (and one without retries), and the runner's parts."""

    parts: RunnerParts
    sql: Sql
    jobs: dict[str, UUID] = field(default_factory=dict)

    def running(self, name: str) -> list[tuple[UUID, datetime, int]]:
        """The named job's running runs."""
        return unfinished(self.sql, self.jobs[name], "running")

    def pending(self, name: str) -> list[tuple[UUID, datetime, int]]:
        """The named job's pending runs."""
        return unfinished(self.sql, self.jobs[name], "pending")

    def ending(self, name: str, status: RunStatus) -> Completion:
        """The outcome of the job's oldest running run (attempt 1), under the lease the runner holds."""
        run_id, slot, _ = self.running(name)[0]
        lease = next(lease for lease in self.parts.runner.leases() if lease.run_id == run_id)
        return Completion(
            fenced=store.FencedOutcome(
                run_id=run_id,
                job_id=self.jobs[name],
                scheduled_for=slot,
                lease_token=lease.lease_token,
                outcome=Outcome(status=status, duration_ms=1),
            ),
            attempt=1,
            retry=RetryPolicy(max_attempts=1 if name == "final" else 2, min_backoff_s=0, max_backoff_s=0),
            overlap=OverlapPolicy.QUEUE if name == "queue" else OverlapPolicy.ALLOW,
        )

    @contextlib.asynccontextmanager
    async def locked(self, name: str) -> AsyncIterator[AsyncConn]:
        """A transaction holding the named job's lock, as requests take it."""
        async with self.parts.runner.pool.connection() as conn, conn.transaction():
            assert await store.job_lock(conn, namespace="default", job_id=self.jobs[name]) is not None
            yield conn

    async def create(self, url: str) -> None:
        """Create the jobs, none of them due."""
        async with self.parts.runner.pool.connection() as conn:
            for name, overlap, attempts in [
                ("allow", OverlapPolicy.ALLOW, 2),
                ("queue", OverlapPolicy.QUEUE, 2),
                ("skip", OverlapPolicy.SKIP, 2),
                ("replace", OverlapPolicy.REPLACE, 2),
                ("final", OverlapPolicy.SKIP, 1),
            ]:
                job = await store.job_insert(conn, values(name, url, overlap, attempts))
                assert job is not None
                self.jobs[name] = job.id

    async def claim_all(self) -> None:
        """Make every job due and claim them in one batch."""
        make_due(self.sql, *self.jobs.values())
        assert (await self.parts.runner.claim_due_once()).jobs == len(self.jobs)

    async def promote_the_queued_run(self) -> None:
        """End the queue job's running run: its waiting run becomes available, and starts."""
        await self.parts.completer.complete([self.ending("queue", RunStatus.SUCCEEDED)])
        assert_counts_hold(self.sql, "a completion that promotes the queued run")
        assert (await self.parts.runner.claim_pending_once()).jobs == 1
        assert len(self.running("queue")) == 1

    async def complete_and_retry(self) -> None:
        """A success, a final failure, then a failure that is retried."""
        completer = self.parts.completer
        counts = await completer.complete(
            [self.ending("allow", RunStatus.SUCCEEDED), self.ending("final", RunStatus.FAILED)]
        )
        assert (counts.written, counts.retries) == (2, 0)
        counts = await completer.complete([self.ending("allow", RunStatus.FAILED)])
        assert (counts.written, counts.retries) == (1, 1)
        assert len(self.pending("allow")) == 1

    async def cancel_a_retry_and_a_manual_run(self) -> None:
        """Cancel the pending retry; record a manual run and cancel it, twice."""
        async with self.locked("allow") as conn:
            ((retry_id, retry_slot, _),) = self.pending("allow")
            assert await store.run_cancel(conn, run_id=retry_id, scheduled_for=retry_slot, reason="x")
        now = datetime.now(UTC)
        manual = store.NewRun(
            id=uuid7(now),
            job_id=self.jobs["final"],
            scheduled_for=now,
            trigger=RunTrigger.MANUAL,
            attempt=1,
            status=RunStatus.PENDING,
            available_in_s=3600,
        )
        async with self.locked("final") as conn:
            assert await store.run_insert_one(conn, manual) is not None
        assert_counts_hold(self.sql, "a cancel and a manual run")
        async with self.locked("final") as conn:
            assert await store.run_cancel(conn, run_id=manual.id, scheduled_for=now, reason="x")
            # A second cancel changes nothing: the run is no longer unfinished.
            assert await store.run_cancel(conn, run_id=manual.id, scheduled_for=now, reason="x") is None

    async def delete_all(self) -> None:
        """Delete every job the way a request does: its unfinished runs cancelled first."""
        for name, job_id in self.jobs.items():
            async with self.locked(name) as conn:
                await store.run_cancel_active_for_job(conn, job_id=job_id, reason="job deleted")
                assert await store.job_delete(conn, namespace="default", job_id=job_id)
            assert_counts_hold(self.sql, f"the deletion of {name}")


@pytest.fixture
async def mix(runner_parts: RunnerParts, sql: Sql, receiver: Any) -> AsyncIterator[Mix]:
    """The jobs, calling a target that keeps every call in flight until the test ends it itself."""
    receiver.delay_s = 30
    made = Mix(runner_parts, sql)
    await made.create(receiver.url + "/hook")
    try:
        yield made
    finally:
        tasks = [entry.task for entry in runner_parts.runner._inflight.values() if entry.task is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


class TestTheCountOfUnfinishedRuns:
    """Claims, completions, retries, cancels, promotion, replacement, rescue, hand-back, deletion."""

    async def test_it_matches_the_runs_after_every_step(self, mix: Mix, sql: Sql):
        runner = mix.parts.runner
        assert_counts_hold(sql, "creating the jobs")

        await mix.claim_all()
        assert all(len(mix.running(name)) == 1 for name in mix.jobs)
        assert_counts_hold(sql, "a claim of every job")

        # A second fire meets the first run: allowed, queued, skipped, or replacing it.
        await mix.claim_all()
        assert (len(mix.running("allow")), len(mix.pending("queue"))) == (2, 1)
        assert (len(mix.running("skip")), len(mix.running("replace"))) == (1, 1)
        assert sql("SELECT count(*) FROM runs WHERE status = 'cancelled'") == [(1,)]
        assert_counts_hold(sql, "a claim that runs, queues, skips and replaces")

        await mix.promote_the_queued_run()
        assert_counts_hold(sql, "starting the promoted run")

        await mix.complete_and_retry()
        assert_counts_hold(sql, "a success, a final failure and a retried one")

        await mix.cancel_a_retry_and_a_manual_run()
        assert_counts_hold(sql, "cancelling the manual run, twice")

        # Rescue: the runs still running (queue, skip, replace) are lost once their leases ran
        # out, and each gets its retry.
        later = datetime.now(UTC) + timedelta(minutes=5)
        rescued = await mix.parts.rescuer.run_once(now=later)
        assert (rescued.found, rescued.rescued, rescued.retried) == (3, 3, 3)
        assert_counts_hold(sql, "the rescue of three lost runs")

        # Hand-back: the retries start, and a draining runner gives them back as pending.
        assert (await runner.claim_pending_once(now=later)).jobs == 3
        assert_counts_hold(sql, "starting the retries")
        async with runner.pool.connection() as conn:
            assert await store.run_release_many(conn, runner.leases()) == 3
        assert_counts_hold(sql, "the hand-back of a draining runner")

        await mix.delete_all()
        assert sql("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')") == [(0,)]

    async def test_runs_recorded_without_a_move_of_their_job_are_counted(
        self, runner_parts: RunnerParts, sql
    ):
        job = await _job(runner_parts, "retried")
        slot = datetime.now(UTC)
        retry = store.NewRun(
            id=uuid7(slot),
            job_id=job,
            scheduled_for=slot,
            trigger=RunTrigger.RETRY,
            attempt=2,
            status=RunStatus.PENDING,
            available_in_s=60,
        )
        async with runner_parts.runner.pool.connection() as conn:
            inserted = await store.run_record_many(conn, [retry], [], runner="r", lease_s=30)
        assert len(inserted) == 1
        assert_counts_hold(sql, "a retry recorded with no move")
        assert sql("SELECT active_runs FROM jobs WHERE id = %s", (job,)) == [(1,)]


class TestAnUnderCountIsNotHidden:
    """A count that drifted below its runs fails the statement that would take it under zero."""

    async def test_ending_a_run_its_job_did_not_count_fails_the_check(self, runner_parts: RunnerParts, sql):
        job = await _job(runner_parts, "drifted")
        async with runner_parts.runner.pool.connection() as conn, conn.transaction():
            slot = datetime.now(UTC)
            (row,) = await store.run_record_many(
                conn,
                [
                    store.NewRun(
                        id=uuid7(slot),
                        job_id=job,
                        scheduled_for=slot,
                        trigger=RunTrigger.SCHEDULE,
                        attempt=1,
                        status=RunStatus.RUNNING,
                    )
                ],
                [store.Move(job_id=job, moves=False)],
                runner="r",
                lease_s=30,
            )
        sql("UPDATE jobs SET active_runs = 0 WHERE id = %s", (job,))  # the drift, by hand
        outcome = store.FencedOutcome(
            run_id=row.id,
            job_id=job,
            scheduled_for=row.scheduled_for,
            lease_token=row.lease_token,
            outcome=Outcome(status=RunStatus.SUCCEEDED, duration_ms=1),
        )
        async with runner_parts.runner.pool.connection() as conn:
            with pytest.raises(psycopg.errors.CheckViolation, match="jobs_active_runs_check"):
                await store.run_complete_many(conn, [outcome])
        assert sql("SELECT status FROM runs WHERE id = %s", (row.id,)) == [("running",)]


async def _job(parts: RunnerParts, name: str) -> UUID:
    async with parts.runner.pool.connection() as conn:
        job = await store.job_insert(conn, values(name, "http://127.0.0.1:9/", OverlapPolicy.ALLOW, 1))
    assert job is not None
    return job.id
