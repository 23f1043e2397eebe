"""Limits: per-key rate limit (429 + Retry-After), body sizes (413, 422) and the per-namespace job quota.

Each limit is checked for its answer and for the service serving normally afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.config import ConfigError, load_settings
from tests.conftest import Procs, create_api_key, free_port, settings_for, wait_for

LOG_JOB = {"schedule": "@every 1h", "action": {"type": "log"}}


@asynccontextmanager
async def api(db_url: str, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings_for(db_url, **overrides))) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestRateLimit:
    """Over its rate a key gets 429 problems with Retry-After, then is served again; others are not slowed."""

    async def test_a_key_over_its_burst_gets_429_then_is_served_again(self, db_url):
        fast, other = await create_api_key(db_url, "alpha"), await create_api_key(db_url, "beta")
        async with api(db_url, auth="required", rate_limit_per_s=2, rate_limit_burst=3) as client:
            statuses = [(await client.get("/jobs", headers=bearer(fast))).status_code for _ in range(3)]
            assert statuses == [200, 200, 200]
            refused = await client.get("/jobs", headers=bearer(fast))
            assert refused.status_code == 429
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.headers["retry-after"] == "1"  # a token every 0.5 s, in whole seconds
            problem = refused.json()
            assert (problem["status"], problem["type"]) == (
                429,
                "https://scheduler.dev/problems/rate-limited",
            )
            assert "2 requests per second" in problem["detail"]
            assert (await client.get("/jobs", headers=bearer(other))).status_code == 200
            assert (await client.get("/healthz")).status_code == 200
            deadline = time.monotonic() + 10
            while (await client.get("/jobs", headers=bearer(fast))).status_code == 429:
                assert time.monotonic() < deadline, "the key was never served again"
                await asyncio.sleep(0.1)

    async def test_with_auth_off_there_is_no_key_and_no_rate_limit(self, db_url):
        async with api(db_url, auth="off", rate_limit_per_s=1, rate_limit_burst=1) as client:
            statuses = {(await client.get("/jobs")).status_code for _ in range(10)}
            assert statuses == {200}

    def test_the_limits_are_settings_with_ranges(self):
        settings = load_settings({})
        assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (50, 100)
        assert settings.namespace_job_quota == 100_000
        for name, bad in (
            ("SCHEDULER_RATE_LIMIT_PER_S", "0"),
            ("SCHEDULER_RATE_LIMIT_BURST", "many"),
            ("SCHEDULER_NAMESPACE_JOB_QUOTA", "-5"),
        ):
            with pytest.raises(ConfigError, match=name):
                load_settings({name: bad})


class TestBodyLimits:
    """Oversized requests are refused with a problem naming the limit, and nothing is written."""

    async def test_a_request_body_over_1_mib_is_413(self, client):
        padding = "x" * (1024 * 1024)
        response = await client.post("/jobs", json={"name": "big", "description": padding, **LOG_JOB})
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"] == "request body is larger than 1 MiB"
        assert (await client.get("/jobs")).json()["items"] == []
        assert (await client.post("/jobs", json={"name": "small", **LOG_JOB})).status_code == 201

    async def test_an_action_body_over_256_kib_is_422_naming_the_field(self, client):
        action = {"type": "http", "url": "https://receiver.example/hook", "body": "y" * (256 * 1024 + 1)}
        response = await client.post("/jobs", json={"name": "big", "schedule": "@daily", "action": action})
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {"field": "action.body", "message": "is 262145 bytes; the limit is 256 KiB"}
        ]
        action["body"] = "y" * (256 * 1024)
        fits = await client.post("/jobs", json={"name": "fits", "schedule": "@daily", "action": action})
        assert fits.status_code == 201


class TestQuota:
    """A namespace holds at most its quota of jobs; creating more is a 422 problem, others are unaffected."""

    async def test_creating_past_the_quota_is_refused_until_a_job_is_deleted(self, db_url):
        alpha, beta = await create_api_key(db_url, "alpha"), await create_api_key(db_url, "beta")
        async with api(db_url, auth="required", namespace_job_quota=2) as client:
            made = [
                await client.post("/jobs", json={"name": f"j{i}", **LOG_JOB}, headers=bearer(alpha))
                for i in range(2)
            ]
            assert [r.status_code for r in made] == [201, 201]
            over = await client.post("/jobs", json={"name": "j2", **LOG_JOB}, headers=bearer(alpha))
            assert over.status_code == 422
            problem = over.json()
            assert problem["type"] == "https://scheduler.dev/problems/quota-exceeded"
            assert problem["detail"] == (
                "namespace 'alpha' holds its quota of 2 jobs; delete jobs before creating more"
            )
            other = await client.post("/jobs", json={"name": "j0", **LOG_JOB}, headers=bearer(beta))
            assert other.status_code == 201
            gone = await client.delete(f"/jobs/{made[0].json()['id']}", headers=bearer(alpha))
            assert gone.status_code == 204
            again = await client.post("/jobs", json={"name": "j2", **LOG_JOB}, headers=bearer(alpha))
            assert again.status_code == 201

    async def test_concurrent_creates_cannot_overshoot_the_quota(self, db_url, sql):
        async with api(db_url, namespace_job_quota=5, db_pool_max=12) as client:
            responses = await asyncio.gather(
                *(client.post("/jobs", json={"name": f"race-{i}", **LOG_JOB}) for i in range(12))
            )
            assert sorted(r.status_code for r in responses) == [201] * 5 + [422] * 7
        assert sql("SELECT count(*) FROM jobs WHERE namespace = 'default'") == [(5,)]

    async def test_the_count_is_exact_through_racing_creates_deletes_and_applies(self, db_url, sql):
        # The count lives in shard rows: a create is refused only once every shard is full, so
        # racing creates fill the quota exactly, neither passing it nor stopping short of it.
        async with api(db_url, namespace_job_quota=40, db_pool_max=16) as client:
            made = await asyncio.gather(
                *(client.post("/jobs", json={"name": f"race-{i}", **LOG_JOB}) for i in range(60))
            )
            assert sorted(r.status_code for r in made) == [201] * 40 + [422] * 20
            created = [r.json()["id"] for r in made if r.status_code == 201]
            gone = await asyncio.gather(*(client.delete(f"/jobs/{job_id}") for job_id in created[:7]))
            assert {r.status_code for r in gone} == {204}
            again = await asyncio.gather(
                *(client.post("/jobs", json={"name": f"again-{i}", **LOG_JOB}) for i in range(20))
            )
            assert sorted(r.status_code for r in again) == [201] * 7 + [422] * 13
            # A bulk apply counts many at once within the shards' shares: with the quota full,
            # declaring one more job than is left is refused whole.
            declared = [{"name": f"declared-{i}", **LOG_JOB} for i in range(3)]
            refused = await client.post("/jobs/apply", json={"jobs": declared})
            assert refused.status_code == 422, refused.text
            deleted = await asyncio.gather(*(client.delete(f"/jobs/{job_id}") for job_id in created[7:10]))
            assert {r.status_code for r in deleted} == {204}
            applied = await client.post("/jobs/apply", json={"jobs": declared})
            assert applied.status_code == 200, applied.text
            assert (await client.post("/jobs", json={"name": "one-more", **LOG_JOB})).status_code == 422
        assert sql("SELECT count(*) FROM jobs WHERE namespace = 'default'") == [(40,)]
        counted = sql(
            "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
            " + (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default')"
        )
        assert counted == [(40,)]

    async def test_jobs_counted_by_a_previous_release_still_count(self, db_url, sql):
        async with api(db_url, namespace_job_quota=3) as client:
            first = await client.post("/jobs", json={"name": "first", **LOG_JOB})
            assert first.status_code == 201
            # As a previous release counts: the one namespace_usage row.
            sql(
                "INSERT INTO namespace_usage (namespace, jobs) VALUES ('default', 2)"
                " ON CONFLICT (namespace) DO UPDATE SET jobs = namespace_usage.jobs + 2"
            )
            assert (await client.post("/jobs", json={"name": "over", **LOG_JOB})).status_code == 422
            assert (await client.delete(f"/jobs/{first.json()['id']}")).status_code == 204
            assert (await client.post("/jobs", json={"name": "fits", **LOG_JOB})).status_code == 201

    async def test_the_quota_leaves_updates_alone(self, db_url):
        async with api(db_url, namespace_job_quota=1) as client:
            job = await client.post("/jobs", json={"name": "only", **LOG_JOB})
            assert job.status_code == 201
            patched = await client.patch(f"/jobs/{job.json()['id']}", json={"description": "still fine"})
            assert patched.status_code == 200


def served_api(procs: Procs, *, workers: int, **overrides: Any) -> str:
    """Start `scheduler api` with ``workers`` processes on a free port; its URL once /healthz answers."""
    port = free_port()
    proc = procs.start(
        ["-m", "scheduler", "api", "--port", str(port), "--workers", str(workers)], **overrides
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.popen.poll() is not None:
            pytest.fail(f"the API exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, what="the API's /healthz")
    return url


class TestQuotaUnderRealConcurrency:
    """Two API processes and many connections creating at once: the quota holds exactly at its edge."""

    async def test_many_connections_fill_the_quota_exactly_and_the_rest_get_the_quota_problem(
        self, sql, procs
    ):
        quota, sent = 150, 400
        url = served_api(procs, workers=2, namespace_job_quota=quota, db_pool_max=32)
        # 64 connections, each reused for several requests: on a loaded machine the client can leave
        # one idle for seconds between them, so this also proves the API keeps idle connections open
        # longer than httpx does (a server closing one as the client reuses it resets the request).
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            made = await asyncio.gather(
                *(client.post("/jobs", json={"name": f"edge-{i}", **LOG_JOB}) for i in range(sent))
            )
        statuses = sorted(r.status_code for r in made)
        assert statuses == [201] * quota + [422] * (sent - quota)
        for refused in (r for r in made if r.status_code == 422):
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["type"] == "https://scheduler.dev/problems/quota-exceeded"
            assert problem["detail"] == (
                f"namespace 'default' holds its quota of {quota} jobs; delete jobs before creating more"
            )
        assert sql("SELECT count(*) FROM jobs WHERE namespace = 'default'") == [(quota,)]
        counted = sql(
            "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
            " + (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default')"
        )
        assert counted == [(quota,)]

    async def test_racing_creates_of_one_name_make_one_job_and_count_it_once(self, sql, procs):
        url = served_api(procs, workers=2, namespace_job_quota=1000)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            # The namespace's first job makes its count's shards, so the race below takes the
            # one-statement path that counts and inserts together.
            assert (await client.post("/jobs", json={"name": "first", **LOG_JOB})).status_code == 201
            made = await asyncio.gather(
                *(client.post("/jobs", json={"name": "twin", **LOG_JOB}) for _ in range(40))
            )
        assert sorted(r.status_code for r in made) == [201] + [409] * 39
        assert {r.json()["type"] for r in made if r.status_code == 409} == {
            "https://scheduler.dev/problems/conflict"
        }
        assert sql("SELECT count(*) FROM jobs WHERE namespace = 'default'") == [(2,)]
        counted = sql(
            "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
            " + (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default')"
        )
        assert counted == [(2,)]


class TestIdleConnections:
    """A client's idle keep-alive connection outlives the client's own pool timeout on the server."""

    def test_a_connection_idle_past_five_seconds_still_answers(self, procs):
        # uvicorn closes an idle connection after 5 s unless told otherwise, the same time httpx
        # keeps one: a request sent on it as the server closes it is reset. The API keeps idle
        # connections for KEEP_ALIVE_S (75 s), longer than clients and proxies keep theirs.
        url = served_api(procs, workers=1)
        host, port = url.removeprefix("http://").split(":")
        request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(6)  # the scenario itself: the connection idles past uvicorn's default
            conn.sendall(request)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
