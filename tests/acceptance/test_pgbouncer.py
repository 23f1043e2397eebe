"""The service through Debian's PgBouncer, in transaction mode and in session mode (issue 18, item 4).

Every process of ours (migrate, the API, runners) connects through a real PgBouncer 1.18 with a stock
configuration (no `ignore_startup_parameters`) and `SCHEDULER_DATABASE_POOLER` set to its mode. One
PgBouncer per mode serves the whole module; each test has a database of its own behind it. The
tests look at the outcome through a direct connection to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from scheduler.db.migrate import available
from tests import pgbouncer
from tests.conftest import Proc, Procs, start_api, url_for, wait_for
from tests.pgbouncer import PgBouncer, PoolMode

pytestmark = pytest.mark.slow

MODES: list[PoolMode] = ["transaction", "session"]
# Transaction mode: fewer server connections than the API's pool alone (16), so statements of many
# client connections share each server connection, which is where prepared statements break.
# Session mode holds a server connection per client connection for its whole life, so the pool
# covers every connection of the processes started at once: API 16 + 2 runners x 7, with room.
POOL_SIZE: dict[PoolMode, int] = {"transaction": 10, "session": 40}
# A cancel reaches a runner that polls (transaction mode, no LISTEN) at its next heartbeat round,
# about a poll interval (1 s here) later; a runner that LISTENs hears it at once.
POLLED_CANCEL_S = 3.0
HEARD_CANCEL_S = 1.0
LISTEN_APP = "scheduler-runner-listen"
FAST_RETRY = {"max_attempts": 3, "min_backoff_s": 0, "max_backoff_s": 0}
UTC_SUFFIX = re.compile(r"(Z|\+00:00)$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_fresh = itertools.count()


@pytest.fixture(scope="module", params=MODES)
def bouncer(request: pytest.FixtureRequest, server_url: str) -> Iterator[PgBouncer]:
    """One PgBouncer per mode, in front of the tests' server, for every test of the module."""
    if pgbouncer.binary() is None:
        if os.environ.get("SCHEDULER_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(pgbouncer.INSTALL_HINT + "; SCHEDULER_REQUIRE_PGBOUNCER=1 makes this a failure")
        pytest.skip(pgbouncer.INSTALL_HINT)
    mode: PoolMode = request.param
    with pgbouncer.running(server_url, mode=mode, pool_size=POOL_SIZE[mode]) as running:
        yield running


@dataclass
class PooledProcs(Procs):
    """Our processes, told which pooler sits between them and PostgreSQL."""

    pooler: str = "none"

    def env(self, **overrides: Any) -> dict[str, str]:
        overrides.setdefault("database_pooler", self.pooler)
        return super().env(**overrides)


@dataclass
class Through:
    """One test's database, reached directly (for assertions) and through PgBouncer (for the service)."""

    bouncer: PgBouncer
    direct_url: str
    url: str
    procs: PooledProcs

    @property
    def mode(self) -> PoolMode:
        return self.bouncer.mode


def dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


@pytest.fixture
def through(bouncer: PgBouncer, db_url: str, tmp_path: Path) -> Iterator[Through]:
    """The test database behind the module's PgBouncer; processes started here are stopped after."""
    url = bouncer.url(dbname(db_url))
    procs = PooledProcs(url, tmp_path, pooler=bouncer.mode)
    yield Through(bouncer, db_url, url, procs)
    procs.stop_all()


@pytest.fixture
def empty_db(server_url: str) -> Iterator[str]:
    """The name of a fresh database with nothing in it (no migrations), dropped afterwards."""
    name = f"sched_pgb_{os.getpid()}_{next(_fresh)}"
    with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    yield name
    with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one statement on a connection of the test's own."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def log_events(proc: Proc, event: str) -> list[dict[str, Any]]:
    found = []
    for line in proc.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def error_lines(proc: Proc) -> list[str]:
    """Lines of a process's output at level error or worse, or naming a prepared statement."""
    found = []
    for line in proc.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        level = record.get("level") if isinstance(record, dict) else None
        if level in {"error", "critical"} or "prepared statement" in line or "Traceback" in line:
            found.append(line)
    return found


def soon(seconds: float = 1.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def create_job(api: str, **body: Any) -> dict[str, Any]:
    body.setdefault("action", {"type": "log", "payload": {}})
    response = httpx.post(f"{api}/jobs", json=body, timeout=10)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def job_runs(api: str, job_id: str) -> list[dict[str, Any]]:
    """The job's runs through the API, oldest slot and attempt first."""
    response = httpx.get(f"{api}/jobs/{job_id}/runs", params={"limit": 100}, timeout=10)
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))


def succeeded_runs(through: Through, job_id: str) -> int:
    rows = query(
        through.direct_url, "SELECT count(*) FROM runs WHERE job_id = %s AND status = 'succeeded'", (job_id,)
    )
    return int(rows[0][0])


def stamp(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


class TestMigrate:
    """`scheduler migrate` through PgBouncer applies every migration once, alone or two at a time."""

    def migrate(self, through: Through, database: str) -> Proc:
        url = through.bouncer.url(database)
        return through.procs.start(["-m", "scheduler", "migrate"], database_url=url)

    def applied_versions(self, through: Through, database: str) -> list[int]:
        url = url_for(through.direct_url, database)
        return [row[0] for row in query(url, "SELECT version FROM scheduler_migrations ORDER BY version")]

    def test_migrate_on_a_fresh_database_applies_every_migration(self, through, empty_db):
        proc = self.migrate(through, empty_db)
        assert proc.popen.wait(timeout=60) == 0, proc.output()
        shipped = [m.version for m in available()]
        assert self.applied_versions(through, empty_db) == shipped
        assert [e["version"] for e in log_events(proc, "migration_applied")] == shipped
        tables = query(
            url_for(through.direct_url, empty_db), "SELECT to_regclass('jobs'), to_regclass('runs')"
        )
        assert tables == [("jobs", "runs")]

    def test_two_concurrent_migrations_both_succeed_and_apply_each_migration_once(self, through, empty_db):
        first, second = self.migrate(through, empty_db), self.migrate(through, empty_db)
        codes = [first.popen.wait(timeout=60), second.popen.wait(timeout=60)]
        assert codes == [0, 0], first.output() + "\n----\n" + second.output()
        shipped = [m.version for m in available()]
        assert self.applied_versions(through, empty_db) == shipped
        applied = Counter(e["version"] for p in (first, second) for e in log_events(p, "migration_applied"))
        assert applied == Counter(shipped)


class TestApi:
    """The API through PgBouncer answers every kind of request under concurrency, never with a 500."""

    CLIENTS = 16
    ROUNDS = 2

    async def test_the_api_answers_concurrent_requests_without_a_server_error(self, through):
        api = start_api(through.procs)
        answers: list[tuple[str, int, int, str]] = []  # (what, expected, got, body)

        def note(what: str, expected: int, response: httpx.Response) -> httpx.Response:
            answers.append((what, expected, response.status_code, response.text[:300]))
            return response

        async def one_client(http: httpx.AsyncClient, client: int) -> None:
            for round_ in range(self.ROUNDS):
                name = f"pgb-{client}-{round_}"
                body = {"name": name, "schedule": "*/5 * * * *", "action": {"type": "log", "payload": {}}}
                created = note("create", 201, await http.post("/jobs", json=body))
                if created.status_code != 201:
                    continue
                job_id = created.json()["id"]
                note("list", 200, await http.get("/jobs", params={"name_prefix": "pgb-"}))
                got = note("get", 200, await http.get(f"/jobs/{job_id}"))
                etag = got.headers.get("etag", '"1"')
                patch = {"schedule": "*/7 * * * *", "labels": {"client": str(client)}}
                note(
                    "patch", 200, await http.patch(f"/jobs/{job_id}", json=patch, headers={"If-Match": etag})
                )
                note("pause", 200, await http.post(f"/jobs/{job_id}/pause"))
                note("resume", 200, await http.post(f"/jobs/{job_id}/resume"))
                note("trigger", 202, await http.post(f"/jobs/{job_id}/trigger"))
                note("runs", 200, await http.get(f"/jobs/{job_id}/runs"))
                note("next-runs", 200, await http.get(f"/jobs/{job_id}/next-runs", params={"count": 3}))

        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            load = asyncio.gather(*(one_client(http, c) for c in range(self.CLIENTS)))
            # While the load runs, PgBouncer lists the API's connections: they did come through it.
            clients_seen: list[dict[str, Any]] = []
            while not load.done() and not clients_seen:
                rows = await asyncio.to_thread(through.bouncer.show, "CLIENTS")
                clients_seen = [
                    row
                    for row in rows
                    if row.get("database") == dbname(through.direct_url)
                    and row.get("application_name") == "scheduler-api"
                ]
                await asyncio.sleep(0.05)
            await load
            listed = (await http.get("/jobs", params={"name_prefix": "pgb-", "limit": 100})).json()

        assert len(answers) >= 250
        server_errors = [a for a in answers if a[2] >= 500]
        assert not server_errors, server_errors[:5]
        unexpected = [a for a in answers if a[1] != a[2]]
        assert not unexpected, unexpected[:5]
        assert clients_seen, "the API's connections were not seen in PgBouncer's SHOW CLIENTS"
        assert len(listed["items"]) == self.CLIENTS * self.ROUNDS
        assert all(job["schedule"] == "*/7 * * * *" and not job["paused"] for job in listed["items"])


class TestRunners:
    """Two runners through PgBouncer fire every-second HTTP and log jobs: runs recorded, receiver called."""

    def test_two_runners_fire_every_second_http_and_log_jobs(self, through, receiver):
        runners = [through.procs.runner(), through.procs.runner()]
        api = start_api(through.procs)
        http_jobs = [
            create_job(
                api,
                name=f"http-{i}",
                schedule="@every 1s",
                action={"type": "http", "method": "POST", "url": f"{receiver.url}/hook/{i}"},
            )
            for i in range(3)
        ]
        log_jobs = [
            create_job(
                api, name=f"log-{i}", schedule="@every 1s", action={"type": "log", "payload": {"i": i}}
            )
            for i in range(3)
        ]
        every = http_jobs + log_jobs
        wait_for(
            lambda: all(succeeded_runs(through, job["id"]) >= 4 for job in every),
            timeout=30,
            what="four succeeded runs of every job",
        )
        called = Counter(request.path for request in receiver.snapshot())
        assert all(called[f"/hook/{i}"] >= 4 for i in range(3)), called
        logged = Counter(e["job_id"] for proc in runners for e in log_events(proc, "job_log"))
        assert all(logged[job["id"]] >= 4 for job in log_jobs), logged
        assert [proc.popen.poll() for proc in runners] == [None, None]
        assert [error_lines(proc) for proc in runners] == [[], []]
        # `skipped` is left out: a slot whose previous run is still in flight is skipped by design.
        failed = query(
            through.direct_url,
            "SELECT status, error FROM runs WHERE status IN ('failed', 'timed_out', 'lost', 'cancelled')",
        )
        assert failed == []


def listeners(through: Through) -> tuple[int, int]:
    """Runner LISTEN connections of the test database: (through PgBouncer, seen by PostgreSQL).

    PgBouncer passes a client's application_name on to the server connection it lends, so the
    second count includes those that came through it.
    """
    name = dbname(through.direct_url)
    via = [
        row
        for row in through.bouncer.show("CLIENTS")
        if row.get("database") == name and row.get("application_name") == LISTEN_APP
    ]
    seen = query(
        through.direct_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (name, LISTEN_APP),
    )
    return len(via), int(seen[0][0])


class TestCancel:
    """A cancel through PgBouncer stops a running call: at once when runners LISTEN, by polling when not."""

    @pytest.mark.parametrize("listen", ["pooled", "direct"])
    def test_a_cancel_stops_the_running_call(self, through, receiver, listen):
        # "pooled": no SCHEDULER_LISTEN_DATABASE_URL, so runners LISTEN through PgBouncer in session
        # mode and poll in transaction mode. "direct": they LISTEN on a connection straight to PostgreSQL.
        overrides = {"listen_database_url": through.direct_url} if listen == "direct" else {}
        hears = listen == "direct" or through.mode == "session"
        bound = HEARD_CANCEL_S if hears else POLLED_CANCEL_S
        receiver.delay_s = 30
        runner = through.procs.runner(**overrides)
        api = start_api(through.procs)
        job = create_job(
            api,
            name="held",
            schedule=f"@at {soon()}",
            action={"type": "http", "url": f"{receiver.url}/held"},
            timeout_s=120,
        )
        wait_for(lambda: receiver.count() == 1, what="the call")
        # Where the runner LISTENs: on its own connection to PostgreSQL, through PgBouncer (session
        # mode only), or nowhere (transaction mode without a listen URL: it polls).
        if listen == "direct":
            wait_for(lambda: listeners(through) == (0, 1), what="a LISTEN connection straight to PostgreSQL")
        elif through.mode == "session":
            wait_for(lambda: listeners(through)[0] == 1, what="a LISTEN connection through PgBouncer")
        else:
            assert listeners(through) == (0, 0)
        (run,) = job_runs(api, job["id"])
        assert run["status"] == "running"
        asked = datetime.now(UTC)
        response = httpx.post(f"{api}/runs/{run['id']}/cancel", timeout=10)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "cancelled"
        stopped = wait_for(
            lambda: log_events(runner, "run_stopped"), timeout=10, what="the runner to stop the call"
        )
        assert stopped[0]["reason"] == "cancelled", stopped[0]
        took = stamp(stopped[0]) - asked
        assert took < timedelta(seconds=bound), (took, listen, through.mode)
        assert httpx.get(f"{api}/runs/{run['id']}", timeout=10).json()["status"] == "cancelled"
        assert error_lines(runner) == []


class TestRescue:
    """A runner killed mid-call through PgBouncer is rescued by the other runner, and the slot delivered."""

    def test_a_runner_killed_mid_call_is_rescued_by_the_other(self, through, receiver):
        receiver.delay_s = 60
        runners = {
            proc.name: proc for proc in (through.procs.runner(lease_s=2), through.procs.runner(lease_s=2))
        }
        api = start_api(through.procs)
        job = create_job(
            api,
            name="slow",
            schedule=f"@at {soon()}",
            action={"type": "http", "url": f"{receiver.url}/slow"},
            timeout_s=120,
            retry=FAST_RETRY,
        )
        wait_for(lambda: receiver.count() == 1, what="the first call")
        receiver.delay_s = 0
        (running,) = job_runs(api, job["id"])
        victim = runners.pop(running["runner"])
        (survivor,) = runners.values()
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        wait_for(
            lambda: [r["status"] for r in job_runs(api, job["id"])] == ["lost", "succeeded"],
            timeout=30,
            what="the rescue and the retry",
        )
        lost, retried = job_runs(api, job["id"])
        assert "lease expired" in lost["error"]
        assert (retried["attempt"], retried["trigger"], retried["runner"]) == (2, "retry", survivor.name)
        first, second = receiver.snapshot()[:2]
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert survivor.popen.poll() is None


def utc_strings(answer: Any) -> tuple[list[str], list[str]]:
    """Every date-time string in a JSON answer: those in UTC and the others."""
    utc: list[str] = []
    other: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and DATETIME.match(value):
            (utc if UTC_SUFFIX.search(value) else other).append(value)

    walk(answer)
    return utc, other


def next_wall_time(after: datetime, zone: str, hour: int, minute: int) -> datetime:
    """The first hour:minute in ``zone`` strictly after ``after`` (no DST gap at the times used here)."""
    local = after.astimezone(ZoneInfo(zone))
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=ZoneInfo(zone))
    return candidate.astimezone(UTC)


class TestTimeZone:
    """On a database whose time zone is New York, answers through PgBouncer are UTC and fire times right."""

    def test_times_are_utc_and_next_run_at_is_right_on_a_new_york_database(self, through):
        name = dbname(through.direct_url)
        query(through.direct_url, f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
        # The sessions the service gets, direct or through PgBouncer, are in New York time now.
        assert query(through.direct_url, "SHOW timezone") == [("America/New_York",)]
        assert query(through.url, "SHOW timezone") == [("America/New_York",)]
        runner = through.procs.runner()
        api = start_api(through.procs)
        before = datetime.now(UTC)
        start_at = (before + timedelta(hours=2)).replace(microsecond=0)
        answers = [
            midnight := create_job(api, name="utc-midnight", schedule="0 0 * * *"),
            berlin := create_job(api, name="berlin", schedule="30 9 * * *", timezone="Europe/Berlin"),
            hourly := create_job(api, name="hourly", schedule="@every 1h", start_at=start_at.isoformat()),
            every := create_job(api, name="every-second", schedule="@every 1s"),
        ]
        expected = {
            midnight["id"]: next_wall_time(before, "UTC", 0, 0),
            berlin["id"]: next_wall_time(before, "Europe/Berlin", 9, 30),
            hourly["id"]: start_at,
        }
        for job in (midnight, berlin, hourly):
            assert datetime.fromisoformat(job["next_run_at"]) == expected[job["id"]], job
        wait_for(lambda: succeeded_runs(through, every["id"]) >= 3, what="three runs")
        manual = httpx.post(f"{api}/jobs/{berlin['id']}/trigger", timeout=10)
        assert manual.status_code == 202, manual.text
        answers.append(manual.json())
        for path in (
            "/jobs",
            f"/jobs/{every['id']}",
            f"/jobs/{every['id']}/runs",
            f"/jobs/{berlin['id']}/next-runs",
        ):
            response = httpx.get(f"{api}{path}", timeout=10)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        utc, other = utc_strings(answers)
        assert other == []
        assert len(utc) >= 30
        for job in httpx.get(f"{api}/jobs", timeout=10).json()["items"]:
            if job["id"] in expected:
                assert datetime.fromisoformat(job["next_run_at"]) == expected[job["id"]], job
        # The runner's slots are whole UTC seconds, one second apart, and the job's next one follows them.
        slots = sorted(
            datetime.fromisoformat(r["scheduled_for"])
            for r in job_runs(api, every["id"])
            if r["trigger"] == "schedule"
        )
        assert all(slot.microsecond == 0 for slot in slots), slots
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots)), slots
        current = httpx.get(f"{api}/jobs/{every['id']}", timeout=10).json()
        assert datetime.fromisoformat(current["next_run_at"]) > slots[-1]
        assert datetime.fromisoformat(current["next_run_at"]) - datetime.now(UTC) < timedelta(seconds=5)
        assert error_lines(runner) == []
