"""Metrics and logs: the named series with the right labels and counts; JSON lines with bound fields."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from tests.conftest import free_port, start_api, wait_for


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None when it is absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TestApiMetrics:
    """The API counts requests and their latency by method, route template and status."""

    async def test_requests_are_counted_by_route_template_and_status(self, client):
        created = await client.post(
            "/jobs", json={"name": "m", "schedule": "@every 1m", "action": {"type": "log"}}
        )
        job_id = created.json()["id"]
        for _ in range(3):
            await client.get(f"/jobs/{job_id}")
        await client.get("/jobs/01a204bc-1026-70cc-9989-e83e45fd38a4")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert sample(text, "scheduler_http_requests_total", method="POST", route="/jobs", status="201") == 1
        assert (
            sample(text, "scheduler_http_requests_total", method="GET", route="/jobs/{job_id}", status="200")
            == 3
        )
        assert (
            sample(text, "scheduler_http_requests_total", method="GET", route="/jobs/{job_id}", status="404")
            == 1
        )
        assert (
            sample(
                text, "scheduler_http_request_duration_seconds_count", method="GET", route="/jobs/{job_id}"
            )
            == 4
        )

    async def test_request_id_is_taken_from_the_caller_or_made(self, client):
        response = await client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        assert response.headers["x-request-id"] == "trace-42"
        made = (await client.get("/healthz")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        unsafe = (await client.get("/healthz", headers={"X-Request-ID": "a b\tc"})).headers["x-request-id"]
        assert unsafe != "a b\tc"


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
