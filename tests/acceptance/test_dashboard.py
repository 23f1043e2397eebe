"""The shipped dashboard and alerts name only series a real API and a real runner export.

A runner and an API process run against the test database while a few jobs fire (one succeeding,
one failing); both /metrics are scraped until every metric name used by a dashboard query or an
alert has a sample, and the labels the queries match or group on are on those samples.
"""

from __future__ import annotations

import re
import time

import httpx

from tests.conftest import free_port, start_api
from tests.unit.test_prometheus_rules import (
    alert_queries,
    dashboard_queries,
    grouping_labels,
    metric_names,
    selectors,
)

# Made by Prometheus when it scrapes, not exported by the service.
SCRAPE_SERIES = frozenset({"up"})
SCRAPE_LABELS = frozenset({"job", "instance"})
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+")


def exported(text: str) -> dict[str, set[str]]:
    """Each metric name that has a sample in Prometheus text, with the label names its samples carry."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if line.startswith("#") or not match:
            continue
        labels = set(re.findall(r'(\w+)="', match.group(2) or ""))
        series.setdefault(match.group(1), set()).update(labels)
    return series


class TestExportedSeries:
    """Every name a dashboard panel or an alert asks for is a series really exported."""

    def test_the_reader_tells_a_sample_from_a_help_line(self):
        text = (
            "# HELP scheduler_jobs_failing Jobs failing\n# TYPE scheduler_jobs_failing gauge\n"
            'scheduler_fires_total{namespace="a",trigger="schedule",outcome="started"} 3.0\n'
            "scheduler_due_backlog 0.0\n"
        )
        assert exported(text) == {
            "scheduler_fires_total": {"namespace", "trigger", "outcome"},
            "scheduler_due_backlog": set(),
        }

    def test_every_query_names_series_the_api_and_a_runner_export(self, procs, receiver, sql):
        api_url = start_api(procs)
        receiver.status = 500
        jobs = [
            {"name": "tick", "schedule": "@every 1s", "action": {"type": "log"}},
            {
                "name": "broken",
                "schedule": "@every 1s",
                "action": {"type": "http", "url": receiver.url},
                "retry": {"max_attempts": 1},
            },
        ]
        for job in jobs:
            assert httpx.post(f"{api_url}/jobs", json=job, timeout=5).status_code == 201
        assert httpx.get(f"{api_url}/jobs/01a204bc-1026-70cc-9989-e83e45fd38a4", timeout=5).status_code == 404
        # A job that kept failing before this runner started: the runner counts the failing jobs in
        # its first round, then every 30 s (the broken job's own failures land in the next count).
        earlier = {"name": "failed-earlier", "schedule": "@daily", "action": {"type": "log"}}
        assert httpx.post(f"{api_url}/jobs", json=earlier, timeout=5).status_code == 201
        sql("UPDATE jobs SET consecutive_failures = 2 WHERE name = 'failed-earlier'")
        port = free_port()
        procs.runner(metrics_port=port, runner_name="dashboard")

        queries = dashboard_queries() + alert_queries()
        wanted = set().union(*(metric_names(q) for q in queries)) - SCRAPE_SERIES
        # The reader found the names (the check below is not vacuous): 14 series of ours are queried.
        assert len(wanted) >= 14, wanted

        def scrape() -> dict[str, set[str]]:
            try:
                texts = [
                    httpx.get(f"{api_url}/metrics", timeout=2).text,
                    httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text,
                ]
            except httpx.HTTPError:
                return {}
            series: dict[str, set[str]] = {}
            for text in texts:
                for name, labels in exported(text).items():
                    series.setdefault(name, set()).update(labels)
            return series

        # Polled until every name has a sample or the deadline passes; then the names still missing
        # are the failure's message.
        deadline = time.monotonic() + 60
        series = scrape()
        while not wanted <= series.keys() and time.monotonic() < deadline:
            time.sleep(0.5)
            series = scrape()
        assert wanted - series.keys() == set(), "queried, and not exported"

        for query in queries:
            for name, labels in selectors(query):
                if name in SCRAPE_SERIES or not name:
                    continue
                missing = labels - SCRAPE_LABELS - series[name]
                assert not missing, f"{query}: {name} has no label {missing}"
            names = metric_names(query) - SCRAPE_SERIES
            carried = set().union(*(series[name] for name in names)) if names else set()
            missing = grouping_labels(query) - SCRAPE_LABELS - carried
            assert not missing, f"{query}: no series it reads carries {missing}"
