"""What a request handler reaches through the app: pool, settings, the caller's namespace, the clock."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, cast

from litestar import Request

from scheduler.config import Settings
from scheduler.db.connections import AsyncConn, Pool

NAMESPACE_KEY = "scheduler.namespace"
REQUEST_ID_KEY = "scheduler.request_id"
NOW_KEY = "scheduler.now"
# Set on the scope when a request failed because its database connection was lost, so that a read
# can be answered by running it once more on a fresh connection.
CONNECTION_LOST_KEY = "scheduler.connection_lost"


def pool_of(request: Request[Any, Any, Any]) -> Pool:
    """The app's connection pool."""
    pool: Pool = request.app.state.pool
    return pool


def conn_for(request: Request[Any, Any, Any]) -> AbstractAsyncContextManager[AsyncConn]:
    """Borrow an autocommit connection for the length of a request's database work.

    The pool drops connections the server hung up on or that reached a read-only server before
    lending them, so a write goes on after the service's connections were cut instead of answering
    503, and one that met a lost server is never lent again.
    """
    return pool_of(request).connection()


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def namespace_of(request: Request[Any, Any, Any]) -> str:
    """The namespace the authentication middleware resolved for this request."""
    namespace: str = request.scope[NAMESPACE_KEY]  # type: ignore[literal-required]
    return namespace


Clock = Callable[[], datetime]
"""What the app reads the time from: the host's clock, or a test's."""


def system_clock() -> datetime:
    """The host's clock, in UTC."""
    return datetime.now(UTC)


def now_of(request: Request[Any, Any, Any]) -> datetime:
    """The time of this request: read once from the app's clock, the same for all its work.

    Handlers take the time from here, never from the host's clock, so a test can run the app on a
    clock of its own.
    """
    now = cast("datetime | None", request.scope.get(NOW_KEY))
    if now is None:
        clock: Clock = request.app.state.clock
        now = clock()
        request.scope[NOW_KEY] = now  # type: ignore[literal-required]
    return now
