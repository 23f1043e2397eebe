"""Idempotency-Key on the POSTs that create: a retried request makes one job or one run (issue 20, item 4)."""

from __future__ import annotations

import asyncio

from scheduler.db import connections, store

JOB = {"name": "once", "schedule": "@every 1h", "action": {"type": "log"}}


class TestCreate:
    """POST /jobs with a key: the same request answers the same job; another request with it is 422."""

    async def test_a_retry_with_the_same_key_makes_one_job(self, client, sql):
        headers = {"Idempotency-Key": '"create-once-1"'}
        first = await client.post("/jobs", json=JOB, headers=headers)
        assert first.status_code == 201, first.text
        again = await client.post("/jobs", json=JOB, headers=headers)
        assert again.status_code == 201  # not 409: the first answer, replayed
        assert again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert sql("SELECT count(*) FROM jobs") == [(1,)]

    async def test_the_same_key_with_another_body_is_refused(self, client, sql):
        headers = {"Idempotency-Key": "k-2"}
        assert (await client.post("/jobs", json=JOB, headers=headers)).status_code == 201
        other = await client.post("/jobs", json={**JOB, "name": "twice"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"
        assert sql("SELECT name FROM jobs") == [("once",)]

    async def test_a_refused_request_keeps_no_key(self, client, sql):
        headers = {"Idempotency-Key": "k-3"}
        bad = await client.post("/jobs", json={**JOB, "schedule": "61 * * * *"}, headers=headers)
        assert bad.status_code == 422
        assert sql("SELECT count(*) FROM idempotency_keys") == [(0,)]

    async def test_keys_last_a_day(self, client, sql, db_url):
        headers = {"Idempotency-Key": "k-4"}
        assert (await client.post("/jobs", json=JOB, headers=headers)).status_code == 201
        sql("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        again = await client.post("/jobs", json=JOB, headers=headers)
        assert again.status_code == 409  # the key expired: the request ran again and met its own job
        conn = await connections.connect(db_url, application_name="tests")
        async with conn:
            await store.idempotency_expire(conn)
        assert sql("SELECT count(*) FROM idempotency_keys") == [(0,)]

    async def test_a_bad_key_is_refused(self, client):
        response = await client.post("/jobs", json=JOB, headers={"Idempotency-Key": "x" * 300})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"

    async def test_concurrent_retries_make_one_job(self, client, sql):
        headers = {"Idempotency-Key": "k-race"}
        answers = await asyncio.gather(*(client.post("/jobs", json=JOB, headers=headers) for _ in range(8)))
        assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert sql("SELECT count(*) FROM jobs") == [(1,)]


class TestTriggerAndRetry:
    """POST /jobs/{id}/trigger and POST /runs/{id}/retry with a key make one run."""

    async def test_a_retried_trigger_makes_one_manual_run(self, client, sql):
        job = (await client.post("/jobs", json=JOB)).json()
        headers = {"Idempotency-Key": "t-1"}
        first = await client.post(f"/jobs/{job['id']}/trigger", headers=headers)
        again = await client.post(f"/jobs/{job['id']}/trigger", headers=headers)
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json()["id"] == first.json()["id"]
        assert sql("SELECT count(*) FROM runs WHERE trigger = 'manual'") == [(1,)]
        other = await client.post(f"/jobs/{job['id']}/trigger", headers={"Idempotency-Key": "t-2"})
        assert other.status_code == 202
        assert sql("SELECT count(*) FROM runs WHERE trigger = 'manual'") == [(2,)]

    async def test_a_retried_retry_makes_one_attempt(self, client, sql):
        job = (await client.post("/jobs", json=JOB)).json()
        run = (await client.post(f"/jobs/{job['id']}/trigger")).json()
        sql("UPDATE runs SET status = 'failed', finished_at = now() WHERE id = %s", (run["id"],))
        sql("UPDATE jobs SET active_runs = 0")
        headers = {"Idempotency-Key": "r-1"}
        first = await client.post(f"/runs/{run['id']}/retry", headers=headers)
        again = await client.post(f"/runs/{run['id']}/retry", headers=headers)
        assert first.status_code == 202, first.text
        assert again.status_code == 202  # not 409 "attempt 2 exists already"
        assert again.json() == first.json()
        assert sql("SELECT count(*) FROM runs WHERE attempt = 2") == [(1,)]
