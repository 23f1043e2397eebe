"""A statement prepared before a migration changed its result columns costs one 503 at most, never a 500.

psycopg prepares a statement on a connection once it has run there five times; when a migration
later changes the columns that statement returns (here a contract step: a column's type changes),
PostgreSQL refuses it on that connection with FeatureNotSupported, "cached plan must not change
result type", before running anything. The pool closes such a connection (its other prepared
statements may be as stale) and raises `StalePlan`, a lost connection: a read is answered from a
fresh connection, a write answers 503 with Retry-After and is never repeated by the service.

Everything runs against the real database: the statements are really prepared by repetition and
the table is really altered from another connection.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from scheduler.db import store
from scheduler.db.connections import Pool, StalePlan
from scheduler.domain.models import Job
from tests.conftest import eventually

WARM = 6  # more than psycopg's prepare threshold (5) of executions on one connection
# A contract migration that changes what `description` is: every statement returning it goes stale.
RETYPE = "ALTER TABLE jobs ALTER COLUMN description TYPE varchar"
LOG_ACTION = {"type": "log", "payload": {"n": 1}}


def api_backends(sql: Any) -> set[int]:
    """The server pids of the API's connections to this test's database."""
    rows = sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'scheduler-api'"
    )
    return {int(pid) for (pid,) in rows}


async def read_job(pool: Pool, job_id: UUID) -> tuple[int, Job | None]:
    """Read the job on a connection of ``pool``; return that connection's server pid with it."""
    async with pool.connection() as conn:
        return conn.info.backend_pid, await store.job_get(conn, namespace="default", job_id=job_id)


async def closed(sql: Any, *pids: int) -> None:
    """Wait until the server has ended these backends (a client's close reaches it a moment later)."""
    await eventually(lambda: not api_backends(sql) & set(pids), timeout=5, what=f"backends {pids} to end")


async def create_job(client: Any, name: str = "stale") -> dict[str, Any]:
    body = {"name": name, "schedule": "0 9 * * 1", "description": "v0", "action": LOG_ACTION}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


class TestThePool:
    """The pool turns the refusal into StalePlan and closes the connection that held the statement."""

    async def test_a_stale_statement_raises_stale_plan_and_the_next_borrow_works_on_a_new_connection(
        self, db_url, sql, client
    ):
        job_id = UUID((await create_job(client))["id"])
        pool = Pool(db_url, application_name="scheduler-test-plans", max_size=1)
        try:
            async with pool.connection() as conn:
                for _ in range(WARM):
                    assert await store.job_get(conn, namespace="default", job_id=job_id) is not None
                warm_pid = conn.info.backend_pid
                listed = await conn.execute(b"SELECT count(*) FROM pg_prepared_statements")
                prepared = await listed.fetchone()
                assert prepared is not None
                assert prepared[0] >= 1, "job_get was not prepared: the test would prove nothing"
            sql(RETYPE)
            # The pool lends its one idle connection, the warm one; the refusal leaves the block.
            with pytest.raises(StalePlan, match="cached plan must not change result type"):
                await read_job(pool, job_id)
            pid, job = await read_job(pool, job_id)
            assert pid != warm_pid
            assert job is not None
            assert job.id == job_id
            await eventually(
                lambda: not sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (warm_pid,)),
                timeout=5,
                what="the stale connection's backend to end",
            )
        finally:
            await pool.close()


class TestTheApi:
    """Right after such a migration the API answers 503 + Retry-After for a write, never 500."""

    async def test_a_write_meeting_a_stale_plan_answers_503_writes_nothing_and_the_next_one_succeeds(
        self, client, sql
    ):
        job = await create_job(client)
        for n in range(WARM):
            response = await client.patch(f"/jobs/{job['id']}", json={"description": f"v{n + 1}"})
            assert response.status_code == 200, response.text
        (warm,) = api_backends(sql)
        ((version_before,),) = sql("SELECT version FROM jobs WHERE id = %s", (UUID(job["id"]),))

        sql(RETYPE)
        refused = await client.patch(f"/jobs/{job['id']}", json={"description": "after"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        problem = refused.json()
        assert problem["type"].endswith("/database-unavailable")
        assert "schema change" in problem["detail"]
        assert sql("SELECT version, description FROM jobs WHERE id = %s", (UUID(job["id"]),)) == [
            (version_before, f"v{WARM}")
        ], "the refused write changed the job"
        await closed(sql, warm)

        accepted = await client.patch(f"/jobs/{job['id']}", json={"description": "after"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["description"] == "after"
        assert accepted.json()["version"] == version_before + 1

    async def test_a_read_meeting_a_stale_plan_is_answered_from_a_fresh_connection(self, client, sql):
        job = await create_job(client)
        for _ in range(WARM):
            assert (await client.get(f"/jobs/{job['id']}")).status_code == 200
        (warm,) = api_backends(sql)

        sql(RETYPE)
        response = await client.get(f"/jobs/{job['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["description"] == "v0"
        await closed(sql, warm)

    async def test_every_stale_statement_goes_with_its_connection_at_the_first_refusal(self, client, sql):
        job = await create_job(client)
        for n in range(WARM):
            assert (await client.get(f"/jobs/{job['id']}")).status_code == 200
            assert (await client.get("/jobs")).status_code == 200
            patched = await client.patch(f"/jobs/{job['id']}", json={"description": f"v{n}"})
            assert patched.status_code == 200
        (warm,) = api_backends(sql)

        sql(RETYPE)
        assert (await client.patch(f"/jobs/{job['id']}", json={"description": "x"})).status_code == 503
        await closed(sql, warm)
        # job_get and job_list were prepared on the closed connection too; on the new one they run
        # as plain statements, so neither is refused (which would cost another connection).
        assert (await client.get(f"/jobs/{job['id']}")).status_code == 200
        (fresh,) = api_backends(sql)
        assert (await client.get("/jobs")).status_code == 200
        assert api_backends(sql) == {fresh}
