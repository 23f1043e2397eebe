"""The runner's completion path in-process: a batch with a row the database refuses, failures no retry mends.

In-process runner parts against real PostgreSQL (SPEC 3.2, 3.3, 4). One tenant's odd answer beside
another's healthy job, in a runner process: tests/acceptance/test_completion_path.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus, RunTrigger
from scheduler.runner.completer import Completion
from scheduler.runner.service import RunnerParts
from tests.conftest import start_run


async def running_runs(parts: RunnerParts, client, count: int, *, max_attempts: int = 3) -> list[Completion]:
    """Record ``count`` running runs (one job each) and return a successful outcome for each."""
    finished: list[Completion] = []
    retry = RetryPolicy(max_attempts=max_attempts, min_backoff_s=0, max_backoff_s=0)
    slot = datetime.now(UTC).replace(microsecond=0)
    for index in range(count):
        job = await client.post(
            "/jobs",
            json={
                "name": f"job-{index}",
                "schedule": "@every 1h",
                "start_at": (slot + timedelta(days=1)).isoformat(),
                "action": {"type": "log"},
                "retry": {"max_attempts": max_attempts, "min_backoff_s": 0, "max_backoff_s": 0},
            },
        )
        assert job.status_code == 201, job.text
        job_id = UUID(job.json()["id"])
        lease = await start_run(
            parts, job_id, slot=slot, lease_s=30, runner=parts.runner.name, trigger=RunTrigger.MANUAL
        )
        finished.append(
            Completion(
                fenced=store.FencedOutcome(
                    run_id=lease.run_id,
                    job_id=job_id,
                    scheduled_for=slot,
                    lease_token=lease.lease_token,
                    outcome=Outcome(
                        status=RunStatus.SUCCEEDED, duration_ms=5, http_status=200, output="fine"
                    ),
                ),
                attempt=1,
                retry=retry,
                overlap=OverlapPolicy.SKIP,
            )
        )
    return finished


def run_rows(sql, finished: list[Completion]) -> dict[UUID, tuple[Any, ...]]:
    rows = sql(
        "SELECT id, status, output, error, http_status FROM runs WHERE id = ANY(%s)",
        ([f.fenced.run_id for f in finished],),
    )
    return {row[0]: row[1:] for row in rows}


class TestABatchWithARowTheDatabaseRefuses:
    """A row PostgreSQL refuses is found, recorded with an error, and the rest of its batch is written."""

    async def test_the_bad_row_is_isolated_and_every_other_outcome_written(self, runner_parts, client, sql):
        finished = await running_runs(runner_parts, client, 7)
        bad = finished[3]
        # A duration past PostgreSQL's integer: a value only this row carries makes the statement fail.
        finished[3] = with_outcome(bad, duration_ms=2**40, output="a\x00b")
        for item in finished:
            runner_parts.completer.add(item)
        assert await runner_parts.completer.flush() == 7
        rows = run_rows(sql, finished)
        good = [f.fenced.run_id for i, f in enumerate(finished) if i != 3]
        assert all(rows[run_id] == ("succeeded", "fine", None, 200) for run_id in good)
        status, output, error, _ = rows[bad.fenced.run_id]
        assert (status, output) == ("succeeded", None)
        assert "could not be recorded" in error
        assert "out of range" in error
        active = sql("SELECT sum(active_runs) FROM jobs")[0][0]
        assert active == 0  # every run ended on its job too: none will be rescued as lost
        assert runner_parts.completer.waiting == 0

    async def test_text_a_target_sent_is_stored_without_nul_and_with_surrogates_replaced(
        self, runner_parts, client, sql
    ):
        finished = await running_runs(runner_parts, client, 2)
        texts = ["a\x00b", "x\udcedy"]
        for item, text in zip(finished, texts, strict=True):
            runner_parts.completer.add(with_outcome(item, output=text, error=text))
        await runner_parts.completer.flush()
        rows = run_rows(sql, finished)
        assert rows[finished[0].fenced.run_id][1:3] == ("ab", "ab")
        assert rows[finished[1].fenced.run_id][1:3] == ("x\ufffdy", "x\ufffdy")


class TestFailuresNoRetryCanMend:
    """An outcome marked not retryable (refused address, invalid URL) is final at once (SPEC 3.3)."""

    async def test_no_further_attempt_is_recorded_for_it_while_an_ordinary_failure_is_retried(
        self, runner_parts, client, sql
    ):
        finished = await running_runs(runner_parts, client, 2, max_attempts=3)
        for index, retryable in enumerate((False, True)):
            item = finished[index]
            runner_parts.completer.add(
                with_outcome(item, status=RunStatus.FAILED, error="refused", retryable=retryable)
            )
        await runner_parts.completer.flush()
        final, retried = (
            sql(
                "SELECT attempt, status FROM runs WHERE job_id = %s ORDER BY attempt",
                (f.fenced.job_id,),
            )
            for f in finished
        )
        assert final == [(1, "failed")]
        assert retried == [(1, "failed"), (2, "pending")]


def with_outcome(item: Completion, **changes: Any) -> Completion:
    """The same completion with some of its outcome's values changed."""
    outcome = msgspec.structs.replace(item.fenced.outcome, **changes)
    return Completion(
        msgspec.structs.replace(item.fenced, outcome=outcome), item.attempt, item.retry, item.overlap
    )
