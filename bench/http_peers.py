"""HTTP peers: how many every-second HTTP jobs each scheduler keeps on schedule, same receiver, same run.

    python -m bench.http_peers [--peers bare,celery,aps-sql,aps-memory] [--peer-start 250] [--quick]

One nginx (bench/processes.py: Debian's nginx-light, 204 to everything) serves every scheduler in
the run; each POSTs a small JSON body to it once a second per job. For each scheduler the number
of jobs N starts at --peer-start (--aps-memory-start, --bare-start for those two) and doubles while
it keeps up (halves while it does not), then --refine bisections narrow the highest N kept up; ours
follows http_fires' levels and growth.

- ours: `http` jobs `* * * * * *`, 2 runners, as bench/http_fires.py measures them (runs table).
- the bare client ceiling: no scheduler and no database, --bare-processes processes (2, as our 2
  runners) on uvloop, each of whose loop, at every whole second, starts its share of N coroutines
  that each POST through one aiohttp.ClientSession (connection limit and calls in flight 1,000, our
  runner's default concurrency; a call's start is when it gets its place; the runner's collector
  thresholds). What this machine's Python HTTP client can keep on schedule against this nginx;
  ours over it is our share of the bare client. It starts at --bare-start (its N is far above the
  peers') and searches like a peer.
- Celery beat + one Celery worker on the machine's Redis (127.0.0.1:6379, database --redis-db,
  flushed before and after): beat holds N entries `schedule: 1.0` (every second) with its default
  persistent scheduler (a shelve file in a temp dir); the worker runs the gevent pool (the pool
  Celery documents for I/O-bound tasks), concurrency --celery-concurrency, and its task POSTs with
  one requests.Session (keep-alive pool of the same size); results ignored, logs at WARNING.
- APScheduler 3: AsyncIOScheduler, N jobs on a cron trigger `second='*'` (the default misfire grace
  of 1 s, coalescing on), an async job POSTing with one aiohttp.ClientSession (connection limit
  1,000, our runner's default concurrency), on the SQLAlchemyJobStore on the bench PostgreSQL
  (psycopg 3), and on the in-memory job store as its faster variant.

Lateness is measured the same way for all: the instant the job's code starts (just before the call)
minus the slot the scheduler meant to fire it. Ours: started_at - scheduled_for from the runs
table. APScheduler: the job returns time.time() at its start; the listener of EVENT_JOB_EXECUTED
subtracts the event's scheduled_run_time (the cron slot). Celery: beat's interval schedule has no
fixed grid (each next run is the last send + 1 s), so the slot is the instant beat itself held the
entry due (its last run + 1 s), stamped into the task's kwargs by a one-method subclass of beat's
PersistentScheduler; the task subtracts it from time.time() at its start. Beat's drift is thus not
lateness, but a beat that drifts sends fewer than N calls a second, which the second rule catches.

Kept up (every scheduler alike): over the slots of a steady window after a warm-up, calls answered
2xx >= 98 % of N x window, and p99 lateness <= 1 s. The figure is the highest N kept up; the ratios
are ours over each peer's, every one from the same run: issue 25's targets are >= 2.5x APScheduler's
in-memory variant and >= 10x its SQLAlchemy store (issue 9's, >= 10x Celery). Prints a table and
writes bench/results/http_peers.json. About 16 minutes with the defaults on 2 cores; --quick (6 s
windows, ours up to 6,000 jobs, peers up to 4,000, the bare client up to 8,000: lower bounds) about
6 minutes, a smoke run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import gc
import logging
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import http_fires
from bench.common import exit_on_sigterm, print_table, refine, write_json
from bench.database import drop_database, fresh_database
from bench.peers import connect_params
from bench.processes import CpuMeter, nginx, process
from bench.summary import figure, print_targets
from scheduler.collector import GC_THRESHOLDS

APS_DB = "scheduler_bench_http_aps"
BARE = "bare aiohttp client (no scheduler, no database)"
BARE_CONNECTIONS = 1000  # our runner's default SCHEDULER_RUNNER_CONCURRENCY
# Ours over each peer, from the same run: issue 25's targets (Celery's is issue 9's).
TARGET_RATIOS = {
    "APScheduler 3 (MemoryJobStore)": (2.5, ""),
    "APScheduler 3 (SQLAlchemyJobStore)": (10.0, ""),
    "Celery beat + worker (gevent, Redis)": (10.0, " (issue 9)"),
}
LEAST = 25  # the fewest jobs a peer is tried with
KEPT_UP_SHARE = http_fires.KEPT_UP_SHARE
KEPT_UP_P99_MS = http_fires.KEPT_UP_P99_MS
BODY = {"hello": "bench"}


def judge(  # noqa: PLR0917 - one level's facts, all needed
    name: str, jobs: int, calls: list[tuple[float, float, bool]], start: float, end: float, extra: Any
) -> dict[str, Any]:
    """Figures of one level from (slot, started, ok) records: the slots in [start, end) count."""
    window = end - start
    inside = [(slot, started, ok) for slot, started, ok in calls if start <= slot < end]
    late = sorted((started - slot) * 1000 for slot, started, _ in inside)
    succeeded = sum(1 for _, _, ok in inside if ok)
    p99 = late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)] if late else math.inf
    found = {
        "scheduler": name,
        "jobs": jobs,
        "window_s": window,
        "calls": len(inside),
        "succeeded": succeeded,
        "fires_per_s": succeeded / window,
        "p50_ms": statistics.median(late) if late else None,
        "p99_ms": p99 if late else None,
        "max_ms": late[-1] if late else None,
        "kept_up": succeeded >= KEPT_UP_SHARE * jobs * window and p99 <= KEPT_UP_P99_MS,
        **extra,
    }
    print(
        f"  {name}, {jobs:,} jobs: {found['fires_per_s']:,.0f} fires/s, p99 {p99:,.0f} ms"
        f"{'' if found['kept_up'] else '  (fell behind)'}",
        flush=True,
    )
    return found


# ------------------------------------------------------------------------------------ APScheduler

_aps_session: Any = None
_aps_target = ""


async def aps_call() -> float:
    """APScheduler's job: POST to the receiver; return the instant it started."""
    started = time.time()
    async with _aps_session.post(_aps_target, json=BODY) as response:
        await response.read()
        response.raise_for_status()
    return started


async def _aps_level(store: str, dsn: str | None, target: str, jobs: int, times: dict[str, float]) -> Any:
    import aiohttp  # noqa: PLC0415
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED  # noqa: PLC0415
    from apscheduler.executors.asyncio import AsyncIOExecutor  # noqa: PLC0415
    from apscheduler.jobstores.memory import MemoryJobStore  # noqa: PLC0415
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: PLC0415
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    global _aps_session, _aps_target  # noqa: PLW0603 - the job function is looked up by reference
    _aps_target = target
    _aps_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    calls: list[tuple[float, float, bool]] = []
    missed = 0

    def listen(event: Any) -> None:
        nonlocal missed
        slot = event.scheduled_run_time.timestamp()
        if event.code == EVENT_JOB_EXECUTED:
            calls.append((slot, float(event.retval), True))
        elif event.code == EVENT_JOB_ERROR:
            calls.append((slot, time.time(), False))
        else:
            missed += 1

    jobstore = MemoryJobStore() if dsn is None else SQLAlchemyJobStore(url=dsn)
    scheduler = AsyncIOScheduler(
        jobstores={"default": jobstore}, executors={"default": AsyncIOExecutor()}, timezone=UTC
    )
    scheduler.add_listener(listen, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    first = datetime.fromtimestamp(math.ceil(time.time() + times["lead"]), UTC)
    for index in range(jobs):
        scheduler.add_job(
            aps_call, CronTrigger(second="*", start_date=first, timezone=UTC), id=f"job-{index}"
        )
    start = max(first.timestamp(), math.ceil(time.time())) + times["warmup"]
    end = start + times["window"]
    scheduler.resume()
    meter = CpuMeter({"scheduler": [os.getpid()]}, postgres=dsn is not None)
    await asyncio.sleep(max(0.0, start - time.time()))
    meter.start()
    await asyncio.sleep(max(0.0, end - time.time()))
    cpu = meter.stop()
    await asyncio.sleep(times["settle"])
    scheduler.shutdown(wait=False)
    await _aps_session.close()
    return calls, start, end, {"missed": missed, "cpu_pct": cpu, "store": store}


def _aps_child(  # noqa: PLR0917 - a Process target takes positional arguments
    store: str, dsn: str | None, target: str, jobs: int, times: dict[str, float], out: Any
) -> None:
    # A line per execution otherwise, and a traceback for every call cut short at shutdown.
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415

        uvloop.install()
    out.put(asyncio.run(_aps_level(store, dsn, target, jobs, times)))


def aps_level(store: str, target: str, jobs: int, *, times: dict[str, float]) -> dict[str, Any]:
    """One APScheduler level in a process of its own (a core of its own, as our runners get)."""
    dsn = None
    if store == "sql":
        from sqlalchemy.engine import URL  # noqa: PLC0415

        parts = connect_params(fresh_database(APS_DB))
        dsn = URL.create(
            "postgresql+psycopg",
            username=parts.get("user"),
            password=parts.get("password"),
            host=parts.get("host"),
            port=parts.get("port"),
            database=parts.get("database"),
        ).render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    child = spawn.Process(target=_aps_child, args=(store, dsn, target, jobs, times, out))
    child.start()
    try:
        timeout = times["lead"] + times["warmup"] + times["window"] + times["settle"] + 60 + jobs / 100
        calls, start, end, extra = out.get(timeout=timeout)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
        if store == "sql":
            drop_database(APS_DB)
    name = f"APScheduler 3 ({'SQLAlchemyJobStore' if store == 'sql' else 'MemoryJobStore'})"
    return judge(name, jobs, calls, start, end, extra)


# ------------------------------------------------------------------------------------ bare client


async def _bare_level(target: str, jobs: int, first: int, times: dict[str, float]) -> Any:
    """Every whole second from ``first``, start ``jobs`` POSTs; return (slot, started, ok) records."""
    import aiohttp  # noqa: PLC0415

    # What a runner gets too: at most its concurrency in flight (a call starts when a place is
    # free, as a runner claims no more than its free places), and its collector thresholds, without
    # which the full collections that walk thousands of calls in flight double the CPU per call.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    calls: list[tuple[float, float, bool]] = []
    places = asyncio.Semaphore(BARE_CONNECTIONS)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=BARE_CONNECTIONS))

    async def call(slot: float) -> None:
        async with places:
            started = time.time()
            try:
                async with session.post(target, json=BODY) as response:
                    await response.read()
                    ok = response.ok
            except aiohttp.ClientError:
                ok = False
        calls.append((slot, started, ok))

    start = first + times["warmup"]
    end = start + times["window"]
    meter = CpuMeter({"client": [os.getpid()]}, postgres=False)
    pending: set[asyncio.Task[None]] = set()
    slot = float(first)
    while slot < end:
        await asyncio.sleep(max(0.0, slot - time.time()))
        if slot == start:
            meter.start()
        for _ in range(jobs):
            task = asyncio.create_task(call(slot))
            pending.add(task)
            task.add_done_callback(pending.discard)
        slot += 1.0
    await asyncio.sleep(max(0.0, end - time.time()))
    cpu = meter.stop()
    # The window's last calls finish (or are cut short, as the peers' are, after --settle).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), times["settle"])
    await session.close()
    return calls, start, end, (cpu["client"], meter.used_s["client"])


def _bare_child(target: str, jobs: int, first: int, times: dict[str, float], out: Any) -> None:
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - the runner's loop, so the ceiling is the same client's

        uvloop.install()
    out.put(asyncio.run(_bare_level(target, jobs, first, times)))


def bare_level(target: str, jobs: int, *, times: dict[str, float], processes: int) -> dict[str, Any]:
    """One level of the bare client: ``processes`` processes, each firing its share of ``jobs``."""
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    # One first slot for all, chosen here: children that started a second apart must not disagree.
    first = math.ceil(time.time() + times["lead"])
    shares = [jobs // processes + (1 if i < jobs % processes else 0) for i in range(processes)]
    children = [
        spawn.Process(target=_bare_child, args=(target, share, first, times, out)) for share in shares
    ]
    for child in children:
        child.start()
    calls: list[tuple[float, float, bool]] = []
    cpu, cpu_s = 0.0, 0.0
    try:
        timeout = times["lead"] + times["warmup"] + times["window"] + times["settle"] + 60
        for _ in children:
            found, start, end, (pct, seconds) = out.get(timeout=timeout)
            calls += found
            cpu += pct
            cpu_s += seconds
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join()
    # The window's succeeded calls, as bench.http_fires divides the runners' CPU by their fires.
    done = sum(1 for slot, _, ok in calls if ok and start <= slot < end)
    extra = {
        "processes": processes,
        "connections_each": BARE_CONNECTIONS,
        "cpu_pct": round(cpu, 1),
        "cpu_per_call_us": round(cpu_s / done * 1e6, 1) if done else None,
    }
    return judge(BARE, jobs, calls, start, end, extra)


# ----------------------------------------------------------------------------------------- Celery


def _celery_app() -> Any:
    """The Celery app of the worker and beat processes, configured from BENCH_CELERY_* variables."""
    from celery import Celery, signals  # noqa: PLC0415

    app = Celery("bench_http", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/13"))
    jobs = int(os.environ.get("BENCH_CELERY_JOBS", "0"))
    app.conf.update(
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        beat_schedule={f"job-{index}": {"task": "bench.http_call", "schedule": 1.0} for index in range(jobs)},
    )
    target = os.environ.get("BENCH_CELERY_TARGET", "")
    out = os.environ.get("BENCH_CELERY_OUT", "")
    calls: list[str] = []
    lock = threading.Lock()
    session: Any = None

    @app.task(name="bench.http_call")
    def http_call(slot: float = 0.0) -> None:
        nonlocal session
        started = time.time()
        if session is None:
            import requests  # noqa: PLC0415
            from requests.adapters import HTTPAdapter  # noqa: PLC0415

            session = requests.Session()
            size = int(os.environ.get("BENCH_CELERY_CONCURRENCY", "1000"))
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=size))
        try:
            ok = session.post(target, json=BODY, timeout=30).ok
        except Exception:
            ok = False
        calls.append(f"{slot} {started} {int(ok)}\n")

    def flush() -> None:
        with lock:
            taken = calls[:]
            del calls[: len(taken)]
            if taken:
                with Path(out).open("a") as file:
                    file.writelines(taken)

    def flusher() -> None:
        while True:
            time.sleep(1.0)
            flush()

    @signals.worker_ready.connect(weak=False)
    def ready(**_: Any) -> None:
        threading.Thread(target=flusher, daemon=True).start()
        Path(out + ".ready").touch()

    @signals.worker_shutdown.connect(weak=False)
    def shutdown(**_: Any) -> None:
        flush()

    return app


def _stamping_scheduler() -> type:
    """Beat's PersistentScheduler, stamping each task with the instant its entry fell due."""
    from celery.beat import PersistentScheduler  # noqa: PLC0415

    class StampingScheduler(PersistentScheduler):  # type: ignore[misc]
        def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:  # noqa: FBT001, FBT002
            due = entry.last_run_at + entry.schedule.run_every
            # A copy carries the slot: beat compares its entries' kwargs to decide whether its
            # schedule changed (and rebuilds its heap when it did), so the entry stays untouched.
            stamped = copy.copy(entry)
            stamped.kwargs = {"slot": due.timestamp()}
            return super().apply_async(stamped, producer, advance, **kwargs)

    return StampingScheduler


if os.environ.get("BENCH_CELERY_OUT"):
    # Loaded by `celery -A bench.http_peers` in the worker and beat processes only.
    celery_app = _celery_app()
    StampingScheduler = _stamping_scheduler()


def _flush_redis(url: str) -> None:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def celery_level(target: str, jobs: int, times: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """One Celery level: a worker, then beat; the task's records over the window."""
    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    _flush_redis(broker)
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as tmp:
        out = Path(tmp) / "calls.txt"
        env = dict(os.environ) | {
            "BENCH_CELERY_BROKER": broker,
            "BENCH_CELERY_JOBS": str(jobs),
            "BENCH_CELERY_TARGET": target,
            "BENCH_CELERY_OUT": str(out),
            "BENCH_CELERY_CONCURRENCY": str(args.celery_concurrency),
        }
        celery = [sys.executable, "-m", "celery", "-A", "bench.http_peers:celery_app"]
        worker_args = [
            *celery,
            "worker",
            "-P",
            "gevent",
            "-c",
            str(args.celery_concurrency),
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-{os.getpid()}@localhost",
        ]
        beat_args = [
            *celery,
            "beat",
            "-S",
            "bench.http_peers:StampingScheduler",
            "-s",
            f"{tmp}/celerybeat-schedule",
            "--pidfile",
            f"{tmp}/beat.pid",
            "--loglevel",
            "WARNING",
        ]
        try:
            with process(worker_args, env) as (worker, worker_log):
                ready = Path(f"{out}.ready")
                deadline = time.monotonic() + 60
                while not ready.exists():
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the Celery worker did not start:\n{worker_log.read_text()}")
                    time.sleep(0.2)
                with process(beat_args, env) as (beat, beat_log):
                    launched = time.time()
                    start = math.ceil(launched + times["lead"] + times["warmup"])
                    end = start + times["window"]
                    meter = CpuMeter({"worker": [worker.pid], "beat": [beat.pid]}, postgres=False)
                    time.sleep(max(0.0, start - time.time()))
                    meter.start()
                    time.sleep(max(0.0, end - time.time()))
                    cpu = meter.stop()
                    time.sleep(times["settle"])
                    if beat.poll() is not None:
                        raise RuntimeError(f"Celery beat exited:\n{beat_log.read_text()}")
            calls = []
            if out.exists():
                for line in out.read_text().splitlines():
                    slot, started, ok = line.split()
                    calls.append((float(slot), float(started), ok == "1"))
        finally:
            _flush_redis(broker)
    extra = {"cpu_pct": cpu, "pool": f"gevent x {args.celery_concurrency}"}
    return judge("Celery beat + worker (gevent, Redis)", jobs, calls, start, end, extra)


# ------------------------------------------------------------------------------------------- main


def search(
    measure: Callable[[int], dict[str, Any]], first: int, most: int, steps: int
) -> list[dict[str, Any]]:
    """Double N from ``first`` while the scheduler keeps up (and N stays within ``most``).

    When ``first`` is already too many, N halves until it is kept up or falls below ``LEAST``; then
    ``steps`` bisections between the highest N kept up and the next one tried.
    """
    found = [measure(first)]
    while not found[-1]["kept_up"] and found[-1]["jobs"] // 2 >= LEAST:
        found.append(measure(found[-1]["jobs"] // 2))
    while found[-1]["kept_up"] and found[-1]["jobs"] * 2 <= most and found[-1]["jobs"] >= first:
        found.append(measure(found[-1]["jobs"] * 2))
    return found + refine(measure, found, steps)


def highest(levels: list[dict[str, Any]]) -> int:
    """The highest N kept up, 0 when none was."""
    return max((r["jobs"] for r in levels if r["kept_up"]), default=0)


def summarize(ours_best: int | None, levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each scheduler's highest N kept up, ours over each (with its target) and over the bare client."""
    summary: list[dict[str, Any]] = []
    best: dict[str, int] = {}
    for r in levels:
        best[r["scheduler"]] = max(best.get(r["scheduler"], 0), r["jobs"] if r["kept_up"] else 0)
    for name, jobs in best.items():
        summary.append(figure(f"{name}: every-second HTTP jobs kept on schedule", jobs, "jobs"))
    bare = [r for r in levels if r["scheduler"] == BARE and r["kept_up"] and r.get("cpu_per_call_us")]
    if bare:
        top = max(bare, key=lambda r: r["jobs"])
        # The floor under bench.http_fires' runner CPU per fire: the call alone, on this machine.
        summary.append(
            figure(
                f"bare client CPU per call, at {top['jobs']:,} jobs (its highest kept up)",
                round(top["cpu_per_call_us"]),
                "µs",
            )
        )
    if ours_best is not None:
        summary.append(
            figure("pg-scheduler, 2 runners: every-second HTTP jobs kept on schedule", ours_best, "jobs")
        )
        for name, jobs in best.items():
            ratio = ours_best / jobs if jobs else math.inf
            shown = round(ratio, 2) if math.isfinite(ratio) else "peer kept none"
            if name == BARE:
                # No target: the ceiling says how much of the machine's HTTP client we use.
                summary.append(figure("our share of the bare client (ours / its ceiling)", shown, "x"))
                continue
            if name not in TARGET_RATIOS:
                summary.append(figure(f"ours / {name}", shown, "x"))
                continue
            limit, whose = TARGET_RATIOS[name]
            summary.append(
                figure(f"ours / {name}", shown, "x", target=f">= {limit:g}x{whose}", met=ratio >= limit)
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--peers", default="bare,celery,aps-sql,aps-memory", help="peers to measure")
    parser.add_argument("--peer-start", type=int, default=250, help="first N for every peer")
    parser.add_argument("--bare-start", type=int, default=8_000, help="first N for the bare client")
    # Its N is in the thousands: starting at --peer-start would spend two levels getting there.
    parser.add_argument("--aps-memory-start", type=int, default=1_000, help="first N for aps-memory")
    parser.add_argument("--bare-max", type=int, default=64_000, help="N the bare client is not tried past")
    parser.add_argument("--bare-processes", type=int, default=2, help="bare client processes (as runners)")
    parser.add_argument("--peer-max", type=int, default=32_000, help="N no peer is tried beyond")
    parser.add_argument("--celery-concurrency", type=int, default=1000, help="gevent pool size")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database Celery uses (flushed)")
    parser.add_argument("--skip-ours", action="store_true", help="peers only")
    # Ours, as bench/http_fires.py sweeps it with 2 runners.
    parser.add_argument("--levels", default="1000,4000,10000")
    parser.add_argument("--growth", type=float, default=1.5)
    parser.add_argument("--max-jobs", type=int, default=40_000)
    parser.add_argument("--refine", type=int, default=2, help="bisections, for every scheduler")
    parser.add_argument("--lead", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.window, args.settle = 4.0, 6.0, 2.0
        args.max_jobs = min(args.max_jobs, 6_000)
        args.peer_max = min(args.peer_max, 4_000)
        args.bare_max = min(args.bare_max, 8_000)
        args.bare_start = min(args.bare_start, 4_000)
        args.refine = min(args.refine, 1)
    times = {"lead": args.lead, "warmup": args.warmup, "window": args.window, "settle": args.settle}
    peers = [p for p in args.peers.split(",") if p]
    exit_on_sigterm()

    levels: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    with nginx() as base:
        target = f"{base}/hook"
        try:
            if not args.skip_ours:
                ours = http_fires.sweep(target, 2, args)
            for peer in peers:
                if peer == "bare":
                    levels += search(
                        functools.partial(bare_level, target, times=times, processes=args.bare_processes),
                        args.bare_start,
                        args.bare_max,
                        args.refine,
                    )
                elif peer == "celery":
                    levels += search(
                        lambda n: celery_level(target, n, times, args),
                        args.peer_start,
                        args.peer_max,
                        args.refine,
                    )
                elif peer in {"aps-sql", "aps-memory"}:
                    measure = functools.partial(aps_level, peer.removeprefix("aps-"), target, times=times)
                    first = args.aps_memory_start if peer == "aps-memory" else args.peer_start
                    levels += search(measure, first, args.peer_max, args.refine)
                else:
                    parser.error(f"unknown peer {peer!r}")
        finally:
            drop_database(http_fires.DB)

    ours_best = highest(ours) if ours else None
    rows: list[tuple[Any, ...]] = [
        (
            r["scheduler"],
            r["jobs"],
            r["fires_per_s"],
            "-" if r["p50_ms"] is None else r["p50_ms"],
            "-" if r["p99_ms"] is None else r["p99_ms"],
            "yes" if r["kept_up"] else "no",
        )
        for r in levels
    ]
    rows += [
        (
            "pg-scheduler, 2 runners",
            r["jobs"],
            r["fires_per_s"],
            "-" if r["p50_ms"] is None else r["p50_ms"],
            "-" if r["p99_ms"] is None else r["p99_ms"],
            "yes" if r["kept_up"] else "no",
        )
        for r in ours
    ]
    print_table(
        "Every-second HTTP jobs POSTing to one nginx: each scheduler's levels",
        ["scheduler", "jobs", "fires/s", "p50 ms", "p99 ms", "kept up"],
        rows,
    )
    summary = summarize(ours_best, levels)
    print_targets(summary, every_figure=True)
    path = write_json(
        "http_peers",
        {
            "quick": args.quick,
            "kept_up_rule": f"p99 lateness <= {KEPT_UP_P99_MS:g} ms and 2xx calls >= "
            f"{KEPT_UP_SHARE:g} x jobs x window",
            "window_s": args.window,
            "ours": ours,
            "peers": levels,
            "summary": summary,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
