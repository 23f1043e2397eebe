"""PostgreSQL failover under load: the primary killed and its standby promoted, and read-only servers.

Issue 18. Every cluster is built with PostgreSQL's own tools (tests/pgcluster.py: initdb,
pg_basebackup -R, pg_ctl promote); the API and two runners are real processes given a URL that names
both servers, real clients poll the API throughout, and a real HTTP receiver records every delivery.
Times compared across processes are wall-clock times of this one machine.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from uuid import UUID

import httpx
import pytest

from scheduler.domain.webhooks import message_id
from tests import pgcluster
from tests.conftest import Proc, Procs, Received, Receiver, start_api, wait_for
from tests.pgcluster import Cluster, Node, multi_host_url

pytestmark = pytest.mark.slow

HTTP_JOBS = 30
LOG_JOBS = 30
# Long enough for every runner and the API to meet the dead primary, shorter than the default lease.
OUTAGE_S = 3.0
# A lease shorter than the outage below it, so that calls in flight at the kill lose their leases.
SHORT_LEASE_S = 2
OUTAGE_PAST_LEASE_S = 4.5
RESUME_WITHIN_S = 2.0
FAST_RETRY = {"max_attempts": 3, "min_backoff_s": 0, "max_backoff_s": 0}
# Every process of these tests: no rate limit in the way of the pollers, a quick shutdown at the end.
SERVICE_SETTINGS: dict[str, Any] = {
    "rate_limit_per_s": 1_000_000,
    "rate_limit_burst": 1_000_000,
    "shutdown_grace_s": 1,
}


# ------------------------------------------------------------------------------ fixtures


@dataclass
class ServiceProcs(Procs):
    """`Procs` whose every process also gets this test's settings."""

    settings: dict[str, Any] = field(default_factory=dict)

    def env(self, **overrides: Any) -> dict[str, str]:
        return super().env(**{**self.settings, **overrides})

    def stop_together(self, procs: list[Proc]) -> None:
        """SIGTERM them all at once, so that none is still claiming while another drains.

        One signal each: a second one would make a runner exit at once, abandoning its calls.
        """
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """PostgreSQL's server binaries. Without them these tests skip, unless SCHEDULER_REQUIRE_PG_TOOLS=1."""
    found = pgcluster.find_pg_bin()
    if found is None:
        message = (
            "PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup, postgres) are not installed: "
            "apt-get install postgresql-15, or point SCHEDULER_TEST_PG_BIN at their directory"
        )
        if os.environ.get("SCHEDULER_REQUIRE_PG_TOOLS") == "1":
            pytest.fail(message + "; SCHEDULER_REQUIRE_PG_TOOLS=1 makes this a failure")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def pg_template(pg_bin: Path) -> Iterator[Path]:
    """A migrated data directory that each test's primary is copied from (initdb + migrate once)."""
    with pgcluster.migrated_template(pg_bin) as data:
        yield data


@pytest.fixture
def cluster(pg_bin: Path, pg_template: Path) -> Iterator[Cluster]:
    """A running primary with the service's schema; tests add the standbys they need."""
    with Cluster.create(pg_bin) as made:
        made.init_primary(template=pg_template)
        yield made


@pytest.fixture
def services(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., ServiceProcs]]:
    """Make groups of API and runner processes on a URL; all stop before the cluster does."""
    made: list[ServiceProcs] = []

    def make(url: str, **settings: Any) -> ServiceProcs:
        logs = tmp_path / f"services-{len(made)}"
        logs.mkdir()
        group = ServiceProcs(url, logs, settings={**SERVICE_SETTINGS, **settings})
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop_together(group.started)


# ------------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Answer:
    """One request of a polling client and how the API answered it (status None: no answer)."""

    method: str
    sent_at: float
    answered_at: float
    status: int | None
    retry_after: str | None
    error: str = ""


class ApiClients:
    """Two clients polling the API for the length of a test: one lists jobs, one creates (paused) jobs.

    Separate clients, so that a request the API holds up does not hide the answers of the other.
    """

    def __init__(self, api: str) -> None:
        self.api = api
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, args=("GET",), daemon=True),
            threading.Thread(target=self._poll, args=("POST",), daemon=True),
        ]

    def __enter__(self) -> Self:
        """Start polling."""
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop polling; the answers stay."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _poll(self, method: str) -> None:
        with httpx.Client(base_url=self.api, timeout=10) as http:
            for index in itertools.count():
                if self._stop.is_set():
                    return
                sent_at = time.time()
                try:
                    if method == "GET":
                        response = http.get("/jobs", params={"limit": 5})
                    else:
                        response = http.post("/jobs", json=paused_job(f"poll-{index}"))
                except httpx.HTTPError as exc:
                    self._record(Answer(method, sent_at, time.time(), None, None, repr(exc)))
                else:
                    self._record(
                        Answer(
                            method,
                            sent_at,
                            time.time(),
                            response.status_code,
                            response.headers.get("retry-after"),
                        )
                    )
                # Pacing: about ten requests a second per client is a steady load, not a flood.
                self._stop.wait(0.1)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def writes_answered(self, since: float) -> list[Answer]:
        """Jobs created by requests sent after ``since``."""
        return [a for a in self.snapshot() if a.method == "POST" and a.sent_at > since and a.status == 201]


def not_a_503_with_retry_after(answers: list[Answer]) -> list[Answer]:
    """The answers that break "503 with Retry-After, never 500": any other 5xx, or a bare 503."""
    return [
        a
        for a in answers
        if a.status is not None and a.status >= 500 and (a.status != 503 or a.retry_after is None)
    ]


def held_back(answers: list[Answer]) -> list[Answer]:
    """Requests the API sat on for longer than a resume may take, rather than answering 503 at once."""
    return [a for a in answers if a.answered_at - a.sent_at > RESUME_WITHIN_S]


def paused_job(name: str) -> dict[str, Any]:
    return {"name": name, "schedule": "@every 1s", "paused": True, "action": {"type": "log"}}


def every_second_job(name: str, action: dict[str, Any], start_at: datetime) -> dict[str, Any]:
    """A job that must fire every slot: misfire `all` catches up each missed one."""
    return {
        "name": name,
        "schedule": "@every 1s",
        "start_at": start_at.isoformat(),
        "action": action,
        "misfire": {"policy": "all"},
        "overlap": "allow",
        "retry": FAST_RETRY,
    }


def create_jobs(api: str, receiver: Receiver | None, *, http: int, log: int) -> dict[UUID, str]:
    """Create the load through the API; each job's id and action type."""
    start_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    kinds: dict[UUID, str] = {}
    with httpx.Client(base_url=api, timeout=10) as client:
        for index in range(http + log):
            if index < http:
                assert receiver is not None
                action: dict[str, Any] = {"type": "http", "url": f"{receiver.url}/hook/{index}"}
            else:
                action = {"type": "log", "payload": {"n": index}}
            response = client.post("/jobs", json=every_second_job(f"load-{index}", action, start_at))
            assert response.status_code == 201, response.text
            kinds[UUID(response.json()["id"])] = action["type"]
    return kinds


# --------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Run:
    """A run row as the surviving primary has it."""

    id: UUID
    job_id: UUID
    scheduled_for: datetime
    attempt: int
    status: str
    started_at: datetime | None


def runs_on(node: Node) -> list[Run]:
    rows = node.sql(
        "SELECT id, job_id, scheduled_for, attempt, status::text, started_at FROM runs"
        " ORDER BY job_id, scheduled_for, attempt"
    )
    return [Run(*row) for row in rows]


def instant(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def every_job_fired_after(node: Node, jobs: set[UUID], moment: float) -> bool:
    rows = node.sql("SELECT DISTINCT job_id FROM runs WHERE scheduled_for > %s", (instant(moment),))
    return {row[0] for row in rows} >= jobs


def firing(node: Node, jobs: set[UUID], runners: list[Proc]) -> bool:
    """Whether every runner has started and every job has a run."""
    started = all('"runner_started"' in runner.output() for runner in runners)
    fired = node.sql("SELECT count(DISTINCT job_id) FROM runs")[0][0]
    return started and fired >= len(jobs)


def missing_slots(runs: list[Run], jobs: set[UUID]) -> dict[UUID, list[datetime]]:
    """Per job, the seconds between its first and its last recorded slot that have no run row."""
    slots: dict[UUID, set[datetime]] = defaultdict(set)
    for run in runs:
        slots[run.job_id].add(run.scheduled_for)
    missing: dict[UUID, list[datetime]] = {}
    for job in jobs:
        recorded = slots.get(job, set())
        if not recorded:
            missing[job] = []
            continue
        first, last = min(recorded), max(recorded)
        wanted = [first + timedelta(seconds=n) for n in range(int((last - first).total_seconds()) + 1)]
        gaps = [slot for slot in wanted if slot not in recorded]
        if gaps:
            missing[job] = gaps
    return missing


def job_log_events(procs: list[Proc]) -> Counter[tuple[str, datetime]]:
    """How many `job_log` events the runners wrote for each (job, slot)."""
    seen: Counter[tuple[str, datetime]] = Counter()
    for proc in procs:
        for line in proc.output().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "job_log":
                seen[record["job_id"], datetime.fromisoformat(record["scheduled_for"])] += 1
    return seen


# ------------------------------------------------------------------------------ failover


@dataclass
class Deliveries:
    """The receiver's deliveries of each slot, judged against the surviving primary's rows."""

    lease_expired: list[str] = field(default_factory=list)
    """Slots delivered again after an attempt was rescued `lost` (its lease ran out)."""
    never_replicated: list[str] = field(default_factory=list)
    """Slots delivered from a claim the old primary committed but never replicated, then fired again."""
    unexplained: list[str] = field(default_factory=list)
    """Slots delivered more often than lost attempts and a lost claim account for."""
    without_row: list[str] = field(default_factory=list)
    """Slots delivered that the surviving primary has no run of."""


@dataclass
class Failover:
    """A kill -9 of the primary under load and the promotion of its standby, and what it left behind."""

    killed_at: float
    writable_at: float
    jobs: dict[UUID, str]
    runs: list[Run]
    answers: list[Answer]
    deliveries: list[Received]
    reported_before_kill: dict[UUID, str]
    """Run id and status of the runs the API listed just before the kill."""
    delivered_before_kill: list[Received]

    def first_write_after_kill_s(self) -> float | None:
        """Seconds from the promotion to the first job created by a request sent after the kill."""
        written = [
            a.answered_at
            for a in self.answers
            if a.method == "POST" and a.status == 201 and a.sent_at > self.killed_at
        ]
        return min(written) - self.writable_at if written else None

    def first_run_after_kill_s(self) -> float | None:
        """Seconds from the promotion to the first run started after the kill (on the new primary)."""
        started = [r.started_at for r in self.runs if r.started_at and r.started_at > instant(self.killed_at)]
        return min(started).timestamp() - self.writable_at if started else None

    def summary(self) -> str:
        """The figures of this failover, printed by each test (shown with `pytest -s` or on failure)."""
        write_s, run_s = self.first_write_after_kill_s(), self.first_run_after_kill_s()
        judged = self.judge_deliveries()
        answers = Counter(str(a.status) for a in self.answers)
        return (
            f"promoted {self.writable_at - self.killed_at:.2f} s after the kill; first write "
            f"{write_s if write_s is None else round(write_s, 2)} s and first run "
            f"{run_s if run_s is None else round(run_s, 2)} s after it; answers {dict(answers)}; "
            f"{len(self.deliveries)} deliveries, repeated after a lost lease {len(judged.lease_expired)}, "
            f"after a claim never replicated {len(judged.never_replicated)}, unexplained "
            f"{len(judged.unexplained)}"
        )

    def judge_deliveries(self) -> Deliveries:
        """Each slot delivered more than once, with what explains it (by `webhook-id`, one per slot)."""
        rows_of: dict[str, list[Run]] = defaultdict(list)
        for run in self.runs:
            if self.jobs.get(run.job_id) == "http":
                rows_of[message_id(run.job_id, run.scheduled_for)].append(run)
        times_of: dict[str, list[float]] = defaultdict(list)
        for delivery in self.deliveries:
            times_of[delivery.headers["webhook-id"]].append(delivery.at)
        judged = Deliveries()
        for slot, times in times_of.items():
            rows = rows_of.get(slot)
            if not rows:
                judged.without_row.append(slot)
                continue
            lost = sum(run.status == "lost" for run in rows)
            # The old primary's claim is gone when every surviving row of the slot was claimed after
            # the kill, although the slot was delivered before the promotion.
            claimed_again = min(times) < self.writable_at and all(
                run.started_at is not None and run.started_at > instant(self.killed_at) for run in rows
            )
            repeats = len(times) - 1
            if repeats > lost + claimed_again:
                judged.unexplained.append(slot)
            elif repeats and claimed_again:
                judged.never_replicated.append(slot)
            elif repeats:
                judged.lease_expired.append(slot)
        return judged


def fail_over_under_load(
    cluster: Cluster,
    services: Callable[..., ServiceProcs],
    receiver: Receiver,
    *,
    synchronous: bool,
    outage_s: float,
    url_params: dict[str, str],
    **settings: Any,
) -> Failover:
    """HTTP and log jobs on an API and two runners; kill -9 the primary, promote after ``outage_s``."""
    primary = cluster.primary
    standby = cluster.add_standby(synchronous=synchronous)
    group = services(multi_host_url([primary, standby], **url_params), **settings)
    runners = [group.runner(), group.runner()]
    api = start_api(group)
    api_proc = group.started[-1]
    jobs = create_jobs(api, receiver, http=HTTP_JOBS, log=LOG_JOBS)
    wait_for(lambda: firing(primary, set(jobs), runners), timeout=30, what="both runners up, every job fired")
    with ApiClients(api) as clients:
        wait_for(lambda: len(clients.writes_answered(0)) >= 3, what="the polling clients' first writes")
        with httpx.Client(base_url=api, timeout=10) as http:
            listed = http.get("/runs", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        reported = {UUID(run["id"]): run["status"] for run in listed.json()["items"]}
        delivered_before_kill = receiver.snapshot()
        primary.crash()
        # Taken once every process of the primary is dead: whatever is answered or started after
        # it is the promoted standby's work.
        killed_at = time.time()
        # Pacing, not waiting for something: the outage the clients and runners live through.
        time.sleep(outage_s)
        standby.promote()
        writable_at = standby.wait_writable()
        wait_for(
            lambda: clients.writes_answered(killed_at),
            timeout=40,
            what="a job created after the promotion",
        )
        wait_for(
            lambda: every_job_fired_after(standby, set(jobs), writable_at + 2),
            timeout=40,
            what="every job firing on the promoted standby",
        )
        if settings.get("lease_s", 30) < outage_s:
            # Calls in flight at the kill outlived their leases: wait until each has ended, rescued
            # or completed by its own runner, so that every repeat it causes is in the rows.
            wait_for(
                lambda: (
                    not standby.sql(
                        "SELECT 1 FROM runs WHERE status = 'running' AND started_at < %s",
                        (instant(killed_at),),
                    )
                ),
                timeout=30,
                what="the rescue of the runs whose leases expired in the outage",
            )
        answers = clients.snapshot()
    group.stop_together(runners)
    assert api_proc.popen.poll() is None, f"the API exited:\n{api_proc.output()[-3000:]}"
    return Failover(
        killed_at=killed_at,
        writable_at=writable_at,
        jobs=jobs,
        runs=runs_on(standby),
        answers=answers,
        deliveries=receiver.snapshot(),
        reported_before_kill=reported,
        delivered_before_kill=delivered_before_kill,
    )


def assert_service_came_back(failover: Failover) -> None:
    """What every failover must show: writes and runs within 2 s, no 500, no slot lost."""
    write_s = failover.first_write_after_kill_s()
    run_s = failover.first_run_after_kill_s()
    assert write_s is not None, "no API write was answered after the promotion"
    assert write_s <= RESUME_WITHIN_S, f"the first API write after the promotion came {write_s:.2f} s late"
    assert run_s is not None, "no run was recorded after the promotion"
    assert run_s <= RESUME_WITHIN_S, f"the first run after the promotion came {run_s:.2f} s late"
    bad = not_a_503_with_retry_after(failover.answers)
    assert not bad, f"{len(bad)} answers broke '503 + Retry-After, never 500', first {bad[:3]}"
    no_answer = [a for a in failover.answers if a.status is None]
    assert not no_answer, f"{len(no_answer)} requests got no answer at all, first {no_answer[:3]}"
    held = held_back(failover.answers)
    assert not held, f"{len(held)} requests were held instead of answered 503, first {held[:3]}"
    missing = missing_slots(failover.runs, set(failover.jobs))
    refired = len(failover.judge_deliveries().never_replicated)
    assert not missing, (
        f"slots without a run under misfire 'all': {dict(list(missing.items())[:3])}; {refired} slots "
        "were claimed on the old primary, never replicated and fired again (asynchronous replication)"
    )


class TestKillingThePrimaryUnderLoad:
    """kill -9 of the primary under 60 every-second jobs, its asynchronous standby promoted 3 s later.

    The service comes back within 2 s of the promotion, answers 503 + Retry-After at once in between
    (never 500, never holding a request), loses no slot, and delivers a slot twice only when a lease
    expired or when the old primary's claim of it was never replicated (an asynchronous standby may
    lack the primary's last commits).
    """

    def test_with_read_write_in_the_url_no_slot_is_lost_and_only_an_unreplicated_claim_repeats(
        self, cluster, services, receiver
    ):
        failover = fail_over_under_load(
            cluster,
            services,
            receiver,
            synchronous=False,
            outage_s=OUTAGE_S,
            url_params={"target_session_attrs": "read-write"},
        )
        print(failover.summary())
        assert_service_came_back(failover)
        judged = failover.judge_deliveries()
        assert not judged.without_row, f"slots delivered but never recorded: {judged.without_row[:5]}"
        assert not judged.unexplained, f"slots delivered twice for no reason: {judged.unexplained[:5]}"
        # The outage is shorter than the 30 s lease: every lease was renewed in time. A repeat can
        # only be a claim the old primary committed and never sent to its asynchronous standby.
        assert not judged.lease_expired, (
            f"{len(judged.lease_expired)} slots delivered again after a lease expired, in an outage "
            f"shorter than the lease ({len(judged.never_replicated)} more repeated a claim the old "
            "primary never replicated, which asynchronous replication allows)"
        )

    def test_with_the_services_default_and_a_lease_shorter_than_the_outage_each_repeat_follows_a_lost_lease(
        self, cluster, services, receiver
    ):
        # Calls in flight from before the kill until after the promotion: their leases run out in
        # the outage while they still run, and a rescue races their runners' next heartbeats.
        receiver.delay_s = OUTAGE_PAST_LEASE_S + 1
        failover = fail_over_under_load(
            cluster,
            services,
            receiver,
            synchronous=False,
            outage_s=OUTAGE_PAST_LEASE_S,
            url_params={},
            lease_s=SHORT_LEASE_S,
        )
        print(failover.summary())
        assert_service_came_back(failover)
        judged = failover.judge_deliveries()
        assert not judged.without_row, f"slots delivered but never recorded: {judged.without_row[:5]}"
        assert not judged.unexplained, (
            f"{len(judged.unexplained)} slots delivered again with no lost lease and no lost claim to "
            f"explain it: {judged.unexplained[:5]} (lease expired: {len(judged.lease_expired)}, "
            f"claims never replicated: {len(judged.never_replicated)})"
        )


class TestKillingThePrimaryWithSynchronousReplication:
    """With `synchronous_standby_names = '*'`, whatever the service reported before the kill survives it."""

    def test_no_run_reported_before_the_kill_is_missing_on_the_promoted_standby(
        self, cluster, services, receiver
    ):
        failover = fail_over_under_load(
            cluster,
            services,
            receiver,
            synchronous=True,
            outage_s=OUTAGE_S,
            url_params={"target_session_attrs": "read-write"},
        )
        print(failover.summary())
        assert_service_came_back(failover)
        surviving = {run.id: run for run in failover.runs}
        assert failover.reported_before_kill, "the API listed no run before the kill"
        lost = [run_id for run_id in failover.reported_before_kill if run_id not in surviving]
        assert not lost, f"{len(lost)} runs the API reported before the kill are gone: {lost[:5]}"
        regressed = [
            run_id
            for run_id, status in failover.reported_before_kill.items()
            if status == "succeeded" and surviving[run_id].status != "succeeded"
        ]
        assert not regressed, f"runs reported succeeded are no longer: {regressed[:5]}"
        # A delivery follows its claim's commit: the claim, not a later one, must have survived.
        claimed_before_kill = {
            message_id(run.job_id, run.scheduled_for)
            for run in failover.runs
            if run.started_at is not None and run.started_at < instant(failover.killed_at)
        }
        unrecorded = [
            d.headers["webhook-id"]
            for d in failover.delivered_before_kill
            if d.headers["webhook-id"] not in claimed_before_kill
        ]
        assert not unrecorded, f"slots delivered before the kill whose claims are gone: {unrecorded[:5]}"
        judged = failover.judge_deliveries()
        assert not judged.never_replicated, f"claims lost despite synchronous replication: {judged}"
        assert not judged.unexplained, f"slots delivered twice for no reason: {judged.unexplained[:5]}"
        assert not judged.lease_expired, "a lease expired in an outage shorter than the lease"


# Runner sessions that recorded runs (the claim's insert holds RowExclusiveLock on the runs table)
# and now wait at their commit for the synchronous standby's acknowledgement. One at a time: the
# other runner's claims skip the jobs that claim holds locked.
CLAIMS_WAITING_FOR_THE_STANDBY = """
SELECT count(*) FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid
WHERE a.wait_event = 'SyncRep' AND a.application_name LIKE 'scheduler-runner%%'
  AND l.relation = 'runs'::regclass AND l.mode = 'RowExclusiveLock'
"""


class TestLogActionsAcrossAFailover:
    """A log action's event is written once at most per slot, even when the kill cuts claims' commits."""

    def test_claims_cut_while_waiting_for_the_synchronous_standby_log_nothing_twice(self, cluster, services):
        primary = cluster.primary
        standby = cluster.add_standby(synchronous=True)
        group = services(multi_host_url([primary, standby], target_session_attrs="read-write"))
        runners = [group.runner(), group.runner()]
        api = start_api(group)
        jobs = create_jobs(api, None, http=0, log=LOG_JOBS)
        wait_for(
            lambda: firing(primary, set(jobs), runners), timeout=30, what="both runners up, every job fired"
        )
        # Freezing the walsender stalls every commit in its wait for the standby, as a stalled
        # network to the standby would: the runners' next claims are committed on the primary alone.
        assert primary.freeze_replication() == 1
        wait_for(
            lambda: primary.sql(CLAIMS_WAITING_FOR_THE_STANDBY)[0][0] >= 1,
            what="a runner's claim waiting for the standby at its commit",
        )
        cut_at = time.time()
        primary.crash()
        standby.promote()
        writable_at = standby.wait_writable()
        wait_for(
            lambda: every_job_fired_after(standby, set(jobs), writable_at + 2),
            timeout=30,
            what="every job firing on the promoted standby",
        )
        group.stop_together(runners)
        events = job_log_events(runners)
        assert {UUID(job) for job, _ in events} == set(jobs), "some job's events are not in the runners' logs"
        twice = sorted((slot, job, n) for (job, slot), n in events.items() if n > 1)
        assert not twice, (
            f"{len(twice)} slots logged more than once across the failover (cut at {instant(cut_at)}), "
            f"first {twice[:3]}"
        )
        missing = missing_slots(runs_on(standby), set(jobs))
        assert not missing, f"slots without a run: {dict(list(missing.items())[:3])}"


class TestAStandbyNamedFirst:
    """A URL whose first host is a standby: the service finds the primary; a standby alone is not ready."""

    def test_without_target_session_attrs_the_service_works_against_the_primary(self, cluster, services):
        primary = cluster.primary
        standby = cluster.add_standby()
        group = services(multi_host_url([standby, primary]))
        group.runner()
        api = start_api(group)
        with httpx.Client(base_url=api, timeout=10) as http:
            now = datetime.now(UTC).replace(microsecond=0)
            created = http.post("/jobs", json=every_second_job("standby-first", {"type": "log"}, now))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            wait_for(
                lambda: primary.sql("SELECT 1 FROM runs WHERE job_id = %s", (job_id,)),
                what="a run of the job recorded on the primary",
            )
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text

    def test_on_a_standby_alone_readyz_and_writes_answer_503_with_retry_after(self, cluster, services):
        standby = cluster.add_standby()
        group = services(standby.url(target_session_attrs="any"))
        api = start_api(group)
        with httpx.Client(base_url=api, timeout=10) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            created = http.post("/jobs", json=paused_job("on-a-standby"))
            assert created.status_code == 503, created.text
            assert created.headers.get("retry-after"), created.headers


class TestAPrimaryTurnedReadOnly:
    """A primary that turns read-only without dropping connections is left, and found again when writable."""

    def test_writes_answer_503_runs_stop_and_both_resume_within_two_seconds(self, cluster, services):
        primary = cluster.primary
        group = services(primary.url())
        runners = [group.runner(), group.runner()]
        api = start_api(group)
        jobs = create_jobs(api, None, http=0, log=LOG_JOBS)
        wait_for(
            lambda: firing(primary, set(jobs), runners), timeout=30, what="both runners up, every job fired"
        )
        with ApiClients(api) as clients, httpx.Client(base_url=api, timeout=10) as http:
            wait_for(lambda: len(clients.writes_answered(0)) >= 3, what="the polling clients' first writes")
            primary.set_read_only(read_only=True)
            read_only_at = time.time()
            wait_for(lambda: http.get("/readyz").status_code == 503, timeout=5, what="/readyz to answer 503")
            # Pacing: the clients and the runners meet the read-only server for a while.
            time.sleep(2)
            unlocking_at = time.time()
            primary.set_read_only(read_only=False)
            writable_at = time.time()
            wait_for(lambda: clients.writes_answered(writable_at - 0.5), timeout=30, what="a write answered")
            wait_for(
                lambda: primary.sql("SELECT 1 FROM runs WHERE started_at > %s", (instant(writable_at),)),
                timeout=30,
                what="a run recorded once writable again",
            )
            answers = clients.snapshot()
        during = [a for a in answers if a.sent_at > read_only_at + 0.5 and a.answered_at < unlocking_at]
        posts = [a for a in during if a.method == "POST"]
        assert posts, "no write was tried while the server was read-only"
        assert all(a.status == 503 and a.retry_after for a in posts), Counter(
            (a.status, a.retry_after) for a in posts
        )
        bad = not_a_503_with_retry_after(answers)
        assert not bad, f"{len(bad)} answers broke '503 + Retry-After, never 500', first {bad[:3]}"
        held = held_back(answers)
        assert not held, f"{len(held)} requests were held instead of answered 503, first {held[:3]}"
        recorded = primary.sql(
            "SELECT count(*) FROM runs WHERE started_at BETWEEN %s AND %s",
            (instant(read_only_at + 0.5), instant(unlocking_at)),
        )[0][0]
        assert recorded == 0, f"{recorded} runs recorded on a read-only server"
        write_s = min(a.answered_at for a in clients.writes_answered(writable_at - 0.5)) - writable_at
        assert write_s <= RESUME_WITHIN_S, f"the first write once writable came {write_s:.2f} s late"
        first_run = primary.sql(
            "SELECT min(started_at) FROM runs WHERE started_at > %s", (instant(writable_at),)
        )
        run_s = first_run[0][0].timestamp() - writable_at
        assert run_s <= RESUME_WITHIN_S, f"the first run once writable came {run_s:.2f} s late"
        assert all(runner.popen.poll() is None for runner in runners), "a runner exited"
