"""Lost connections at a real `scheduler api` process (issue 10 item 5): it retries or answers 503, never 500.

Connections are cut with `pg_terminate_backend`, as an operator or a failover would. Hostile input
at the in-process API: tests/integration/test_hardening_api.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Procs, create_api_key, start_api
from tests.integration.test_hardening_api import JOB, bearer, make_job


def api_backends(sql: Callable[..., list[tuple[Any, ...]]]) -> int:
    rows = sql(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'scheduler-api' AND datname = current_database()"
    )
    return int(rows[0][0])


def cut_api_connections(sql: Callable[..., list[tuple[Any, ...]]]) -> int:
    """Terminate every connection the API holds to the test database; return how many."""
    rows = sql(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'scheduler-api' AND datname = current_database()"
    )
    return int(rows[0][0])


async def wait_gone(sql: Callable[..., list[tuple[Any, ...]]]) -> None:
    deadline = time.monotonic() + 10
    while api_backends(sql):
        assert time.monotonic() < deadline, "terminated backends did not exit"
        await asyncio.sleep(0.02)


async def warm(client: httpx.AsyncClient, path: str) -> None:
    """Run enough concurrent reads that the API's pool grows past one connection."""
    for _ in range(5):
        await asyncio.gather(*(client.get(path) for _ in range(64)))


@pytest.fixture
async def served(procs: Procs) -> AsyncIterator[httpx.AsyncClient]:
    """A real `scheduler api` process (uvicorn, auth off) and an HTTP client for it."""
    async with httpx.AsyncClient(base_url=start_api(procs), timeout=30) as client:
        yield client


class TestLostConnections:
    """Item 5: after its connections are cut the API retries on fresh ones or answers 503 — never 500."""

    async def test_reads_after_the_pool_was_cut_all_answer_200(self, served, sql):
        job = await make_job(served)
        await warm(served, f"/jobs/{job['id']}")
        assert api_backends(sql) >= 2
        assert cut_api_connections(sql) >= 2
        await wait_gone(sql)
        statuses = [(await served.get(f"/jobs/{job['id']}")).status_code for _ in range(40)]
        assert statuses == [200] * 40

    async def test_writes_after_the_pool_was_cut_all_succeed(self, served, sql):
        job = await make_job(served)
        await warm(served, f"/jobs/{job['id']}")
        assert cut_api_connections(sql) >= 2
        await wait_gone(sql)
        created = [
            (await served.post("/jobs", json=JOB | {"name": f"after-{i}"})).status_code for i in range(20)
        ]
        assert created == [201] * 20
        assert sql("SELECT count(*) FROM jobs") == [(21,)]

    async def test_a_read_cut_mid_statement_is_answered_from_a_fresh_connection(self, served, db_url, sql):
        job = await make_job(served)
        with psycopg.connect(db_url) as blocker:
            blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            read = asyncio.create_task(served.get(f"/jobs/{job['id']}"))
            await until_waiting_on_a_lock(sql)
            assert cut_api_connections(sql) >= 1
            await until_waiting_on_a_lock(sql)  # the read runs again, on a new connection
            blocker.rollback()
        response = await read
        assert response.status_code == 200
        assert response.json()["id"] == job["id"]

    async def test_a_key_lookup_cut_mid_statement_is_run_again(self, procs, db_url, sql):
        key = await create_api_key(db_url, "alpha")
        async with httpx.AsyncClient(base_url=start_api(procs, auth="required"), timeout=30) as client:
            with psycopg.connect(db_url) as blocker:
                blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                read = asyncio.create_task(client.post("/jobs", json=JOB, headers=bearer(key)))
                await until_waiting_on_a_lock(sql)
                assert cut_api_connections(sql) >= 1
                await until_waiting_on_a_lock(sql)  # the lookup runs again, on a new connection
                blocker.rollback()
            response = await read
        assert response.status_code == 201, response.text
        assert sql("SELECT namespace FROM jobs") == [("alpha",)]

    async def test_a_write_cut_mid_statement_is_503_with_retry_after_and_not_applied(
        self, served, db_url, sql
    ):
        job = await make_job(served)
        with psycopg.connect(db_url) as blocker:
            blocker.execute("SELECT 1 FROM jobs FOR UPDATE")
            write = asyncio.create_task(served.patch(f"/jobs/{job['id']}", json={"description": "cut"}))
            await until_waiting_on_a_lock(sql)
            assert cut_api_connections(sql) >= 1
            response = await write
            blocker.rollback()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"] == "https://scheduler.dev/problems/database-unavailable"
        assert sql("SELECT description, version FROM jobs") == [("", 1)]
        retried = await served.patch(f"/jobs/{job['id']}", json={"description": "cut"})
        assert retried.status_code == 200

    async def test_repeated_cuts_under_load_never_answer_500(self, served, sql):
        job = await make_job(served)
        statuses: list[tuple[str, int, str | None]] = []
        stop = asyncio.Event()

        async def traffic(worker: int) -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                kind = i % 4
                if kind == 0:
                    response = await served.post("/jobs", json=JOB | {"name": f"load-{worker}-{i}"})
                elif kind == 1:
                    response = await served.patch(f"/jobs/{job['id']}", json={"description": f"{worker}-{i}"})
                elif kind == 2:
                    response = await served.get("/jobs", params={"limit": 5})
                else:
                    response = await served.get(f"/jobs/{job['id']}")
                statuses.append(
                    (response.request.method, response.status_code, response.headers.get("retry-after"))
                )

        workers = [asyncio.create_task(traffic(w)) for w in range(16)]
        cuts = 0
        # Pacing, not waiting: cuts every 0.3 s while the traffic runs, then traffic on fresh connections.
        for _ in range(8):
            await asyncio.sleep(0.3)
            cuts += cut_api_connections(sql)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        assert cuts >= 8
        assert len(statuses) > 100
        failures = [s for s in statuses if s[1] >= 500]
        assert all(status == 503 and retry == "1" for _, status, retry in failures), failures
        assert {status for _, status, _ in statuses} <= {200, 201, 503}
        assert (await served.get(f"/jobs/{job['id']}")).status_code == 200


async def until_waiting_on_a_lock(sql: Callable[..., list[tuple[Any, ...]]]) -> None:
    deadline = time.monotonic() + 10
    while not sql(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'scheduler-api' "
        "AND datname = current_database() AND wait_event_type = 'Lock'"
    ):
        assert time.monotonic() < deadline, "the API's statement never waited on the lock"
        await asyncio.sleep(0.02)
