"""Scale: the hot queries' plans and the API's page latency with 1,000,000 jobs and 10,000,000 runs.

    python -m bench.scale [--jobs 1000000] [--runs 10000000] [--run-jobs 1000] [--days 4] [--requests 200]

Seeds N jobs (1 % of them due, the rest due tomorrow) and R runs for the first J jobs, R/J runs each,
spread evenly over the last D days so several daily partitions hold them (one INSERT ... SELECT per
chunk from generate_series; ids are UUIDv7 of their slot, as the runner makes them), then VACUUM
ANALYZE. It EXPLAIN ANALYZEs the named queries with real parameters (the claim inside a transaction
that is rolled back) and checks each uses its index: job_claim_due on jobs_due_idx, job_list (first
page and a deep cursor) on jobs_namespace_name_key, run_list_for_job (first page and a deep cursor) on
each partition's runs_slot_key index, run_get on one partition's primary key; no Seq Scan on a table
holding rows. Then it starts the API and times sequential requests for the first and a deep page of
jobs and of one job's runs; the target is a deep page within 2x of the first (p50).

Seeding 10M runs is most of the time on a 2-core machine; `--runs` scales it down (the time it took
is printed and kept in the JSON). Prints tables and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, seed_jobs
from bench.processes import api_server
from bench.summary import figure, print_targets
from scheduler.db.queries import q
from scheduler.operations.pages import encode_cursor

DB = "scheduler_bench_scale"
PAGE = 50
DEEP_TARGET = 2.0
DUE_SHARE = 0.01

# R/J runs per job, one every `step` seconds ending now, generated slot-major so the UUIDv7 primary
# keys arrive in order; the id's first 48 bits are the slot in milliseconds, then version 7, the
# variant and random bits.
SEED_RUNS = """
INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at,
                  finished_at, duration_ms, http_status, output)
SELECT (lpad(to_hex((extract(epoch FROM s.at) * 1000)::bigint), 12, '0') || '7' || substr(s.r, 1, 3)
        || '8' || substr(s.r, 4, 15))::uuid,
       s.job_id, s.at, 'schedule', 1, 'succeeded', 'bench', s.at, s.at + interval '12 ms', 12, 200, 'ok'
FROM (
    SELECT j.id AS job_id,
           %(end)s - make_interval(secs => (%(per_job)s::integer - g.i) * %(step)s::double precision) AS at,
           md5(random()::text) AS r
    FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS g(i)
    CROSS JOIN (SELECT id FROM jobs ORDER BY id LIMIT %(run_jobs)s::integer) AS j
) AS s
"""


def seed(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Seed jobs and runs; return how long each step took."""
    took: dict[str, float] = {}
    started = time.perf_counter()
    due = max(1, int(args.jobs * DUE_SHARE))
    seed_jobs(url, args.jobs - due, first=now() + timedelta(days=1))
    seed_jobs(url, due, first=now() - timedelta(minutes=1), prefix="due-")
    took["jobs_s"] = time.perf_counter() - started
    print(f"  seeded {args.jobs:,} jobs in {took['jobs_s']:.1f} s", flush=True)

    per_job = max(1, args.runs // args.run_jobs)
    step = max(1, int(args.days * 86_400 / per_job))
    end = now().replace(microsecond=0)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"SET synchronous_commit = off")
        chunk = max(1, per_job // 10)
        for lo in range(1, per_job + 1, chunk):
            hi = min(per_job, lo + chunk - 1)
            conn.execute(
                SEED_RUNS.encode(),
                {"end": end, "per_job": per_job, "step": step, "lo": lo, "hi": hi, "run_jobs": args.run_jobs},
            )
            done = hi * args.run_jobs
            rate = done / (time.perf_counter() - started)
            print(f"    runs {done:>12,} of {per_job * args.run_jobs:,}  ({rate:,.0f} rows/s)", flush=True)
        took["runs_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(b"VACUUM ANALYZE runs")
        conn.execute(b"VACUUM ANALYZE jobs")
        took["vacuum_analyze_s"] = time.perf_counter() - started
    print(
        f"  seeded {per_job * args.run_jobs:,} runs in {took['runs_s']:.1f} s, "
        f"VACUUM ANALYZE {took['vacuum_analyze_s']:.1f} s",
        flush=True,
    )
    return took


# ------------------------------------------------------------------------------------ the plans


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


class Catalog:
    """What the plan checks need to know about the tables: partition indexes and row counts."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        """Read the index partitions and the relations' row estimates once."""
        self.tree: dict[str, set[str]] = {}
        for parent in ("runs_slot_key", "runs_pkey"):
            rows = conn.execute(
                b"SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass)", (parent,)
            )
            self.tree[parent] = {row[0] for row in rows}
        self.tuples = dict(
            conn.execute(
                b"SELECT relname, reltuples FROM pg_class WHERE relname = 'jobs' OR relname LIKE 'runs%%'"
            )
        )

    def family(self, index: str) -> str:
        """The index an index (or an index partition) belongs to."""
        for parent, members in self.tree.items():
            if index in members:
                return parent
        return index


def scan_indexes(node: dict[str, Any]) -> set[str]:
    """The indexes a scan node reads: its own, or those of the bitmap index scans under it."""
    if "Index Name" in node:
        return {node["Index Name"]}
    return {n["Index Name"] for n in plan_nodes(node) if n["Node Type"] == "Bitmap Index Scan"}


def check_plan(plan: dict[str, Any], expected: str, catalog: Catalog) -> dict[str, Any]:
    """Summarise one plan: indexes used, partitions scanned, Seq Scans on tables with rows, verdict.

    It passes when every scan of the expected index's table that holds rows reads that index
    (directly or through a bitmap) and no table holding rows is read by a Seq Scan. An empty
    partition may be scanned any way: it costs nothing.
    """
    scans = [n for n in plan_nodes(plan["Plan"]) if "Relation Name" in n]
    table = "runs" if expected.startswith("runs") else "jobs"
    indexes = sorted({catalog.family(index) for n in scans for index in scan_indexes(n)})
    seq_big = sorted(
        {
            n["Relation Name"]
            for n in scans
            if n["Node Type"] == "Seq Scan" and catalog.tuples.get(n["Relation Name"], 0) > 0
        }
    )
    partitions = sorted({n["Relation Name"] for n in scans if n["Relation Name"].startswith("runs")})
    with_rows = [
        n
        for n in scans
        if n["Relation Name"].startswith(table) and catalog.tuples.get(n["Relation Name"], 0) > 0
    ]
    uses = bool(with_rows) and all(
        {catalog.family(index) for index in scan_indexes(n)} == {expected} for n in with_rows
    )
    return {
        "indexes": indexes,
        "seq_scans_on_tables_with_rows": seq_big,
        "runs_partitions_scanned": len(partitions),
        "planning_ms": plan.get("Planning Time"),
        "execution_ms": plan.get("Execution Time"),
        "expected_index": expected,
        "ok": uses and not seq_big,
    }


def explain(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE a named query in a transaction that is rolled back (the claim takes row locks)."""
    try:
        row = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q(name), params).fetchone()
    finally:
        conn.rollback()
    if row is None:
        raise RuntimeError(f"EXPLAIN {name} returned nothing")
    plan: dict[str, Any] = row[0][0]
    return plan


def plan_cases(
    *, busy: Any, deep_after: str, deep_run: Any, middle_run: Any
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The hot queries EXPLAINed: (query, case, the index it must use, its parameters).

    ``busy`` is the job with the long history, ``deep_after`` the name a deep jobs page starts
    after, ``deep_run`` and ``middle_run`` (id, scheduled_for, attempt) rows of ``busy``'s history.
    tests/unit/test_bench_scale.py checks the parameters name exactly what each query reads.
    """
    job_list = {
        "namespace": "default",
        "prefix_low": "",
        "prefix_high": "\x7f",
        "labels": "{}",
        "paused": None,
        "limit": PAGE,
    }
    run_list = {"job_id": busy, "statuses": None, "limit": PAGE}
    return [
        (
            "job_claim_due",
            "claim (batch 500)",
            "jobs_due_idx",
            {"limit": 500, "now": None, "lookahead_s": 0.5},
        ),
        ("job_list", "jobs, first page", "jobs_namespace_name_key", job_list | {"after_name": ""}),
        (
            "job_list",
            "jobs, deep cursor",
            "jobs_namespace_name_key",
            job_list | {"after_name": deep_after},
        ),
        (
            "run_list_for_job",
            "runs of a job, first page",
            "runs_slot_key",
            run_list | {"before_slot": "infinity", "before_attempt": 2**31 - 1},
        ),
        (
            "run_list_for_job",
            "runs of a job, deep cursor",
            "runs_slot_key",
            run_list | {"before_slot": deep_run[1], "before_attempt": deep_run[2]},
        ),
        (
            "run_get",
            "one run by id",
            "runs_pkey",
            {
                "id": middle_run[0],
                "slot_from": middle_run[1],
                "slot_to": middle_run[1] + timedelta(milliseconds=1),
                "namespace": "default",
            },
        ),
    ]


def plans(url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """EXPLAIN every hot query; return the checks and the ids and cursors the API part reuses."""
    with psycopg.connect(url) as conn:
        catalog = Catalog(conn)
        ids = [row[0] for row in conn.execute(b"SELECT id FROM jobs ORDER BY id")]
        names = [row[0] for row in conn.execute(b"SELECT name FROM jobs ORDER BY name")]
        deep_after = names[len(names) - PAGE - 1]
        busy = ids[0]  # the seed gives runs to the first jobs by id
        runs = conn.execute(
            b"SELECT id, scheduled_for, attempt FROM runs WHERE job_id = %s"
            b" ORDER BY scheduled_for DESC, attempt DESC",
            (busy,),
        ).fetchall()
        conn.rollback()
        # Nine tenths down the history: deep, with many pages still behind it.
        deep_run = runs[max(0, len(runs) - max(PAGE + 1, len(runs) // 10))]
        middle_run = runs[len(runs) // 2]
        cases = plan_cases(busy=busy, deep_after=deep_after, deep_run=deep_run, middle_run=middle_run)
        checks = []
        for name, title, expected, params in cases:
            found = check_plan(explain(conn, name, params), expected, catalog)
            checks.append({"query": name, "case": title, **found})
    reuse = {
        "deep_jobs_cursor": encode_cursor(str(deep_after)),
        "busy_job": str(busy),
        "deep_runs_cursor": encode_cursor(f"{deep_run[1].isoformat()}|{deep_run[2]}"),
        "runs_of_busy_job": len(runs),
    }
    return checks, reuse


# ------------------------------------------------------------------------------------- the API


def latencies(client: httpx.Client, path: str, count: int) -> dict[str, Any]:
    """Time ``count`` sequential GETs of one path (after two untimed ones); p50 and p99 in ms."""
    for _ in range(2):
        client.get(path).raise_for_status()
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    times.sort()
    return {
        "requests": count,
        "items": len(response.json()["items"]),
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def api_pages(url: str, reuse: dict[str, Any], count: int) -> dict[str, dict[str, Any]]:
    """First and deep pages of jobs and of one job's runs, timed through the real API."""
    job = reuse["busy_job"]
    paths = {
        "jobs, first page": f"/jobs?limit={PAGE}",
        "jobs, deep page": f"/jobs?limit={PAGE}&cursor={reuse['deep_jobs_cursor']}",
        "runs, first page": f"/jobs/{job}/runs?limit={PAGE}",
        "runs, deep page": f"/jobs/{job}/runs?limit={PAGE}&cursor={reuse['deep_runs_cursor']}",
    }
    with api_server(url, workers=1) as base, httpx.Client(base_url=base, timeout=30) as client:
        return {title: {"path": path, **latencies(client, path, count)} for title, path in paths.items()}


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs seeded")
    parser.add_argument("--runs", type=int, default=10_000_000, help="run rows seeded")
    parser.add_argument("--run-jobs", type=int, default=1_000, help="how many jobs the runs belong to")
    parser.add_argument("--days", type=float, default=4.0, help="the runs span this many days back from now")
    parser.add_argument("--requests", type=int, default=200, help="sequential API requests per page kind")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (to look at it)")
    args = parser.parse_args()
    args.run_jobs = min(args.run_jobs, args.jobs)

    total_started = time.perf_counter()
    url = fresh_database(DB)
    try:
        took = seed(url, args)
        checks, reuse = plans(url)
        pages = api_pages(url, reuse, args.requests)
    finally:
        if not args.keep:
            drop_database(DB)
    total_s = time.perf_counter() - total_started

    print_table(
        f"Query plans with {args.jobs:,} jobs and {args.runs:,} runs "
        f"({reuse['runs_of_busy_job']:,} for the job listed)",
        [
            "query",
            "case",
            "expected index",
            "indexes used",
            "partitions",
            "seq scans",
            "plan ms",
            "exec ms",
            "ok",
        ],
        [
            (
                c["query"],
                c["case"],
                c["expected_index"],
                ",".join(c["indexes"]),
                c["runs_partitions_scanned"],
                ",".join(c["seq_scans_on_tables_with_rows"]) or "-",
                c["planning_ms"],
                c["execution_ms"],
                "yes" if c["ok"] else "NO",
            )
            for c in checks
        ],
    )
    print_table(
        f"API, sequential GETs, {args.requests} each (1 worker)",
        ["page", "items", "p50 ms", "p99 ms"],
        [(title, p["items"], p["p50_ms"], p["p99_ms"]) for title, p in pages.items()],
    )
    jobs_ratio = pages["jobs, deep page"]["p50_ms"] / pages["jobs, first page"]["p50_ms"]
    runs_ratio = pages["runs, deep page"]["p50_ms"] / pages["runs, first page"]["p50_ms"]
    summary = [
        figure(
            "hot queries use their indexes",
            sum(c["ok"] for c in checks),
            f"of {len(checks)}",
            target="all, no Seq Scan",
            met=all(c["ok"] for c in checks),
        ),
        figure(
            "deep / first jobs page (p50)",
            round(jobs_ratio, 2),
            "x",
            target=f"<= {DEEP_TARGET:.0f}x",
            met=jobs_ratio <= DEEP_TARGET,
        ),
        figure(
            "deep / first runs page (p50)",
            round(runs_ratio, 2),
            "x",
            target=f"<= {DEEP_TARGET:.0f}x",
            met=runs_ratio <= DEEP_TARGET,
        ),
        figure("seeding runs", round(args.runs / took["runs_s"]), "rows/s"),
    ]
    print_targets(summary)
    print(f"\ntotal {total_s:.0f} s (seeding jobs {took['jobs_s']:.0f} s, runs {took['runs_s']:.0f} s)")
    path = write_json(
        "scale",
        {
            "jobs": args.jobs,
            "runs": args.runs,
            "run_jobs": args.run_jobs,
            "days": args.days,
            "seeding": took,
            "total_s": total_s,
            "plans": checks,
            "api_pages": pages,
            "summary": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
