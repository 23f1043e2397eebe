"""What a request handler reaches through the app: the connection pool and the caller's namespace."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Request

from scheduler.config import Settings
from scheduler.db.connections import AsyncConn, Pool

NAMESPACE_KEY = "scheduler.namespace"
REQUEST_ID_KEY = "scheduler.request_id"
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
