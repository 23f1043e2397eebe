"""Keeping a runner's loops alive: one step after another, with a backoff when the database is away.

Every loop of a runner — the claim loop, the completer, the listener and each periodic service
(`scheduler.runner.services.periodic`) — runs through `keep_running`, so all of them ride out a
lost database and a bug the same way: the step fails, the failure is logged, and the step runs
again after a short backoff. A loop never ends on its own; it stops when its ``stop`` event is set
or its task is cancelled. Here rather than beside the services, so the core cycle (`loop.py`,
`completer.py`) depends on nothing in `runner/services/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from structlog.typing import FilteringBoundLogger

from scheduler.db.connections import DB_ERRORS
from scheduler.metrics import RunnerMetrics

# Two transactions that lock job rows in different orders: PostgreSQL ends one of them, which is
# simply run again (every path locks job rows in id order, so this is rare).
_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
CONFLICT_TRIES = 5
BACKOFF_FIRST_S = 0.1
# The cap keeps the promise that claims resume within 2 s of the database accepting connections
# again (SPEC 4); a try while it is down costs one failed connection attempt.
BACKOFF_CAP_S = 1.0

T = TypeVar("T")


@dataclass(slots=True)
class Backoff:
    """Exponential backoff for database trouble: 0.1 s doubling to 1 s."""

    failures: int = field(default=0)

    def next(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        self.failures += 1
        return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (min(self.failures, 8) - 1))

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0


async def retry_conflicts(action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action``, again when PostgreSQL ended it for a deadlock or a serialization failure."""
    for tries in range(1, CONFLICT_TRIES + 1):
        try:
            return await action()
        except _CONFLICTS:
            if tries == CONFLICT_TRIES:
                raise
            await asyncio.sleep(0.01 * tries)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def wait(seconds: float, *events: asyncio.Event) -> None:
    """Sleep ``seconds``, or until one of ``events`` is set."""
    if any(event.is_set() for event in events):
        return
    if not events:
        await asyncio.sleep(seconds)
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def keep_running(
    name: str,
    step: Callable[[], Awaitable[float]],
    *,
    log: FilteringBoundLogger,
    metrics: RunnerMetrics,
    stop: asyncio.Event | None = None,
    wake: asyncio.Event | None = None,
    failure_event: str = "service_failed",
) -> None:
    """Call ``step`` until ``stop`` is set; each call returns how long to wait before the next one.

    The wait ends early when ``wake`` is set (and clears it). A step that meets database trouble is
    logged as ``database_unavailable`` and tried again after the backoff; the first success after
    that is logged as ``database_reconnected``. Any other exception is a bug: it is logged with its
    trace as ``failure_event`` and the step is tried again after the same backoff, so a bug never
    silently ends a loop the runner's promises depend on.
    """
    backoff = Backoff()
    stopping = stop or asyncio.Event()
    while not stopping.is_set():
        try:
            delay = await step()
            if backoff.failures:
                log.info("database_reconnected", service=name, after_failures=backoff.failures)
                metrics.db_reconnects.inc()
            backoff.reset()
        except DB_ERRORS as exc:
            delay = backoff.next()
            log.warning("database_unavailable", service=name, error=str(exc)[:200], retry_in_s=delay)
        except Exception:
            delay = backoff.next()
            log.exception(failure_event, service=name, retry_in_s=delay)
        if stopping.is_set():
            return
        if delay > 0:
            await wait(delay, *[event for event in (stop, wake) if event is not None])
        else:
            await asyncio.sleep(0)  # let calls and other loops run between two full claims
        if wake is not None:
            wake.clear()  # what woke us is seen by the step that runs now
