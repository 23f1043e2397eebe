"""Database connections: how every connection of the service is opened and configured."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

AsyncConn = psycopg.AsyncConnection[TupleRow]
SyncConn = psycopg.Connection[TupleRow]


class RawJsonLoader(Loader):
    """Hand jsonb columns over as raw bytes; the store decodes them straight into typed Structs."""

    def load(self, data: Any) -> bytes:
        """Return the column's JSON text as bytes."""
        return bytes(data)


def _prepare(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", RawJsonLoader)
    conn.adapters.register_loader("json", RawJsonLoader)


def conninfo_with_app(url: str, application_name: str) -> str:
    """Add an application_name so operators can tell our sessions apart in pg_stat_activity."""
    return psycopg.conninfo.make_conninfo(url, application_name=application_name, options="-c TimeZone=UTC")


async def connect(url: str, *, application_name: str) -> AsyncConn:
    """Open one configured autocommit connection (a runner's listener, the command-line tools)."""
    conn = await psycopg.AsyncConnection.connect(conninfo_with_app(url, application_name), autocommit=True)
    _prepare(conn)
    return conn


def connect_sync(url: str, *, application_name: str) -> SyncConn:
    """Open one configured blocking connection (migrations, command-line tools)."""
    conn = psycopg.connect(conninfo_with_app(url, application_name), autocommit=True)
    _prepare(conn)
    return conn


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    _prepare(conn)


def make_pool(
    url: str, *, application_name: str, min_size: int = 1, max_size: int = 16, check: bool = False
) -> AsyncConnectionPool:
    """Create (unopened) a pool of autocommit connections.

    Single-statement requests run in autocommit: a BEGIN/COMMIT pair per request costs two round trips
    and measured 35-55 % of throughput. Requests that must change several rows together open an
    explicit ``conn.transaction()``.

    ``check`` tests each connection as it leaves the pool: the runner wants that, so a database
    restart costs it one failed statement per connection rather than a string of them.
    """
    return AsyncConnectionPool(
        conninfo_with_app(url, application_name),
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=_configure,
        check=AsyncConnectionPool.check_connection if check else None,
        open=False,
        name=application_name,
    )


class ConnectionSource(Protocol):
    """What the runner needs of a pool: a connection for the length of a block."""

    def connection(self) -> AbstractAsyncContextManager[AsyncConn]:
        """Lend a connection until the block ends."""
        ...


class RunnerPool:
    """The runner's few connections, where a lost one costs the statement or check that met it.

    psycopg_pool, finding a dead connection at its check, tries the next one after 1 s, then 2 s,
    4 s ..., and reopens connections with the same backoff: a few connection cuts in a row left
    runners waiting 30 s for a connection while PostgreSQL accepted them. Here a connection that
    fails its check is dropped and the next one tried at once, and one that cannot be opened fails
    at once, so the caller's own short backoff decides when to try again.
    """

    def __init__(self, url: str, *, application_name: str, max_size: int, timeout: float = 10.0) -> None:
        """Prepare (no connection yet) a pool of at most ``max_size`` autocommit connections.

        ``timeout`` bounds both the wait for a free connection and the opening of a new one.
        """
        self.max_size = max_size
        self._conninfo = psycopg.conninfo.make_conninfo(
            conninfo_with_app(url, application_name), connect_timeout=max(2, int(timeout))
        )
        self._timeout = timeout
        self._idle: deque[AsyncConn] = deque()
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False

    async def open(self, *, wait: bool = False) -> None:
        """Nothing to do ahead: connections open when first needed (``wait`` kept for the pool's API)."""
        del wait

    async def close(self) -> None:
        """Close the idle connections; connections lent out close when given back."""
        self._closed = True
        while self._idle:
            with contextlib.suppress(psycopg.Error):
                await self._idle.pop().close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """Lend a working connection until the block ends; PoolTimeout when none frees up in time."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout)
        except TimeoutError:
            raise PoolTimeout(f"no connection free after {self._timeout:.2f} s") from None
        try:
            conn = await self._take()
            try:
                yield conn
            finally:
                await self._give_back(conn)
        finally:
            self._slots.release()

    async def _take(self) -> AsyncConn:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have been cut
            try:
                await AsyncConnectionPool.check_connection(conn)
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
                continue
            return conn
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        _prepare(conn)
        return conn

    async def _give_back(self, conn: AsyncConn) -> None:
        status = conn.info.transaction_status
        if not self._closed and status is TransactionStatus.IDLE:
            self._idle.append(conn)
            return
        if not self._closed and status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                await conn.rollback()
            except psycopg.Error:
                pass
            else:
                self._idle.append(conn)
                return
        with contextlib.suppress(psycopg.Error):
            await conn.close()
