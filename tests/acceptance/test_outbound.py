"""Outbound calls through a runner process: the address rules applied to real runs.

The rules are checked on their own in tests/unit/test_outbound.py and through the runner's HTTP
client, on real sockets, in tests/integration/test_outbound.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import eventually
from tests.integration.test_outbound import Target, redirect_to, serving


@pytest.fixture
def target() -> Iterator[Target]:
    """A scripted HTTP server of this test's own."""
    with serving() as scripted:
        yield scripted


def runs_of(sql, job_id: str) -> list[tuple[Any, ...]]:
    """The finished runs of a job, oldest first."""
    return sql(
        "SELECT status, http_status, error FROM runs"
        " WHERE job_id = %s AND status NOT IN ('pending', 'running') ORDER BY scheduled_for, attempt",
        (job_id,),
    )


async def create_http_job(client, name: str, url: str, **action: Any) -> str:
    body = {
        "name": name,
        "schedule": "@every 1h",
        "start_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "retry": {"max_attempts": 1},
        "action": {"type": "http", "method": "POST", "url": url, **action},
    }
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class TestRunnerProcess:
    """A runner process applies the rules: blocked calls fail their run with the reason, nothing sent."""

    async def test_blocked_targets_fail_their_runs_and_receive_nothing(self, client, procs, sql, receiver):
        port = receiver.url.rsplit(":", 1)[1]
        jobs = {
            await create_http_job(client, "plain", f"http://127.0.0.1:{port}/a"): (
                "blocked: 127.0.0.1 is a loopback address; SCHEDULER_HTTP_ALLOW_NETS can open it"
            ),
            await create_http_job(client, "by-name", f"http://localhost:{port}/b"): (
                "blocked: localhost resolves to"
            ),
            await create_http_job(client, "integer", f"http://2130706433:{port}/c"): (
                "blocked: 127.0.0.1 is a loopback address"
            ),
            await create_http_job(client, "ipv6", f"http://[::1]:{port}/d"): (
                "blocked: ::1 is a loopback address"
            ),
        }
        procs.runner(http_allow_nets="")
        for job_id, reason in jobs.items():
            await eventually(functools.partial(runs_of, sql, job_id), timeout=20, what="the run")
            (status, http_status, error), *_ = runs_of(sql, job_id)
            assert (status, http_status) == ("failed", None)
            assert reason in error
        assert receiver.count() == 0

    async def test_a_followed_redirect_to_a_blocked_address_fails_the_run(self, client, procs, sql, target):
        target.answer = redirect_to(f"http://127.0.0.2:{target.port}/inner")
        job_id = await create_http_job(client, "hop", f"{target.url}/outer", follow_redirects=True)
        procs.runner(http_allow_nets="127.0.0.1/32")
        await eventually(lambda: runs_of(sql, job_id), timeout=20, what="the run")
        status, _, error = runs_of(sql, job_id)[0]
        assert status == "failed"
        assert error.startswith("blocked: 127.0.0.2 is a loopback address")
        assert "redirected to" in error
        assert [path for path, _ in target.seen()] == ["/outer"]

    async def test_an_allowed_network_is_called(self, client, procs, sql, receiver):
        job_id = await create_http_job(client, "allowed", f"{receiver.url}/ok", body={"probe": True})
        procs.runner(http_allow_nets="127.0.0.0/8")
        await eventually(lambda: runs_of(sql, job_id), timeout=20, what="the run")
        assert runs_of(sql, job_id)[0][:2] == ("succeeded", 200)
        assert receiver.count() == 1
        assert json.loads(receiver.snapshot()[0].body) == {"probe": True}
