"""Metrics and logs of real processes: the named series with the right labels and counts; JSON lines.

The API's own series, in-process: tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.conftest import free_port, start_api, wait_for
from tests.integration.test_observability import sample


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TestApiLogs:
    """A real API process writes one JSON access line per request, carrying the request id."""

    def test_access_lines_are_json_with_the_request_id(self, procs):
        url = start_api(procs)
        sent = time.monotonic()
        response = httpx.get(f"{url}/jobs", headers={"X-Request-ID": "round-trip-1"})
        round_trip_ms = (time.monotonic() - sent) * 1000
        assert response.headers["x-request-id"] == "round-trip-1"
        api = procs.started[-1]

        def line() -> dict[str, Any] | None:
            for record in json_lines(api.output()):
                if record.get("event") == "request" and record.get("request_id") == "round-trip-1":
                    return record
            return None

        record = wait_for(line, what="the access line")
        assert (record["method"], record["route"], record["status"]) == ("GET", "/jobs", 200)
        assert record["namespace"] == "default"
        # The API's own measure of a request that read the database: more than nothing, and within
        # the round trip this test timed around it (the same monotonic clock, one machine).
        assert 0 < record["duration_ms"] <= round_trip_ms


class TestRunnerMetricsAndLogs:
    """A runner serves its own /metrics and logs JSON lines that carry job_id, run_id and runner."""

    async def test_runner_series_after_a_few_fires(self, client, procs, receiver):
        port = free_port()
        runner = procs.runner(metrics_port=port, runner_name="observed", log_level="info")
        receiver.status = 500
        await client.post(
            "/jobs",
            json={"name": "tick", "schedule": "@every 1s", "action": {"type": "log", "payload": {"k": 1}}},
        )
        await client.post(
            "/jobs",
            json={
                "name": "broken",
                "schedule": "@every 1s",
                "action": {"type": "http", "url": receiver.url},
                "retry": {"max_attempts": 1},
            },
        )

        def scrape() -> str | None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            completed = sample(text, "scheduler_runs_completed_total", status="failed") or 0
            succeeded = sample(text, "scheduler_runs_completed_total", status="succeeded") or 0
            backlog = sample(text, "scheduler_due_backlog")
            return text if completed >= 2 and succeeded >= 2 and backlog is not None else None

        text = wait_for(scrape, timeout=30, what="runner metrics")
        assert (sample(text, "scheduler_fires_total", trigger="schedule", outcome="started") or 0) >= 4
        # Labelled by the jobs' namespace (auth off: `default`), never by job id.
        started = {"namespace": "default", "trigger": "schedule", "outcome": "started"}
        assert (sample(text, "scheduler_fires_total", **started) or 0) >= 4
        assert (
            sample(text, "scheduler_runs_completed_total", namespace="default", status="failed") or 0
        ) >= 2
        assert "job_id" not in text
        assert (sample(text, "scheduler_fire_lateness_seconds_count") or 0) >= 4
        # Every run ended is timed once, the log runs done inside their claim included.
        ended = sum(
            sample(text, "scheduler_runs_completed_total", status=s) or 0 for s in ("succeeded", "failed")
        )
        assert sample(text, "scheduler_run_duration_seconds_count") == ended
        assert (sample(text, "scheduler_claim_batch_size_count") or 0) >= 1
        # One HTTP job whose calls end at once, overlap skip: at most its one call is in flight.
        assert sample(text, "scheduler_runs_in_flight") in (0, 1)
        assert sample(text, "scheduler_rescues_total") == 0
        assert sample(text, "scheduler_completions_refused_total") == 0
        assert sample(text, "scheduler_db_reconnects_total") == 0

        records = json_lines(runner.output())  # every line is JSON, or this raises
        assert any(r["event"] == "runner_started" and r["runner"] == "observed" for r in records)
        per_run = [r for r in records if r["event"] in ("job_log", "run_failed")]
        assert {r["event"] for r in per_run} == {"job_log", "run_failed"}
        assert all({"job_id", "run_id", "runner", "timestamp", "level"} <= r.keys() for r in per_run)
        assert all(r["runner"] == "observed" for r in per_run)
        failed = [r for r in per_run if r["event"] == "run_failed"]
        assert {(r["job_name"], r["namespace"]) for r in failed} == {("broken", "default")}
