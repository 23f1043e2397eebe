"""Database connections: how every connection of the service is opened and configured."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

AsyncConn = psycopg.AsyncConnection[TupleRow]


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


async def connect(url: str, *, application_name: str, autocommit: bool = True) -> AsyncConn:
    """Open one configured connection (runners keep a few long-lived ones)."""
    conn = await psycopg.AsyncConnection.connect(
        conninfo_with_app(url, application_name), autocommit=autocommit
    )
    _prepare(conn)
    return conn


def connect_sync(url: str, *, application_name: str) -> psycopg.Connection[TupleRow]:
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
