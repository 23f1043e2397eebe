"""Fires/s through PgBouncer: log and HTTP fires of 2 runners, direct vs transaction vs session mode.

    python -m bench.pgbouncer [--log-jobs 100000] [--http-jobs 20000] [--window 15] [--quick]

In one run, against the same PostgreSQL, with the same seed for each connection:
- **connections**: `direct` (runners connect to PostgreSQL, `SCHEDULER_DATABASE_POOLER=none`),
  `transaction` and `session`: Debian's PgBouncer 1.18 (tests/pgbouncer.py starts it on a free
  loopback port with stock settings, `auth_type = trust` and `default_pool_size` --pool-size) in
  that `pool_mode`, with `SCHEDULER_DATABASE_POOLER` set to match. In transaction mode runners get
  no `SCHEDULER_LISTEN_DATABASE_URL` unless --listen-direct: they poll, the documented fallback.
- **log fires/s**: --log-jobs `log` jobs (bench/database.py's mix of every-second schedules; the
  events go nowhere at log level warning), all due at the start so the runners never run dry:
  runs that succeeded per second of a window after a warm-up, 2 runners.
- **HTTP fires/s**: --http-jobs every-second `http` jobs POSTing to nginx (Debian's nginx-light
  answering 204, as in bench/http_fires.py; without nginx, bench/processes.py's asyncio receiver
  answering at once), all due at the start: succeeded runs per second of the window, 2 runners at
  their default concurrency.
CPU (psutil, % of one core) of the runners, of PgBouncer and of every PostgreSQL process over the
window. Each connection is measured --rounds times, in alternating order; the table shows the median
and the range. Prints a table and writes bench/results/pgbouncer.json. About 8 minutes with the
defaults on 2 cores; --quick (smaller seeds, one round of 5 s windows) about 1 minute, a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from tests import pgbouncer
from tests.pgbouncer import PgBouncer, PoolMode

from bench.common import exit_on_sigterm, print_table, write_json
from bench.database import drop_database, fresh_database, now, runners, seed_jobs, server_url
from bench.http_fires import http_action
from bench.processes import CpuMeter, nginx, nginx_binary, slow_receiver
from bench.summary import figure

DB = "scheduler_bench_pgbouncer"
RUNNERS = 2
CONNECTIONS = ("direct", "transaction", "session")
MODES: tuple[PoolMode, ...] = ("transaction", "session")
EVERY_SECOND = [("* * * * * *", "UTC")]

WINDOW_STATS = """
SELECT count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'running', 'pending'))
FROM runs WHERE finished_at >= %(start)s AND finished_at < %(end)s
"""


def bouncer_pids(bouncer: PgBouncer) -> list[int]:
    """PgBouncer's process and, when we are root, the runuser it runs under."""
    import psutil  # noqa: PLC0415 - a bench extra

    top = psutil.Process(bouncer.popen.pid)
    return [top.pid, *(child.pid for child in top.children(recursive=True))]


@contextmanager
def bouncers(server: str, pool_size: int) -> Iterator[dict[str, PgBouncer]]:
    """A PgBouncer in each mode in front of ``server``, for the whole run."""
    with ExitStack() as stack:
        yield {
            mode: stack.enter_context(pgbouncer.running(server, mode=mode, pool_size=pool_size))
            for mode in MODES
        }


@contextmanager
def receiver() -> Iterator[tuple[str, str]]:
    """The HTTP target: nginx answering 204 (as bench/http_fires.py uses), else our asyncio receiver."""
    try:
        nginx_binary()
    except SystemExit as missing:
        print(f"  {missing}; the HTTP fires go to bench/processes.py's receiver with no delay instead")
        with slow_receiver(0.0) as base:
            yield "asyncio receiver, no delay", base
        return
    with nginx() as base:
        yield "nginx", base


def window_stats(url: str, start: datetime, end: datetime) -> tuple[int, int]:
    """Runs that succeeded, and that ended otherwise, in [start, end)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(WINDOW_STATS.encode(), {"start": start, "end": end}).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return int(row[0]), int(row[1])


def measure(
    action: str, connection: str, seed: dict[str, Any], found: dict[str, PgBouncer], args: argparse.Namespace
) -> dict[str, Any]:
    """Seed a fresh database, run 2 runners over it through ``connection``; the window's figures."""
    url = fresh_database(DB)
    seed_jobs(url, first=now() - timedelta(seconds=1), **seed)
    bouncer = found.get(connection)
    settings: dict[str, Any] = {"database_pooler": "none" if bouncer is None else connection}
    if connection == "transaction" and args.listen_direct:
        settings["listen_database_url"] = url
    service_url = url if bouncer is None else bouncer.url(DB)
    with runners(service_url, RUNNERS, **settings) as procs:
        meter = CpuMeter(
            {
                "runners": [p.pid for p in procs],
                "pgbouncer": [] if bouncer is None else bouncer_pids(bouncer),
            }
        )
        time.sleep(args.warmup)
        start = now()
        meter.start()
        time.sleep(args.window)
        end = now()
        cpu = meter.stop()
        exited = [p.returncode for p in procs if p.poll() is not None]
    if exited:
        raise RuntimeError(f"a runner exited during the measurement (codes {exited})")
    succeeded, failed = window_stats(url, start, end)
    seconds = (end - start).total_seconds()
    result = {
        "action": action,
        "connection": connection,
        "runners": RUNNERS,
        "jobs": seed["count"],
        "pool_size": None if bouncer is None else bouncer.pool_size,
        "listen": listen_of(connection, settings),
        "window_s": seconds,
        "succeeded": succeeded,
        "failed": failed,
        "fires_per_s": succeeded / seconds,
        "runner_cpu_pct": cpu["runners"],
        "pgbouncer_cpu_pct": None if bouncer is None else cpu["pgbouncer"],
        "postgres_cpu_pct": cpu["postgres"],
    }
    print(
        f"  {action}, {connection}: {result['fires_per_s']:,.0f} fires/s, {failed} failed, "
        f"runners {cpu['runners']:.0f} % CPU, pgbouncer {cpu['pgbouncer']:.0f} %, "
        f"postgres {cpu['postgres']:.0f} %",
        flush=True,
    )
    return result


def listen_of(connection: str, settings: dict[str, Any]) -> str:
    """Where the runners LISTEN: on a direct URL, nowhere (they poll), or on their database URL."""
    if "listen_database_url" in settings:
        return "direct"
    return "none (polling)" if connection == "transaction" else "database URL"


def combine(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per action and connection: the median of its rounds, with their range."""
    rows: list[dict[str, Any]] = []
    for action in dict.fromkeys(m["action"] for m in measurements):
        for connection in CONNECTIONS:
            rounds = [m for m in measurements if m["action"] == action and m["connection"] == connection]
            if not rounds:
                continue
            rates = [m["fires_per_s"] for m in rounds]
            rows.append(
                rounds[0]
                | {
                    "rounds": len(rounds),
                    "fires_per_s": statistics.median(rates),
                    "fires_per_s_min": min(rates),
                    "fires_per_s_max": max(rates),
                    "failed": sum(m["failed"] for m in rounds),
                    "runner_cpu_pct": statistics.median(m["runner_cpu_pct"] for m in rounds),
                    "pgbouncer_cpu_pct": None
                    if rounds[0]["pgbouncer_cpu_pct"] is None
                    else statistics.median(m["pgbouncer_cpu_pct"] for m in rounds),
                    "postgres_cpu_pct": statistics.median(m["postgres_cpu_pct"] for m in rounds),
                }
            )
    return rows


def ratio_to_direct(results: list[dict[str, Any]], row: dict[str, Any]) -> float | None:
    """A result's fires/s over the direct one's for the same action."""
    direct = next((r for r in results if r["action"] == row["action"] and r["connection"] == "direct"), None)
    if direct is None or not direct["fires_per_s"]:
        return None
    return float(row["fires_per_s"] / direct["fires_per_s"])


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Headline figures: fires/s of each action and connection, and the share of direct kept."""
    found: list[dict[str, Any]] = []
    for row in results:
        found.append(
            figure(
                f"{row['action']} fires/s, 2 runners, {row['connection']}", round(row["fires_per_s"]), "/s"
            )
        )
        ratio = ratio_to_direct(results, row)
        if row["connection"] != "direct" and ratio is not None:
            found.append(
                figure(
                    f"{row['action']} fires/s through PgBouncer {row['connection']} mode / direct",
                    round(ratio, 3),
                )
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--log-jobs", type=int, default=100_000, help="due log jobs seeded")
    parser.add_argument("--http-jobs", type=int, default=20_000, help="due every-second HTTP jobs seeded")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer's default_pool_size")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured")
    parser.add_argument(
        "--listen-direct",
        action="store_true",
        help="transaction mode: runners LISTEN on a direct URL instead of polling",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measurements of each connection, in alternating order (the table shows their median)",
    )
    parser.add_argument("--skip-http", action="store_true", help="log fires only")
    parser.add_argument("--quick", action="store_true", help="smaller seeds, short windows (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.log_jobs, args.http_jobs = min(args.log_jobs, 30_000), min(args.http_jobs, 5_000)
        args.warmup, args.window, args.rounds = 3.0, 5.0, 1
    if pgbouncer.binary() is None:
        raise SystemExit(pgbouncer.INSTALL_HINT)
    exit_on_sigterm()

    # Alternating the order spreads whatever else the machine does over the three connections.
    orders = [CONNECTIONS if n % 2 == 0 else CONNECTIONS[::-1] for n in range(args.rounds)]
    measurements: list[dict[str, Any]] = []
    version = ""
    try:
        with bouncers(server_url(), args.pool_size) as found:
            version = str(found["transaction"].show("VERSION")[0]["version"])
            log_seed: dict[str, Any] = {"count": args.log_jobs}
            for number, order in enumerate(orders):
                for connection in order:
                    found_now = measure("log", connection, log_seed, found, args)
                    measurements.append(found_now | {"round": number})
            if not args.skip_http:
                with receiver() as (name, base):
                    http_seed: dict[str, Any] = {
                        "count": args.http_jobs,
                        "action": http_action(f"{base}/hook"),
                        "schedules": EVERY_SECOND,
                    }
                    for number, order in enumerate(orders):
                        for connection in order:
                            found_now = measure("http", connection, http_seed, found, args)
                            measurements.append(found_now | {"receiver": name, "round": number})
    finally:
        drop_database(DB)
    results = combine(measurements)

    print_table(
        f"Fires/s of {RUNNERS} runners, direct and through {version} "
        f"(default_pool_size {args.pool_size}, median of {args.rounds} x {args.window:g} s windows)",
        [
            "action",
            "connection",
            "receiver",
            "jobs",
            "fires/s",
            "range",
            "vs direct",
            "failed",
            "runner CPU %",
            "PgBouncer CPU %",
            "PG CPU %",
        ],
        [
            (
                r["action"],
                r["connection"],
                r.get("receiver", "-"),
                r["jobs"],
                r["fires_per_s"],
                f"{r['fires_per_s_min']:,.0f}-{r['fires_per_s_max']:,.0f}",
                ratio_to_direct(results, r) or "-",
                r["failed"],
                r["runner_cpu_pct"],
                "-" if r["pgbouncer_cpu_pct"] is None else r["pgbouncer_cpu_pct"],
                r["postgres_cpu_pct"],
            )
            for r in results
        ],
    )
    path = write_json(
        "pgbouncer",
        {
            "quick": args.quick,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "pool_size": args.pool_size,
            "listen_direct": args.listen_direct,
            "pgbouncer_version": version,
            "rounds": args.rounds,
            "results": results,
            "measurements": measurements,
            "summary": summarize(results),
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
