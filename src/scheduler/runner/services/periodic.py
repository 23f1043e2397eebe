"""The shape of the runner's periodic services, and the loop that runs one a round at a time.

Each service in this package does one round of its work in `run_once(now)`; `run_periodically` runs
the rounds under the runner's common supervision (`scheduler.runner.supervise`), retrying a round
PostgreSQL ended for a deadlock, so every service rides out a lost database the same way.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from scheduler.metrics import RunnerMetrics
from scheduler.runner.supervise import keep_running, retry_conflicts


class PeriodicService(Protocol):
    """A background service of the runner: one round of its work at a time, every ``interval_s``."""

    @property
    def name(self) -> str:
        """How logs and metrics name the service."""
        ...

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        ...

    async def run_once(self, now: datetime | None = None) -> object:
        """Do one round at ``now`` (the database's clock unless a test passes one); return its counts."""
        ...


async def run_periodically(
    service: PeriodicService,
    *,
    log: FilteringBoundLogger,
    metrics: RunnerMetrics,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``service`` one round every ``interval_s`` until ``stop`` is set or the task is cancelled."""

    async def step() -> float:
        await retry_conflicts(service.run_once)
        return service.interval_s

    await keep_running(service.name, step, log=log, metrics=metrics, stop=stop)
