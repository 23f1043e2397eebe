"""The API's metrics and request ids, in-process: series named by route template and status.

A real API process's JSON access lines and a runner's series and logs:
tests/acceptance/test_observability.py.
"""

from __future__ import annotations

import re


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
