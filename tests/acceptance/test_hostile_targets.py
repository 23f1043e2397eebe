"""A runner process beside hostile targets: every run ends final, a healthy job keeps its schedule.

The hostile targets and each call to them are in tests/integration/test_hostile_targets.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import eventually
from tests.integration.test_hostile_targets import TIMEOUT_S, Hostile, serving


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    """The hostile server, for one test."""
    with serving() as server:
        yield server


HOSTILE_PATHS = [
    "/binary",
    "/invalid-utf8",
    "/nul",
    "/huge",
    "/endless-chunked",
    "/slow-headers",
    "/slow-body",
    "/gzip-bomb",
    "/header-flood",
    "/cut-body",
]


class TestRunnerBesideHostileTargets:
    """A runner records every hostile job's runs in a final state and keeps a healthy job on schedule."""

    async def test_every_run_ends_final_and_the_healthy_job_keeps_its_schedule(
        self, client, procs, sql, hostile, receiver
    ):
        runner = procs.runner(http_allow_nets="127.0.0.0/8")
        # Jobs start together once the runner is up, so no slot of the window is a catch-up.
        await eventually(lambda: "runner_started" in runner.output(), timeout=60, what="the runner to start")
        start_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        jobs: dict[str, str] = {}
        for path in ["/healthy", *HOSTILE_PATHS]:
            url = f"{receiver.url}/healthy" if path == "/healthy" else f"{hostile.url}{path}"
            body = {
                "name": path.strip("/"),
                "schedule": "@every 1s",
                "start_at": start_at.isoformat(),
                "timeout_s": TIMEOUT_S,
                "retry": {"max_attempts": 1},
                "action": {
                    "type": "http",
                    "method": "GET",
                    "url": url,
                    "headers": {"Accept-Encoding": "gzip"},
                },
            }
            response = await client.post("/jobs", json=body)
            assert response.status_code == 201, response.text
            jobs[path] = str(response.json()["id"])

        def finished(job_id: str) -> int:
            """Runs that made their call and were recorded (a `skipped` run made no call)."""
            rows = sql(
                "SELECT count(*) FROM runs WHERE job_id = %s"
                " AND status NOT IN ('pending', 'running', 'skipped')",
                (job_id,),
            )
            return int(rows[0][0])

        # Every hostile job has calls recorded, over a window long enough for the healthy job to fire
        # several times beside them.
        def done() -> bool:
            return datetime.now(UTC) >= start_at + timedelta(seconds=8) and all(
                finished(jobs[path]) >= 2 for path in HOSTILE_PATHS
            )

        await eventually(done, timeout=60, what="two recorded calls of every hostile job")
        window_end = datetime.now(UTC)
        runner.stop()

        stuck = sql(
            "SELECT j.name, r.status, r.started_at FROM runs r JOIN jobs j ON j.id = r.job_id"
            " WHERE r.status IN ('pending', 'running') AND r.started_at < %s",
            (window_end - timedelta(seconds=TIMEOUT_S + 3),),
        )
        assert stuck == []
        nul_calls = "SELECT status, output FROM runs WHERE job_id = %s AND status <> 'skipped'"
        assert set(sql(nul_calls, (jobs["/nul"],))) == {("succeeded", "ab")}
        healthy = sql(
            "SELECT status, trigger, started_at - scheduled_for FROM runs"
            " WHERE job_id = %s AND scheduled_for < %s",
            (jobs["/healthy"], window_end - timedelta(seconds=1)),
        )
        assert len(healthy) >= 6
        assert {status for status, _, _ in healthy} == {"succeeded"}
        assert {trigger for _, trigger, _ in healthy} == {"schedule"}
        assert max(late for _, _, late in healthy) < timedelta(seconds=1)
        assert "service_failed" not in runner.output()
