"""A draining shutdown's flush waits for the completer loop's flush in progress: nothing left unwritten."""

from __future__ import annotations

import asyncio
from uuid import UUID

import psycopg

from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus
from scheduler.runner.completer import Completion
from tests.conftest import eventually


class TestDrainFlush:
    async def test_the_second_flush_returns_only_once_the_first_has_written(
        self, runner_parts, client, sql, receiver, db_url
    ):
        runner, completer = runner_parts.runner, runner_parts.completer
        receiver.delay_s = 30  # the runner's own call stays in flight: only the test's outcome is written
        job = (
            await client.post(
                "/jobs",
                json={
                    "name": "drain",
                    "schedule": "@every 1h",
                    "action": {"type": "http", "url": receiver.url},
                },
            )
        ).json()
        assert (await client.post(f"/jobs/{job['id']}/trigger")).status_code == 202
        assert (await runner.claim_pending_once()).jobs == 1
        ((run_id, slot),) = sql("SELECT id, scheduled_for FROM runs WHERE status = 'running'")
        lease = next(lease for lease in runner.leases() if lease.run_id == run_id)
        completer.add(
            Completion(
                fenced=store.FencedOutcome(
                    run_id=run_id,
                    job_id=UUID(job["id"]),
                    scheduled_for=slot,
                    lease_token=lease.lease_token,
                    outcome=Outcome(status=RunStatus.SUCCEEDED, duration_ms=1),
                ),
                attempt=1,
                retry=RetryPolicy(),
                overlap=OverlapPolicy.SKIP,
            )
        )
        with psycopg.connect(db_url, application_name="holder") as holder:
            holder.execute("BEGIN")
            holder.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job["id"],))
            loop_flush = asyncio.create_task(completer.flush())  # the completer's loop takes the outcome
            await eventually(
                lambda: sql(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%jobs%%'"
                ),
                what="the loop's write to wait on the job's lock",
            )
            drain_flush = asyncio.create_task(completer.flush())  # a draining shutdown flushes too
            for _ in range(20):
                await asyncio.sleep(0)  # let it run as far as it can: it must wait for the first
            assert not drain_flush.done()
            holder.execute("COMMIT")
        assert await loop_flush == 1
        assert await drain_flush == 0
        assert sql("SELECT status FROM runs WHERE id = %s", (run_id,)) == [("succeeded",)]
