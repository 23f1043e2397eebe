"""Routes that are about the service rather than a tenant's jobs: health and schedule preview."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import JSONBody
from litestar.response import Redirect

from scheduler.api.params import refuse_unknown_query
from scheduler.api.problems import DATABASE_RETRY_AFTER_S, problem_response, problem_responses
from scheduler.api.schemas import Health, NextRuns, PreviewIn
from scheduler.db import store
from scheduler.metrics import ApiMetrics
from scheduler.operations import schedules
from scheduler.web.state import conn_for, now_of


@get("/healthz", tags=["system"])
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


_RETRY = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}


@get("/readyz", tags=["system"], response_model=Health, responses=problem_responses(503))
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Readiness: the database answers as a writable primary (never a standby or a read-only server)."""
    try:
        async with conn_for(request) as conn:
            writable = await store.health_check(conn)
    except Exception as exc:
        return problem_response(
            503,
            f"database unavailable: {type(exc).__name__}",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    if not writable:
        return problem_response(
            503,
            "database unavailable: the server is read-only",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    return Response(Health(status="ready"))


@post(
    "/schedules/preview",
    tags=["schedules"],
    before_request=refuse_unknown_query,
    status_code=200,
    responses=problem_responses(400, 401, 413, 422, 429),
)
async def preview(request: Request[Any, Any, Any], data: JSONBody[PreviewIn]) -> NextRuns:
    """Validate a schedule (or several entries and exclusions) and list its next fire times, storing nothing.

    `fires` says which entries each fire comes from; `excluded` lists the fires the exclusions take
    away up to the last one shown.
    """
    fires, excluded = schedules.preview(
        schedule=data.schedule,
        timezone=data.timezone,
        after=data.after,
        count=data.count,
        now=now_of(request),
        schedules=data.schedules,
        exclusions=data.exclusions,
    )
    return NextRuns.of(fires, excluded)


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    """The interactive API documentation lives under /schema/."""
    return Redirect(path="/schema/")


@get("/metrics", tags=["system"], media_type="text/plain; version=0.0.4; charset=utf-8")
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics of this API (summed over its workers)."""
    metrics: ApiMetrics = request.app.state.metrics
    return Response(content=metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
