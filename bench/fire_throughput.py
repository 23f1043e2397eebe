"""Fire throughput: K runner processes over N due jobs, beside the database ceiling.

    python -m bench.fire_throughput [--jobs 1000000] [--runners 1,2,4] [--window 20] [--quick]

Seeds N jobs (a mix of second-level cron and @every schedules in several zones, the `log` action
sent to a null sink), all due, then runs K runners and counts the runs they complete in a fixed
window. In the same run it measures the database ceiling: the same claim / advance / insert
statements, through the store's functions, driven by 2 processes with the next times already
known, no schedule math and no action. Targets (issue 25): >= 22,000 fires/s with 2 runners over
1,000,000 jobs, and >= 0.8 of the ceiling measured beside them. Prints a table and writes
bench/results/fire_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from datetime import timedelta
from typing import Any

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, runners, scalar, seed_jobs
from bench.summary import figure, print_targets
from scheduler.db import connections, store
from scheduler.domain.models import RunStatus, RunTrigger
from scheduler.ids import uuid7

DB = "scheduler_bench_fire"
CEILING_BATCH = 500
TARGET_FIRES_PER_S = 22_000
TARGET_SHARE_OF_CEILING = 0.8


def measure_runners(url: str, count: int, window_s: float, warmup_s: float) -> dict[str, Any]:
    """Run ``count`` runners; return completed runs per second over the window."""
    with runners(url, count):
        time.sleep(warmup_s)
        start = now()
        time.sleep(window_s)
        end = now()
    done = scalar(
        url,
        "SELECT count(*) FROM runs WHERE status = 'succeeded' AND finished_at >= %s AND finished_at < %s",
        (start, end),
    )
    seconds = (end - start).total_seconds()
    return {"runners": count, "completed": done, "seconds": seconds, "fires_per_s": done / seconds}


async def _ceiling_loop(url: str, stop_at: float, counter: Any) -> None:
    runner = f"ceiling-{multiprocessing.current_process().pid}"
    conn = await connections.connect(url, application_name=runner)
    async with conn:
        while time.monotonic() < stop_at:
            async with conn.transaction():
                due, _ = await store.job_claim_due(conn, limit=CEILING_BATCH)
                if not due:
                    continue
                # The next times are known (a second on): no schedule math, and the runs are
                # recorded final, as a `log` fire is, with no action executed.
                runs = [
                    store.NewRun(
                        id=uuid7(job.next_run_at),
                        job_id=job.id,
                        scheduled_for=job.next_run_at,
                        trigger=RunTrigger.SCHEDULE,
                        attempt=1,
                        status=RunStatus.SUCCEEDED,
                    )
                    for job in due
                ]
                moves = [
                    store.Move(job_id=job.id, moves=True, next_run_at=job.next_run_at + timedelta(seconds=1))
                    for job in due
                ]
                await store.run_record_many(conn, runs, moves, runner=runner, lease_s=30.0)
            with counter.get_lock():
                counter.value += len(due)


def _ceiling_worker(url: str, stop_at: float, counter: Any) -> None:
    """Claim, advance and record due jobs the way a runner does, without schedule math or actions."""
    try:
        import uvloop  # noqa: PLC0415 - the runner's event loop when it is there
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(_ceiling_loop(url, stop_at, counter))
        return
    uvloop.run(_ceiling_loop(url, stop_at, counter))


def measure_ceiling(url: str, window_s: float, processes: int = 2) -> dict[str, Any]:
    """Drive the claim statements from ``processes`` connections; return rows per second."""
    counter = multiprocessing.Value("q", 0)
    stop_at = time.monotonic() + window_s
    workers = [
        multiprocessing.Process(target=_ceiling_worker, args=(url, stop_at, counter))
        for _ in range(processes)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.monotonic() - started
    if any(worker.exitcode for worker in workers):
        raise RuntimeError("a ceiling worker failed; see its traceback above")
    return {
        "connections": processes,
        "rows": counter.value,
        "seconds": seconds,
        "rows_per_s": counter.value / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runners", default="1,2,4")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--quick", action="store_true", help="100,000 jobs, 2 runners, 8 s windows (a smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.runners = min(args.jobs, 100_000), "2"
        args.window, args.warmup = min(args.window, 8.0), min(args.warmup, 3.0)
    counts = [int(k) for k in args.runners.split(",")]

    # A fresh seed for every measurement: a run leaves dead rows and a grown run history behind,
    # and the next configuration would pay for them.
    results: list[dict[str, Any]] = []
    for count in counts:
        url = fresh_database(DB)
        seed_jobs(url, args.jobs, first=now() - timedelta(seconds=1))
        results.append(measure_runners(url, count, args.window, args.warmup))
        print(f"  {count} runner(s): {results[-1]['fires_per_s']:,.0f} fires/s", flush=True)
    url = fresh_database(DB)
    seed_jobs(url, args.jobs, first=now() - timedelta(seconds=1))
    ceiling = measure_ceiling(url, args.window)
    drop_database(DB)

    rows = [
        (
            r["runners"],
            r["completed"],
            r["seconds"],
            r["fires_per_s"],
            r["fires_per_s"] / ceiling["rows_per_s"],
        )
        for r in results
    ]
    rows.append(("ceiling (2 conns)", ceiling["rows"], ceiling["seconds"], ceiling["rows_per_s"], 1.0))
    print_table(
        f"Fire throughput, {args.jobs:,} due jobs, log action to a null sink",
        ["runners", "runs completed", "window s", "fires/s", "ratio to ceiling"],
        rows,
    )
    two = next((r["fires_per_s"] for r in results if r["runners"] == 2), None)
    summary = []
    if two is not None:
        ratio = two / ceiling["rows_per_s"]
        summary = [
            figure(
                f"log fires/s with 2 runners over {args.jobs:,} jobs",
                round(two),
                "/s",
                target=f">= {TARGET_FIRES_PER_S:,}",
                met=two >= TARGET_FIRES_PER_S,
            ),
            figure(
                "2 runners / database ceiling measured beside them",
                round(ratio, 3),
                "",
                target=f">= {TARGET_SHARE_OF_CEILING:g}",
                met=ratio >= TARGET_SHARE_OF_CEILING,
            ),
        ]
    summary.append(figure("database ceiling (2 connections)", round(ceiling["rows_per_s"]), "/s"))
    print_targets(summary, every_figure=True)
    path = write_json(
        "fire_throughput",
        {
            "quick": args.quick,
            "jobs": args.jobs,
            "window_s": args.window,
            "runners": results,
            "database_ceiling": ceiling,
            "summary": summary,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
