"""Metrics in-process: API and runner series by namespace (with the cap), request ids, failing jobs.

A real API process's JSON access lines and a runner's series and logs:
tests/acceptance/test_observability.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
import structlog
import structlog.testing
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.config import ConfigError, load_settings
from scheduler.db.connections import Pool
from scheduler.metrics import OTHER_NAMESPACE, NamespaceLabels, RunnerMetrics
from scheduler.runner.service import assemble, http_client
from scheduler.runner.services.backlog import BacklogConfig, BacklogGauge
from scheduler.runner.services.rescuer import Rescuer, RescuerConfig
from tests.conftest import create_api_key, settings_for, start_run


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


class TestApiMetricsByNamespace:
    """Requests are labelled with the namespace they were authenticated for, up to the cap."""

    async def test_the_namespace_of_the_key_labels_its_requests_and_the_cap_folds_the_rest(self, db_url):
        app = create_app(settings_for(db_url, auth="required", metrics_max_namespaces=1))
        alpha = {"Authorization": f"Bearer {await create_api_key(db_url, 'alpha')}"}
        beta = {"Authorization": f"Bearer {await create_api_key(db_url, 'beta')}"}
        async with AsyncTestClient(app=app) as client:
            for _ in range(2):
                assert (await client.get("/jobs", headers=alpha)).status_code == 200
            assert (await client.get("/jobs", headers=beta)).status_code == 200
            refused = await client.get("/jobs", headers={"Authorization": "Bearer sk_not_a_key"})
            assert refused.status_code == 401
            assert (await client.get("/healthz", headers=alpha)).status_code == 200
            text = (await client.get("/metrics")).text

        def count(status: str, namespace: str) -> float | None:
            return sample(
                text, "scheduler_http_requests_total", route="/jobs", status=status, namespace=namespace
            )

        assert count("200", "alpha") == 2
        # One namespace is labelled by name: the second one met is counted under _other.
        assert count("200", OTHER_NAMESPACE) == 1
        assert count("200", "beta") is None
        # A refused key authenticated nothing: no namespace, never the key's own text.
        assert count("401", "") == 1
        assert "sk_not_a_key" not in text
        # Public routes authenticate nobody, whatever key comes with them.
        assert sample(text, "scheduler_http_requests_total", route="/healthz", namespace="") == 1
        assert sample(text, "scheduler_http_requests_total", route="/healthz", namespace="alpha") is None

    def test_a_cap_below_one_is_refused_naming_the_variable(self):
        with pytest.raises(ConfigError, match="SCHEDULER_METRICS_MAX_NAMESPACES"):
            load_settings({"SCHEDULER_METRICS_MAX_NAMESPACES": "0"})


class TestNamespaceCap:
    """A process labels the first namespaces it meets by name; later ones share `_other`."""

    def test_namespaces_past_the_cap_are_counted_together(self):
        metrics = RunnerMetrics(max_namespaces=2)
        for namespace in ("alpha", "beta", "gamma", "delta", "alpha"):
            metrics.count_fires(namespace, "schedule", "started", 1)
        registry = metrics.registry

        def fires(namespace: str) -> float | None:
            labels = {"namespace": namespace, "trigger": "schedule", "outcome": "started"}
            return registry.get_sample_value("scheduler_fires_total", labels)

        assert (fires("alpha"), fires("beta"), fires(OTHER_NAMESPACE)) == (2, 1, 2)
        assert fires("gamma") is None
        # The same namespaces keep their labels in every series of the process.
        metrics.count_completed("gamma", "failed", 1)
        metrics.count_completed("beta", "failed", 1)
        completed = "scheduler_runs_completed_total"
        assert registry.get_sample_value(completed, {"namespace": OTHER_NAMESPACE, "status": "failed"}) == 1
        assert registry.get_sample_value(completed, {"namespace": "beta", "status": "failed"}) == 1

    def test_failing_jobs_past_the_cap_are_added_up(self):
        metrics = RunnerMetrics(max_namespaces=1)
        metrics.set_jobs_failing({"alpha": 1, "beta": 2, "gamma": 3})
        registry = metrics.registry
        assert registry.get_sample_value("scheduler_jobs_failing", {"namespace": "alpha"}) == 1
        assert registry.get_sample_value("scheduler_jobs_failing", {"namespace": OTHER_NAMESPACE}) == 5

    def test_a_cap_below_one_is_refused(self):
        with pytest.raises(ValueError, match="limit"):
            NamespaceLabels(0)

    async def test_a_runner_takes_its_cap_from_the_settings(self, db_url):
        settings = settings_for(db_url, metrics_max_namespaces=3)
        pool = Pool(db_url, application_name="scheduler-runner-test", max_size=1)
        try:
            async with http_client(settings) as outbound:
                parts = assemble(settings, pool, outbound, database_url=None)
        finally:
            await pool.close()
        assert parts.runner.metrics.namespaces.limit == 3


async def in_namespace(sql, job_id: UUID, namespace: str) -> None:
    sql("INSERT INTO namespaces (name) VALUES (%s) ON CONFLICT DO NOTHING", (namespace,))
    sql("UPDATE jobs SET namespace = %s WHERE id = %s", (namespace, job_id))


async def make_job(client, name: str, **body: Any) -> UUID:
    response = await client.post(
        "/jobs", json={"name": name, "schedule": "@every 1h", "action": {"type": "log"}, **body}
    )
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


class TestRunnerSeriesByNamespace:
    """Fires and ended runs are counted by their job's namespace, whichever path ends them."""

    async def test_fires_and_runs_done_inside_the_claim_carry_their_namespace(
        self, runner_parts, client, sql
    ):
        mine = await make_job(client, "mine")
        theirs = await make_job(client, "theirs")
        await in_namespace(sql, theirs, "billing")
        sql("UPDATE jobs SET next_run_at = now() - interval '1 second' WHERE id IN (%s, %s)", (mine, theirs))

        counts = await runner_parts.runner.claim_due_once()

        assert counts.fired_in == {
            ("default", "schedule", "started"): 1,
            ("billing", "schedule", "started"): 1,
        }
        assert counts.fired == {("schedule", "started"): 2}
        registry = runner_parts.runner.metrics.registry
        for namespace in ("default", "billing"):
            fired = {"namespace": namespace, "trigger": "schedule", "outcome": "started"}
            assert registry.get_sample_value("scheduler_fires_total", fired) == 1
            ended = {"namespace": namespace, "status": "succeeded"}
            assert registry.get_sample_value("scheduler_runs_completed_total", ended) == 1

    async def test_a_failed_call_is_counted_and_logged_under_its_namespace(
        self, runner_parts, client, sql, receiver
    ):
        # The runner's own logger: structlog may have cached one from before any capture.
        logged = structlog.testing.CapturingLogger()
        runner_parts.runner.log = structlog.wrap_logger(logged, processors=[])
        receiver.status = 500
        job_id = await make_job(
            client,
            "broken",
            action={"type": "http", "url": receiver.url},
            retry={"max_attempts": 1},
        )
        await in_namespace(sql, job_id, "billing")
        sql("UPDATE jobs SET next_run_at = now() - interval '1 second' WHERE id = %s", (job_id,))

        await runner_parts.runner.claim_due_once()
        deadline = time.monotonic() + 10
        while runner_parts.completer.waiting < 1:
            assert time.monotonic() < deadline, "the call never ended"
            await asyncio.sleep(0.02)
        await runner_parts.completer.flush()

        registry = runner_parts.runner.metrics.registry
        failed = {"namespace": "billing", "status": "failed"}
        assert registry.get_sample_value("scheduler_runs_completed_total", failed) == 1
        (record,) = [call.kwargs for call in logged.calls if call.kwargs.get("event") == "run_failed"]
        assert record["job_id"] == str(job_id)
        assert (record["job_name"], record["namespace"]) == ("broken", "billing")

    async def test_a_rescued_run_is_counted_and_logged_under_its_namespace(self, runner_parts, client, sql):
        logged = structlog.testing.CapturingLogger()
        rescuer = Rescuer(
            RescuerConfig(lease_s=1),
            runner_parts.runner.pool,
            runner_parts.completer,
            metrics=runner_parts.runner.metrics,
            log=structlog.wrap_logger(logged, processors=[]),
        )
        job_id = await make_job(client, "abandoned")
        await in_namespace(sql, job_id, "billing")
        slot = datetime(2026, 6, 1, 12, tzinfo=UTC)
        await start_run(runner_parts, job_id, slot=slot, lease_s=1, at=slot)

        rescued = await rescuer.run_once(now=slot + timedelta(seconds=5))

        assert rescued.rescued == 1
        registry = runner_parts.runner.metrics.registry
        lost = {"namespace": "billing", "status": "lost"}
        assert registry.get_sample_value("scheduler_runs_completed_total", lost) == 1
        (record,) = [call.kwargs for call in logged.calls if call.kwargs.get("event") == "run_rescued"]
        assert (record["job_name"], record["namespace"]) == ("abandoned", "billing")


class TestFailingJobsGauge:
    """The backlog service also counts, by namespace, the jobs whose newest runs failed."""

    async def test_failing_jobs_are_counted_by_namespace_and_a_recovered_namespace_drops_out(
        self, runner_parts, client, sql
    ):
        ids = [await make_job(client, f"job-{i}") for i in range(5)]
        await in_namespace(sql, ids[3], "billing")
        await in_namespace(sql, ids[4], "billing")
        sql("UPDATE jobs SET consecutive_failures = 3 WHERE id IN (%s, %s, %s)", (ids[0], ids[3], ids[4]))
        metrics = runner_parts.runner.metrics
        gauge = BacklogGauge(BacklogConfig(failing_every=1), runner_parts.runner.pool, metrics=metrics)

        counts = await gauge.run_once()

        assert counts.failing == {"default": 1, "billing": 2}
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "default"}) == 1
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "billing"}) == 2

        sql("UPDATE jobs SET consecutive_failures = 0 WHERE namespace = 'billing'")
        assert (await gauge.run_once()).failing == {"default": 1}
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "billing"}) is None
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "default"}) == 1
        assert "max()" in metrics.jobs_failing._documentation  # the help text alerts rely on

    async def test_the_failing_jobs_are_counted_every_few_rounds_the_backlog_every_round(
        self, runner_parts, client, sql
    ):
        job_id = await make_job(client, "job")
        sql(
            "UPDATE jobs SET consecutive_failures = 1, next_run_at = now() - interval '1 s' WHERE id = %s",
            (job_id,),
        )
        metrics = runner_parts.runner.metrics
        gauge = BacklogGauge(BacklogConfig(failing_every=3), runner_parts.runner.pool, metrics=metrics)

        first = await gauge.run_once()
        sql("UPDATE jobs SET consecutive_failures = 0")
        second = await gauge.run_once()
        # Between counts the gauge keeps the last one.
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "default"}) == 1
        third, fourth = await gauge.run_once(), await gauge.run_once()

        assert (first.due, first.failing) == (1, {"default": 1})
        assert (second.due, second.failing, third.failing) == (1, None, None)
        assert fourth.failing == {}
        assert metrics.registry.get_sample_value("scheduler_jobs_failing", {"namespace": "default"}) is None

    def test_counting_the_failing_jobs_never_is_refused(self):
        with pytest.raises(ValueError, match="failing_every"):
            BacklogConfig(failing_every=0)
