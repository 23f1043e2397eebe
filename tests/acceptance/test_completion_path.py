"""The runner's completion path in a runner process: one tenant's odd answer never holds back another's runs.

SPEC 3.2, 3.3, 4: a real runner process against real PostgreSQL and a real HTTP target, beside a
healthy job of another tenant. The completer's batches: tests/integration/test_completion_path.py.
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

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from tests.conftest import Proc, create_api_key, eventually, settings_for

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
