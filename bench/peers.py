"""Peers on the same PostgreSQL: APScheduler 3 (SQLAlchemy job store) and pgqueuer, beside our fire rate.

    python -m bench.peers [--aps-jobs 10000] [--aps-threads 20] [--pgq-jobs 50000] [--pgq-workers 2]

APScheduler 3: N interval jobs (hourly, a trivial function) stored with SQLAlchemyJobStore (psycopg 3),
all due when the paused scheduler resumes; fires/s is N over the time until every job has fired
once, on a thread-pool executor. pgqueuer: M no-op jobs enqueued, then K worker processes drain
them (dequeue batch 100, asyncpg); jobs/s is M over the time from the first worker's start to the
last one's exit. Each peer gets its own fresh database on the bench server.

Our figure comes from bench/results/fire_throughput.json (2 runners): run `python -m
bench.fire_throughput` first. Targets: ours >= 1.7x pgqueuer's drain and >= 20x APScheduler's.
Prints a table and writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.common import RESULTS, print_table, write_json
from bench.database import drop_database, fresh_database
from bench.summary import figure, print_targets

APS_DB = "scheduler_bench_peer_aps"
PGQ_DB = "scheduler_bench_peer_pgq"
PGQ_TARGET = 1.7
APS_TARGET = 20.0
OUR_RUNNERS = 2


def connect_params(url: str) -> dict[str, Any]:
    """The bench database's connection string (URL or key=value) as keyword arguments for other drivers."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    found: dict[str, Any] = {
        "host": info.get("host"),
        "port": int(str(info["port"])) if info.get("port") else None,
        "user": info.get("user"),
        "password": info.get("password"),
        "database": info.get("dbname"),
    }
    return {key: value for key, value in found.items() if value is not None}


# ----------------------------------------------------------------------------------- APScheduler

_aps_fired = 0
_aps_lock = threading.Lock()
_aps_done = threading.Event()
_aps_expected = 0


def aps_tick() -> None:
    """The job every APScheduler job runs: count the fire, flag the last one."""
    global _aps_fired  # noqa: PLW0603 - the job function has nowhere else to count
    with _aps_lock:
        _aps_fired += 1
        if _aps_fired >= _aps_expected:
            _aps_done.set()


def measure_apscheduler(jobs: int, threads: int, timeout: float) -> dict[str, Any]:
    """Store ``jobs`` due interval jobs, resume the scheduler, time until each fired once."""
    from apscheduler.executors.pool import ThreadPoolExecutor  # noqa: PLC0415
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: PLC0415
    from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415
    from sqlalchemy.engine import URL  # noqa: PLC0415

    global _aps_expected, _aps_fired
    _aps_expected, _aps_fired = jobs, 0
    _aps_done.clear()
    url = fresh_database(APS_DB)
    # APScheduler logs every execution at INFO; the log would cost more than the jobs.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    parts = connect_params(url)
    sqlalchemy_url = URL.create(
        "postgresql+psycopg",
        username=parts.get("user"),
        password=parts.get("password"),
        host=parts.get("host"),
        port=parts.get("port"),
        database=parts.get("database"),
    )
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=sqlalchemy_url)},
        executors={"default": ThreadPoolExecutor(threads)},
        job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    try:
        due = datetime.now(UTC)
        started = time.perf_counter()
        for index in range(jobs):
            scheduler.add_job(aps_tick, "interval", hours=1, id=f"job-{index}", next_run_time=due)
        stored_s = time.perf_counter() - started
        print(f"  APScheduler: stored {jobs:,} jobs in {stored_s:.1f} s; resuming", flush=True)
        started = time.perf_counter()
        scheduler.resume()
        finished = _aps_done.wait(timeout)
        elapsed = time.perf_counter() - started
        fired = _aps_fired
    finally:
        scheduler.shutdown(wait=False)
        drop_database(APS_DB)
    return {
        "peer": "APScheduler 3 (SQLAlchemyJobStore, thread pool)",
        "jobs": jobs,
        "threads": threads,
        "fired": fired,
        "all_fired": finished,
        "seconds": elapsed,
        "store_seconds": stored_s,
        "per_s": fired / elapsed,
    }


# -------------------------------------------------------------------------------------- pgqueuer


async def _pgq_enqueue(dsn: str, jobs: int) -> None:
    import asyncpg  # noqa: PLC0415
    from pgqueuer import AsyncpgDriver, Queries  # noqa: PLC0415

    conn = await asyncpg.connect(**connect_params(dsn))
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        batch = 5_000
        for first in range(0, jobs, batch):
            size = min(batch, jobs - first)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    finally:
        await conn.close()


async def _pgq_drain(dsn: str, batch_size: int) -> dict[str, Any]:
    import asyncpg  # noqa: PLC0415
    from pgqueuer import AsyncpgDriver, Queries, QueueManager  # noqa: PLC0415
    from pgqueuer.types import QueueExecutionMode  # noqa: PLC0415

    done = 0
    conn = await asyncpg.connect(**connect_params(dsn))
    try:
        manager = QueueManager(Queries(AsyncpgDriver(conn)))

        @manager.entrypoint("noop")
        async def noop(_job: Any) -> None:
            nonlocal done
            done += 1

        started = time.time()
        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        ended = time.time()
    finally:
        await conn.close()
    return {"started": started, "ended": ended, "done": done}


def _pgq_worker(dsn: str, batch_size: int, out: Any) -> None:
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    out.put(asyncio.run(_pgq_drain(dsn, batch_size)))


def measure_pgqueuer(jobs: int, workers: int, batch_size: int, timeout: float) -> dict[str, Any]:
    """Enqueue ``jobs`` no-ops, drain them with ``workers`` processes; jobs per second of the drain."""
    url = fresh_database(PGQ_DB)
    try:
        asyncio.run(_pgq_enqueue(url, jobs))
        print(f"  pgqueuer: enqueued {jobs:,} jobs; draining with {workers} worker(s)", flush=True)
        spawn = multiprocessing.get_context("spawn")
        out = spawn.Queue()
        procs = [spawn.Process(target=_pgq_worker, args=(url, batch_size, out)) for _ in range(workers)]
        for proc in procs:
            proc.start()
        try:
            reports = [out.get(timeout=timeout) for _ in procs]
        finally:
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    finally:
        drop_database(PGQ_DB)
    done = sum(r["done"] for r in reports)
    seconds = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    return {
        "peer": f"pgqueuer (asyncpg, batch {batch_size})",
        "jobs": jobs,
        "workers": workers,
        "batch_size": batch_size,
        "fired": done,
        "all_fired": done >= jobs,
        "seconds": seconds,
        "per_s": done / seconds,
    }


# ------------------------------------------------------------------------------------------ main


def our_fires_per_s() -> float | None:
    """Our fires/s with 2 runners, from the last fire_throughput run."""
    path = RESULTS / "fire_throughput.json"
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    for entry in found.get("runners", []):
        if entry.get("runners") == OUR_RUNNERS:
            return float(entry["fires_per_s"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--aps-jobs", type=int, default=10_000, help="APScheduler jobs, all due")
    parser.add_argument("--aps-threads", type=int, default=20, help="APScheduler thread-pool size")
    parser.add_argument("--pgq-jobs", type=int, default=50_000, help="pgqueuer no-op jobs to drain")
    parser.add_argument(
        "--pgq-workers", type=int, default=2, help="pgqueuer worker processes (ours: 2 runners)"
    )
    parser.add_argument("--pgq-batch", type=int, default=100, help="pgqueuer dequeue batch size")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up on a peer after this many seconds"
    )
    args = parser.parse_args()

    peers = [
        measure_apscheduler(args.aps_jobs, args.aps_threads, args.timeout),
        measure_pgqueuer(args.pgq_jobs, args.pgq_workers, args.pgq_batch, args.timeout),
    ]
    for peer in peers:
        print(f"  {peer['peer']}: {peer['per_s']:,.0f} jobs/s", flush=True)
    ours = our_fires_per_s()
    aps, pgq = peers
    rows: list[tuple[Any, ...]] = [
        (p["peer"], p["fired"], p["seconds"], p["per_s"], f"{ours / p['per_s']:.1f}x" if ours else "")
        for p in peers
    ]
    if ours:
        rows.append((f"pg-scheduler, {OUR_RUNNERS} runners (fire_throughput.json)", "", "", ours, "1.0x"))
    print_table(
        "Peers on the same PostgreSQL: jobs fired (drained) per second",
        ["scheduler", "fired", "seconds", "jobs/s", "ours / peer"],
        rows,
    )
    summary = [
        figure("APScheduler 3 fires/s", round(aps["per_s"], 1), "fires/s"),
        figure("pgqueuer drain jobs/s", round(pgq["per_s"], 1), "jobs/s"),
    ]
    if ours is None:
        print("\nno bench/results/fire_throughput.json: run `python -m bench.fire_throughput` for the ratios")
    else:
        summary += [
            figure(
                "ours / pgqueuer drain",
                round(ours / pgq["per_s"], 2),
                "x",
                target=f">= {PGQ_TARGET}x",
                met=ours / pgq["per_s"] >= PGQ_TARGET,
            ),
            figure(
                "ours / APScheduler 3",
                round(ours / aps["per_s"], 1),
                "x",
                target=f">= {APS_TARGET:.0f}x",
                met=ours / aps["per_s"] >= APS_TARGET,
            ),
        ]
        print_targets(summary)
    path = write_json("peers", {"ours_fires_per_s": ours, "peers": peers, "summary": summary})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
