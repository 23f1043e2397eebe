"""The runner's completion path: one tenant's odd answer never holds back another's runs (SPEC 3.2, 3.3, 4).

Real runner processes and in-process runners against real PostgreSQL and real HTTP targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus, RunTrigger
from scheduler.runner.completer import Completion
from scheduler.runner.service import RunnerParts
from tests.conftest import Proc, create_api_key, eventually, settings_for, start_run

pytestmark = pytest.mark.slow


@dataclass
class Target:
    """A raw asyncio HTTP server answering each path with chosen bytes (keep-alive, like a real one)."""

    bodies: dict[str, bytes]
    server: asyncio.Server | None = None
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.calls[path] = self.calls.get(path, 0) + 1
                body = self.bodies.get(path, b"ok")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        writer.close()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """`/nul` answers a NUL between two letters, `/bad-utf8` bytes that are not UTF-8, the rest `ok`."""
    found = Target({"/nul": b"a\x00b", "/bad-utf8": b"x\xed\xa0\x80y\xff"})
    found.server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    yield found
    found.server.close()


@pytest.fixture
async def tenants(db_url) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, str], dict[str, str]]]:
    """The API with auth required, and the headers of two namespaces' keys."""
    app = create_app(settings_for(db_url, auth="required"))
    async with AsyncTestClient(app=app) as client:
        alpha = {"Authorization": f"Bearer {await create_api_key(db_url, 'alpha')}"}
        beta = {"Authorization": f"Bearer {await create_api_key(db_url, 'beta')}"}
        yield client, alpha, beta


def runs(sql, job_id: str) -> list[dict[str, Any]]:
    names = ["scheduled_for", "trigger", "attempt", "status", "output", "error"]
    rows = sql(
        f"SELECT {', '.join(names)} FROM runs WHERE job_id = %s ORDER BY scheduled_for, attempt",  # noqa: S608
        (job_id,),
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


def events(proc: Proc, event: str) -> list[dict[str, Any]]:
    found = []
    for line in proc.output().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


class TestOneTenantsAnswerNeverBlocksAnother:
    """A target answering a NUL byte (or bytes that are not UTF-8) beside a healthy job of another tenant."""

    async def test_both_are_recorded_the_healthy_job_keeps_its_schedule_and_sigterm_drains(
        self, tenants, procs, sql, target
    ):
        client, alpha, beta = tenants
        start_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0).isoformat()

        async def make(headers: dict[str, str], name: str, path: str) -> str:
            response = await client.post(
                "/jobs",
                json={
                    "name": name,
                    "schedule": "@every 1s",
                    "start_at": start_at,
                    "action": {"type": "http", "url": target.url + path},
                },
                headers=headers,
            )
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        healthy = await make(alpha, "healthy", "/ok")
        nul = await make(beta, "nul", "/nul")
        bad_utf8 = await make(beta, "bad-utf8", "/bad-utf8")
        runner = procs.runner(shutdown_grace_s=5)

        def ended(job_id: str) -> list[dict[str, Any]]:
            return [r for r in runs(sql, job_id) if r["status"] not in ("running", "pending")]

        await eventually(
            lambda: all(len(ended(job)) >= 4 for job in (healthy, nul, bad_utf8)),
            timeout=30,
            what="four finished runs of each job",
        )
        assert {r["status"] for r in ended(nul)} == {"succeeded"}
        assert {r["output"] for r in ended(nul)} == {"ab"}  # NUL dropped, the rest kept
        assert {r["output"] for r in ended(bad_utf8)} == {"x\ufffd\ufffd\ufffdy\ufffd"}
        healthy_runs = runs(sql, healthy)
        assert all(r["status"] == "succeeded" for r in healthy_runs if r["status"] != "running")
        assert {r["trigger"] for r in healthy_runs} == {"schedule"}  # no catch-up, nothing rescued
        slots = [r["scheduled_for"] for r in healthy_runs]
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots)), slots
        assert events(runner, "service_failed") == []

        runner.signal(signal.SIGTERM)
        assert runner.popen.wait(timeout=20) == 0, runner.output()[-3000:]
        assert events(runner, "runner_stopped")
        for job in (healthy, nul, bad_utf8):
            assert {r["status"] for r in runs(sql, job)} <= {"succeeded", "pending"}


async def running_runs(parts: RunnerParts, client, count: int, *, max_attempts: int = 3) -> list[Completion]:
    """Record ``count`` running runs (one job each) and return a successful outcome for each."""
    finished: list[Completion] = []
    retry = RetryPolicy(max_attempts=max_attempts, min_backoff_s=0, max_backoff_s=0)
    slot = datetime.now(UTC).replace(microsecond=0)
    for index in range(count):
        job = await client.post(
            "/jobs",
            json={
                "name": f"job-{index}",
                "schedule": "@every 1h",
                "start_at": (slot + timedelta(days=1)).isoformat(),
                "action": {"type": "log"},
                "retry": {"max_attempts": max_attempts, "min_backoff_s": 0, "max_backoff_s": 0},
            },
        )
        assert job.status_code == 201, job.text
        job_id = UUID(job.json()["id"])
        lease = await start_run(
            parts, job_id, slot=slot, lease_s=30, runner=parts.runner.name, trigger=RunTrigger.MANUAL
        )
        finished.append(
            Completion(
                fenced=store.FencedOutcome(
                    run_id=lease.run_id,
                    job_id=job_id,
                    scheduled_for=slot,
                    lease_token=lease.lease_token,
                    outcome=Outcome(
                        status=RunStatus.SUCCEEDED, duration_ms=5, http_status=200, output="fine"
                    ),
                ),
                attempt=1,
                retry=retry,
                overlap=OverlapPolicy.SKIP,
            )
        )
    return finished


def run_rows(sql, finished: list[Completion]) -> dict[UUID, tuple[Any, ...]]:
    rows = sql(
        "SELECT id, status, output, error, http_status FROM runs WHERE id = ANY(%s)",
        ([f.fenced.run_id for f in finished],),
    )
    return {row[0]: row[1:] for row in rows}


class TestABatchWithARowTheDatabaseRefuses:
    """A row PostgreSQL refuses is found, recorded with an error, and the rest of its batch is written."""

    async def test_the_bad_row_is_isolated_and_every_other_outcome_written(self, runner_parts, client, sql):
        finished = await running_runs(runner_parts, client, 7)
        bad = finished[3]
        # A duration past PostgreSQL's integer: a value only this row carries makes the statement fail.
        finished[3] = with_outcome(bad, duration_ms=2**40, output="a\x00b")
        for item in finished:
            runner_parts.completer.add(item)
        assert await runner_parts.completer.flush() == 7
        rows = run_rows(sql, finished)
        good = [f.fenced.run_id for i, f in enumerate(finished) if i != 3]
        assert all(rows[run_id] == ("succeeded", "fine", None, 200) for run_id in good)
        status, output, error, _ = rows[bad.fenced.run_id]
        assert (status, output) == ("succeeded", None)
        assert "could not be recorded" in error
        assert "out of range" in error
        active = sql("SELECT sum(active_runs) FROM jobs")[0][0]
        assert active == 0  # every run ended on its job too: none will be rescued as lost
        assert runner_parts.completer.waiting == 0

    async def test_text_a_target_sent_is_stored_without_nul_and_with_surrogates_replaced(
        self, runner_parts, client, sql
    ):
        finished = await running_runs(runner_parts, client, 2)
        texts = ["a\x00b", "x\udcedy"]
        for item, text in zip(finished, texts, strict=True):
            runner_parts.completer.add(with_outcome(item, output=text, error=text))
        await runner_parts.completer.flush()
        rows = run_rows(sql, finished)
        assert rows[finished[0].fenced.run_id][1:3] == ("ab", "ab")
        assert rows[finished[1].fenced.run_id][1:3] == ("x\ufffdy", "x\ufffdy")


class TestFailuresNoRetryCanMend:
    """An outcome marked not retryable (refused address, invalid URL) is final at once (SPEC 3.3)."""

    async def test_no_further_attempt_is_recorded_for_it_while_an_ordinary_failure_is_retried(
        self, runner_parts, client, sql
    ):
        finished = await running_runs(runner_parts, client, 2, max_attempts=3)
        for index, retryable in enumerate((False, True)):
            item = finished[index]
            runner_parts.completer.add(
                with_outcome(item, status=RunStatus.FAILED, error="refused", retryable=retryable)
            )
        await runner_parts.completer.flush()
        final, retried = (
            sql(
                "SELECT attempt, status FROM runs WHERE job_id = %s ORDER BY attempt",
                (f.fenced.job_id,),
            )
            for f in finished
        )
        assert final == [(1, "failed")]
        assert retried == [(1, "failed"), (2, "pending")]


def with_outcome(item: Completion, **changes: Any) -> Completion:
    """The same completion with some of its outcome's values changed."""
    outcome = msgspec.structs.replace(item.fenced.outcome, **changes)
    return Completion(
        msgspec.structs.replace(item.fenced, outcome=outcome), item.attempt, item.retry, item.overlap
    )
