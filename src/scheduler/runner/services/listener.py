"""The listener: one LISTEN connection per runner, so the runner reacts at once instead of at its next poll.

Three channels: `scheduler_wake` (a job or run became due sooner: the claim loop looks now),
`scheduler_cancel` (a run was cancelled: its call stops within a second) and `scheduler_secrets`
(a namespace rotated its signing secret: the cached copy is dropped). After a reconnect the runner
is woken too, since notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from uuid import UUID

import psycopg
from structlog.typing import FilteringBoundLogger

from scheduler.db import connections, store
from scheduler.db.connections import DB_ERRORS

WAKE_CHANNEL = "scheduler_wake"
CANCEL_CHANNEL = "scheduler_cancel"
SECRETS_CHANNEL = "scheduler_secrets"
# The step returns this often while notifications are quiet, so a stop is seen between them.
QUIET_S = 5.0


class Heard(StrEnum):
    """What a notification made the listener do."""

    WAKE = "wake"
    CANCEL = "cancel"
    SECRETS = "secrets"
    IGNORED = "ignored"


class Listener:
    """Dispatches the notifications of the three channels to the runner."""

    name = "listen"

    def __init__(
        self,
        database_url: str,
        *,
        on_wake: Callable[[], None],
        on_cancel: Callable[[UUID], object],
        on_secrets: Callable[[str], None],
        log: FilteringBoundLogger,
    ) -> None:
        """Listen on ``database_url`` with a connection of its own (never one of the pool's)."""
        self._url = database_url
        self._on_wake = on_wake
        self._on_cancel = on_cancel
        self._on_secrets = on_secrets
        self._log = log
        self._conn: connections.AsyncConn | None = None

    def handle(self, channel: str, payload: str) -> Heard:
        """Act on one notification."""
        if channel == CANCEL_CHANNEL:
            try:
                run_id = UUID(payload)
            except ValueError:
                return Heard.IGNORED
            self._on_cancel(run_id)
            return Heard.CANCEL
        if channel == SECRETS_CHANNEL:
            self._on_secrets(payload)
            return Heard.SECRETS
        if channel == WAKE_CHANNEL:
            self._on_wake()
            return Heard.WAKE
        return Heard.IGNORED

    async def listen_once(self) -> float:
        """One step of the listener's loop: subscribe if need be, then handle what arrives for a while.

        A lost connection raises, so the loop backs off and subscribes again (`keep_running`).
        """
        if self._conn is None or self._conn.closed:
            self._conn = await connections.connect(self._url, application_name="scheduler-runner-listen")
            try:
                await store.listen(self._conn)
            except BaseException:
                await self.close()
                raise
            self._on_wake()  # notifications may have been missed while disconnected
            return 0.0
        heard = False
        try:
            async for note in self._conn.notifies(timeout=QUIET_S):
                heard = True
                self.handle(note.channel, note.payload)
            if not heard:
                # A quiet connection may be one whose server vanished without a word (a failover
                # behind a proxy, a cut network) or turned read-only: ask, so it is replaced.
                try:
                    async with asyncio.timeout(connections.WORK_TIMEOUT_S):
                        await self._conn.execute(b"")
                except TimeoutError:
                    raise connections.ServerTimeout(
                        "the listening connection's server did not answer"
                    ) from None
                if reason := connections.read_only_reason(self._conn):
                    raise connections.ReadOnlyServer(reason)
        except DB_ERRORS:
            await self.close()
            raise
        return 0.0

    async def close(self) -> None:
        """Drop the listening connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()
            except psycopg.Error:
                self._log.debug("listen_close_failed")
