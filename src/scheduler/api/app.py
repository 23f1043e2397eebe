"""Assemble the Litestar application: routes, problem handlers, OpenAPI, the pool's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from scheduler import __version__, collector
from scheduler.api.auth import AuthMiddleware
from scheduler.api.bodies import StrictJsonRequest
from scheduler.api.entries import ScheduleEntryController
from scheduler.api.jobs import JobController
from scheduler.api.limits import RateLimiter
from scheduler.api.notifications import NotificationController
from scheduler.api.observe import ObservabilityMiddleware
from scheduler.api.openapi import ASSETS_PATH, STATIC_DIR, OfflineSwaggerPlugin, bearer_components, finish
from scheduler.api.openapi import operation_id as openapi_operation_id
from scheduler.api.problems import EXCEPTION_HANDLERS
from scheduler.api.runs import RunController
from scheduler.api.system import docs, healthz, metrics_route, preview, readyz
from scheduler.config import Settings, load_settings
from scheduler.db.connections import make_pool
from scheduler.logs import configure_logging
from scheduler.metrics import ApiMetrics
from scheduler.ui import CONSOLE_PAGES
from scheduler.ui.base import static_router, template_config
from scheduler.web.state import Clock, system_clock

MAX_REQUEST_BODY = 1024 * 1024


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> Litestar:
    """Build the app; the pool opens on startup and closes on shutdown."""
    cfg = settings or load_settings()
    configure_logging(cfg)  # uvicorn workers are fresh processes: each sets up its own logging
    if cfg.database_url is None:
        raise ValueError("SCHEDULER_DATABASE_URL is required to serve the API")
    pool = make_pool(
        cfg.database_url,
        application_name="scheduler-api",
        max_size=cfg.db_pool_max,
        pooler=cfg.database_pooler,
        max_lifetime_s=cfg.db_max_lifetime_s,
    )
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # No wait for the database: an API started during an outage serves 503s and /readyz says
        # so, then answers as soon as a primary does.
        app.state.pool = pool
        collector.tune()  # started: what is built lives as long as the worker (see scheduler.collector)
        try:
            yield
        finally:
            await pool.close()

    # Swagger UI's files ship in the package: /docs must work where the internet is out of reach.
    assets = create_static_files_router(path=ASSETS_PATH, directories=[STATIC_DIR], name="docs-assets")
    api: list[ControllerRouterHandler] = [
        JobController, ScheduleEntryController, NotificationController, RunController,
        healthz, readyz, preview, docs, metrics_route, assets,
    ]  # fmt: skip
    console: list[ControllerRouterHandler] = [*CONSOLE_PAGES, static_router()]  # the web console at /ui
    app = Litestar(
        route_handlers=[*api, *console],
        lifespan=[lifespan],
        state=State({"settings": cfg, "metrics": metrics, "clock": clock}),
        middleware=[
            DefineMiddleware(ObservabilityMiddleware, metrics=metrics),
            DefineMiddleware(AuthMiddleware, limiter=RateLimiter(cfg.rate_limit_per_s, cfg.rate_limit_burst)),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=StrictJsonRequest,  # bodies must be declared JSON and decode strictly
        request_max_body_size=MAX_REQUEST_BODY,
        template_config=template_config(),  # the web console's pages (scheduler.ui)
        openapi_config=OpenAPIConfig(
            title="Scheduler",
            version=__version__,
            description="Cron, interval and one-time jobs fired by runners on PostgreSQL row locks.",
            path="/schema",
            render_plugins=[OfflineSwaggerPlugin(path="/"), JsonRenderPlugin()],
            components=bearer_components(),
            operation_id_creator=openapi_operation_id,
        ),
    )
    # Built once here, corrected to say what the service really does, then served as is.
    finish(app.openapi_schema)
    return app
