"""The supervision of a runner's loops, without a database: back-off on trouble, survival of bugs, rounds.

The services themselves, against a real PostgreSQL: tests/integration/test_runner_services.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
import structlog

from scheduler.metrics import RunnerMetrics
from scheduler.runner.services.periodic import run_periodically
from scheduler.runner.supervise import Backoff, keep_running


class TestKeepRunning:
    """A loop rides out database trouble and bugs, and stops when told."""

    async def test_database_trouble_backs_off_and_the_recovery_is_counted(self):
        metrics = RunnerMetrics()
        outcomes = iter([psycopg.OperationalError("gone"), psycopg.OperationalError("gone"), None])
        calls: list[float] = []
        stop = asyncio.Event()

        async def step() -> float:
            calls.append(asyncio.get_running_loop().time())
            outcome = next(outcomes, None)
            if outcome is not None:
                raise outcome
            stop.set()
            return 0.0

        await asyncio.wait_for(
            keep_running("test", step, log=structlog.get_logger(), metrics=metrics, stop=stop), 5
        )

        assert len(calls) == 3
        assert calls[1] - calls[0] >= 0.1 * 0.9
        assert calls[2] - calls[1] >= 0.2 * 0.9
        assert metrics.registry.get_sample_value("scheduler_db_reconnects_total") == 1

    async def test_a_bug_in_a_step_does_not_end_the_loop(self):
        stop = asyncio.Event()
        calls = 0

        async def step() -> float:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            stop.set()
            return 0.0

        await asyncio.wait_for(
            keep_running("test", step, log=structlog.get_logger(), metrics=RunnerMetrics(), stop=stop), 5
        )
        assert calls == 2

    async def test_a_periodic_service_runs_a_round_per_interval(self):
        rounds: list[datetime | None] = []
        stop = asyncio.Event()

        class Counting:
            name = "counting"
            interval_s = 0.01

            async def run_once(self, now: datetime | None = None) -> int:
                rounds.append(now)
                if len(rounds) == 3:
                    stop.set()
                return len(rounds)

        await asyncio.wait_for(
            run_periodically(Counting(), log=structlog.get_logger(), metrics=RunnerMetrics(), stop=stop), 5
        )
        assert rounds == [None, None, None]

    def test_the_backoff_doubles_to_its_cap_and_resets(self):
        backoff = Backoff()
        assert [backoff.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        backoff.reset()
        assert backoff.next() == 0.1
