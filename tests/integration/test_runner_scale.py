"""A runner with thousands of calls in flight: batched heartbeats, one signing-key load per namespace.

In-process runners against real PostgreSQL; the calls in flight are real asyncio tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from scheduler.db import connections, store
from scheduler.db.connections import Pool
from scheduler.domain.models import LogAction, OverlapPolicy, RetryPolicy, RunStatus, RunTrigger
from scheduler.ids import uuid7
from scheduler.runner.actions import Attempt
from scheduler.runner.loop import Work, _InFlight
from scheduler.runner.services.heartbeat import BATCH as HEARTBEAT_BATCH
from scheduler.runner.signing import SigningSecrets
from tests.conftest import create_api_key

IN_FLIGHT = HEARTBEAT_BATCH + 500  # more than one statement's worth


@pytest.fixture
async def pool(db_url) -> AsyncIterator[Pool]:
    """The runner's own pool on the test database."""
    found = Pool(db_url, application_name="scheduler-runner-test", max_size=2)
    yield found
    await found.close()


class Counting:
    """A pool that counts the connections it lends (the database behind it is real)."""

    def __init__(self, pool: connections.ConnectionSource) -> None:
        self.pool = pool
        self.lent = 0

    def connection(self) -> AbstractAsyncContextManager[connections.AsyncConn]:
        self.lent += 1
        return self.pool.connection()


class TestHeartbeats:
    """Leases of thousands of calls in flight are renewed in a few statements, and lost ones stopped."""

    async def test_every_lease_is_renewed_and_a_run_no_longer_ours_is_stopped(
        self, runner_parts, pool, client, sql
    ):
        job = await client.post(
            "/jobs",
            json={
                "name": "many",
                "schedule": "@every 1h",
                "start_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
                "overlap": "allow",
                "action": {"type": "log"},
            },
        )
        assert job.status_code == 201, job.text
        job_id = UUID(job.json()["id"])
        first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        slots = [first + timedelta(seconds=i) for i in range(IN_FLIGHT)]
        async with pool.connection() as conn:
            rows = await store.run_record_many(
                conn,
                [
                    store.NewRun(
                        id=uuid7(slot),
                        job_id=job_id,
                        scheduled_for=slot,
                        trigger=RunTrigger.SCHEDULE,
                        attempt=1,
                        status=RunStatus.RUNNING,
                    )
                    for slot in slots
                ],
                [store.Move(job_id=job_id, moves=False)],
                runner="scale-test",
                lease_s=1,
            )
        assert len(rows) == IN_FLIGHT
        runner = runner_parts.runner
        never = asyncio.Event()

        async def call() -> None:
            await never.wait()

        for row in rows:
            assert row.lease_token is not None
            assert row.started_at is not None
            work = Work(
                attempt=Attempt(
                    run_id=row.id,
                    job_id=job_id,
                    namespace="default",
                    job_name="many",
                    scheduled_for=row.scheduled_for,
                    attempt=1,
                    timeout_s=30,
                ),
                lease=store.Lease(
                    run_id=row.id, scheduled_for=row.scheduled_for, lease_token=row.lease_token
                ),
                action=LogAction(),
                retry=RetryPolicy(),
                overlap=OverlapPolicy.ALLOW,
                trigger=RunTrigger.SCHEDULE,
                started_at=row.started_at,
            )
            runner._inflight[row.id] = _InFlight(work=work, task=asyncio.create_task(call()))
        # One run is cancelled behind the runner's back, in the last statement's share.
        gone = rows[-1].id
        sql("UPDATE runs SET status = 'cancelled', lease_expires_at = NULL WHERE id = %s", (gone,))
        try:
            counts = await runner_parts.heartbeat.run_once()
            assert (counts.renewed, counts.lost) == (IN_FLIGHT - 1, 1)
            await asyncio.sleep(0)
            assert runner._inflight[gone].task.cancelled()
            short = sql(
                "SELECT count(*) FROM runs WHERE job_id = %s AND status = 'running'"
                " AND lease_expires_at < now() + interval '25 seconds'",
                (job_id,),
            )[0][0]
            assert short == 0  # every lease of 1 s now runs 30 s
        finally:
            for entry in runner._inflight.values():
                entry.task.cancel()
            await asyncio.gather(*(e.task for e in runner._inflight.values()), return_exceptions=True)


class TestSigningSecrets:
    """Thousands of calls of one namespace starting together load its signing secrets once."""

    async def test_a_thousand_concurrent_calls_share_one_load_and_one_new_secret(self, db_url, pool, sql):
        await create_api_key(db_url, "burst")
        counting = Counting(pool)
        keys = SigningSecrets(counting)
        found = await asyncio.gather(*(keys.for_namespace("burst") for _ in range(1000)))
        assert counting.lent == 1
        assert len({tuple(secrets) for secrets in found}) == 1
        assert sql("SELECT count(*) FROM signing_secrets WHERE namespace = 'burst'")[0][0] == 1
        await keys.for_namespace("burst")
        assert counting.lent == 1  # cached afterwards

    async def test_a_stopped_call_does_not_cancel_the_load_others_wait_on(self, db_url, pool):
        await create_api_key(db_url, "stopped")
        keys = SigningSecrets(pool)
        first = asyncio.create_task(keys.for_namespace("stopped"))
        others = [asyncio.create_task(keys.for_namespace("stopped")) for _ in range(10)]
        await asyncio.sleep(0)
        first.cancel()
        found = await asyncio.gather(*others)
        assert all(secrets and secrets == found[0] for secrets in found)
