"""A job's count of unfinished runs is exactly its pending and running runs, whatever starts or ends them.

The overlap policy reads the count (`jobs.active_runs`) instead of the runs, so a count that drifts
skips fires that should run, or runs fires that should wait. Every statement that moves runs into
or out of pending and running keeps it, by the rows it moved; here each of those paths runs in
turn — requests through the API, the runner's steps in-process — and the count is checked after
each one against the runs themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus
from scheduler.runner.completer import Completion
from tests.conftest import settings_for

DRIFT = """
SELECT j.name, j.active_runs,
       (SELECT count(*) FROM runs r WHERE r.job_id = j.id AND r.status IN ('pending', 'running'))
FROM jobs j
WHERE j.active_runs <> (
    SELECT count(*) FROM runs r WHERE r.job_id = j.id AND r.status IN ('pending', 'running')
)
"""


def assert_counts_hold(sql, step: str) -> None:
    drift = sql(DRIFT)
    assert drift == [], f"after {step}: (job, counted, really unfinished) {drift}"


def unfinished(sql, job_id: str) -> list[tuple[Any, ...]]:
    return sql(
        "SELECT id, scheduled_for, status FROM runs WHERE job_id = %s AND status IN ('pending', 'running')"
        " ORDER BY scheduled_for, attempt",
        (job_id,),
    )


async def make(client, name: str, url: str, **body: Any) -> str:
    response = await client.post(
        "/jobs",
        json={
            "name": name,
            "schedule": "@every 1h",
            "start_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "action": {"type": "http", "url": url},
            "retry": {"max_attempts": 2, "min_backoff_s": 0, "max_backoff_s": 0},
            **body,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def trigger(client, job_id: str) -> dict[str, Any]:
    response = await client.post(f"/jobs/{job_id}/trigger")
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """The API on a clock that moves on a millisecond at each request.

    Two manual runs of a job need two distinct instants: the request clock gives them, with no wait.
    """
    start, ticks = datetime.now(UTC), itertools.count()
    app = create_app(settings_for(db_url), clock=lambda: start + timedelta(milliseconds=next(ticks)))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


class TestTheCountOfUnfinishedRuns:
    """Triggers, claims, cancels, replaces, completions, rescues, retries, hand-backs and deletes."""

    async def test_it_matches_the_runs_after_every_kind_of_change(self, runner_parts, client, sql, receiver):
        receiver.delay_s = 30  # calls stay in flight until the test ends them
        runner, completer = runner_parts.runner, runner_parts.completer
        url = receiver.url + "/hook"
        try:
            allow = await make(client, "allow", url, overlap="allow")
            queue = await make(client, "queue", url, overlap="queue")
            skip = await make(client, "skip", url, overlap="skip")
            replace = await make(client, "replace", url, overlap="replace")
            final = await make(client, "final", url, retry={"max_attempts": 1})

            for job_id in (allow, allow, queue, skip, replace, final):
                await trigger(client, job_id)
            assert_counts_hold(sql, "manual triggers")
            assert (await runner.claim_pending_once()).jobs == 6
            assert_counts_hold(sql, "starting the pending runs")

            assert (await trigger(client, queue))["status"] == "pending"
            assert (await trigger(client, queue))["status"] == "skipped"
            assert (await trigger(client, skip))["status"] == "skipped"
            assert_counts_hold(sql, "queued and skipped triggers")

            running_queue, queued = unfinished(sql, queue)
            assert (running_queue[2], queued[2]) == ("running", "pending")
            response = await client.post(f"/runs/{running_queue[0]}/cancel")
            assert response.status_code == 202, response.text
            assert_counts_hold(sql, "a cancel by request that promotes the queued run")

            assert (await trigger(client, replace))["status"] == "pending"
            assert_counts_hold(sql, "a manual trigger that replaces the running run")
            sql("UPDATE jobs SET next_run_at = now() - interval '1 second' WHERE id = %s", (replace,))
            assert (await runner.claim_due_once()).jobs == 1
            assert [row[2] for row in unfinished(sql, replace)] == ["running"]
            assert_counts_hold(sql, "a claim that replaces the pending run")

            def ending(job_id: str, status: RunStatus, max_attempts: int) -> Completion:
                ((run_id, slot, _),) = [row for row in unfinished(sql, job_id) if row[2] == "running"][:1]
                lease = next(lease for lease in runner.leases() if lease.run_id == run_id)
                return Completion(
                    fenced=store.FencedOutcome(
                        run_id=run_id,
                        job_id=UUID(job_id),
                        scheduled_for=slot,
                        lease_token=lease.lease_token,
                        outcome=Outcome(status=status, duration_ms=1),
                    ),
                    attempt=1,
                    retry=RetryPolicy(max_attempts=max_attempts, min_backoff_s=0, max_backoff_s=0),
                    overlap=OverlapPolicy.ALLOW,
                )

            succeeded = ending(allow, RunStatus.SUCCEEDED, 2)
            await completer.complete([succeeded])
            counts = await completer.complete(
                [ending(allow, RunStatus.FAILED, 2), ending(final, RunStatus.FAILED, 1)]
            )
            assert (counts.written, counts.retries) == (2, 1)
            assert_counts_hold(sql, "a success, a failure that is retried and one that is final")

            ((final_run,),) = sql("SELECT id FROM runs WHERE job_id = %s", (final,))
            response = await client.post(f"/runs/{final_run}/retry")
            assert response.status_code == 202, response.text
            assert_counts_hold(sql, "a retry by request")

            # Still running: the skip job's manual run and the replace job's claimed one.
            later = datetime.now(UTC) + timedelta(minutes=5)  # past every lease
            rescued = await runner_parts.rescuer.run_once(now=later)
            assert (rescued.found, rescued.rescued, rescued.retried) == (2, 2, 2)
            assert_counts_hold(sql, "the rescue of the leases that ran out")

            # The queued run, two rescue retries, the allow job's retry, the final job's retry.
            assert (await runner.claim_pending_once(now=later)).jobs == 5
            async with runner.pool.connection() as conn:
                assert await store.run_release_many(conn, runner.leases()) == 5
            assert_counts_hold(sql, "the hand-back of a draining runner")

            for job_id in (allow, queue, skip, replace, final):
                assert (await client.delete(f"/jobs/{job_id}")).status_code == 204
            assert sql("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')") == [(0,)]
        finally:
            for entry in list(runner._inflight.values()):
                entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*(e.task for e in runner._inflight.values()), return_exceptions=True)
