"""Bench databases: a fresh migrated database per program, and the seed data the programs share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from tests import seed

from bench.processes import scheduler_env
from scheduler.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

# A mix of second-level schedules in several zones: every seeded job is due again within seconds,
# so the runners never run dry during a measurement window.
SCHEDULE_MIX = [
    ("@every 1s", "UTC"),
    ("* * * * * *", "Europe/Berlin"),
    ("*/2 * * * * *", "America/New_York"),
    ("@every 2s", "Asia/Tokyo"),
    ("*/3 * * * * *", "Australia/Sydney"),
    ("* * * * * *", "America/Sao_Paulo"),
]


def server_url() -> str:
    """The PostgreSQL the benchmarks use: SCHEDULER_BENCH_DATABASE_URL or the local server."""
    return os.environ.get("SCHEDULER_BENCH_DATABASE_URL", DEFAULT_SERVER)


def url_for(dbname: str) -> str:
    """The bench server, another database."""
    return psycopg.conninfo.make_conninfo(server_url(), dbname=dbname)


def fresh_database(name: str) -> str:
    """Drop and recreate a database, migrate it, and return its URL."""
    with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    url = url_for(name)
    migrate(url)
    return url


def drop_database(name: str) -> None:
    """Remove a bench database."""
    with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def seed_jobs(
    url: str,
    count: int,
    *,
    first: datetime,
    action: str = '{"type": "log", "payload": {}}',
    prefix: str = "bench-",
    grace_s: int = 86_400,
    overlap: str = "allow",
    namespace: str = "default",
    schedules: list[tuple[str, str]] | None = None,
) -> None:
    """Insert ``count`` jobs due at ``first`` in batches of 100,000, then VACUUM ANALYZE."""
    mix = schedules or SCHEDULE_MIX
    # Row i takes the schedule and the zone of the mix at i modulo its length.
    kinds = len(mix)
    schedule = seed.Expr(
        "(%(schedules)s::text[])[1 + i %% %(kinds)s]", {"schedules": [s for s, _ in mix], "kinds": kinds}
    )
    zone = seed.Expr(
        "(%(zones)s::text[])[1 + i %% %(kinds)s]", {"zones": [z for _, z in mix], "kinds": kinds}
    )
    with psycopg.connect(url, autocommit=True) as conn:
        done = 0
        while done < count:
            batch = min(100_000, count - done)
            seed.seed_jobs(
                conn,
                batch,
                prefix=f"{prefix}{done}-",
                namespace=namespace,
                schedule=schedule,
                timezone=zone,
                anchor_at=first.replace(microsecond=0),
                action=action,
                misfire_grace_s=grace_s,
                overlap=overlap,
                next_run_at=first,
            )
            done += batch
        conn.execute(b"VACUUM ANALYZE jobs")


def scalar(url: str, statement: str, params: Any = None) -> Any:
    """Run one query and return the first column of its first row."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement.encode(), params).fetchone()
        return row[0] if row else None


@contextmanager
def runners(url: str, count: int, **settings: Any) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run ``count`` runner processes against ``url`` until the block ends (then SIGTERM them)."""
    # Log level warning: the log action's events go to a null sink.
    env = scheduler_env(url, **({"http_allow_nets": "127.0.0.0/8"} | settings))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scheduler.runner"],
            env=env | {"SCHEDULER_RUNNER_NAME": f"bench-{i}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
