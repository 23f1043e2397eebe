"""How the service connects: a writable primary, nothing PgBouncer refuses, UTC times, lost servers gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.db.connections import Pool, ReadOnlyServer, connect, read_only_reason
from scheduler.domain.models import LogAction
from scheduler.ids import uuid7
from scheduler.runner import loop
from scheduler.runner.loop import _LogEvent
from tests.conftest import settings_for

JOB = {"name": "hello", "schedule": "@every 1h", "action": {"type": "log", "payload": {"hi": 1}}}


def _params(conninfo: str) -> dict[str, Any]:
    return psycopg.conninfo.conninfo_to_dict(conninfo)


def _alter_database(db_url: str, setting: str, value: str) -> None:
    dbname = _params(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET {setting} = {value}'.encode())


@asynccontextmanager
async def api(db_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings_for(db_url))) as client:
        yield client


class TestTimesAreUtcWhateverTheSessionZone:
    """A pooler cannot be told the session's TimeZone: every timestamp is read in UTC anyway."""

    async def test_a_database_in_new_york_still_answers_utc_times(self, db_url):
        _alter_database(db_url, "timezone", "'America/New_York'")
        async with api(db_url) as client:
            job = (await client.post("/jobs", json=JOB)).json()
            assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00"), job
            assert job["next_run_at"].endswith("Z") or job["next_run_at"].endswith("+00:00"), job
            fetched = (await client.get(f"/jobs/{job['id']}")).json()
            assert fetched["next_run_at"] == job["next_run_at"]
        created = datetime.fromisoformat(job["created_at"])
        assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)

    async def test_a_pool_connection_in_tokyo_reads_timestamps_as_utc(self, db_url):
        _alter_database(db_url, "timezone", "'Asia/Tokyo'")
        pool = Pool(db_url, application_name="scheduler-test", max_size=1)
        try:
            async with pool.connection() as conn:
                assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"
                row = await (await conn.execute("SELECT '2026-01-01 00:00:00+00'::timestamptz")).fetchone()
        finally:
            await pool.close()
        assert row is not None
        assert row[0].utcoffset() == timedelta(0)
        assert row[0] == datetime(2026, 1, 1, tzinfo=UTC)


class TestReadOnlyServers:
    """A read-only server is a lost server: never kept, never answered with a 500."""

    async def test_a_read_only_database_answers_503_with_retry_after_and_is_not_ready(self, db_url):
        _alter_database(db_url, "default_transaction_read_only", "on")
        async with api(db_url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.headers["retry-after"] == "1"
            created = await client.post("/jobs", json=JOB)
            assert created.status_code == 503, created.text
            assert created.headers["retry-after"] == "1"
            assert "read-only" in created.json()["detail"]
            listed = await client.get("/jobs")
            assert listed.status_code == 503, listed.text

    async def test_a_writable_database_is_ready(self, db_url):
        async with api(db_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text

    async def test_connecting_to_a_read_only_server_is_refused_at_once(self, db_url):
        _alter_database(db_url, "default_transaction_read_only", "on")
        # libpq refuses it under target_session_attrs=read-write; our own check under `any`.
        with pytest.raises(psycopg.OperationalError, match="read-only"):
            await connect(db_url, application_name="scheduler-test")
        with pytest.raises(ReadOnlyServer, match="read-only"):
            await connect(
                psycopg.conninfo.make_conninfo(db_url, target_session_attrs="any"),
                application_name="scheduler-test",
            )

    async def test_a_connection_whose_server_turned_read_only_is_never_lent_again(self, db_url):
        pool = Pool(db_url, application_name="scheduler-test", max_size=1, check="socket")
        try:
            async with pool.connection() as conn:
                first = conn.info.backend_pid
                # What a reload of default_transaction_read_only reports to every session.
                await conn.execute("SET default_transaction_read_only = on")
                assert read_only_reason(conn) is not None
            async with pool.connection() as conn:
                assert conn.info.backend_pid != first
                assert read_only_reason(conn) is None
        finally:
            await pool.close()

    async def test_a_connection_that_met_a_read_only_error_is_dropped(self, db_url):
        pool = Pool(db_url, application_name="scheduler-test", max_size=1)
        try:
            async with pool.connection() as conn:
                first = conn.info.backend_pid
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await _write_in_a_read_only_transaction(pool)
            async with pool.connection() as conn:
                assert conn.info.backend_pid != first
        finally:
            await pool.close()


async def _write_in_a_read_only_transaction(pool: Pool) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION READ ONLY")
        await conn.execute("CREATE TABLE never (id int)")


class TestConnectionLifetime:
    """Connections are replaced after their lifetime, so they follow the URL after a failover."""

    async def test_a_connection_past_its_lifetime_is_replaced(self, db_url):
        pool = Pool(db_url, application_name="scheduler-test", max_size=1, max_lifetime_s=0.0)
        try:
            async with pool.connection() as conn:
                first = conn.info.backend_pid
            async with pool.connection() as conn:
                assert conn.info.backend_pid != first
        finally:
            await pool.close()

    async def test_a_connection_within_its_lifetime_is_reused(self, db_url):
        pool = Pool(db_url, application_name="scheduler-test", max_size=1)
        try:
            async with pool.connection() as conn:
                first = conn.info.backend_pid
            async with pool.connection() as conn:
                assert conn.info.backend_pid == first
        finally:
            await pool.close()


class TestLogEventsAfterACutCommit:
    """A log run's event is written only for a claim that committed, whatever the cut left unknown."""

    async def test_only_the_runs_that_were_recorded_have_their_event_written(
        self, client, runner_parts, sql, monkeypatch
    ):
        job_id = (await client.post("/jobs", json=JOB)).json()["id"]
        slot = datetime.now(UTC).replace(microsecond=0)
        kept, lost = uuid7(slot), uuid7(slot + timedelta(seconds=1))
        sql(
            "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status) "
            "VALUES (%s, %s, %s, 'schedule', 1, 'succeeded')",
            (kept, job_id, slot),
        )
        runner = runner_parts.runner
        for run_id, at in ((kept, slot), (lost, slot + timedelta(seconds=1))):
            runner._unconfirmed.append(
                _LogEvent(
                    action=LogAction(payload={"n": 1}),
                    job_id=UUID(job_id),
                    namespace="default",
                    job_name="hello",
                    run_id=run_id,
                    scheduled_for=at,
                )
            )
        written: list[UUID] = []
        # The event's writer is recorded rather than its log line: structlog may have cached the
        # logger before this test (cache_logger_on_first_use), out of capture_logs' reach.
        monkeypatch.setattr(loop, "run_log_action", lambda *_, run_id, **__: written.append(run_id))
        assert await runner.confirm_logged() == 1
        assert await runner.confirm_logged() == 0  # settled once: nothing is written twice
        assert written == [kept]
