"""What a request handler reaches through the app: the connection pool and the caller's namespace."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Request
from psycopg_pool import AsyncConnectionPool

from scheduler.config import Settings
from scheduler.db import AsyncConn

NAMESPACE_KEY = "scheduler.namespace"
REQUEST_ID_KEY = "scheduler.request_id"


def pool_of(request: Request[Any, Any, Any]) -> AsyncConnectionPool:
    """The app's connection pool."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def conn_for(request: Request[Any, Any, Any]) -> AbstractAsyncContextManager[AsyncConn]:
    """Borrow an autocommit connection for the length of a request's database work."""
    return pool_of(request).connection()


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def namespace_of(request: Request[Any, Any, Any]) -> str:
    """The namespace the authentication middleware resolved for this request."""
    namespace: str = request.scope[NAMESPACE_KEY]  # type: ignore[literal-required]
    return namespace
