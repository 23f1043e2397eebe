"""A job counts its newest finished runs in a row that did not succeed; a success sets it back to 0."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus
from scheduler.runner.completer import Completion


async def end_running(runner_parts, sql, job_id: str, status: RunStatus) -> None:
    """Start the job's pending run and end it with ``status`` through the completer."""
    runner, completer = runner_parts.runner, runner_parts.completer
    assert (await runner.claim_pending_once()).jobs == 1
    ((run_id, slot),) = sql(
        "SELECT id, scheduled_for FROM runs WHERE job_id = %s AND status = 'running'", (job_id,)
    )
    lease = next(lease for lease in runner.leases() if lease.run_id == run_id)
    item = Completion(
        fenced=store.FencedOutcome(
            run_id=run_id,
            job_id=UUID(job_id),
            scheduled_for=slot,
            lease_token=lease.lease_token,
            outcome=Outcome(status=status, duration_ms=1),
        ),
        attempt=1,
        retry=RetryPolicy(max_attempts=1),
        overlap=OverlapPolicy.ALLOW,
    )
    counts = await completer.complete([item])
    assert counts.written == 1


class TestConsecutiveFailures:
    async def test_failures_count_up_and_a_success_resets(self, runner_parts, client, sql, receiver):
        made = await client.post(
            "/jobs",
            json={
                "name": "flaky",
                "schedule": "@every 1h",
                "overlap": "allow",
                "retry": {"max_attempts": 1},
                "action": {"type": "http", "url": receiver.url + "/hook"},
            },
        )
        job: dict[str, Any] = made.json()
        assert job["consecutive_failures"] == 0
        for expected, status in ((1, RunStatus.FAILED), (2, RunStatus.TIMED_OUT), (0, RunStatus.SUCCEEDED)):
            assert (await client.post(f"/jobs/{job['id']}/trigger")).status_code == 202
            await end_running(runner_parts, sql, job["id"], status)
            shown = (await client.get(f"/jobs/{job['id']}")).json()
            assert shown["consecutive_failures"] == expected, status
        failing = (await client.get("/jobs?failing=true")).json()["items"]
        assert failing == []
