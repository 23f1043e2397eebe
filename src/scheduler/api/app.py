"""Assemble the Litestar application: routes, problem handlers, OpenAPI, the pool's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from scheduler import __version__
from scheduler.api.auth import AuthMiddleware
from scheduler.api.jobs import JobController
from scheduler.api.limits import RateLimiter
from scheduler.api.observe import ObservabilityMiddleware
from scheduler.api.problems import EXCEPTION_HANDLERS
from scheduler.api.runs import RunController
from scheduler.api.system import docs, healthz, metrics_route, preview, readyz
from scheduler.config import Settings, load_settings
from scheduler.db import make_pool
from scheduler.logs import configure_logging
from scheduler.metrics import ApiMetrics

MAX_REQUEST_BODY = 1024 * 1024


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; the pool opens on startup and closes on shutdown."""
    cfg = settings or load_settings()
    configure_logging(cfg)  # uvicorn workers are fresh processes: each sets up its own logging
    if cfg.database_url is None:
        raise ValueError("SCHEDULER_DATABASE_URL is required to serve the API")
    pool = make_pool(cfg.database_url, application_name="scheduler-api", max_size=cfg.db_pool_max)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(
        route_handlers=[JobController, RunController, healthz, readyz, preview, docs, metrics_route],
        lifespan=[lifespan],
        state=State({"settings": cfg, "metrics": metrics}),
        middleware=[
            DefineMiddleware(ObservabilityMiddleware, metrics=metrics),
            DefineMiddleware(AuthMiddleware, limiter=RateLimiter(cfg.rate_limit_per_s, cfg.rate_limit_burst)),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_REQUEST_BODY,
        openapi_config=OpenAPIConfig(
            title="Scheduler",
            version=__version__,
            description="Cron, interval and one-time jobs fired by runners on PostgreSQL row locks.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
    )
