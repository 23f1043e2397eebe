"""What a request handler reaches through the app: the connection pool and the caller's namespace."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from litestar import Request
from psycopg_pool import AsyncConnectionPool

from scheduler.config import Settings
from scheduler.db.connections import AsyncConn

NAMESPACE_KEY = "scheduler.namespace"
REQUEST_ID_KEY = "scheduler.request_id"
# Set on the scope when a request failed because its database connection was lost, so that a read
# can be answered by running it once more on a fresh connection.
CONNECTION_LOST_KEY = "scheduler.connection_lost"


def pool_of(request: Request[Any, Any, Any]) -> AsyncConnectionPool:
    """The app's connection pool."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def conn_for(request: Request[Any, Any, Any]) -> AbstractAsyncContextManager[AsyncConn]:
    """Borrow an autocommit connection for the length of a request's database work."""
    return live_connection(pool_of(request))


def _hung_up(conn: AsyncConn) -> bool:
    """Whether the server has spoken on an idle connection, which it does only to end it.

    A backend ended by a restart or `pg_terminate_backend` sends its error and closes the socket;
    the client learns of it only by reading. An idle connection of ours has nothing to read
    otherwise, so a readable socket (no round trip) marks it dead before a statement is risked on it.
    """
    if conn.closed:
        return True
    poller = select.poll()  # not select(): a busy process may hold descriptors past FD_SETSIZE
    try:
        poller.register(conn.pgconn.socket, select.POLLIN)
    except (OSError, ValueError, psycopg.OperationalError):  # the socket is gone already
        return True
    return bool(poller.poll(0))


@asynccontextmanager
async def live_connection(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConn]:
    """Like ``pool.connection()``, but connections the server hung up on are dropped, not used.

    A statement that met a dead connection would fail without having run; skipping such connections
    at checkout is what lets a write go on after the service's connections were cut, instead of
    answering 503.
    """
    conn: AsyncConn = await pool.getconn()
    for _ in range(pool.max_size):
        if not _hung_up(conn):
            break
        await conn.close()
        await pool.putconn(conn)  # a closed connection is discarded and replaced by the pool
        conn = await pool.getconn()
    try:
        async with conn:
            yield conn
    finally:
        await pool.putconn(conn)


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def namespace_of(request: Request[Any, Any, Any]) -> str:
    """The namespace the authentication middleware resolved for this request."""
    namespace: str = request.scope[NAMESPACE_KEY]  # type: ignore[literal-required]
    return namespace
