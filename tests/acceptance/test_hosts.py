"""Runners and APIs on separate hosts, where the failure is a network, not a clean kill (issue 23).

Each host is a Linux network namespace with its own address (tests/netns.py): three runner hosts,
two API hosts behind Debian's HAProxy, all on one bridge in the benchmark range 198.18.0.0/15 with
no route anywhere else. PostgreSQL is our own cluster listening on the bridge, and the HTTP targets
are real servers on the bridge that see which host called them. Failures are what a machine meets:
its link goes down (`ip link set eth0 down` inside it), a firewall in it drops the PostgreSQL port
(nftables), its API process is killed or its link cut, its clock is minutes off (libfaketime in that process).

Leases are 2 s here, so heartbeats renew every 0.67 s and every runner sweeps for expired leases
every 0.67 s: lease + sweep is under 3 s. Times compared across processes are the wall clock of
this one machine, which the database shares. As root these tests run; without root or `ip` they
skip, unless SCHEDULER_REQUIRE_NETNS=1 (CI), where they fail.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from uuid import UUID

import httpx
import psycopg
import pytest
from litestar.testing import TestClient

from scheduler.api.app import create_app
from scheduler.domain.webhooks import message_id
from tests import netns, pgcluster
from tests.conftest import Proc, settings_for, wait_for
from tests.netns import Host, HostPostgres, HostReceiver, Network

pytestmark = pytest.mark.slow

LEASE_S = 2.0
SWEEP_S = LEASE_S / 3  # the rescuer's interval at this lease (RescuerConfig.every_s)
METRICS_PORT = 9464
API_PORT = 8000
RUNNER_HOSTS = ("runner-0", "runner-1", "runner-2")
API_HOSTS = ("api-0", "api-1")
RETRY = {"max_attempts": 5, "min_backoff_s": 0, "max_backoff_s": 0}
# Every process of these tests: short leases, quick polls and a quick stop at the end.
RUNNER_SETTINGS: dict[str, Any] = {
    "lease_s": LEASE_S,
    "poll_interval_s": 0.5,
    "shutdown_grace_s": 1,
    "metrics_port": METRICS_PORT,
}
API_SETTINGS: dict[str, Any] = {"rate_limit_per_s": 1_000_000, "rate_limit_burst": 1_000_000}
RUN_COLUMNS = (
    "id, job_id, scheduled_for, trigger::text, attempt, status::text, runner, lease_token,"
    " lease_expires_at, started_at, finished_at, duration_ms, http_status, output, error"
)


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when SCHEDULER_REQUIRE_NETNS=1 says these tests must run."""
    if os.environ.get("SCHEDULER_REQUIRE_NETNS") == "1":
        pytest.fail(f"{reason}; SCHEDULER_REQUIRE_NETNS=1 makes this a failure")
    pytest.skip(reason)


def require_tool(name: str, hint: str) -> None:
    """A tool one scenario needs (HAProxy, nft, libfaketime): missing, it skips or fails as above."""
    found = netns.faketime_library() if name == "libfaketime" else shutil.which(name)
    if not found:
        unavailable(f"{name} is not installed: {hint}")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """Five hosts on one bridge: three for runners, two for APIs. Removed at the end, however it ends."""
    reason = netns.why_unavailable()
    if reason is not None:
        unavailable(reason)
    with Network.create() as made:
        for name in (*RUNNER_HOSTS, *API_HOSTS):
            made.add_host(name)
        yield made


@pytest.fixture(scope="module")
def postgres(network: Network) -> Iterator[HostPostgres]:
    """Our own PostgreSQL on the bridge address, with a migrated template database."""
    bin_dir = pgcluster.find_pg_bin()
    if bin_dir is None:
        unavailable("PostgreSQL's server binaries are not installed: apt-get install postgresql-15")
    assert bin_dir is not None
    server = HostPostgres.start(bin_dir, network)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Fleet:
    """One test's database, target, and the processes it starts on the hosts; `close` undoes it all."""

    network: Network
    postgres: HostPostgres
    dbname: str
    receiver: HostReceiver
    logs: Path
    started: list[Proc] = field(default_factory=list)
    _sql: psycopg.Connection[Any] | None = None

    def host(self, name: str) -> Host:
        return next(h for h in self.network.hosts if h.name == name)

    @property
    def runner_hosts(self) -> list[Host]:
        return [self.host(name) for name in RUNNER_HOSTS]

    def env(self, host: Host, **overrides: Any) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SCHEDULER_DATABASE_URL": self.postgres.host_url(self.dbname),
                "SCHEDULER_AUTH": "off",
                "SCHEDULER_LOG_FORMAT": "json",
                # The targets live on the test network, which the address rules refuse by default.
                "SCHEDULER_HTTP_ALLOW_NETS": str(self.network.subnet),
                # Metrics and the API listen on the host's own address, reachable from the root namespace.
                "SCHEDULER_HOST": host.address,
            }
        )
        env.update({f"SCHEDULER_{k.upper()}": str(v) for k, v in overrides.items()})
        return env

    def runner(self, host: Host, *, extra_env: dict[str, str] | None = None, **overrides: Any) -> Proc:
        """`python -m scheduler.runner` on ``host``, named after it."""
        settings = {**RUNNER_SETTINGS, "runner_name": host.name, **overrides}
        env = {**self.env(host, **settings), **(extra_env or {})}
        proc = host.spawn(
            [sys.executable, "-m", "scheduler.runner"],
            env=env,
            log_path=self.logs / f"{host.name}-{len(self.started)}.log",
        )
        self.started.append(proc)
        return proc

    def api(self, host: Host) -> Proc:
        """`scheduler api` on ``host``, port 8000 of its own address."""
        proc = host.spawn(
            [sys.executable, "-m", "scheduler", "api", "--host", host.address, "--port", str(API_PORT)],
            env=self.env(host, **API_SETTINGS),
            log_path=self.logs / f"{host.name}-{len(self.started)}.log",
        )
        self.started.append(proc)
        return proc

    def wait_started(self, procs: list[Proc]) -> None:
        def started() -> bool:
            for proc in procs:
                if proc.popen.poll() is not None:
                    pytest.fail(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()}")
            return all(netns.log_events(proc, "runner_started") for proc in procs)

        wait_for(started, timeout=60, what="the runners to start")

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self._sql is None:
            self._sql = psycopg.connect(self.postgres.local_url(self.dbname), autocommit=True)
        cur = self._sql.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []

    def runs(self, where: str = "TRUE", params: Any = None) -> list[dict[str, Any]]:
        names = [c.strip().removesuffix("::text") for c in RUN_COLUMNS.split(",")]
        # ``where`` is always a literal of these tests; values go in as parameters.
        query = f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY scheduled_for, attempt"  # noqa: S608
        rows = self.sql(query, params)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def create_jobs(self, bodies: list[dict[str, Any]]) -> list[UUID]:
        """Create jobs through the API (in this process, on loopback); their ids."""
        app = create_app(settings_for(self.postgres.local_url(self.dbname), **API_SETTINGS))
        ids = []
        with TestClient(app=app) as client:
            for body in bodies:
                response = client.post("/jobs", json=body)
                assert response.status_code == 201, response.text
                ids.append(UUID(response.json()["id"]))
        return ids

    def close(self) -> None:
        """Stop every process, heal every host, stop the target, drop the database."""
        for proc in self.started:
            proc.signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        for host in self.network.hosts:
            host.heal()
        self.receiver.close()
        if self._sql is not None:
            self._sql.close()
        self.postgres.drop(self.dbname)


@pytest.fixture
def fleet(network: Network, postgres: HostPostgres, tmp_path: Path) -> Iterator[Fleet]:
    """A fresh database and target for one test; its processes stop and its hosts heal afterwards."""
    made = Fleet(
        network=network,
        postgres=postgres,
        dbname=postgres.database(),
        receiver=HostReceiver.start(network.gateway),
        logs=tmp_path,
    )
    try:
        yield made
    finally:
        made.close()


# ------------------------------------------------------------------------------- helpers


def every_second(name: str, url: str, *, timeout_s: float = 30) -> dict[str, Any]:
    """A job firing every second, each slot its own run (overlap `allow`), retried at once."""
    return {
        "name": name,
        "schedule": "@every 1s",
        "action": {"type": "http", "url": url},
        "timeout_s": timeout_s,
        "overlap": "allow",
        "misfire": {"policy": "all", "grace_s": 60},
        "retry": RETRY,
    }


def slot_of(call: netns.Call) -> str:
    return call.headers["webhook-id"]


def by_slot(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        found.setdefault(message_id(run["job_id"], run["scheduled_for"]), []).append(run)
    return found


def moment(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def check_attempts(runs: list[dict[str, Any]]) -> None:
    """Each slot: attempts numbered 1..n with no gap, and at most one of them succeeded."""
    for slot, attempts in by_slot(runs).items():
        numbers = sorted(r["attempt"] for r in attempts)
        assert numbers == list(range(1, len(numbers) + 1)), f"{slot}: attempts {numbers}"
        assert sum(r["status"] == "succeeded" for r in attempts) <= 1, f"{slot}: {attempts}"


def cut_mid_call(
    fleet: Fleet, victim: Host, jobs: list[dict[str, Any]], *, paths: list[str]
) -> tuple[float, list[UUID]]:
    """Start the three runners and ``jobs``; take ``victim``'s link down mid-call.

    Its calls are held by the target, so the cut comes once it has one in flight on each of
    ``paths``. Returns the wall-clock time of the cut and the jobs' ids.
    """
    fleet.receiver.hold_from = {victim.address}
    runners = [fleet.runner(host) for host in fleet.runner_hosts]
    fleet.wait_started(runners)
    ids = fleet.create_jobs(jobs)

    def victim_mid_call() -> bool:
        held = {c.path for c in fleet.receiver.from_host(victim) if c.held}
        return all(any(p.startswith(path) for p in held) for path in paths)

    wait_for(victim_mid_call, timeout=30, what=f"{victim.name} to have a call held on each of {paths}")
    victim.link_down()
    return time.time(), ids


def wait_rescued(fleet: Fleet, victim: Host, cut_at: float) -> list[dict[str, Any]]:
    """Poll until no run of ``victim`` is running any more; its runs ended `lost` by the others."""

    def rescued() -> list[dict[str, Any]] | None:
        mine = fleet.runs("runner = %s", (victim.name,))
        if any(r["status"] == "running" for r in mine):
            return None
        lost = [r for r in mine if r["status"] == "lost"]
        return lost or None

    # Lease + sweep is under 3 s; the deadline leaves room for a loaded 2-core machine.
    lost: list[dict[str, Any]] = wait_for(
        rescued, timeout=30, interval=0.1, what=f"the runs of {victim.name} to be rescued"
    )
    latest_s = (max(r["finished_at"] for r in lost) - moment(cut_at)).total_seconds()
    print(
        f"\n{victim.name}: {len(lost)} runs rescued, the last {latest_s:.2f} s"
        f" after the cut (lease {LEASE_S:g} s + sweep {SWEEP_S:.2f} s)"
    )
    return lost


def retried_by_others(fleet: Fleet, victim: Host, lost: list[dict[str, Any]]) -> None:
    """Poll until every rescued slot has a later attempt that another host's runner completed."""
    wanted = {message_id(r["job_id"], r["scheduled_for"]) for r in lost}

    def done() -> bool:
        slots = by_slot(fleet.runs())
        return all(
            any(r["status"] == "succeeded" and r["runner"] != victim.name for r in slots[slot])
            for slot in wanted
        )

    wait_for(done, timeout=30, interval=0.1, what="every rescued slot to be retried by another runner")


# ------------------------------------------------------------------------------ scenarios


class TestRunnerHostCut:
    """A runner host whose network goes away mid-call, and comes back after its lease expired."""

    def test_its_runs_are_rescued_by_the_others_within_lease_and_sweep(self, fleet: Fleet):
        victim = fleet.host("runner-0")
        url = fleet.receiver.url
        cut_at, _ = cut_mid_call(
            fleet, victim, [every_second(f"cut-{i}", f"{url}/slow/{i}") for i in range(3)], paths=["/slow"]
        )
        lost = wait_rescued(fleet, victim, cut_at)
        for run in lost:
            assert "lease expired" in (run["error"] or ""), run
            # The rescuer wrote it: the lease had run out, and another host noticed within a sweep.
            assert run["finished_at"] > moment(cut_at)
        retried_by_others(fleet, victim, lost)
        # The slots kept firing meanwhile, on the hosts that still had a network.
        after = fleet.runs("started_at > %s AND runner <> %s", (moment(cut_at), victim.name))
        assert {r["runner"] for r in after} <= {"runner-1", "runner-2"}
        assert any(r["trigger"] == "schedule" for r in after)
        check_attempts(fleet.runs())

    def test_back_after_its_lease_it_is_fenced_and_resumes_claiming(self, fleet: Fleet):
        victim = fleet.host("runner-0")
        url = fleet.receiver.url
        # A short call times out while the host is cut off, so its outcome waits to be written; a
        # long one is still in flight when the host is back, so its next heartbeat meets the fence.
        jobs = [
            every_second("short", f"{url}/short", timeout_s=2),
            every_second("long", f"{url}/long", timeout_s=60),
        ]
        cut_at, (_, long_job) = cut_mid_call(fleet, victim, jobs, paths=["/short", "/long"])
        lost = wait_rescued(fleet, victim, cut_at)
        retried_by_others(fleet, victim, lost)
        # Keep the host away until each of its short calls has timed out on its own side.
        last_short = max(c.at for c in fleet.receiver.from_host(victim) if c.path == "/short")
        wait_for(lambda: time.time() > last_short + 2 + 1, timeout=30, what="the short calls to time out")
        ended = {
            r["id"]: r for r in fleet.runs("status NOT IN ('pending', 'running')")
        }  # every final row, as it stands before the host comes back
        victim_proc = next(p for p in fleet.started if p.name == victim.name)
        fleet.receiver.hold_from = set()  # from now on its calls are answered
        back_at = time.time()
        victim.link_up()

        # Late completions are refused and counted in its metrics...
        wait_for(
            lambda: scrape_or_zero(victim, "scheduler_completions_refused_total") >= 1,
            timeout=60,
            interval=0.2,
            what=f"{victim.name} to count a refused completion",
        )
        # ...and its heartbeat finds the long call's run no longer its own, stops the call and
        # counts it.
        long_runs = {str(r["id"]) for r in lost if r["job_id"] == long_job}
        wait_for(
            lambda: scrape_or_zero(victim, "scheduler_leases_lost_total") >= 1,
            timeout=60,
            interval=0.2,
            what=f"{victim.name}'s heartbeat to find a lease gone",
        )
        stopped = {e["run_id"] for e in netns.log_events(victim_proc, "run_lease_lost")}
        assert stopped
        assert stopped <= long_runs
        refused = netns.log_events(victim_proc, "run_completion_refused")
        assert {e["run_id"] for e in refused} <= {str(r["id"]) for r in lost}

        # It resumes claiming on its own: a run started and completed by it after it came back.
        resumed = wait_for(
            lambda: fleet.runs(
                "runner = %s AND started_at > %s AND status = 'succeeded'", (victim.name, moment(back_at))
            ),
            timeout=60,
            interval=0.2,
            what=f"{victim.name} to claim and complete a run again",
        )
        # No row that had ended changed again: not the lost attempts, not their retries.
        for run_id, before in ended.items():
            (now,) = fleet.runs("id = %s", (run_id,))
            assert now == before, f"run {run_id} changed after it ended:\n{before}\n{now}"
        check_attempts(fleet.runs())
        again_s = min(r["started_at"] for r in resumed).timestamp() - back_at
        print(
            f"{victim.name}: claimed again {again_s:.1f} s"
            f" after its link came back; refused completions "
            f"{scrape_or_zero(victim, 'scheduler_completions_refused_total'):g}, leases found lost "
            f"{scrape_or_zero(victim, 'scheduler_leases_lost_total'):g}"
        )


def scrape_or_zero(host: Host, name: str) -> float:
    """A runner's counter, or 0 while its metrics port does not answer yet."""
    try:
        return netns.scrape(host, METRICS_PORT, name)
    except (httpx.HTTPError, KeyError):
        return 0.0


class TestDatabasePartition:
    """A runner cut off from PostgreSQL, its HTTP targets still in reach."""

    def test_it_starts_no_call_it_could_not_record(self, fleet: Fleet):
        require_tool("nft", "apt-get install nftables")
        victim = fleet.host("runner-2")
        url = fleet.receiver.url
        runners = [fleet.runner(host) for host in fleet.runner_hosts]
        fleet.wait_started(runners)
        # Calls to /p/slow take longer than a lease: the runner has leases to renew when it is cut.
        fleet.receiver.slow_prefix = "/p/slow"
        fleet.receiver.slow_s = LEASE_S * 1.5
        fleet.create_jobs(
            [
                *(every_second(f"part-{i}", f"{url}/p/{i}") for i in range(3)),
                *(every_second(f"part-slow-{i}", f"{url}/p/slow/{i}") for i in range(2)),
            ]
        )

        def victim_mid_call() -> bool:
            recent = time.time() - fleet.receiver.slow_s / 2
            return any(
                c.path.startswith("/p/slow") and c.at > recent for c in fleet.receiver.from_host(victim)
            )

        wait_for(victim_mid_call, timeout=30, what=f"{victim.name} to have a slow call in flight")
        victim.drop_tcp_port(fleet.postgres.address, fleet.postgres.port)
        cut_at = time.time()
        assert victim.can_reach(fleet.network.gateway, fleet.receiver.server.server_address[1])
        victim_proc = next(p for p in fleet.started if p.name == victim.name)
        # Watch for three leases: long enough for any lease it held to run out, and for the
        # runner to meet the partition in its claim loop and its heartbeat.
        wait_for(
            lambda: (
                time.time() > cut_at + 3 * LEASE_S
                and {e.get("service") for e in netns.log_events(victim_proc, "database_unavailable")}
                >= {"claim", "heartbeat"}
            ),
            timeout=60,
            interval=0.2,
            what=f"{victim.name} to meet the partition in its claim loop and heartbeat",
        )
        calls_after = fleet.receiver.from_host(victim, since=cut_at)
        others_after = [c for c in fleet.receiver.snapshot() if c.at > cut_at and c.source != victim.address]
        assert others_after, "the jobs stopped firing on the other hosts"
        # Any call it made after the cut belongs to a run it recorded before the cut, while that
        # run's lease (renewed at the cut at the latest) still held.
        recorded = by_slot(fleet.runs("runner = %s AND started_at < %s", (victim.name, moment(cut_at))))
        blind = [c for c in calls_after if slot_of(c) not in recorded or c.at > cut_at + LEASE_S + 0.5]
        assert not blind, f"{victim.name} fired {len(blind)} calls it could not record: {blind[:3]}"
        print(f"\n{victim.name}: {len(calls_after)} calls after the partition, all of runs claimed before it")
        # Its slow call went on past its lease (a call is never stopped for want of a heartbeat:
        # the target may have acted already), and another host rescued and retried its run.
        rescued = fleet.runs(
            "runner = %s AND status = 'lost' AND started_at < %s", (victim.name, moment(cut_at))
        )
        assert rescued, f"no run of {victim.name} was rescued"

        victim.heal()
        healed_at = time.time()
        wait_for(
            lambda: fleet.runs(
                "runner = %s AND started_at > %s AND status = 'succeeded'", (victim.name, moment(healed_at))
            ),
            timeout=60,
            interval=0.2,
            what=f"{victim.name} to claim again once the partition healed",
        )
        # The outcome of the call it had in flight could not be written before its lease ran out:
        # written now, it is refused.
        wait_for(
            lambda: scrape_or_zero(victim, "scheduler_completions_refused_total") >= 1,
            timeout=60,
            interval=0.2,
            what=f"{victim.name} to count its late completion as refused",
        )
        check_attempts(fleet.runs())


@dataclass(frozen=True)
class Answer:
    """One request through HAProxy: when it was sent and answered, and how (status None: no answer)."""

    method: str
    sent_at: float
    answered_at: float
    status: int | None
    served_by: str
    error: str = ""


class Clients:
    """Clients through HAProxy for the length of a block: two list jobs, two create them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, args=(m, n), daemon=True)
            for n, m in enumerate(("GET", "POST") * 2)
        ]

    def __enter__(self) -> Self:
        """Start calling."""
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop calling; the answers stay."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def _poll(self, method: str, client: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for index in itertools.count():
                if self._stop.is_set():
                    return
                sent_at = time.time()
                try:
                    if method == "GET":
                        response = http.get("/jobs", params={"limit": 5})
                    else:
                        response = http.post(
                            "/jobs",
                            json={
                                "name": f"lb-{client}-{index}",
                                "schedule": "@every 1h",
                                "paused": True,
                                "action": {"type": "log"},
                            },
                        )
                except httpx.HTTPError as exc:
                    answer = Answer(method, sent_at, time.time(), None, "", repr(exc))
                else:
                    answer = Answer(
                        method,
                        sent_at,
                        time.time(),
                        response.status_code,
                        response.headers.get("x-served-by", ""),
                    )
                with self._lock:
                    self.answers.append(answer)
                # Pacing: about thirty requests a second per client, a steady load, not a flood.
                self._stop.wait(0.03)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


class TestApiHostLost:
    """Two API hosts behind HAProxy; one is lost while clients keep calling through it."""

    @pytest.mark.parametrize("how", ["kill -9", "link down"])
    def test_clients_see_no_error_beyond_requests_in_flight(self, fleet: Fleet, how: str):
        require_tool("haproxy", "apt-get install haproxy")
        hosts = [fleet.host(name) for name in API_HOSTS]
        apis = [fleet.api(host) for host in hosts]
        proxy = netns.HAProxy.start({h.name: f"{h.address}:{API_PORT}" for h in hosts})
        try:
            try:
                proxy.wait_serving(len(hosts), timeout=60)
            except (TimeoutError, RuntimeError) as exc:
                logs = "\n".join(p.output()[-2000:] for p in apis)
                pytest.fail(f"{exc}\n{logs}")
            with Clients(proxy.url) as clients:
                wait_for(lambda: len(clients.snapshot()) >= 80, timeout=30, what="traffic before the loss")
                downs = proxy.log().count("api-0 is DOWN")  # it was down while it started, too
                lost_at = gone_at = time.time()
                if how == "kill -9":
                    apis[0].popen.kill()  # the process dies; its host refuses connections from then on
                    apis[0].popen.wait()
                    gone_at = time.time()
                else:
                    hosts[0].link_down()  # the host is gone; nothing answers, nothing refuses
                # Requests already on their way to the lost host are in flight until the refusals
                # begin (a killed process), or until HAProxy's checks fail (a silent host).
                down = wait_for(
                    lambda: proxy.log().count("api-0 is DOWN") > downs and time.time(),
                    timeout=30,
                    interval=0.02,
                    what="HAProxy to mark api-0 down",
                )
                noticed_at = gone_at if how == "kill -9" else down
                wait_for(
                    lambda: sum(a.sent_at > noticed_at + 2 for a in clients.snapshot()) >= 80,
                    timeout=60,
                    what="traffic after the loss",
                )
            answers = clients.snapshot()
        finally:
            proxy.close()
        before = [a for a in answers if a.answered_at < lost_at]
        assert {a.served_by for a in before if a.status in {200, 201}} == {"api-0", "api-1"}
        failed = [a for a in answers if a.status is None or a.status >= 500]
        in_flight = [a for a in failed if a.sent_at <= noticed_at and a.answered_at >= lost_at]
        assert failed == in_flight, f"errors beyond the requests in flight when api-0 went: {failed}"
        after = [a for a in answers if a.sent_at > noticed_at]
        assert all(a.served_by == "api-1" for a in after if a.status is not None)
        # No job was created twice by a retried POST: one row per 201, plus at most the failed POSTs.
        created = sum(a.method == "POST" and a.status == 201 for a in answers)
        rows = fleet.sql("SELECT count(*) FROM jobs")[0][0]
        assert created <= rows <= created + sum(a.method == "POST" for a in failed)
        crossing = [a for a in answers if a.sent_at <= noticed_at and a.answered_at >= lost_at]
        print(
            f"\nAPI host lost ({how}): {len(answers)} requests, "
            f"{dict(Counter(str(a.status) for a in answers))}, HAProxy marked it down "
            f"{down - lost_at:.2f} s later, {len(crossing)} in flight meanwhile, "
            f"failed {dict(Counter(a.method for a in failed))}"
        )


class TestClockSkew:
    """Runners whose wall clocks are minutes off: the database clock decides, so nothing changes.

    The skew is Debian's libfaketime preloaded into each skewed runner process only: a Linux time
    namespace (`unshare --time`) offsets only the monotonic and boot clocks, never CLOCK_REALTIME.
    """

    def test_skewed_runner_clocks_change_nothing(self, fleet: Fleet):
        require_tool("libfaketime", "apt-get install faketime")
        ahead, behind, right = fleet.runner_hosts
        skews = {ahead.name: 7 * 60, behind.name: -5 * 60, right.name: 0}
        runners = [
            fleet.runner(ahead, extra_env=netns.skewed_clock_env("+7m")),
            fleet.runner(behind, extra_env=netns.skewed_clock_env("-5m")),
            fleet.runner(right),
        ]
        fleet.wait_started(runners)
        url = fleet.receiver.url
        # Calls that outlast the lease: only heartbeats, renewed by the database clock, keep them.
        fleet.receiver.slow_prefix = "/slow"
        fleet.receiver.slow_s = LEASE_S * 1.5
        start = datetime.now(UTC)
        at = (start + timedelta(seconds=4)).replace(microsecond=0)
        once = {
            "name": "once",
            "schedule": f"@at {at.isoformat()}",
            "action": {"type": "http", "url": f"{url}/once"},
            "retry": RETRY,
        }
        ids = fleet.create_jobs(
            [
                *(every_second(f"skew-{i}", f"{url}/fast/{i}") for i in range(4)),
                every_second("slow", f"{url}/slow"),
                once,
            ]
        )
        everyone = {h.address for h in (ahead, behind, right)}

        def observed() -> bool:
            callers = {c.source for c in fleet.receiver.snapshot()}
            return everyone <= callers and time.time() > max(at.timestamp() + 2, start.timestamp() + 12)

        wait_for(observed, timeout=60, what="every runner to make calls, and ten seconds of slots to pass")
        end = datetime.now(UTC) - timedelta(seconds=3)
        # The faked clocks are real: the webhook-timestamp each runner signs with is its own clock.
        for host in (ahead, behind, right):
            offsets = [int(c.headers["webhook-timestamp"]) - c.at for c in fleet.receiver.from_host(host)]
            assert offsets
            assert all(abs(o - skews[host.name]) < 30 for o in offsets), (host.name, offsets[:5])

        def settled() -> bool:
            busy = fleet.sql(
                "SELECT count(*) FROM runs WHERE status IN ('pending', 'running') AND scheduled_for <= %s",
                (end,),
            )[0][0]
            return busy == 0

        wait_for(settled, timeout=30, what="every run of the window to finish")
        runs = fleet.runs()
        # Nothing fired early, nothing was rescued, nothing was lost or fired twice.
        early = [r for r in runs if r["started_at"] is not None and r["started_at"] < r["scheduled_for"]]
        assert not early, early[:3]
        assert not [r for r in runs if r["status"] == "lost" or r["attempt"] > 1]
        for proc, host in zip(runners, (ahead, behind, right), strict=True):
            assert scrape_or_zero(host, "scheduler_rescues_total") == 0, proc.name
        slow = [r for r in runs if r["job_id"] == ids[4] and r["scheduled_for"] <= end]
        assert slow
        assert all(r["status"] == "succeeded" and r["duration_ms"] > LEASE_S * 1000 for r in slow)
        (single,) = [r for r in runs if r["job_id"] == ids[5]]
        assert single["scheduled_for"] == at
        assert single["status"] == "succeeded"
        # Every slot of the window has exactly one first attempt.
        window = [r for r in runs if start + timedelta(seconds=2) <= r["scheduled_for"] <= end]
        firsts = Counter((r["job_id"], r["scheduled_for"]) for r in window if r["attempt"] == 1)
        assert set(firsts.values()) == {1}
        for job in ids[:5]:
            slots = sorted(s for j, s in firsts if j == job)
            assert slots, job
            gaps = [b - a for a, b in itertools.pairwise(slots) if b - a != timedelta(seconds=1)]
            assert not gaps, (job, gaps)
        late = max((r["started_at"] - r["scheduled_for"]).total_seconds() for r in window)
        shares = dict(Counter(r["runner"] for r in window))
        print(
            f"\nclock skew +7m / -5m / 0: {len(window)} runs, by runner {shares}, "
            f"latest start {late:.2f} s after its slot"
        )
