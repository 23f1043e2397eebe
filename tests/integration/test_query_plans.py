"""The hot queries keep their index plans: claim, job pages, run history, a run by id (EXPLAIN).

And the queries of a job's unfinished runs keep the partial index made for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from scheduler.db.queries import q
from tests.conftest import url_for
from tests.seed import Expr, seed_jobs

JOBS = 20_000
DUE = 200
RUN_JOBS = 250
RUNS_PER_JOB = 200
RUN_SPAN_S = 3 * 86_400

# The first DUE jobs are a minute late; the others come due one second apart from now on.
NEXT_RUN_AT = Expr(
    "CASE WHEN i <= %(due)s THEN now() - interval '1 minute' ELSE now() + (i || ' seconds')::interval END",
    {"due": DUE},
)

# Runs of the first jobs by id, spread over the last days; each id is the UUIDv7 of its slot.
SEED_RUNS = """
INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
                  duration_ms)
SELECT (lpad(to_hex((extract(epoch FROM s.at) * 1000)::bigint), 12, '0') || '7' || substr(s.r, 1, 3)
        || '8' || substr(s.r, 4, 15))::uuid,
       s.job_id, s.at, 'schedule', 1, 'succeeded', 'plans', s.at, s.at, 0
FROM (
    SELECT j.id AS job_id,
           date_trunc('second', now()) - make_interval(secs => g.i * %(step)s::double precision) AS at,
           md5(random()::text) AS r
    FROM generate_series(1, %(per_job)s) AS g(i)
    CROSS JOIN (SELECT id FROM jobs ORDER BY id LIMIT %(run_jobs)s) AS j
) AS s
"""


@pytest.fixture(scope="class")
def planned(server_url: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    """One database per class with enough rows that plans are real, analysed; a connection to it."""
    name = f"sched_plans_{os.getpid()}"
    with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    conn = psycopg.connect(url_for(server_url, name), autocommit=True)
    try:
        seed_jobs(conn, JOBS, prefix="plan-", next_run_at=NEXT_RUN_AT)
        conn.execute(
            SEED_RUNS.encode(),
            {"per_job": RUNS_PER_JOB, "run_jobs": RUN_JOBS, "step": RUN_SPAN_S // RUNS_PER_JOB},
        )
        # A few runs still pending or running, as a live history has.
        conn.execute(b"UPDATE runs SET status = 'running' WHERE attempt = 1 AND random() < 0.002")
        conn.execute(b"UPDATE runs SET status = 'pending' WHERE attempt = 1 AND random() < 0.002")
        conn.execute(b"ANALYZE jobs")
        conn.execute(b"ANALYZE runs")
        yield conn
    finally:
        conn.close()
        with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plan_of(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of the planner's choice for a named query with these parameters."""
    row = conn.execute(b"EXPLAIN (FORMAT JSON) " + q(name), params).fetchone()
    assert row is not None
    nodes: list[dict[str, Any]] = []
    stack = [row[0][0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def indexes_read(nodes: list[dict[str, Any]], table: str) -> dict[str, set[str]]:
    """For each scan of ``table`` (or its partitions): the indexes it reads, directly or by bitmap."""
    found: dict[str, set[str]] = {}
    for index, node in enumerate(nodes):
        relation = node.get("Relation Name", "")
        if not relation.startswith(table):
            continue
        if "Index Name" in node:
            found.setdefault(relation, set()).add(node["Index Name"])
        elif node["Node Type"] == "Bitmap Heap Scan":
            below = nodes[index + 1 :]
            found.setdefault(relation, set()).update(
                n["Index Name"] for n in below if n["Node Type"] == "Bitmap Index Scan"
            )
        else:
            found.setdefault(relation, set()).add(node["Node Type"])
    return found


def partitions_of(conn: psycopg.Connection[Any], index: str) -> set[str]:
    """An index on the partitioned runs table and its per-partition indexes."""
    rows = conn.execute(b"SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass)", (index,))
    return {row[0] for row in rows}


def partitions_with_rows(conn: psycopg.Connection[Any]) -> set[str]:
    """The runs partitions the seed filled (empty ones may be planned any way: they cost nothing)."""
    rows = conn.execute(b"SELECT tableoid::regclass::text FROM runs GROUP BY 1")
    return {row[0] for row in rows}


def job_list_params(after_name: str) -> dict[str, Any]:
    """job_list's parameters as the store passes them for a page without filters."""
    return {
        "namespace": "default",
        "after_name": after_name,
        "prefix_low": "",
        "prefix_high": "\x7f",
        "labels": "{}",
        "paused": None,
        "limit": 50,
    }


class TestHotQueriesUseTheirIndexes:
    """The planner picks, unforced, the index each hot query was shaped for.

    With 20,000 jobs, 50,000 runs and fresh statistics; a regression here turns a millisecond query
    into a scan of the table.
    """

    @pytest.mark.parametrize("now", [None, datetime(2026, 1, 1, tzinfo=UTC)], ids=["db clock", "passed"])
    def test_the_claim_walks_jobs_due_idx_in_slot_order(self, planned, now):
        nodes = plan_of(planned, "job_claim_due", {"limit": 500, "now": now, "lookahead_s": 0.5})

        assert indexes_read(nodes, "jobs") == {"jobs": {"jobs_due_idx"}}
        assert not any(n["Node Type"] == "Sort" for n in nodes)

    def test_the_first_jobs_page_walks_the_namespace_name_index(self, planned):
        nodes = plan_of(planned, "job_list", job_list_params(""))

        assert indexes_read(nodes, "jobs") == {"jobs": {"jobs_namespace_name_key"}}
        assert not any(n["Node Type"] == "Sort" for n in nodes)

    def test_a_deep_jobs_page_starts_from_the_cursor_in_the_same_index(self, planned):
        last = planned.execute(b"SELECT name FROM jobs ORDER BY name DESC LIMIT 100").fetchall()
        nodes = plan_of(planned, "job_list", job_list_params(last[-1][0]))

        assert indexes_read(nodes, "jobs") == {"jobs": {"jobs_namespace_name_key"}}

    def test_a_name_prefix_is_a_range_of_the_same_index(self, planned):
        params = job_list_params("") | {"prefix_low": "plan-1", "prefix_high": "plan-1\x7f"}
        nodes = plan_of(planned, "job_list", params)

        assert indexes_read(nodes, "jobs") == {"jobs": {"jobs_namespace_name_key"}}

    def test_a_jobs_history_reads_runs_slot_key_in_every_partition_holding_rows(self, planned):
        job_id = planned.execute(b"SELECT id FROM jobs ORDER BY id LIMIT 1").fetchone()[0]
        params = {
            "job_id": job_id,
            "before_slot": "infinity",
            "before_attempt": 2**31 - 1,
            "statuses": None,
            "limit": 50,
        }
        read = indexes_read(plan_of(planned, "run_list_for_job", params), "runs")

        filled = partitions_with_rows(planned)
        assert len(filled) >= 3
        slot_key = partitions_of(planned, "runs_slot_key")
        misread = {
            relation: read.get(relation)
            for relation in filled
            if not read.get(relation, {"none"}) <= slot_key
        }
        assert misread == {}

    @pytest.mark.parametrize(
        ("name", "extra"),
        [("run_cancel_active_for_job", {"reason": "replaced"}), ("run_has_queued", {})],
    )
    def test_a_jobs_unfinished_runs_are_read_on_runs_active_job_idx(self, planned, name, extra):
        # Written with run_status_unfinished(status); the index with the literal list. The planner
        # must still prove the index's predicate from the inlined function.
        job_id = planned.execute(b"SELECT job_id FROM runs WHERE status = 'running' LIMIT 1").fetchone()[0]
        read = indexes_read(plan_of(planned, name, {"job_id": job_id, **extra}), "runs")

        active = partitions_of(planned, "runs_active_job_idx")
        misread = {
            relation: read.get(relation)
            for relation in partitions_with_rows(planned)
            if not read.get(relation, {"none"}) <= active
        }
        assert misread == {}

    def test_a_run_by_id_is_one_primary_key_lookup_in_one_partition(self, planned):
        run_id, slot = planned.execute(
            b"SELECT id, scheduled_for FROM runs ORDER BY id LIMIT 1 OFFSET 20000"
        ).fetchone()
        params = {
            "id": run_id,
            "slot_from": slot,
            "slot_to": slot + timedelta(milliseconds=1),
            "namespace": "default",
        }
        read = indexes_read(plan_of(planned, "run_get", params), "runs")

        assert len(read) == 1
        [(_, indexes)] = read.items()
        assert indexes <= partitions_of(planned, "runs_pkey")
        assert indexes
