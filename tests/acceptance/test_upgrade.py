"""A rolling upgrade under load: the previous release's runners and API beside this tree's, on one database.

The previous release is the commit in tests/upgrade_from.txt. Its `src` and `sql` are taken out of
git into a temporary folder and run from there (PYTHONPATH; the virtualenv's libraries serve both
versions). On a fresh database the rollout goes through the procedure of docs/operations.md once,
for the whole module:

1. migrate with the previous release, start its API and two of its runners, create every-second
   `log` jobs and a few every-second HTTP jobs against a local receiver, and use the API long
   enough that its statements are prepared on its connections, as in production;
2. while those runners keep firing, apply this tree's migrations (expand), start this tree's API
   and two of its runners beside the old ones, create jobs through both APIs and read through both,
   then once more through the old API (it must answer normally by then);
3. stop the old runners and the old API with SIGTERM, as a rollout does, and let the new runners
   carry on alone for a few seconds.

Each test then checks one promise over the window from every job's first slot to a few seconds
after the old runners left: one run per slot, each succeeded at its first attempt, executed once;
nothing stuck; old and new shared the work; no process logged an error; both APIs answered.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from scheduler.db.migrate import available
from scheduler.domain.webhooks import message_id
from tests.conftest import Proc, Procs, free_port, url_for, wait_for
from tests.unit.test_migrations_expand import previous_release, require_release
from tests.unit.test_sql_columns import star_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LOG_JOBS = 100  # every-second log jobs made through the old API before the upgrade
HTTP_JOBS = 4  # every-second HTTP jobs made through the old API before the upgrade
LATE_JOBS = 5  # log jobs made through each API once the schema is migrated
# Small claims spread each second's fires over all four runners, so old and new really share the work.
CLAIM_BATCH = 10
SHARED_RUNS = 20  # runs each runner must have made while it runs beside the others
PHASE_S = 4  # seconds of slots the old fleet fires alone, and then beside the new one
ALONE_S = 3  # seconds the new runners run alone before the window closes
WARM = 6  # psycopg prepares a statement on its 5th execution on a connection
# What PostgreSQL answers a statement prepared before a migration changed the row type it returns
# (a column added to a table read with `SELECT *` or `RETURNING *`). psycopg then forgets that
# statement on that connection, so each (connection, statement) pair fails once at most.
STALE_PLAN = "cached plan must not change result type"


# ------------------------------------------------------------------------------ the releases


@dataclass(frozen=True)
class Release:
    """The previous release, taken out of git: its code runs with PYTHONPATH=src."""

    commit: str
    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    def star_queries(self) -> dict[str, list[str]]:
        """Its queries returning a table's `*`: each fails once per connection after a migration."""
        return star_queries(self.root / "sql" / "queries")


def extract_previous(into: Path) -> Release:
    commit = previous_release()
    require_release(commit)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src", "sql"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return Release(commit, into)


def env_of(group: Procs, release: Release | None, **overrides: Any) -> dict[str, str]:
    """The processes' environment; the previous release's code first on the path when given."""
    env = group.env(**overrides)
    env.pop("PYTHONPATH", None)
    if release is not None:
        env["PYTHONPATH"] = str(release.src)
    return env


def code_location(group: Procs, release: Release | None) -> list[str]:
    """Where `scheduler` and its SQL are loaded from in that environment."""
    probe = "import scheduler.db.queries as q; print(q.__file__); print(q.sql_dir())"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env_of(group, release), capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def api_connections(group: Procs, release: Release | None) -> int:
    """How many pooled connections an API of that release opens at most: workers x SCHEDULER_DB_POOL_MAX."""
    probe = "from scheduler.config import load_settings as l; s = l(); print(s.api_workers * s.db_pool_max)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env_of(group, release), capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def migrate(group: Procs, release: Release | None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "migrate"],
        env=env_of(group, release),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    which = "the previous release" if release else "this tree"
    assert done.returncode == 0, f"migrate with {which} exited {done.returncode}:\n{done.stdout}{done.stderr}"


# ----------------------------------------------------------------------------- processes


def start(group: Procs, args: list[str], release: Release | None, name: str, **overrides: Any) -> Proc:
    log_path = group.tmp / f"{name}.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, *args],
            env=env_of(group, release, **overrides),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(popen, log_path, name)
    group.started.append(proc)
    return proc


def start_runner(group: Procs, release: Release | None, name: str) -> Proc:
    return start(group, ["-m", "scheduler.runner"], release, name, runner_name=name, claim_batch=CLAIM_BATCH)


_ID_IN_PATH = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Refusal:
    """A request an API answered otherwise than expected, and in which phase of the rollout."""

    api: str
    phase: str
    method: str
    path: str
    status: int
    text: str

    @property
    def route(self) -> str:
        """The request's method and path with ids as `{id}`: which statements it ran."""
        return f"{self.method} {_ID_IN_PATH.sub('/{id}', self.path)}"

    def __str__(self) -> str:
        """The refusal as the failure message lists it."""
        return f"{self.api} ({self.phase}) {self.method} {self.path}: {self.status} {self.text[:300]}"


class Api:
    """One API process as a client sees it; requests it refused are kept, to be reported together.

    ``phase`` names the step of the rollout its requests are made in (`alone`, `migrated`: the
    first requests after this tree's migrations, `settled`: the ones after those).
    """

    def __init__(self, group: Procs, release: Release | None, name: str) -> None:
        port = free_port()
        self.proc = start(group, ["-m", "scheduler", "api", "--port", str(port)], release, name)
        self.name = name
        self.phase = "alone" if release is not None else "migrated"
        self.failures: list[Refusal] = []
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def ready() -> bool:
            if self.proc.popen.poll() is not None:
                pytest.fail(f"{name} exited with {self.proc.popen.returncode}:\n{self.proc.output()}")
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, what=f"{name}'s /readyz")

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        answer = self.client.request(method, path, **kwargs)
        if answer.status_code != expect:
            self.failures.append(
                Refusal(self.name, self.phase, method, path, answer.status_code, answer.text)
            )
            return None
        return answer.json()

    def create_job(self, name: str, action: dict[str, Any]) -> None:
        body = {
            "name": name,
            "schedule": "@every 1s",
            "action": action,
            "overlap": "allow",
            # A slot a loaded machine reaches late still fires, as itself: lateness is not tested here.
            "misfire": {"policy": "all", "grace_s": 5, "window_s": 3600},
        }
        self.call("POST", "/jobs", 201, json=body)

    def read_around(self, job_id: UUID) -> None:
        """The reads a console or a client makes: one job, the list, its runs, the namespace's runs."""
        self.call("GET", f"/jobs/{job_id}", 200)
        self.call("GET", "/jobs", 200, params={"limit": 500})
        self.call("GET", f"/jobs/{job_id}/runs", 200)
        self.call("GET", "/runs", 200, params={"limit": 50})


def stop(procs: list[Proc]) -> dict[str, int]:
    """SIGTERM each, as a rollout does, and wait; return the exit codes."""
    return {proc.name: proc.stop(timeout=60) for proc in procs}


class WebhookCounter:
    """An HTTP target on 127.0.0.1 that answers 200 and counts each `webhook-id` it receives."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        lock = threading.Lock()
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    seen[self.headers.get("webhook-id", "")] += 1
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------- database


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def db_now(url: str) -> datetime:
    ((now,),) = query(url, "SELECT now()")
    assert isinstance(now, datetime)
    return now


def every_job_fired_after(url: str, at: datetime) -> bool:
    """Whether every job has a succeeded run of a slot after ``at``."""
    ((behind,),) = query(
        url,
        "SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.job_id = j.id"
        " AND r.scheduled_for > %s AND r.status = 'succeeded')",
        (at,),
    )
    return behind == 0


def runs_by_runner(url: str, since: datetime) -> dict[str, int]:
    rows = query(url, "SELECT runner, count(*) FROM runs WHERE started_at >= %s GROUP BY runner", (since,))
    return {str(runner): int(count) for runner, count in rows}


def cross_fired(url: str) -> set[tuple[str, str]]:
    """(version of the API that made a job, version of a runner that fired it), for the late jobs."""
    rows = query(
        url,
        "SELECT DISTINCT split_part(j.name, '-api-', 1), split_part(r.runner, '-', 1) FROM runs r"
        " JOIN jobs j ON j.id = r.job_id WHERE j.name LIKE '%%-api-%%'",
    )
    return {(str(api), str(runner)) for api, runner in rows}


def holds_within(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes; say which."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------------------- logs


def problems_in(proc: Proc) -> list[str]:
    """The lines of a process's output that report an error."""
    found: list[str] = []
    for line in proc.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line:
                found.append(line)
            continue
        level = str(event.get("level", "")).lower() if isinstance(event, dict) else ""
        if level in {"error", "critical", "exception"}:
            found.append(line)
    return found


def log_events(procs: list[Proc]) -> Counter[tuple[UUID, datetime]]:
    """How many `job_log` events each (job, slot) got, over every runner's output."""
    seen: Counter[tuple[UUID, datetime]] = Counter()
    for proc in procs:
        for line in proc.output().splitlines():
            if '"job_log"' in line and (event := json.loads(line)).get("event") == "job_log":
                seen[UUID(event["job_id"]), datetime.fromisoformat(event["scheduled_for"])] += 1
    return seen


# ------------------------------------------------------------------------------- rollout


@dataclass
class Rollout:
    """What the rollout did and left behind, for the tests to judge."""

    url: str
    previous: Release
    code: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, list[int]] = field(default_factory=dict)
    apis: list[Api] = field(default_factory=list)
    old_runners: list[Proc] = field(default_factory=list)
    new_runners: list[Proc] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    window_end: datetime | None = None
    crossed: set[tuple[str, str]] = field(default_factory=set)
    settled: bool = False
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    anchors: dict[str, tuple[UUID, datetime]] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    old_api_connections: int = 0

    def run(self, group: Procs, target: WebhookCounter) -> None:
        self.code = {"old": code_location(group, self.previous), "new": code_location(group, None)}
        self.old_api_connections = api_connections(group, self.previous)
        self.alone(group, target)
        self.side_by_side(group)
        self.contract()
        self.rows = query(
            self.url,
            "SELECT j.name, j.id, r.scheduled_for, r.attempt, r.status, r.runner"
            " FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.scheduled_for <= %s",
            (self.window_end,),
        )
        self.anchors = {
            str(name): (i, at) for name, i, at in query(self.url, "SELECT name, id, anchor_at FROM jobs")
        }
        self.deliveries = Counter(target.seen)

    def alone(self, group: Procs, target: WebhookCounter) -> None:
        """The previous release by itself, its API's statements prepared as they are in production."""
        migrate(group, self.previous)
        self.versions["old"] = [v for (v,) in query(self.url, "SELECT version FROM scheduler_migrations")]
        old_api = Api(group, self.previous, "old-api")
        self.apis.append(old_api)
        self.old_runners = [start_runner(group, self.previous, f"old-{n}") for n in (1, 2)]
        for n in range(LOG_JOBS):
            old_api.create_job(f"log-{n}", {"type": "log", "payload": {"n": n}})
        for n in range(HTTP_JOBS):
            old_api.create_job(f"http-{n}", {"type": "http", "method": "POST", "url": f"{target.url}/up/{n}"})
        started = db_now(self.url)
        wait_for(
            lambda: (
                all(runs_by_runner(self.url, started).get(p.name, 0) >= SHARED_RUNS for p in self.old_runners)
                and every_job_fired_after(self.url, started + timedelta(seconds=PHASE_S))
            ),
            timeout=60,
            what=f"both old runners firing, {PHASE_S} s of slots",
        )
        ((first,),) = query(self.url, "SELECT id FROM jobs WHERE name = 'log-0'")
        for _ in range(WARM):
            old_api.read_around(first)

    def side_by_side(self, group: Procs) -> None:
        """Expand: this tree's migrations under the old fleet, then this tree's processes beside it."""
        migrate(group, None)
        self.versions["new"] = [v for (v,) in query(self.url, "SELECT version FROM scheduler_migrations")]
        old_api, new_api = self.apis[0], Api(group, None, "new-api")
        old_api.phase = "migrated"
        self.apis.append(new_api)
        for n in range(LATE_JOBS):
            old_api.create_job(f"old-api-{n}", {"type": "log", "payload": {"n": n}})
            new_api.create_job(f"new-api-{n}", {"type": "log", "payload": {"n": n}})
        read = [  # log-0, and the first job each API made (an old API's first create may be refused)
            job_id
            for (job_id,) in query(
                self.url,
                "SELECT DISTINCT ON (split_part(name, '-', 1)) id FROM jobs"
                " WHERE name ~ '^(log-0|old-api-[0-9]+|new-api-0)$' ORDER BY split_part(name, '-', 1), name",
            )
        ]
        for api in self.apis:  # each reads what both wrote
            for job_id in read:
                api.read_around(job_id)
        # Every kind of request the old API makes once more: by now it must answer them all.
        old_api.phase = new_api.phase = "settled"
        old_api.create_job(f"old-api-{LATE_JOBS}", {"type": "log", "payload": {"n": LATE_JOBS}})
        for job_id in read:
            old_api.read_around(job_id)
        self.new_runners = [start_runner(group, None, f"new-{n}") for n in (1, 2)]
        together = db_now(self.url)
        made = {
            str(a)
            for (a,) in query(self.url, "SELECT split_part(name, '-api-', 1) FROM jobs WHERE name ~ '-api-'")
        }
        wanted = {(api, "new" if api == "old" else "old") for api in made}

        def shared() -> bool:
            counts = runs_by_runner(self.url, together)
            return (
                every_job_fired_after(self.url, together + timedelta(seconds=PHASE_S))
                and all(counts.get(p.name, 0) >= SHARED_RUNS for p in self.old_runners + self.new_runners)
                and wanted <= cross_fired(self.url)
            )

        wait_for(shared, timeout=90, what="old and new runners both firing, each the other API's jobs too")
        self.crossed = cross_fired(self.url)

    def contract(self) -> None:
        """The old processes leave as a rollout stops them; the new runners carry on alone."""
        self.exit_codes.update(stop([*self.old_runners, self.apis[0].proc]))
        window_end = (db_now(self.url) + timedelta(seconds=ALONE_S)).replace(microsecond=0)
        self.window_end = window_end
        wait_for(
            lambda: every_job_fired_after(self.url, window_end),
            timeout=60,
            what="the new runners firing every job past the window alone",
        )
        self.settled = holds_within(
            lambda: (
                not query(
                    self.url,
                    "SELECT 1 FROM runs WHERE scheduled_for <= %s"
                    " AND status IN ('pending', 'running') LIMIT 1",
                    (window_end,),
                )
            ),
            timeout=20,
        )
        self.exit_codes.update(stop([*self.new_runners, self.apis[1].proc]))
        for api in self.apis:
            api.client.close()


@pytest.fixture(scope="module")
def rollout(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rollout]:
    previous = extract_previous(tmp_path_factory.mktemp("previous-release"))
    name = f"sched_upgrade_{os.getpid()}"
    admin = url_for(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = url_for(server_url, name)
    group = Procs(url, tmp_path_factory.mktemp("upgrade-logs"))
    target = WebhookCounter()
    done = Rollout(url, previous)
    try:
        done.run(group, target)
        yield done
    finally:
        group.stop_all()
        target.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------- tests


class TestRollingUpgrade:
    """The previous release and this tree share one database through a migration, under load."""

    def test_each_side_runs_its_own_release_and_the_migrations_all_applied(self, rollout):
        assert all(Path(path).is_relative_to(rollout.previous.root) for path in rollout.code["old"])
        assert not any(Path(path).is_relative_to(rollout.previous.root) for path in rollout.code["new"])
        shipped = [migration.version for migration in available()]
        assert rollout.versions["new"] == shipped
        assert rollout.versions["old"] == shipped[: len(rollout.versions["old"])]

    def test_every_slot_in_the_window_has_exactly_one_run(self, rollout):
        assert rollout.window_end is not None
        slots: dict[str, Counter[datetime]] = {name: Counter() for name in rollout.anchors}
        for name, _, slot, *_ in rollout.rows:
            slots[name][slot] += 1
        lost: dict[str, int] = {}
        repeated: dict[str, list[datetime]] = {}
        for name, (_, anchor) in rollout.anchors.items():
            seconds = int((rollout.window_end - anchor).total_seconds())
            expected = {anchor + timedelta(seconds=k) for k in range(1, seconds + 1)}
            assert len(expected) >= ALONE_S, f"{name} has too few slots in the window"
            if missing := expected - set(slots[name]):
                lost[name] = len(missing)
            if twice := sorted(slot for slot, count in slots[name].items() if count > 1):
                repeated[name] = twice
        assert len(rollout.anchors) >= LOG_JOBS + HTTP_JOBS, sorted(rollout.anchors)
        assert not lost, f"slots without a run: {lost}"
        assert not repeated, f"slots with more than one run: {repeated}"

    def test_every_run_succeeded_at_its_first_attempt_and_none_is_stuck(self, rollout):
        assert rollout.settled, "runs of the window still pending or running 20 s after it closed"
        unfinished = [row for row in rollout.rows if row[3] != 1 or row[4] != "succeeded"]
        assert not unfinished, f"runs that did not succeed at their first attempt: {unfinished[:20]}"

    def test_old_and_new_runners_shared_the_load_and_each_others_jobs(self, rollout):
        by_version = Counter(str(row[5]).split("-")[0] for row in rollout.rows)
        assert by_version["old"] > 0
        assert by_version["new"] > 0
        made = {name.split("-api-")[0] for name in rollout.anchors if "-api-" in name}
        assert {(api, "new" if api == "old" else "old") for api in made} <= rollout.crossed

    def test_each_slot_was_executed_once(self, rollout):
        events = log_events([*rollout.old_runners, *rollout.new_runners])
        wrong: dict[tuple[str, datetime], int] = {}
        for name, job_id, slot, *_ in rollout.rows:
            if name.startswith("http-"):
                count = rollout.deliveries[message_id(job_id, slot)]
            else:
                count = events[job_id, slot]
            if count != 1:
                wrong[name, slot] = count
        assert not wrong, f"slots executed other than once (log events, webhook deliveries): {wrong}"

    def test_no_runner_logged_an_error_and_each_drained_cleanly(self, rollout):
        runners = [*rollout.old_runners, *rollout.new_runners]
        errors = {proc.name: found for proc in runners if (found := problems_in(proc))}
        assert not errors, (
            f"errors logged: { {name: [line[-800:] for line in lines] for name, lines in errors.items()} }"
        )
        assert {proc.name: rollout.exit_codes[proc.name] for proc in runners} == {p.name: 0 for p in runners}

    def test_both_apis_answered_every_request_throughout(self, rollout):
        """Strict, but for the one error a previous release reading `*` meets after the migrations.

        Such a release's API holds statements prepared over `SELECT *` / `RETURNING *`; once this
        tree's migrations add columns, each fails once on each connection that prepared it (a 500
        in that release; psycopg then forgets it there, and a failed transaction's ROLLBACK makes it
        forget all of that connection's). Allowed: only that error, only from the old API, only in
        its first requests after the migrations, each logged with that error, and no more of them
        than its pooled connections (workers x SCHEDULER_DB_POOL_MAX) times its `*` queries; the
        requests after those must all be answered. A previous release whose queries name their
        columns (read from its sql/queries) gets no allowance: from the release after this tree's
        on, the test is strict by itself.
        """
        old_api, new_api = rollout.apis
        stale_queries = rollout.previous.star_queries()
        allowed: list[Refusal] = []
        if stale_queries:
            allowed = [f for f in old_api.failures if f.phase == "migrated" and f.status == 500]
        refused = [str(f) for api in rollout.apis for f in api.failures if f not in allowed]
        assert not refused, "API requests refused during the upgrade:\n" + "\n".join(refused)

        errors = [line for api in rollout.apis for line in problems_in(api.proc)]
        stale_logged = [line for line in problems_in(old_api.proc) if STALE_PLAN in line] if allowed else []
        other_errors = [line[-800:] for line in errors if line not in stale_logged]
        assert not other_errors, f"errors logged by the APIs: {other_errors}"
        # Each allowed 500 is the stale plan, as the old API logged it (and only those were logged).
        assert len(stale_logged) == len(allowed), (
            f"{len(allowed)} refused requests, {len(stale_logged)} logged as {STALE_PLAN!r}:\n"
            + "\n".join([*map(str, allowed), *stale_logged])
        )
        most = rollout.old_api_connections * len(stale_queries)
        assert len(allowed) <= most, (
            f"{len(allowed)} stale-plan refusals, more than {rollout.old_api_connections} connections"
            f" x {len(stale_queries)} `*` queries: {Counter(f.route for f in allowed)}"
        )
        # uvicorn re-raises the SIGTERM it drained on.
        assert {rollout.exit_codes[api.name] for api in (old_api, new_api)} <= {0, -signal.SIGTERM}

    def test_each_jobs_count_of_unfinished_runs_agrees_with_its_runs(self, rollout):
        drifted = query(
            rollout.url,
            "SELECT j.name, j.active_runs, count(r.id) FILTER (WHERE r.status IN ('pending', 'running'))"
            " FROM jobs j LEFT JOIN runs r ON r.job_id = j.id GROUP BY j.id"
            " HAVING j.active_runs <> count(r.id) FILTER (WHERE r.status IN ('pending', 'running'))",
        )
        assert not drifted, f"jobs whose active_runs disagrees with their runs: {drifted}"
