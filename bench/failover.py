"""Failover under load: the service on a Patroni cluster whose leader is taken down, connected two ways.

The cluster is the engine production deployments run: Debian's `patroni` with one `etcd` member (v3
API) and two PostgreSQL 15 members, all on 127.0.0.1 free ports, data in a temp dir, PostgreSQL and
Patroni as the `postgres` OS user (bench/patroni/member.yml). Patroni bootstraps the leader with
initdb and builds the replica with pg_basebackup; short timings (--ttl, loop_wait 1 s,
--retry-timeout) make a failover take seconds, and pg_rewind (or a fresh copy when rewinding fails)
brings the old leader back as a replica.

Two copies of the service run side by side, each with its own database on the cluster, so both ways
of connecting live through the same failover:

- `multi-host`: a URL naming both members, `target_session_attrs=read-write`;
- `haproxy`: HAProxy in TCP mode on one port, health-checking each member's Patroni REST API
  (`GET /primary`, `on-marked-down shutdown-sessions`).

Each copy: `scheduler migrate`, one API process, 2 runners, --jobs every-second jobs (half HTTP calls
to a receiver that records every `webhook-id`, retried up to 3 attempts; half `log` actions),
misfire `all`; an open-loop client writes (POST /jobs) and reads (GET /jobs, GET /jobs/{id}, GET
/readyz) each API at a fixed rate and records every status and latency; a probe tries a write every
50 ms on each member and through each route. Then, --rounds times, the leader is taken down
(--kill):

- `host` (default): SIGKILL to its Patroni and every PostgreSQL process, as a host crash would
  (the kernel stays up, so sockets are reset); Patroni fails over once the leader key expires
  (--ttl), and the old leader is started again after --settle seconds and rejoins;
- `freeze`: SIGSTOP to the same processes, a hung host (stuck storage, a frozen VM): connections
  stay open and silent; after --settle they are killed and the member rejoins;
- `postmaster`: SIGKILL to the postmaster alone; Patroni restarts it in place, no failover;
- `switchover`: a planned switchover through Patroni's REST API.

Measured per round: when the old leader took its last write and the new one its first (directly and
through each route); per connection method, from the new leader's first write to runs recorded
again, to the outage's slots all executed, to the first API write answered and to /readyz 200; the
API's answers by status (a 5xx must be 503, never 500) and its longest request. Over the whole run:
slots with no run row, webhook-ids delivered twice and `log` events written twice, each explained
(an expired lease, a claim the old leader committed and never replicated) or counted unexplained.

Prints tables and writes bench/results/failover.json (--output). About 2 minutes with the defaults:

    .venv/bin/python -m bench.failover [--jobs 300] [--rounds 2] [--ttl 10] [--kill host]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO, cast
from uuid import UUID

import httpx
import psutil
import psycopg

from bench.common import exit_on_sigterm, print_table, write_json
from bench.database import seed_jobs
from bench.processes import free_port, scheduler_env
from bench.summary import figure, print_targets
from scheduler.domain.webhooks import message_id

ROOT = Path(__file__).resolve().parents[1]
MEMBER_TEMPLATE = Path(__file__).resolve().parent / "patroni" / "member.yml"
PATRONI = "/usr/bin/patroni"
ETCD = "/usr/bin/etcd"
HAPROXY = "/usr/sbin/haproxy"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
SCOPE = "bench-failover"
MEMBERS = 2
RUNNERS = 2
LOOP_WAIT_S = 1
JOB_PREFIX = "failover-"
EVERY_SECOND = [("* * * * * *", "UTC")]
LOG_ACTION = '{"type": "log", "payload": {"from": "bench-failover"}}'
# A slot claimed more than this late is missed; under `all` every missed slot still runs (`catchup`).
GRACE_S = 5
CATCHUP_WINDOW_S = 3600
# Webhook jobs are retried, as deployments configure them.
HTTP_ATTEMPTS = 3
# The client's jobs never fire during a run: only the seeded jobs make slots.
CLIENT_JOB_SCHEDULE = "0 0 1 1 *"
# How often the write probe tries each route, and how long one try may take.
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1
# HAProxy's checks: every second while a server is up, every half second while it is down or
# changing, down after 2 failures, up after 1 success; connections to a server marked down are cut.
HAPROXY_CHECK = "inter 1s fastinter 500ms downinter 500ms fall 2 rise 1 on-marked-down shutdown-sessions"
ROUTES = ("multi-host", "haproxy")
# The write probe's name for "the new leader, connected to directly".
LEADER = "leader"

HAPROXY_CONF = """\
global
    maxconn 4000

defaults
    mode tcp
    timeout connect 2s
    # Longer than anything here stays idle: the pools keep connections, runners hold one for LISTEN.
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen postgres-primary
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server {check}
{servers}
"""

LOST_SLOTS = """
SELECT j.id, s.slot
FROM jobs AS j
CROSS JOIN generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 second') AS s(slot)
WHERE j.name LIKE %(prefix)s
  AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.job_id = j.id AND r.scheduled_for = s.slot)
ORDER BY s.slot
"""
SLOTS_CHECKED = """
SELECT count(*) * (extract(epoch FROM %(last)s::timestamptz - %(first)s::timestamptz)::int + 1)
FROM jobs WHERE name LIKE %(prefix)s
"""
PROBE_WRITE = b"INSERT INTO failover_probe (route) VALUES (%s) RETURNING inet_server_port()"
RUNS_AGAIN = "SELECT min(created_at) FROM runs WHERE created_at > %(after)s"
RUNS_OF_SLOTS = """
SELECT r.job_id, r.scheduled_for, r.attempt, r.status::text, r.error, r.created_at, r.runner
FROM runs AS r
JOIN unnest(%(job_ids)s::uuid[], %(slots)s::timestamptz[]) AS k(job_id, slot)
  ON r.job_id = k.job_id AND r.scheduled_for = k.slot
ORDER BY r.attempt
"""
SUCCEEDED_HTTP_RUNS = """
SELECT r.job_id, r.scheduled_for
FROM runs AS r JOIN jobs AS j ON j.id = r.job_id
WHERE r.status = 'succeeded' AND j.action ->> 'type' = 'http' AND j.name LIKE %(prefix)s
  AND r.scheduled_for <= %(last)s
"""


def now() -> float:
    """Wall-clock seconds: every process here shares the machine's clock, PostgreSQL included."""
    return time.time()


def at(seconds: float) -> datetime:
    """A wall-clock instant as an aware datetime, for queries."""
    return datetime.fromtimestamp(seconds, UTC)


def wait_until(what: str, predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; RuntimeError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for an error message."""
    if not path.exists():
        return f"({path} is missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------ processes


class Processes:
    """Every process the bench starts, each in its own group, all stopped by `stop_all`."""

    def __init__(self) -> None:
        """Start with none."""
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], log: Path, *, env: dict[str, str] | None = None, as_postgres: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``args``, output to ``log``; as the postgres OS user when asked (PostgreSQL refuses root)."""
        with log.open("ab") as out:
            popen = subprocess.Popen(
                args,
                env=env if env is not None else dict(os.environ),
                cwd=log.parent if as_postgres else ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=PG_USER if as_postgres else None,
                group=PG_USER if as_postgres else None,
                extra_groups=[] if as_postgres else None,
            )
        self.started.append(popen)
        return popen

    @staticmethod
    def stop(popen: subprocess.Popen[bytes], timeout: float = 20) -> None:
        """SIGTERM the process's group, SIGKILL whatever is left of it after ``timeout``."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)

    def stop_all(self) -> None:
        """Stop every process started, newest first."""
        for popen in reversed(self.started):
            self.stop(popen)


# -------------------------------------------------------------------------------------- cluster


@dataclass
class Member:
    """One Patroni member: its PostgreSQL and REST ports, its directory, its Patroni process."""

    name: str
    pg_port: int
    rest_port: int
    home: Path
    patroni: subprocess.Popen[bytes] | None = None
    frozen: list[psutil.Process] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """PostgreSQL's data directory, made by initdb or pg_basebackup under Patroni."""
        return self.home / "data"

    @property
    def config(self) -> Path:
        """The member's Patroni configuration, from bench/patroni/member.yml."""
        return self.home / "patroni.yml"

    @property
    def log(self) -> Path:
        """What Patroni (and PostgreSQL under it) print."""
        return self.home / "patroni.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """A URL to this member alone."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{dbname}"

    def rest(self, path: str) -> int | None:
        """The status Patroni's REST API answers ``path`` with; None when it does not answer."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.rest_port}{path}", timeout=1).status_code
        except httpx.HTTPError:
            return None

    def postgres_processes(self) -> list[psutil.Process]:
        """The member's postmaster, found by its data directory, and every process under it."""
        found: list[psutil.Process] = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and Path(cmdline[0]).name == "postgres" and str(self.data_dir) in cmdline:
                found.append(proc)
                with contextlib.suppress(psutil.Error):
                    found.extend(proc.children(recursive=True))
        return found


class Cluster:
    """etcd and the Patroni members, started in a temp dir and taken down whatever happens."""

    def __init__(self, root: Path, processes: Processes, args: argparse.Namespace) -> None:
        """Lay out the members under ``root``; nothing starts yet."""
        self.root = root
        self.processes = processes
        self.args = args
        self.etcd_port = free_port()
        self.members = [Member(f"pg{i}", free_port(), free_port(), root / f"pg{i}") for i in range(MEMBERS)]

    def multi_host_dsn(self, dbname: str) -> str:
        """A URL naming every member, which libpq walks until one takes writes."""
        hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    def start(self) -> None:
        """etcd, then both members at once: one bootstraps with initdb, the other copies it."""
        self._start_etcd()
        shutil.chown(self.root, PG_USER, PG_USER)
        self.root.chmod(0o755)
        template = string.Template(MEMBER_TEMPLATE.read_text())
        for member in self.members:
            member.home.mkdir()
            shutil.chown(member.home, PG_USER, PG_USER)
            member.home.chmod(0o700)
            member.config.write_text(
                template.substitute(
                    scope=SCOPE,
                    name=member.name,
                    rest_port=member.rest_port,
                    etcd_port=self.etcd_port,
                    ttl=self.args.ttl,
                    loop_wait=LOOP_WAIT_S,
                    retry_timeout=self.args.retry_timeout,
                    synchronous="true" if self.args.synchronous else "false",
                    pg_port=member.pg_port,
                    data_dir=member.data_dir,
                    member_dir=member.home,
                )
            )
            shutil.chown(member.config, PG_USER, PG_USER)
            self.start_member(member)
        leader = wait_until("a Patroni leader", self.leader, timeout=90, interval=0.2)
        for member in self.members:
            if member is not leader:
                wait_until(
                    f"{member.name} streaming from {leader.name}", lambda m=member: self.streaming(m), 120
                )

    def _start_etcd(self) -> None:
        data = self.root / "etcd"
        peer = free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        self.processes.start(
            [
                ETCD,
                "--name=bench",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=bench=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
            self.root / "etcd.log",
        )

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                return httpx.get(f"{client}/health", timeout=1).json().get("health") == "true"
            return False

        wait_until("etcd's /health", healthy, timeout=30)

    def start_member(self, member: Member) -> None:
        """Start (or start again) a member's Patroni."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI_", "PG"))}
        env |= {"HOME": str(member.home), "USER": PG_USER, "LOGNAME": PG_USER}
        member.patroni = self.processes.start(
            [PATRONI, str(member.config)], member.log, env=env, as_postgres=True
        )

    def leader(self) -> Member | None:
        """The member whose Patroni says it is the running primary holding the leader key."""
        return next((m for m in self.members if m.rest("/primary") == 200), None)

    def streaming(self, replica: Member) -> bool:
        """Whether the leader's PostgreSQL shows ``replica`` streaming from it."""
        leader = self.leader()
        if leader is None or leader is replica:
            return False
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(leader.dsn(), autocommit=True, connect_timeout=1) as conn,
        ):
            row = conn.execute(
                b"SELECT count(*) FROM pg_stat_replication"
                b" WHERE application_name = %s AND state = 'streaming'",
                (replica.name,),
            ).fetchone()
            return bool(row and row[0])
        return False

    def crash(self, member: Member, how: str) -> float:
        """Take the member down as ``how`` says; returns when its processes stopped, wall clock.

        - `host`: SIGKILL to Patroni and every PostgreSQL process, as a host crash would; the
          kernel stays up, so its sockets are reset and clients learn at once;
        - `freeze`: SIGSTOP to the same processes, as a frozen VM or a lost network would look:
          connections stay open and silent, new ones are accepted by the kernel and never answered.
          They are killed later, by `kill_frozen`, before the member starts again;
        - `postmaster`: SIGKILL to the postmaster alone; Patroni restarts it in place.
        """
        victims = member.postgres_processes()
        if how == "postmaster":
            victims = victims[:1]
        elif member.patroni is not None:
            victims.insert(0, psutil.Process(member.patroni.pid))
        if not victims:
            raise RuntimeError(f"{member.name} has no processes to take down")
        # Stopped first, all of them within a few milliseconds, so that no backend commits while
        # the others are being killed one by one; the crash is dated once nothing can run.
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGSTOP)
        killed_at = now()
        if how != "freeze":
            for proc in victims:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        if how == "freeze":
            member.frozen = victims
        else:
            psutil.wait_procs(victims, timeout=10)
        if how == "host" and member.patroni is not None:
            member.patroni.wait(timeout=10)
            member.patroni = None
        return killed_at

    def kill_frozen(self, member: Member) -> None:
        """SIGKILL the processes `crash` froze, and wait for them to be gone."""
        if not member.frozen:
            return
        for proc in member.frozen:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(member.frozen, timeout=10)
        member.frozen = []
        if member.patroni is not None:
            member.patroni.wait(timeout=10)
            member.patroni = None

    def switchover(self, leader: Member) -> float:
        """Ask Patroni for a planned switchover to the other member; returns when it was asked."""
        candidate = next(m for m in self.members if m is not leader)
        asked_at = now()
        response = httpx.post(
            f"http://127.0.0.1:{leader.rest_port}/switchover",
            json={"leader": leader.name, "candidate": candidate.name},
            timeout=60,
        )
        if response.status_code != HTTPStatus.OK:
            raise RuntimeError(f"switchover refused: {response.status_code} {response.text}")
        return asked_at

    def rewound(self, member: Member, since: int) -> str:
        """How the member came back, from its Patroni log past byte ``since``."""
        text = member.log.read_bytes()[since:].decode(errors="replace")
        if "remove data directory" in text.lower() or "removing data directory" in text.lower():
            return "data directory rebuilt"
        if "pg_rewind" in text:
            return "pg_rewind"
        return "no rewind needed"

    def stop(self) -> None:
        """Stop Patroni (it stops its PostgreSQL), then kill whatever PostgreSQL of ours is left."""
        for member in self.members:
            self.kill_frozen(member)
        for member in self.members:
            if member.patroni is not None:
                Processes.stop(member.patroni, timeout=15)
        for member in self.members:
            leftovers = member.postgres_processes()
            for proc in leftovers:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(leftovers, timeout=10)


def haproxy_config(cluster: Cluster, port: int) -> str:
    servers = "\n".join(
        f"    server {m.name} 127.0.0.1:{m.pg_port} check port {m.rest_port}" for m in cluster.members
    )
    return HAPROXY_CONF.format(port=port, check=HAPROXY_CHECK, servers=servers)


def start_haproxy(cluster: Cluster, processes: Processes) -> int:
    """HAProxy in the foreground on a free port, routing to whichever member Patroni calls primary."""
    port = free_port()
    config = cluster.root / "haproxy.cfg"
    config.write_text(haproxy_config(cluster, port))
    processes.start([HAPROXY, "-db", "-f", str(config)], cluster.root / "haproxy.log")

    def routes_writes() -> bool:
        with contextlib.suppress(psycopg.Error):
            dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            with psycopg.connect(dsn, autocommit=True, connect_timeout=1) as conn:
                row = conn.execute(b"SELECT NOT pg_is_in_recovery()").fetchone()
                return bool(row and row[0])
        return False

    wait_until("HAProxy routing to the primary", routes_writes, timeout=30, interval=0.2)
    return port


# ------------------------------------------------------------------------------------- receiver


class _RecordingHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answers 204 at once and writes `time webhook-id path` per request."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the Protocol's signature
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            self.out.write(f"{now():.6f} {headers.get('webhook-id', '-')} {path}\n")
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 204 No Content\r\nserver: bench-failover\r\n\r\n")


async def _serve_receiver(port: int, log: Path) -> None:
    loop = asyncio.get_running_loop()
    with log.open("a", buffering=1) as out:
        server = await loop.create_server(lambda: _RecordingHttp(out), "127.0.0.1", port, backlog=4096)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()


@dataclass(frozen=True)
class Delivery:
    """One call the receiver got."""

    at: float
    webhook_id: str
    path: str


def start_receiver(root: Path, processes: Processes) -> tuple[str, Path]:
    """The recording receiver in a process of its own; its base URL and the file it writes."""
    port = free_port()
    log = root / "deliveries.txt"
    args = [sys.executable, "-m", "bench.failover", "--serve-receiver", str(port), "--deliveries", str(log)]
    processes.start(args, root / "receiver.log")
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{base}/ping", timeout=1).status_code == 204
        return False

    wait_until("the receiver", answers, timeout=20)
    return base, log


def read_deliveries(log: Path) -> list[Delivery]:
    found = []
    for line in log.read_text().splitlines():
        stamp, webhook_id, path = line.split(" ", 2)
        if webhook_id != "-":
            found.append(Delivery(float(stamp), webhook_id, path))
    return found


# ---------------------------------------------------------------------------------------- probe


class WriteProbe:
    """Tries a write on each route every 50 ms and keeps when each try succeeded, and on which server.

    `multi-host` is the multi-host URL itself (libpq finds the writable member); `haproxy` goes
    through HAProxy's port; each member's name is that member alone (a standby refuses the write,
    so its first success is its promotion). A connection is kept while it works and opened again
    when it fails. Each try runs in a thread of its own and is given up after PROBE_TIMEOUT_S: a
    frozen server answers neither the query nor a cancel, and its socket stays open until its
    processes die.
    """

    def __init__(self, routes: dict[str, str]) -> None:
        """``routes``: name to the `postgres` database's URL through that route."""
        self.routes = routes
        self.successes: dict[str, list[tuple[float, int]]] = {name: [] for name in routes}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(name,), daemon=True) for name in routes]

    def start(self) -> None:
        """One thread per route."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop trying."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _loop(self, name: str) -> None:
        # The connection a try uses, in a box of its own: a try given up on keeps its box, and the
        # next try starts with an empty one.
        box: list[psycopg.Connection[Any]] = []
        while not self._stop.is_set():
            started = now()
            outcome: list[BaseException | None] = []
            worker = threading.Thread(target=self._attempt, args=(name, box, outcome), daemon=True)
            worker.start()
            worker.join(timeout=PROBE_TIMEOUT_S)
            if not outcome or outcome[0] is not None:
                if outcome and box:
                    with contextlib.suppress(psycopg.Error):
                        box[0].close()
                box = []
            self._stop.wait(max(0.0, PROBE_INTERVAL_S - (now() - started)))

    def _attempt(
        self, name: str, box: list[psycopg.Connection[Any]], outcome: list[BaseException | None]
    ) -> None:
        try:
            if not box:
                box.append(
                    psycopg.connect(self.routes[name], autocommit=True, connect_timeout=PROBE_TIMEOUT_S)
                )
            row = box[0].execute(PROBE_WRITE, (name,)).fetchone()
            self.successes[name].append((now(), int(row[0]) if row and row[0] else 0))
        except psycopg.Error as exc:
            outcome.append(exc)
            return
        outcome.append(None)

    def first_success(self, route: str, after: float, *, not_on: int | None = None) -> float | None:
        """The first write that succeeded on ``route`` after ``after``, on a server other than ``not_on``."""
        return next((t for t, port in self.successes[route] if t > after and port != not_on), None)

    def servers(self, route: str) -> list[tuple[float, int]]:
        """When the writes on ``route`` moved to another server (a PostgreSQL port)."""
        moves: list[tuple[float, int]] = []
        for t, port in self.successes[route]:
            if not moves or moves[-1][1] != port:
                moves.append((round(t, 3), port))
        return moves


# ------------------------------------------------------------------------------------ API client


@dataclass(frozen=True)
class Answer:
    """One request of the client: what it was, when it was sent and answered, and how."""

    stack: str
    kind: str
    sent: float
    answered: float
    status: int | None
    error: str | None


class ApiLoad:
    """An open-loop client: per stack, --client-rate writes/s and reads/s, and /readyz 4 times a second.

    Open loop: requests are sent on the clock whatever the earlier ones are doing, so a stalled API
    shows as long requests and the first answer after a failover is found to within one tick.
    """

    def __init__(self, apis: dict[str, str], rate_per_s: float) -> None:
        """``apis``: stack name to the API's base URL."""
        self.apis = apis
        self.rate_per_s = rate_per_s
        self.answers: list[Answer] = []
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(),), daemon=True
        )
        self._job_ids: dict[str, list[str]] = defaultdict(list)

    def start(self) -> None:
        """Send requests from a thread of its own until `stop`."""
        self._thread.start()

    def wrote_since(self, stack: str, moment: float) -> bool:
        """Whether a write sent after ``moment`` was answered 201."""
        return any(
            a.stack == stack and a.kind == "write" and a.status == HTTPStatus.CREATED and a.sent > moment
            for a in reversed(self.answers)
        )

    def stop(self) -> None:
        """Stop sending, wait for the answers still due (60 s at most each)."""
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=90)

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            ticks = [
                self._tick(client, stack, kind, period)
                for stack in self.apis
                for kind, period in (
                    ("write", 1 / self.rate_per_s),
                    ("read", 1 / self.rate_per_s),
                    ("ready", 0.25),
                )
            ]
            await asyncio.gather(*ticks)

    async def _tick(self, client: httpx.AsyncClient, stack: str, kind: str, period: float) -> None:
        assert self._stopping is not None  # noqa: S101 - set before the ticks start
        pending: set[asyncio.Task[None]] = set()
        count = 0
        next_at = time.monotonic()
        while not self._stopping.is_set():
            task = asyncio.create_task(self._one(client, stack, kind, count))
            pending.add(task)
            task.add_done_callback(pending.discard)
            count += 1
            next_at += period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending)

    async def _one(self, client: httpx.AsyncClient, stack: str, kind: str, count: int) -> None:
        base = self.apis[stack]
        sent = now()
        status: int | None = None
        error: str | None = None
        try:
            if kind == "write":
                body = {
                    "name": f"client-{stack}-{count}",
                    "schedule": CLIENT_JOB_SCHEDULE,
                    "action": {"type": "log", "payload": {"from": "bench-failover"}},
                }
                response = await client.post(f"{base}/jobs", json=body)
                if response.status_code == 201:
                    self._job_ids[stack].append(response.json()["id"])
            elif kind == "read":
                ids = self._job_ids[stack]
                if count % 2 and ids:
                    response = await client.get(f"{base}/jobs/{ids[-1]}")
                else:
                    response = await client.get(f"{base}/jobs", params={"limit": 20})
            else:
                response = await client.get(f"{base}/readyz")
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self.answers.append(Answer(stack, kind, sent, now(), status, error))


# ----------------------------------------------------------------------------------- the service


@dataclass
class Stack:
    """One copy of the service: its database on the cluster, its API, its runners, its jobs."""

    name: str
    database: str
    url: str
    root: Path
    api: str = ""
    first_slot: float = 0.0
    runner_logs: list[Path] = field(default_factory=list)
    api_log: Path | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def setup(self, admin_dsn: str, receiver: str, args: argparse.Namespace, processes: Processes) -> None:
        """Create and migrate the database, seed the jobs, start the API and the runners."""
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"'.encode())
        migrated = subprocess.run(
            [sys.executable, "-m", "scheduler", "migrate"],
            env=scheduler_env(self.url),
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if migrated.returncode != 0:
            raise RuntimeError(
                f"{self.name}: migrate exited {migrated.returncode}:\n{migrated.stderr.decode()}"
            )
        self.seed(receiver, args.jobs)
        self.start(processes, lease_s=args.lease_s)

    def seed(self, receiver: str, jobs: int) -> None:
        """Every-second jobs from a few seconds ahead, half HTTP (retried) and half log, misfire `all`."""
        first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
        http = json.dumps({"type": "http", "method": "POST", "url": f"{receiver}/{self.name}", "body": {}})
        for count, action, kind in ((jobs - jobs // 2, http, "http"), (jobs // 2, LOG_ACTION, "log")):
            seed_jobs(
                self.url,
                count,
                first=first,
                action=action,
                prefix=f"{JOB_PREFIX}{kind}-",
                grace_s=GRACE_S,
                schedules=EVERY_SECOND,
            )
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                b"UPDATE jobs SET start_at = anchor_at, misfire_policy = 'all', misfire_window_s = %s",
                (CATCHUP_WINDOW_S,),
            )
            # Webhooks are retried, as deployments configure them: a run whose lease expires is tried
            # again, and that second call is a duplicate the receiver must deduplicate.
            conn.execute(
                b"UPDATE jobs SET retry_max_attempts = %s, retry_min_backoff_s = 1, retry_max_backoff_s = 5"
                b" WHERE action ->> 'type' = 'http'",
                (HTTP_ATTEMPTS,),
            )
        self.first_slot = first.timestamp()

    def start(self, processes: Processes, *, lease_s: float) -> None:
        """The API and the runners, the runners logging at info so each `log` action leaves its event."""
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        self.api_log = self.root / f"{self.name}-api.log"
        api = [sys.executable, "-m", "scheduler", "api", "--port", str(port)]
        self.started.append(processes.start(api, self.api_log, env=scheduler_env(self.url)))
        for i in range(RUNNERS):
            log = self.root / f"{self.name}-runner-{i}.log"
            env = scheduler_env(
                self.url,
                runner_name=f"{self.name}-{i}",
                http_allow_nets="127.0.0.0/8",
                log_level="info",
                lease_s=lease_s,
            )
            self.started.append(processes.start([sys.executable, "-m", "scheduler.runner"], log, env=env))
            self.runner_logs.append(log)

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api}/readyz", timeout=1).status_code == 200
            return False

        wait_until(f"{self.name}'s API /readyz", ready, timeout=60)

    def stop(self) -> None:
        """Stop the runners first (they finish and write what they have), then the API."""
        for popen in reversed(self.started):
            Processes.stop(popen, timeout=45)

    def log_events(self) -> list[dict[str, Any]]:
        """The `job_log` events the runners wrote (one per log action executed)."""
        found = []
        for path in self.runner_logs:
            for line in path.read_text(errors="replace").splitlines():
                if '"job_log"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "job_log":
                        found.append(event)
        return found

    def errors_logged(self) -> list[str]:
        """Lines of the API's log at error level or with a traceback (a 500 leaves one)."""
        if self.api_log is None:
            return []
        lines = self.api_log.read_text(errors="replace").splitlines()
        return [line for line in lines if '"level":"error"' in line or "Traceback" in line]


# ------------------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class Round:
    """One crash of the leader, when each route took writes again, and how the old leader came back."""

    number: int
    victim: str
    event: str
    killed_at: float
    stopped_at: float
    """The last write the old leader took: the moment of a crash, the shutdown of a switchover."""
    writable_at: dict[str, float]
    new_leader: str | None
    restarted_at: float | None = None
    rejoined_at: float | None = None
    rejoined_by: str | None = None


def since(later: float | None, earlier: float | None) -> float | None:
    """Seconds from ``earlier`` to ``later``, rounded; None when either is unknown."""
    if later is None or earlier is None:
        return None
    return round(later - earlier, 2)


def slot_of(webhook_id: str) -> tuple[UUID, datetime]:
    """The job and slot of a `webhook-id` (`msg_<job hex>_<slot microseconds, hex>`)."""
    _, job_hex, micros = webhook_id.split("_")
    return UUID(hex=job_hex), datetime.fromtimestamp(int(micros, 16) / 1_000_000, UTC)


def round_of(rounds: list[Round], moment: float) -> Round | None:
    """The latest round whose crash came before ``moment``."""
    before = [r for r in rounds if r.killed_at <= moment]
    return before[-1] if before else None


def explain(rows: list[tuple[Any, ...]], times: list[float], rounds: list[Round]) -> str:
    """Why a slot was executed twice, from its run rows on the surviving leader and the execution times.

    - `expired lease`: an attempt was ended by the rescuer (its runner could not renew the lease
      through the outage) and retried;
    - `claim lost with the old leader`: the first execution came before the new leader took writes,
      yet every run row the survivor has for the slot was written after the crash. The old leader
      had committed the claim (the call and the log event follow the commit) and never streamed it:
      asynchronous replication; its rewind discarded it;
    - `unexplained` otherwise.
    """
    if any((row[4] or "").startswith("lease expired") for row in rows):
        return "expired lease"
    crash = round_of(rounds, times[1])
    if crash is not None:
        writable = crash.writable_at[LEADER]
        written_after_crash = all(row[5].timestamp() > crash.killed_at for row in rows)
        if times[0] < writable and written_after_crash:
            return "claim lost with the old leader"
    return "unexplained"


def duplicates(
    conn: psycopg.Connection[Any], executions: dict[str, list[float]], rounds: list[Round]
) -> list[dict[str, Any]]:
    """Every slot executed more than once, with its run rows and the reason."""
    repeated = {key: sorted(times) for key, times in executions.items() if len(times) > 1}
    if not repeated:
        return []
    slots = {key: slot_of(key) for key in repeated}
    rows = conn.execute(
        RUNS_OF_SLOTS.encode(),
        {"job_ids": [job for job, _ in slots.values()], "slots": [slot for _, slot in slots.values()]},
    ).fetchall()
    by_slot: dict[tuple[UUID, datetime], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_slot[(row[0], row[1])].append(row)
    found = []
    for key, times in repeated.items():
        slot_rows = by_slot.get(slots[key], [])
        found.append(
            {
                "id": key,
                "slot": slots[key][1].isoformat(),
                "executed_at": [round(t, 3) for t in times],
                "runs": [
                    {
                        "attempt": r[2],
                        "status": r[3],
                        "error": r[4],
                        "created_at": r[5].isoformat(),
                        "runner": r[6],
                    }
                    for r in slot_rows
                ],
                "reason": explain(slot_rows, times, rounds),
            }
        )
    return found


def executions(
    stack: Stack, deliveries: list[Delivery]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """When each slot was executed, keyed by its webhook-id: HTTP calls received, `log` events written."""
    delivered: dict[str, list[float]] = defaultdict(list)
    for delivery in deliveries:
        if delivery.path.startswith(f"/{stack.name}"):
            delivered[delivery.webhook_id].append(delivery.at)
    logged: dict[str, list[float]] = defaultdict(list)
    for event in stack.log_events():
        key = message_id(UUID(str(event["job_id"])), datetime.fromisoformat(str(event["scheduled_for"])))
        logged[key].append(datetime.fromisoformat(str(event["timestamp"])).timestamp())
    return delivered, logged


def outage_slots_done(executed: dict[str, list[float]], crash: Round, writable: float) -> float | None:
    """When the last slot due while no leader took writes was first executed."""
    firsts = [
        min(times)
        for key, times in executed.items()
        if crash.stopped_at - 1 <= slot_of(key)[1].timestamp() <= writable
    ]
    return max(firsts, default=None)


def status_counts(answers: list[Answer]) -> dict[str, int]:
    """Answers by status code (or by the client's exception when none came)."""
    counts = Counter(str(a.status) if a.status is not None else a.error or "?" for a in answers)
    return dict(sorted(counts.items()))


def timeline(answers: list[Answer], crash: Round, seconds: int) -> list[dict[str, Any]]:
    """Per second from the crash: the API's answers by status (by when they were sent), and the longest."""
    found = []
    for second in range(-1, seconds):
        sent = [a for a in answers if a.kind != "ready" and second <= a.sent - crash.killed_at < second + 1]
        found.append(
            {
                "s": second,
                "answers": status_counts(sent),
                "longest_s": round(max((a.answered - a.sent for a in sent), default=0.0), 2),
            }
        )
    return found


def back_after_failure(answers: list[Answer], kind: str, good: int, stopped_at: float) -> float | None:
    """When the API first answered ``kind`` well again, after the first request of that kind failed.

    The first good answer to a request sent after the first failure (or, when none failed, after
    the old leader stopped taking writes). Dated from the first failure, not from the event: a
    switchover's old leader takes writes for a while after it is asked, and a write it took then
    says nothing about the new one.
    """
    mine = [a for a in answers if a.kind == kind]
    failed = [a.sent for a in mine if a.status != good]
    since_failure = min(failed, default=stopped_at)
    return min((a.answered for a in mine if a.status == good and a.sent > since_failure), default=None)


def round_figures(
    conn: psycopg.Connection[Any],
    crash: Round,
    *,
    end: float,
    route: str,
    answers: list[Answer],
    executed: dict[str, list[float]],
) -> dict[str, Any]:
    """One stack's figures for one crash, ``end`` being when the next crash came (or the run ended)."""
    writable = crash.writable_at[LEADER]
    row = conn.execute(RUNS_AGAIN.encode(), {"after": at(crash.stopped_at)}).fetchone()
    runs_again = row[0].timestamp() if row and row[0] else None
    in_round = [a for a in answers if crash.killed_at <= a.sent < end]
    requests = [a for a in in_round if a.kind != "ready"]
    writes_ok = back_after_failure(in_round, "write", HTTPStatus.CREATED, crash.stopped_at)
    ready = back_after_failure(in_round, "ready", HTTPStatus.OK, crash.stopped_at)
    unavailable = [a.sent for a in requests if a.status == HTTPStatus.SERVICE_UNAVAILABLE]
    return {
        "round": crash.number,
        "event_to_leader_writable_s": since(writable, crash.killed_at),
        "old_leader_took_writes_until_s": since(crash.stopped_at, crash.killed_at),
        "event_to_writable_via_route_s": since(crash.writable_at[route], crash.killed_at),
        "writable_to_runs_again_s": since(runs_again, writable),
        "writable_to_outage_slots_executed_s": since(outage_slots_done(executed, crash, writable), writable),
        "writable_to_first_api_write_s": since(writes_ok, writable),
        "writable_to_readyz_200_s": since(ready, writable),
        "api_503_sent_from_s": since(min(unavailable, default=None), crash.killed_at),
        "api_503_sent_until_s": since(max(unavailable, default=None), crash.killed_at),
        "api_answers": status_counts(requests),
        "api_failures_sent_after_writable": status_counts(
            [
                a
                for a in requests
                if a.sent >= writable and a.status not in {HTTPStatus.OK, HTTPStatus.CREATED}
            ]
        ),
        "readyz_answers": status_counts([a for a in in_round if a.kind == "ready"]),
        "longest_request_s": round(max((a.answered - a.sent for a in requests), default=0.0), 2),
        "timeline": timeline(answers, crash, int(writable - crash.killed_at) + 4),
    }


def analyse(
    stack: Stack, rounds: list[Round], deliveries: list[Delivery], answers: list[Answer], last_slot: float
) -> dict[str, Any]:
    """Everything measured for one stack: per round timings and API answers, then the whole run's counts."""
    mine = [a for a in answers if a.stack == stack.name]
    delivered, logged = executions(stack, deliveries)
    executed = {**delivered, **logged}
    checked = {"first": at(stack.first_slot), "last": at(last_slot), "prefix": f"{JOB_PREFIX}%"}
    with psycopg.connect(stack.url, autocommit=True) as conn:
        ends = [r.killed_at for r in rounds[1:]] + [now()]
        per_round = [
            round_figures(conn, crash, end=end, route=stack.name, answers=mine, executed=executed)
            for crash, end in zip(rounds, ends, strict=True)
        ]
        lost = conn.execute(LOST_SLOTS.encode(), checked).fetchall()
        slots = conn.execute(SLOTS_CHECKED.encode(), checked).fetchone()
        http_dups = duplicates(conn, delivered, rounds)
        log_dups = duplicates(conn, logged, rounds)
        succeeded = conn.execute(SUCCEEDED_HTTP_RUNS.encode(), checked).fetchall()
    never_delivered = [
        key for key in (message_id(job, slot) for job, slot in succeeded) if key not in delivered
    ]
    requests = [a for a in mine if a.kind != "ready"]
    return {
        "route": stack.name,
        "url": stack.url,
        "rounds": per_round,
        "slots_checked": int(slots[0]) if slots else 0,
        "lost_slots": len(lost),
        "lost_slot_examples": [{"job_id": str(job), "slot": slot.isoformat()} for job, slot in lost[:10]],
        "deliveries": sum(len(v) for v in delivered.values()),
        "duplicate_deliveries": len(http_dups),
        "duplicate_deliveries_by_reason": dict(Counter(d["reason"] for d in http_dups)),
        "duplicate_delivery_examples": http_dups[:20],
        "log_events": sum(len(v) for v in logged.values()),
        "log_actions_run_twice": len(log_dups),
        "log_actions_run_twice_by_reason": dict(Counter(d["reason"] for d in log_dups)),
        "log_duplicate_examples": log_dups[:20],
        "succeeded_http_runs_never_delivered": len(never_delivered),
        "api_requests": len(requests),
        "api_answers_whole_run": status_counts(requests),
        "api_5xx_not_503": sum(
            1 for a in mine if a.status is not None and a.status >= 500 and a.status != 503
        ),
        "api_errors_logged": stack.errors_logged()[:20],
    }


# --------------------------------------------------------------------------------------- the run


def crash_and_recover(
    number: int, cluster: Cluster, probe: WriteProbe, load: ApiLoad, args: argparse.Namespace
) -> Round:
    """Take the leader down, wait for every route and API to take writes, settle, bring it back."""
    victim = cluster.leader()
    if victim is None:
        raise RuntimeError("no leader to take down")
    print(f"  round {number}: {args.kill} of the leader, {victim.name}", flush=True)
    log_size = victim.log.stat().st_size if victim.log.exists() else 0
    killed_at = cluster.switchover(victim) if args.kill == "switchover" else cluster.crash(victim, args.kill)
    # The postmaster alone comes back on the same member; otherwise the writes must move away from it.
    elsewhere = None if args.kill == "postmaster" else victim.pg_port
    candidates = [m.name for m in cluster.members if args.kill == "postmaster" or m is not victim]

    def writable_everywhere() -> dict[str, float] | None:
        found = {route: probe.first_success(route, killed_at, not_on=elsewhere) for route in ROUTES}
        direct = [probe.first_success(name, killed_at) for name in candidates]
        found[LEADER] = min((t for t in direct if t is not None), default=None)
        return None if None in found.values() else cast("dict[str, float]", found)

    writable = wait_until("every route to take writes again", writable_everywhere, timeout=args.timeout)
    # A switchover's leader takes writes until it shuts down; a crashed one stops at once.
    stopped_at = max(
        (
            t
            for route in (*ROUTES, victim.name)
            for t, port in probe.successes[route]
            if killed_at <= t < writable[LEADER] and port == victim.pg_port
        ),
        default=killed_at,
    )
    new_leader = cluster.leader()
    shown = ", ".join(f"{route} {t - killed_at:.1f} s" for route, t in writable.items())
    print(f"  round {number}: writable again after {shown}", flush=True)
    restarted_at = rejoined_at = None
    if args.kill == "switchover":
        # Patroni restarts the old leader as a replica on its own, at once.
        restarted_at = killed_at
        wait_until(f"{victim.name} to rejoin", lambda: cluster.streaming(victim), args.timeout, interval=0.1)
        rejoined_at = now()
    for stack in load.apis:
        try:
            wait_until(
                f"{stack}'s API to take writes", lambda s=stack: load.wrote_since(s, killed_at), args.timeout
            )
        except RuntimeError as exc:
            print(f"  round {number}: {exc}; going on", flush=True)
    time.sleep(args.settle)
    if args.kill in {"host", "freeze"}:
        cluster.kill_frozen(victim)
        restarted_at = now()
        cluster.start_member(victim)
        wait_until(f"{victim.name} to rejoin", lambda: cluster.streaming(victim), args.timeout, interval=0.25)
        rejoined_at = now()
    rejoined_by = cluster.rewound(victim, log_size) if rejoined_at is not None else None
    if rejoined_at is not None and restarted_at is not None:
        back = rejoined_at - restarted_at
        print(
            f"  round {number}: {victim.name} streaming again {back:.1f} s later ({rejoined_by})", flush=True
        )
    return Round(
        number=number,
        victim=victim.name,
        event=args.kill,
        killed_at=killed_at,
        stopped_at=stopped_at,
        writable_at=writable,
        new_leader=new_leader.name if new_leader else None,
        restarted_at=restarted_at,
        rejoined_at=rejoined_at,
        rejoined_by=rejoined_by,
    )


def run(args: argparse.Namespace, root: Path, processes: Processes) -> dict[str, Any]:
    """Build the cluster and both stacks, run the rounds, stop the load, analyse."""
    cluster = Cluster(root, processes, args)
    try:
        return _run_on(cluster, args, root, processes)
    finally:
        cluster.stop()


def _run_on(cluster: Cluster, args: argparse.Namespace, root: Path, processes: Processes) -> dict[str, Any]:
    started = time.monotonic()
    cluster.start()
    leader = cast("Member", cluster.leader())
    print(f"  cluster up in {time.monotonic() - started:.1f} s (leader {leader.name})", flush=True)
    haproxy_port = start_haproxy(cluster, processes)
    haproxy_dsn = f"postgresql://postgres@127.0.0.1:{haproxy_port}"
    with psycopg.connect(leader.dsn(), autocommit=True) as conn:
        conn.execute(b"CREATE TABLE failover_probe (at timestamptz DEFAULT now(), route text)")
    receiver, deliveries_log = start_receiver(root, processes)
    stacks = [
        Stack("multi-host", "failover_multihost", cluster.multi_host_dsn("failover_multihost"), root),
        Stack("haproxy", "failover_haproxy", f"{haproxy_dsn}/failover_haproxy", root),
    ]
    for stack in stacks:
        stack.setup(leader.dsn(), receiver, args, processes)
    # The probe tries the stacks' routes (to the `postgres` database) and each member directly.
    routes = {"multi-host": cluster.multi_host_dsn("postgres"), "haproxy": f"{haproxy_dsn}/postgres"}
    probe = WriteProbe(routes | {m.name: m.dsn() for m in cluster.members})
    probe.start()
    load = ApiLoad({s.name: s.api for s in stacks}, args.client_rate)
    load.start()
    psutil.cpu_percent()
    rounds: list[Round] = []
    try:
        print(f"  load running ({args.jobs} jobs per copy); warming up {args.warmup:.0f} s", flush=True)
        time.sleep(args.warmup)
        for number in range(1, args.rounds + 1):
            rounds.append(crash_and_recover(number, cluster, probe, load, args))
            time.sleep(args.warmup if number < args.rounds else 0)
        # Every slot up to a few seconds ago has had time to be claimed; the load then stops.
        last_slot = float(int(now()) - GRACE_S)
        time.sleep(2)
    finally:
        cpu = psutil.cpu_percent()
        load.stop()
        probe.stop()
    for stack in stacks:
        stack.stop()
    deliveries = read_deliveries(deliveries_log)
    results = [analyse(stack, rounds, deliveries, load.answers, last_slot) for stack in stacks]
    return {
        "cluster": {
            "members": MEMBERS,
            "ttl_s": args.ttl,
            "loop_wait_s": LOOP_WAIT_S,
            "retry_timeout_s": args.retry_timeout,
            "synchronous_mode": args.synchronous,
            "kill": args.kill,
            "haproxy_check": HAPROXY_CHECK,
        },
        "rounds": [
            {
                "round": r.number,
                "event": r.event,
                "killed": r.victim,
                "new_leader": r.new_leader,
                "kill_to_writable_s": {k: since(v, r.killed_at) for k, v in r.writable_at.items()},
                "old_leader_took_writes_until_s": since(r.stopped_at, r.killed_at),
                "rejoin_s": since(r.rejoined_at, r.restarted_at),
                "rejoined_by": r.rejoined_by,
            }
            for r in rounds
        ],
        "probe_servers": {route: probe.servers(route) for route in probe.routes},
        "machine_cpu_percent_under_load": cpu,
        "stacks": results,
    }


# ------------------------------------------------------------------------------------- reporting


def print_results(found: dict[str, Any]) -> None:
    """The rounds as the cluster saw them, then each connection method side by side."""
    cluster = found["cluster"]
    sync = "synchronous" if cluster["synchronous_mode"] else "asynchronous"
    print_table(
        f"Patroni: ttl {cluster['ttl_s']} s, loop_wait {cluster['loop_wait_s']} s, retry_timeout"
        f" {cluster['retry_timeout_s']} s, {sync} replication; {cluster['kill']}; seconds from the event",
        [
            "round",
            "leader",
            "new leader",
            "old leader's last write s",
            "new leader takes writes s",
            *(f"via {r} s" for r in ROUTES),
            "old leader back s",
            "how",
        ],
        [
            (
                r["round"],
                r["killed"],
                _show(r["new_leader"]),
                r["old_leader_took_writes_until_s"],
                *(_show(r["kill_to_writable_s"].get(route)) for route in (LEADER, *ROUTES)),
                _show(r["rejoin_s"]),
                _show(r["rejoined_by"]),
            )
            for r in found["rounds"]
        ],
    )
    stacks = found["stacks"]
    rows: list[list[Any]] = []
    for index, crash in enumerate(found["rounds"]):

        def cell(key: str, index: int = index) -> list[Any]:
            return [_show(s["rounds"][index][key]) for s in stacks]

        def counts(key: str, index: int = index) -> list[Any]:
            return [_counts(s["rounds"][index][key]) for s in stacks]

        rows += [
            [
                f"round {crash['round']}: event -> new leader takes writes s",
                *cell("event_to_leader_writable_s"),
            ],
            ["  event -> writable through this route s", *cell("event_to_writable_via_route_s")],
            ["  new leader writable -> runs recorded again s", *cell("writable_to_runs_again_s")],
            [
                "  new leader writable -> the outage's slots all executed s",
                *cell("writable_to_outage_slots_executed_s"),
            ],
            ["  new leader writable -> first API write answered s", *cell("writable_to_first_api_write_s")],
            ["  new leader writable -> /readyz 200 s", *cell("writable_to_readyz_200_s")],
            ["  API 503s sent from s after the event", *cell("api_503_sent_from_s")],
            ["  API 503s sent until s after the event", *cell("api_503_sent_until_s")],
            ["  API answers until the next round", *counts("api_answers")],
            ["  API failures sent once writable", *counts("api_failures_sent_after_writable")],
            ["  longest API request s", *cell("longest_request_s")],
        ]
    rows += [
        ["API requests, whole run", *[s["api_requests"] for s in stacks]],
        ["API 5xx other than 503", *[s["api_5xx_not_503"] for s in stacks]],
        ["slots checked", *[s["slots_checked"] for s in stacks]],
        ["slots with no run row", *[s["lost_slots"] for s in stacks]],
        ["HTTP deliveries", *[s["deliveries"] for s in stacks]],
        ["webhook-id delivered twice", *[s["duplicate_deliveries"] for s in stacks]],
        ["  why", *[_counts(s["duplicate_deliveries_by_reason"]) for s in stacks]],
        ["log events", *[s["log_events"] for s in stacks]],
        ["log action run twice", *[s["log_actions_run_twice"] for s in stacks]],
        ["  why", *[_counts(s["log_actions_run_twice_by_reason"]) for s in stacks]],
        ["succeeded HTTP runs never delivered", *[s["succeeded_http_runs_never_delivered"] for s in stacks]],
    ]
    print_table(
        f"The service: {found['jobs_per_copy']} every-second jobs, {RUNNERS} runners per connection method",
        ["", *(s["route"] for s in stacks)],
        rows,
    )


def _show(value: Any) -> Any:
    return "-" if value is None else value


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items()) or "-"


def summarize(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline figures, with issue 18's targets where it sets one."""
    figures: list[dict[str, Any]] = []
    for stack in found["stacks"]:
        route = stack["route"]
        for crash in stack["rounds"]:
            prefix = f"{route}, round {crash['round']}"
            figures.append(
                figure(
                    f"{prefix}: event to new leader taking writes", crash["event_to_leader_writable_s"], "s"
                )
            )
            for key, what in (
                ("writable_to_runs_again_s", "runs recorded again"),
                ("writable_to_first_api_write_s", "first API write answered"),
            ):
                value = crash[key]
                figures.append(
                    figure(
                        f"{prefix}: {what}, after the new leader took writes",
                        value,
                        "s",
                        target="<= 2 s",
                        met=value is not None and value <= 2,
                    )
                )
        for key, what in (
            ("api_5xx_not_503", "API 5xx other than 503"),
            ("lost_slots", "slots with no run row"),
        ):
            figures.append(figure(f"{route}: {what}", stack[key], target="0", met=stack[key] == 0))
        unexplained = stack["duplicate_deliveries_by_reason"].get("unexplained", 0)
        unexplained += stack["log_actions_run_twice_by_reason"].get("unexplained", 0)
        figures.append(
            figure(
                f"{route}: slots executed twice, unexplained", unexplained, target="0", met=unexplained == 0
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300, help="every-second jobs per connection method")
    parser.add_argument("--rounds", type=int, default=2, help="leader crashes, each followed by a rejoin")
    parser.add_argument(
        "--ttl",
        type=int,
        default=10,
        help="Patroni's leader key TTL, s: the outage, since a crashed leader is replaced once it expires",
    )
    parser.add_argument("--retry-timeout", type=int, default=4, help="Patroni's retry_timeout, s")
    parser.add_argument(
        "--kill",
        choices=["host", "freeze", "postmaster", "switchover"],
        default="host",
        help="host: SIGKILL to the leader's Patroni and all its PostgreSQL processes, then start it again; "
        "freeze: SIGSTOP to the same (a frozen VM: sockets stay open, silent), killed and started again "
        "after the settle; postmaster: SIGKILL to the postmaster alone (Patroni restarts it in place); "
        "switchover: a planned switchover through Patroni's REST API",
    )
    parser.add_argument(
        "--synchronous",
        action="store_true",
        help="Patroni's synchronous_mode: the replica confirms each commit",
    )
    parser.add_argument(
        "--lease-s",
        type=float,
        default=30.0,
        help="the runners' SCHEDULER_LEASE_S: an outage longer than this lets leases expire",
    )
    parser.add_argument(
        "--client-rate", type=float, default=10.0, help="API writes/s and reads/s, per connection method"
    )
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load before each event")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds of load after recovery, before the rejoin"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a recovery step after this")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) afterwards")
    parser.add_argument("--output", default="failover", help="bench/results/<output>.json")
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deliveries", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        asyncio.run(_serve_receiver(args.serve_receiver, args.deliveries))
        return
    for binary in (PATRONI, ETCD, HAPROXY, str(PG_BIN / "postgres")):
        if not Path(binary).exists():
            raise SystemExit(f"{binary} is needed: apt-get install patroni etcd-server haproxy postgresql-15")
    if os.geteuid() != 0:
        raise SystemExit("run as root: PostgreSQL and Patroni are started as the postgres OS user")
    if args.ttl < LOOP_WAIT_S + 2 * args.retry_timeout:
        raise SystemExit(
            f"--ttl must be at least loop_wait + 2 x retry_timeout = {LOOP_WAIT_S + 2 * args.retry_timeout}"
        )
    exit_on_sigterm()

    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    processes = Processes()
    started = time.monotonic()
    try:
        found = run(args, root, processes)
    except BaseException:
        print(f"\nfailed; everything is in {root}" if args.keep else "\nfailed", file=sys.stderr)
        for log in sorted(root.rglob("*.log")):
            print(f"--- {log.relative_to(root)}\n{tail(log, 15)}", file=sys.stderr)
        raise
    finally:
        processes.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    found |= {
        "seconds": round(time.monotonic() - started, 1),
        "jobs_per_copy": args.jobs,
        "client_rate_per_s": args.client_rate,
        "lease_s": args.lease_s,
        "settle_s": args.settle,
    }
    print_results(found)
    summary = summarize(found)
    print_targets(summary)
    found["summary"] = summary
    path = write_json(args.output, found)
    print(f"\nwrote {path} ({found['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
