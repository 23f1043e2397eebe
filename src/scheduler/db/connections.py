"""Database connections: how every connection of the service is opened, checked, pooled and dropped."""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Buffer, Loader
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import PoolTimeout

AsyncConn = psycopg.AsyncConnection[TupleRow]
SyncConn = psycopg.Connection[TupleRow]
Pooler = Literal["none", "session", "transaction"]
Check = Literal["ping", "socket"]

# What a lost, unreachable or wrong server raises: the connection is dropped, never used again, and
# the caller backs off (a runner loop) or answers 503 (the API). A read-only server (25006: a standby,
# a demoted primary, default_transaction_read_only) counts: it cannot do our work, and reconnecting
# is what finds the writable primary.
DB_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    pg_errors.ReadOnlySqlTransaction,
    PoolTimeout,
)
# Seconds a connection is kept at most: after a failover or a pooler restart, connections drift back
# to where the URL now leads instead of staying wherever they were opened.
MAX_LIFETIME_S = 1800.0
# Seconds one borrowed connection's work (a claim, a batch of completions, a request's statements)
# may take. A primary that hangs without closing its connections (stuck storage, a frozen VM) answers
# neither our statements nor TCP keepalives' failure; without a deadline a runner would wait on it
# until it died. Past the deadline the connection is taken for lost and dropped.
WORK_TIMEOUT_S = 10.0
# Seconds libpq waits for each host: a host that vanished (no refusal) costs this before the next
# host of a multi-host URL is tried.
CONNECT_TIMEOUT_S = 3
# A silent server is noticed after about idle + interval x count seconds; a send that goes
# unacknowledged fails after tcp_user_timeout (milliseconds).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}


class ServerTimeout(psycopg.OperationalError):
    """A block of database work outlived its deadline: the server hangs, or the network to it does."""


class ReadOnlyServer(psycopg.OperationalError):
    """The server answering is a standby or refuses writes: the service needs a writable primary."""


class StalePlan(psycopg.OperationalError):
    """A statement prepared on this connection returns other columns since a migration changed a table.

    PostgreSQL refuses it (FeatureNotSupported, "cached plan must not change result type") before
    running it, so that statement wrote nothing. Other statements prepared on the same connection
    may be as stale: the pool closes it, and callers treat it as a lost connection.
    """


# How PostgreSQL words the refusal of a prepared statement whose result columns changed.
_STALE_PLAN = "cached plan must not change result type"


def stale_plan(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a prepared statement whose result columns changed."""
    return isinstance(exc, pg_errors.FeatureNotSupported) and str(exc).startswith(_STALE_PLAN)


class RawJsonLoader(Loader):
    """Hand jsonb columns over as raw bytes; the store decodes them straight into typed Structs."""

    def load(self, data: Buffer) -> bytes:
        """Return the column's JSON text as bytes."""
        return bytes(data)


class UtcTimestamptzLoader(TimestamptzLoader):
    """Load timestamptz in UTC whatever the session's TimeZone (a pooler cannot be told to set it)."""

    def load(self, data: Buffer) -> datetime:
        """Parse the value and move it to UTC."""
        return super().load(data).astimezone(UTC)


def _session_is_utc(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> bool:
    zone = conn.info.parameter_status("TimeZone")
    return zone is not None and zone.upper() in {"UTC", "ETC/UTC", "UCT", "ZULU", "GMT", "ETC/GMT"}


def _names_utc_otherwise(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> bool:
    """Whether the session's zone is UTC under another name (see ``session_time_zone_utc``)."""
    return _session_is_utc(conn) and conn.info.parameter_status("TimeZone") != "UTC"


def _prepare(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", RawJsonLoader)
    conn.adapters.register_loader("json", RawJsonLoader)
    if not _session_is_utc(conn):
        # Only then: psycopg's own loader is written in C and already gives UTC on a UTC session.
        conn.adapters.register_loader("timestamptz", UtcTimestamptzLoader)


def read_only_reason(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> str | None:
    """Why ``conn``'s server cannot take writes, from what it reported (no round trip); None if it can.

    PostgreSQL 14 and later report `in_hot_standby` and `default_transaction_read_only` on connecting
    and again whenever they change (a promotion, a reload), so a stale connection is seen at checkout.
    """
    if conn.info.parameter_status("in_hot_standby") == "on":
        return "the server is a standby (in recovery)"
    if conn.info.parameter_status("default_transaction_read_only") == "on":
        return "the server is read-only (default_transaction_read_only is on)"
    return None


def conninfo_for(url: str, application_name: str, *, connect_timeout: int | None = None) -> str:
    """The connection string of ``url`` as the service uses it.

    - an ``application_name``, so operators can tell our sessions apart in pg_stat_activity;
    - ``target_session_attrs=read-write`` unless the URL says otherwise: with several hosts named
      (a primary and its standbys) libpq connects to whichever is the writable primary now;
    - TCP keepalives and a send timeout, so a connection whose server vanished without a word (a
      host lost, a network cut, a proxy's backend gone) fails within about 15 s instead of hanging;
    - no startup ``options``: PgBouncer refuses them, and nothing of ours depends on the session's
      settings (timestamps are read in UTC whatever its TimeZone).

    What the URL sets itself is left alone.
    """
    params = psycopg.conninfo.conninfo_to_dict(url)
    extra: dict[str, Any] = {"application_name": application_name}
    defaults: dict[str, Any] = {"target_session_attrs": "read-write", **_KEEPALIVES}
    if connect_timeout is not None:
        defaults["connect_timeout"] = connect_timeout
    extra.update({key: value for key, value in defaults.items() if not params.get(key)})
    return psycopg.conninfo.make_conninfo(url, **extra)


def prepare_threshold(pooler: Pooler) -> int | None:
    """Server-side prepared statements unless a transaction pooler may hand each statement elsewhere."""
    return None if pooler == "transaction" else 5


# How libpq words its refusal of a server under target_session_attrs=read-write.
_READ_ONLY_REFUSALS = ("read-only", "hot standby", "in recovery")


def _refusal(exc: psycopg.OperationalError) -> psycopg.OperationalError:
    """A failed connect as the service tells it: ReadOnlyServer when only read-only servers answered."""
    said = str(exc)
    if any(words in said for words in _READ_ONLY_REFUSALS):
        return ReadOnlyServer(said)
    return exc


async def _open(conninfo: str, threshold: int | None) -> AsyncConn:
    """Open an autocommit connection to a writable primary, configured, or raise why not."""
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=threshold)
    except psycopg.OperationalError as exc:
        raise _refusal(exc) from None
    if reason := read_only_reason(conn):
        await conn.close()
        raise ReadOnlyServer(reason)
    if _names_utc_otherwise(conn):
        from scheduler.db.store.service import session_time_zone_utc  # noqa: PLC0415 - the store imports this module

        await session_time_zone_utc(conn)
    _prepare(conn)
    return conn


async def connect(url: str, *, application_name: str, pooler: Pooler = "none") -> AsyncConn:
    """Open one configured autocommit connection to a writable primary (listener, command-line tools)."""
    conninfo = conninfo_for(url, application_name, connect_timeout=CONNECT_TIMEOUT_S)
    return await _open(conninfo, prepare_threshold(pooler))


def connect_sync(url: str, *, application_name: str, pooler: Pooler = "none") -> SyncConn:
    """Open one configured blocking connection to a writable primary (migrations, command-line tools)."""
    try:
        conn = psycopg.connect(
            conninfo_for(url, application_name, connect_timeout=CONNECT_TIMEOUT_S),
            autocommit=True,
            prepare_threshold=prepare_threshold(pooler),
        )
    except psycopg.OperationalError as exc:
        raise _refusal(exc) from None
    if reason := read_only_reason(conn):
        conn.close()
        raise ReadOnlyServer(reason)
    if _names_utc_otherwise(conn):
        from scheduler.db.store.service import session_time_zone_utc_sync  # noqa: PLC0415 - the store imports this module

        session_time_zone_utc_sync(conn)
    _prepare(conn)
    return conn


def hung_up(conn: AsyncConn) -> bool:
    """Whether the server has spoken on an idle connection, which it does only to end it (no round trip).

    A backend ended by a restart or `pg_terminate_backend` sends its error and closes the socket; the
    client learns of it only by reading. An idle connection of ours has nothing to read otherwise.
    """
    if conn.closed or conn.pgconn.status != ConnStatus.OK:
        return True
    poller = select.poll()  # not select(): a busy process may hold descriptors past FD_SETSIZE
    try:
        poller.register(conn.pgconn.socket, select.POLLIN)
    except (OSError, ValueError, psycopg.OperationalError):  # the socket is gone already
        return True
    return bool(poller.poll(0))


class ConnectionSource(Protocol):
    """What the runner needs of a pool: a connection for the length of a block."""

    def connection(self) -> AbstractAsyncContextManager[AsyncConn]:
        """Lend a connection until the block ends."""
        ...


class Pool:
    """A process's few connections, where a lost one costs the statement or check that met it.

    psycopg_pool, finding a dead connection at its check, tries the next one after 1 s, then 2 s,
    4 s ..., and reopens connections with the same backoff: after a failover its users waited 9-17 s
    while the new primary accepted connections. Here a connection that fails its check is dropped and
    the next one tried at once, one that cannot be opened fails at once (the caller's own short
    backoff, or the client's Retry-After, decides when to try again), and a connection that met a lost
    or read-only server, or a statement a migration made stale (`StalePlan`), is closed rather than
    given back.

    ``check`` is how a connection is tested as it leaves the pool: ``ping`` (a round trip; the
    runner's, whose statements are rarely safe to repeat) or ``socket`` (free: a hung-up socket or a
    server that reported itself read-only; the API's, which repeats reads itself).
    """

    def __init__(
        self,
        url: str,
        *,
        application_name: str,
        max_size: int,
        timeout: float = 10.0,
        check: Check = "ping",
        pooler: Pooler = "none",
        max_lifetime_s: float = MAX_LIFETIME_S,
        work_timeout_s: float = WORK_TIMEOUT_S,
    ) -> None:
        """Prepare (no connection yet) a pool of at most ``max_size`` autocommit connections.

        ``timeout`` bounds the wait for a free connection; opening one gives up after
        `CONNECT_TIMEOUT_S` per host the URL names.
        """
        self.max_size = max_size
        self._conninfo = conninfo_for(url, application_name, connect_timeout=CONNECT_TIMEOUT_S)
        self._prepare_threshold = prepare_threshold(pooler)
        self._timeout = timeout
        self._check = check
        self._max_lifetime_s = max_lifetime_s
        self._work_timeout_s = work_timeout_s
        self._idle: deque[AsyncConn] = deque()
        self._born: dict[int, float] = {}
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False
        self._lent = 0

    async def open(self, *, wait: bool = False) -> None:
        """Nothing to do ahead: connections open when first needed (``wait`` kept for the callers)."""
        del wait

    async def close(self) -> None:
        """Close the idle connections; connections lent out close when given back."""
        self._closed = True
        while self._idle:
            await self._discard(self._idle.pop())

    def get_stats(self) -> dict[str, int]:
        """Counters for tests and metrics: ``requests_num`` is how many connections were lent."""
        return {"requests_num": self._lent, "pool_available": len(self._idle), "pool_max": self.max_size}

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """Lend a working connection until the block ends; PoolTimeout when none frees up in time."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout)
        except TimeoutError:
            raise PoolTimeout(f"no connection free after {self._timeout:.2f} s") from None
        try:
            conn = await self._take()
            self._lent += 1
            try:
                deadline = asyncio.timeout(self._work_timeout_s)
                try:
                    async with deadline:
                        yield conn
                except TimeoutError:
                    if not deadline.expired():
                        raise  # the caller's own timeout, not ours
                    raise ServerTimeout(
                        f"the database did not answer within {self._work_timeout_s:g} s"
                    ) from None
            except DB_ERRORS:
                await self._discard(conn)  # whatever met it may still be wrong with this connection
                raise
            except pg_errors.FeatureNotSupported as exc:
                if not stale_plan(exc):
                    await self._give_back(conn)
                    raise
                await self._discard(conn)  # its other prepared statements may be stale too
                raise StalePlan(str(exc)) from exc
            except BaseException:
                await self._give_back(conn)
                raise
            else:
                await self._give_back(conn)
        finally:
            self._slots.release()

    async def _take(self) -> AsyncConn:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have been cut
            if await self._usable(conn):
                return conn
            await self._discard(conn)
        conn = await _open(self._conninfo, self._prepare_threshold)
        self._born[id(conn)] = time.monotonic()
        return conn

    async def _usable(self, conn: AsyncConn) -> bool:
        if read_only_reason(conn) is not None:
            return False
        if self._check == "socket":
            return not hung_up(conn)
        try:
            await conn.execute(b"")  # an empty query: the cheapest round trip
        except psycopg.Error:
            return False
        # The answer may carry a ParameterStatus saying the server turned read-only.
        return read_only_reason(conn) is None

    async def _give_back(self, conn: AsyncConn) -> None:
        if self._closed or time.monotonic() - self._born.get(id(conn), 0.0) > self._max_lifetime_s:
            await self._discard(conn)
            return
        status = conn.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                await conn.rollback()
            except psycopg.Error:
                await self._discard(conn)
                return
            status = conn.info.transaction_status
        if status is TransactionStatus.IDLE:
            self._idle.append(conn)
        else:
            await self._discard(conn)

    async def _discard(self, conn: AsyncConn) -> None:
        self._born.pop(id(conn), None)
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()


def make_pool(
    url: str,
    *,
    application_name: str,
    max_size: int = 16,
    timeout: float = 10.0,
    pooler: Pooler = "none",
    max_lifetime_s: float = MAX_LIFETIME_S,
) -> Pool:
    """The API's pool: checked for free at checkout (a request's read is repeated on a lost connection).

    Single-statement requests run in autocommit: a BEGIN/COMMIT pair per request costs two round trips
    and measured 35-55 % of throughput. Requests that must change several rows together open an
    explicit ``conn.transaction()``.
    """
    return Pool(
        url,
        application_name=application_name,
        max_size=max_size,
        timeout=timeout,
        check="socket",
        pooler=pooler,
        max_lifetime_s=max_lifetime_s,
    )
