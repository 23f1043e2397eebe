"""The web console at size: server time of its pages with 100,000 jobs in one namespace.

Seeds 100,000 jobs (1% paused, 1% failing) and 50 hourly slots for each of the first 5,000 jobs by
name and of the jobs on a deep page (a tenth of the slots fail once and succeed on a retry), then
times each page in-process (the ASGI app without a network between, so the figure is the server's:
queries, SVG and template). The jobs page counts every state of the namespace on each request; its
orders other than by name have no index and scan the namespace. Also times GET /runs and prints
the plan of its query. Writes bench/results/ui.json.

    .venv/bin/python -m bench.ui [--jobs 100000] [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, seed_jobs
from scheduler.api.app import create_app
from scheduler.config import load_settings
from scheduler.db.queries import q
from scheduler.operations.pages import encode_cursor

DB = "bench_ui"
TARGET_MS = 200.0
CONSOLE_MIX = [
    ("*/15 * * * *", "Europe/Berlin"),
    ("0 9 * * 1", "America/New_York"),
    ("30 2 * * *", "America/New_York"),
    ("@every 1h", "UTC"),
    ("0 */6 * * *", "Asia/Tokyo"),
]

# Fifty finished runs an hour apart for each chosen job (ids are UUIDv7 of the slot, as the runners
# make them): about a tenth fail, lateness and duration vary.
SEED_RUNS = """
INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
                  duration_ms, http_status)
SELECT (lpad(to_hex((extract(epoch FROM s.slot) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
       j.id, s.slot, 'schedule', 1,
       CASE WHEN random() < 0.1 THEN 'failed' ELSE 'succeeded' END::run_status, 'bench:1',
       s.slot + make_interval(secs => random() * 0.4), s.slot + make_interval(secs => 0.5 + random()),
       (100 + random() * 900)::int, 200
FROM (SELECT id FROM jobs WHERE name = ANY(%(names)s)) j
CROSS JOIN LATERAL (
    SELECT date_trunc('hour', now()) - make_interval(hours => h) AS slot FROM generate_series(1, 50) AS h
) s
"""
# Each failed first attempt gets a retry a few seconds later that succeeds: slots, not attempts.
SEED_RETRIES = """
INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
                  duration_ms, http_status)
SELECT (lpad(to_hex((extract(epoch FROM scheduled_for) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
       job_id, scheduled_for, 'retry', 2, 'succeeded', 'bench:1', started_at + interval '5 s',
       finished_at + interval '5 s', duration_ms, 200
FROM runs WHERE attempt = 1 AND status = 'failed'
"""
MARK_JOBS = """
UPDATE jobs SET paused = (abs(hashtext(name)) % 100 = 0),
                next_run_at = CASE WHEN abs(hashtext(name)) % 100 = 0 THEN NULL ELSE next_run_at END,
                last_run_status = CASE WHEN abs(hashtext(name)) % 100 = 1 THEN 'failed'
                                       ELSE 'succeeded' END::run_status,
                last_run_id = gen_random_uuid(), last_run_scheduled_for = date_trunc('hour', now()),
                last_run_finished_at = date_trunc('hour', now())
"""


def seed(jobs: int) -> tuple[str, list[str]]:
    """Make the database; return its URL and the names of the deep page's jobs."""
    url = fresh_database(DB)
    seed_jobs(url, jobs, first=datetime.now(UTC) + timedelta(hours=1), prefix="job-", schedules=CONSOLE_MIX)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MARK_JOBS.encode())
        names = [row[0] for row in conn.execute(b"SELECT name FROM jobs ORDER BY name").fetchall()]
        deep = names[len(names) * 3 // 5 : len(names) * 3 // 5 + 50]
        with_runs = names[:5000] + deep
        for start in range(0, len(with_runs), 1000):
            conn.execute(SEED_RUNS.encode(), {"names": with_runs[start : start + 1000]})
        conn.execute(SEED_RETRIES.encode())
        conn.execute(b"VACUUM ANALYZE jobs")
        conn.execute(b"VACUUM ANALYZE runs")
    return url, deep


async def time_pages(url: str, pages: list[tuple[str, str]], requests: int) -> list[dict[str, Any]]:
    """Median, p95 and max server time of each page over ``requests`` requests (after a warm-up)."""
    settings = load_settings(
        {"SCHEDULER_DATABASE_URL": url, "SCHEDULER_AUTH": "off", "SCHEDULER_LOG_LEVEL": "warning"}
    )
    app = create_app(settings)
    results = []
    async with AsyncTestClient(app=app) as client:
        for label, path in pages:
            for _ in range(3):
                warm = await client.get(path)
                if warm.status_code != 200:
                    raise RuntimeError(f"{path} answered {warm.status_code}: {warm.text[:300]}")
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                answer = await client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path} answered {answer.status_code}")
            times.sort()
            results.append(
                {
                    "page": label,
                    "path": path,
                    "median_ms": statistics.median(times),
                    "p95_ms": times[max(0, round(len(times) * 0.95) - 1)],
                    "max_ms": times[-1],
                    "bytes": len(answer.content),
                }
            )
    return results


def plan_of_runs_list(url: str) -> str:
    """EXPLAIN ANALYZE of GET /runs's first page (the namespace-wide listing)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            b"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + q("run_list_namespace"),
            {
                "namespace": "default",
                "before_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "before_slot": datetime.now(UTC) + timedelta(hours=1),
                "since": datetime(1, 1, 2, tzinfo=UTC),
                "labels": "{}",
                "statuses": None,
                "trigger": None,
                "limit": 50,
            },
        ).fetchall()
    return "\n".join(row[0] for row in rows)


def main() -> None:
    """Seed, time the pages, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the table
    started = time.perf_counter()
    url, deep = seed(args.jobs)
    seeded_s = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        some = conn.execute(b"SELECT id FROM jobs WHERE name = %s", (deep[0],)).fetchone()
        run_count = conn.execute(b"SELECT count(*) FROM runs").fetchone()
        middle = conn.execute(
            b"SELECT name, next_run_at FROM jobs WHERE next_run_at IS NOT NULL ORDER BY next_run_at, name"
            b" OFFSET %s LIMIT 1",
            (args.jobs // 2,),
        ).fetchone()
    job_id = some[0] if some else None
    next_cursor = encode_cursor(f"next|{middle[1].isoformat()}|{middle[0]}") if middle else ""
    pages = [
        ("jobs, first page", "/ui/jobs"),
        ("jobs, deep page (60%)", f"/ui/jobs?cursor={encode_cursor(deep[0])}"),
        ("jobs, by next run", "/ui/jobs?sort=next"),
        ("jobs, by last run", "/ui/jobs?sort=last"),
        ("jobs, by created", "/ui/jobs?sort=created"),
        ("jobs, by next run, a later page", f"/ui/jobs?sort=next&cursor={next_cursor}"),
        ("jobs, name prefix", "/ui/jobs?q=job-50000-"),
        ("jobs, label filter (none match)", "/ui/jobs?label=team:none"),
        ("jobs, paused (1%)", "/ui/jobs?state=paused"),
        ("jobs, failing (1%)", "/ui/jobs?state=failing"),
        ("one job", f"/ui/jobs/{job_id}"),
        ("runs, all", "/ui/runs"),
        ("runs, failed in 24 h", "/ui/runs?status=failed&window=24h"),
        ("API GET /runs", "/runs?limit=50"),
    ]
    results = asyncio.run(time_pages(url, pages, args.requests))
    plan = plan_of_runs_list(url)
    print_table(
        f"Console server time, {args.jobs:,} jobs, {run_count[0] if run_count else 0:,} runs "
        f"(seeded in {seeded_s:.0f} s; {args.requests} requests each; target < {TARGET_MS:.0f} ms)",
        ["page", "median ms", "p95 ms", "max ms", "KiB"],
        [[r["page"], r["median_ms"], r["p95_ms"], r["max_ms"], r["bytes"] / 1024] for r in results],
    )
    print("\nGET /runs first page plan:\n" + plan)
    path = write_json(
        "ui",
        {
            "jobs": args.jobs,
            "runs": run_count[0] if run_count else 0,
            "requests_per_page": args.requests,
            "target_ms": TARGET_MS,
            "pages": results,
            "runs_list_plan": plan,
            "note": "in-process ASGI timing (server time only); the machine was shared with other work",
        },
    )
    print(f"\nwrote {path}")
    if not args.keep:
        drop_database(DB)


if __name__ == "__main__":
    main()
