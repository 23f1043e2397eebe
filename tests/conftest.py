"""Shared fixtures: real PostgreSQL, per-test databases, the API, runner processes, HTTP receivers.

Each test gets a fresh database cloned from a migrated template; receivers are real HTTP servers on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.config import Settings, load_settings
from scheduler.db import connections, store
from scheduler.db.connections import Pool
from scheduler.db.migrate import migrate
from scheduler.domain.keys import key_hash, new_key
from scheduler.domain.models import RunStatus, RunTrigger
from scheduler.ids import uuid7
from scheduler.runner.service import RunnerParts, assemble, http_client

ROOT = Path(__file__).resolve().parents[1]
logging.getLogger("httpx").setLevel(logging.WARNING)
_counter = itertools.count()


def _docker_answers() -> bool:
    """Whether a Docker engine answers, for a testcontainers PostgreSQL.

    Without an engine the docker client leaves its socket unclosed when it gives up, and the
    ResourceWarning would fail whichever test the garbage collector happens to run in: the socket
    is looked for first, and the client's leftovers are collected here with that warning ignored.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # noqa: PLC0415 - only when no URL is given

            engine = docker.from_env(timeout=2)
            try:
                engine.ping()
            finally:
                engine.close()
        except Exception:
            return False
        finally:
            gc.collect()
    return True


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: SCHEDULER_TEST_DATABASE_URL, else testcontainers, else the embedded one."""
    url = os.environ.get("SCHEDULER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from scheduler.cli.embedded import start, stop  # noqa: PLC0415

    data = Path(tempfile.mkdtemp(prefix="scheduler-test-pg-"))
    url, server = start(data / "pgdata")
    try:
        yield url
    finally:
        stop(server)
        shutil.rmtree(data, ignore_errors=True)


def url_for(server_url: str, dbname: str) -> str:
    """The same server, another database."""
    return psycopg.conninfo.make_conninfo(server_url, dbname=dbname)


def _admin(server_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url_for(server_url, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """A migrated database that every test's database is cloned from."""
    name = f"sched_tmpl_{os.getpid()}"
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(url_for(server_url, name))
    yield name
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"sched_t_{os.getpid()}_{next(_counter)}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield url_for(server_url, name)
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sql(db_url: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Run a statement on the test database and return its rows (for assertions and setup)."""
    conn = psycopg.connect(db_url, autocommit=True)

    def run(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []

    yield run
    conn.close()


def settings_for(db_url: str, **overrides: Any) -> Settings:
    """Settings as the environment would give them, pointed at the test database."""
    env = {"SCHEDULER_DATABASE_URL": db_url, "SCHEDULER_AUTH": "off"}
    env.update({f"SCHEDULER_{k.upper()}": str(v) for k, v in overrides.items()})
    return load_settings(env)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """The API, in-process, on the test database, with auth off (namespace `default`)."""
    app = create_app(settings_for(db_url))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
async def runner_parts(db_url: str) -> AsyncIterator[RunnerParts]:
    """A runner's cycle, completer and services in-process on the test database, none of them started.

    Tests call their steps (``run_once(now=...)``, ``claim_due_once``, ``flush``) and look at the rows.
    """
    settings = settings_for(db_url, http_allow_nets="127.0.0.0/8,::1/128")
    pool = Pool(db_url, application_name="scheduler-runner-test", max_size=4)
    try:
        async with http_client(settings) as outbound:
            yield assemble(settings, pool, outbound, database_url=db_url)
    finally:
        await pool.close()


async def start_run(
    parts: RunnerParts,
    job_id: UUID,
    *,
    slot: datetime,
    lease_s: float,
    at: datetime | None = None,
    runner: str = "runner-that-dies",
    trigger: RunTrigger = RunTrigger.SCHEDULE,
) -> store.Lease:
    """Record a running attempt 1 of ``slot`` (started at ``at``, the database's now unless given)."""
    async with parts.runner.pool.connection() as conn:
        (row,) = await store.run_record_many(
            conn,
            [
                store.NewRun(
                    id=uuid7(slot),
                    job_id=job_id,
                    scheduled_for=slot,
                    trigger=trigger,
                    attempt=1,
                    status=RunStatus.RUNNING,
                )
            ],
            [store.Move(job_id=job_id, moves=False)],
            runner=runner,
            lease_s=lease_s,
            now=at,
        )
    assert row.lease_token is not None
    return store.Lease(run_id=row.id, scheduled_for=row.scheduled_for, lease_token=row.lease_token)


# ------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process of ours started by a test."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    name: str = ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


@dataclass
class Procs:
    """Starts runner and API processes and stops whatever is left at the end of the test."""

    db_url: str
    tmp: Path
    started: list[Proc] = field(default_factory=list)

    def env(self, **overrides: Any) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SCHEDULER_DATABASE_URL": self.db_url,
                "SCHEDULER_AUTH": "off",
                "SCHEDULER_LOG_FORMAT": "json",
                "SCHEDULER_HTTP_ALLOW_NETS": "127.0.0.0/8,::1/128",
                "SCHEDULER_POLL_INTERVAL_S": "1",
            }
        )
        env.update({f"SCHEDULER_{k.upper()}": str(v) for k, v in overrides.items()})
        return env

    def start(self, args: list[str], **overrides: Any) -> Proc:
        log_path = self.tmp / f"proc-{len(self.started)}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *args], env=self.env(**overrides), stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc(popen, log_path)
        self.started.append(proc)
        return proc

    def runner(self, **overrides: Any) -> Proc:
        overrides.setdefault("runner_name", f"runner-{len(self.started)}")
        proc = self.start(["-m", "scheduler.runner"], **overrides)
        proc.name = str(overrides["runner_name"])
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(timeout=10)


@pytest.fixture
def procs(db_url: str, tmp_path: Path) -> Iterator[Procs]:
    """Start our own processes against the test database; all are stopped afterwards."""
    group = Procs(db_url, tmp_path)
    yield group
    group.stop_all()


# --------------------------------------------------------------------------- HTTP receivers


@dataclass
class Received:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as told."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    reply: bytes = b"ok"
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP target that records what the runners send it."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            target = holder["r"]
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with target.lock:
                target.requests.append(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.time(),
                    )
                )
                delay = target.delay_s
            if delay:
                time.sleep(delay)  # the slow target a test asked for
            with contextlib.suppress(OSError):
                self.send_response(target.status)
                self.send_header("content-length", str(len(target.reply)))
                self.end_headers()
                self.wfile.write(target.reply)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        def log_message(self, *_: Any) -> None:
            return

    class QuietServer(ThreadingHTTPServer):
        # socketserver's default listen backlog is 5. Runners open dozens of connections at once,
        # and connections past the backlog wait on TCP retransmits: a call could reach the receiver
        # near the end of its timeout and be recorded here while its runner timed it out.
        request_queue_size = 1024

        def handle_error(self, *_: Any) -> None:
            # Runners that are killed or cancel a call drop their connections; that is the test.
            return

    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["r"]
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------- polling


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Poll a condition from an async test until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.05)


async def create_api_key(db_url: str, namespace: str) -> str:
    """Make an API key for ``namespace`` the way `scheduler keys create` does; return the key."""
    key = new_key()
    conn = await connections.connect(db_url, application_name="tests")
    async with conn, conn.transaction():
        await store.namespace_ensure(conn, name=namespace)
        await store.api_key_insert(
            conn, key_id=uuid7(), namespace=namespace, prefix=key[:12], key_hash=key_hash(key), description=""
        )
    return key


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(procs: Procs, *, auth: str = "off") -> str:
    """Start `scheduler api` on a free port and return its URL once /healthz answers."""
    port = free_port()
    proc = procs.start(["-m", "scheduler", "api", "--port", str(port)], auth=auth)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.popen.poll() is not None:
            pytest.fail(f"the API exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, what="the API's /healthz")
    return url


# ---------------------------------------------------------------------------------- browser

# Switches that keep Debian's chromium from calling home: no updates, sync, field trials or
# background fetches, so the only traffic is what the page under test asks for.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    # Every name but 127.0.0.1 fails to resolve: a page that needs the internet shows it here.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def chromium_path() -> str | None:
    """Debian's chromium (or SCHEDULER_CHROMIUM); Playwright's own browser download is never used."""
    configured = os.environ.get("SCHEDULER_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless chromium driven by Playwright's sync API, for one test.

    One per test, not per session: while Playwright's sync API is started it keeps an event loop
    running in the main thread, and every async test after it would fail to start its own.
    Without chromium the browser tests skip, unless SCHEDULER_REQUIRE_BROWSER=1 (CI), where they fail.
    """
    path = chromium_path()
    if path is None:
        message = "chromium is not installed: apt-get install chromium (browser tests need it)"
        if os.environ.get("SCHEDULER_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; SCHEDULER_REQUIRE_BROWSER=1 makes this a failure")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only browser tests pay for it

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class OfflinePage:
    """A browser page that may reach only loopback; what it tried to fetch elsewhere is in ``refused``."""

    page: Any
    refused: list[str] = field(default_factory=list)


@pytest.fixture
def offline_page(browser: Any) -> Iterator[OfflinePage]:
    """A fresh browser context whose requests to any host but loopback are aborted and recorded."""
    context = browser.new_context()
    holder = OfflinePage(page=None)

    def only_loopback(route: Any) -> None:
        url = route.request.url
        host = (httpx.URL(url).host or "") if url.startswith(("http:", "https:", "ws:", "wss:")) else ""
        if url.startswith(("data:", "blob:")) or host in _LOOPBACK_HOSTS:
            route.continue_()
        else:
            holder.refused.append(url)
            route.abort()

    context.route("**/*", only_loopback)
    holder.page = context.new_page()
    try:
        yield holder
    finally:
        context.close()
