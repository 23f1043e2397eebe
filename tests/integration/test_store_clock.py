"""The store reads no clock: what now is, and the ids made from it, come from its callers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.db import connections, store
from scheduler.domain.models import (
    JobValues,
    LogAction,
    Misfire,
    OverlapPolicy,
    RetryPolicy,
    RunStatus,
    RunTrigger,
)
from scheduler.domain.webhooks import new_secret
from scheduler.ids import uuid7

SLOT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def a_job() -> JobValues:
    return JobValues(
        id=uuid7(SLOT),
        namespace="default",
        name="clocked",
        description="",
        schedule="@every 1h",
        timezone="UTC",
        start_at=None,
        end_at=None,
        action=LogAction(),
        timeout_s=30,
        retry=RetryPolicy(),
        misfire=Misfire(),
        overlap=OverlapPolicy.ALLOW,
        paused=True,
        labels={},
        next_run_at=None,
        anchor_at=SLOT,
    )


class TestTimeComesFromTheCaller:
    """A job's history pages and a new signing secret follow the now and the id they are given."""

    async def test_the_first_history_page_ends_an_hour_past_the_given_now(self, db_url):
        conn = await connections.connect(db_url, application_name="test-store-clock")
        async with conn:
            job = await store.job_insert(conn, a_job())
            assert job is not None
            run = store.NewRun(
                id=uuid7(SLOT),
                job_id=job.id,
                scheduled_for=SLOT,
                trigger=RunTrigger.MANUAL,
                attempt=1,
                status=RunStatus.SKIPPED,
            )
            assert await store.run_insert_one(conn, run) is not None
            pages = {
                hours: await store.run_list_for_job(
                    conn, job_id=job.id, before=None, limit=10, now=SLOT - timedelta(hours=hours)
                )
                for hours in (2, 0)
            }
        assert pages[2] == []
        assert [r.id for r in pages[0]] == [run.id]

    async def test_a_signing_secret_is_stored_under_the_id_its_caller_made(self, db_url, sql):
        secret_id, secret = uuid7(SLOT), new_secret()
        conn = await connections.connect(db_url, application_name="test-store-clock")
        async with conn, conn.transaction():
            await store.signing_secret_create(
                conn, namespace="tenant-a", secret=secret, grace_s=None, secret_id=secret_id
            )
        assert sql("SELECT id, secret FROM signing_secrets WHERE namespace = 'tenant-a'") == [
            (secret_id, secret)
        ]
