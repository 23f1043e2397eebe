"""The API's yardstick: a bare Litestar route that runs `SELECT 1` through the service's own pool.

bench/api.py serves it with uvicorn exactly as `scheduler api` serves the real app (same workers,
uvloop, httptools, no access log, no server header) and with the same pool (`scheduler.db.make_pool`,
autocommit, `SCHEDULER_DB_POOL_MAX` connections), so the ratio of an API route to this one is the
cost of our code: routing, auth and observability middleware, the query and the JSON.

    uvicorn bench.baseline_app:create_app --factory
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get

from scheduler import collector
from scheduler.config import load_settings
from scheduler.db.connections import make_pool

SELECT_ONE = b"SELECT 1"


@get("/select1")
async def select_one(request: Request[Any, Any, Any]) -> dict[str, int]:
    """One round trip to the database, no middleware, a small JSON answer."""
    async with request.app.state.pool.connection() as conn:
        cur = await conn.execute(SELECT_ONE)
        row = await cur.fetchone()
    return {"one": row[0] if row else 0}


def create_app() -> Litestar:
    """Build the baseline app on SCHEDULER_DATABASE_URL with the API's pool settings."""
    settings = load_settings()
    if settings.database_url is None:
        raise ValueError("SCHEDULER_DATABASE_URL is required")
    pool = make_pool(settings.database_url, application_name="bench-baseline", max_size=settings.db_pool_max)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = pool
        collector.tune()  # the API's own collector settings: the comparison stays like for like
        try:
            yield
        finally:
            await pool.close()

    return Litestar(route_handlers=[select_one], lifespan=[lifespan], openapi_config=None)
