"""Routes that are about the service rather than a tenant's jobs: health and schedule preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import JSONBody
from litestar.response import Redirect

from scheduler.api.problems import DATABASE_RETRY_AFTER_S, invalid, problem_response, problem_responses
from scheduler.api.schemas import Health, NextRuns, PreviewIn, check_instant
from scheduler.api.state import conn_for
from scheduler.db import store
from scheduler.domain import schedule
from scheduler.domain.schedule import ScheduleError, Timing
from scheduler.metrics import ApiMetrics


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
    status_code=200,
    responses=problem_responses(400, 401, 413, 422, 429),
)
async def preview(data: JSONBody[PreviewIn]) -> NextRuns:
    """Validate a schedule and list its next fire times, without storing anything."""
    if errors := check_instant("after", data.after):
        raise invalid(errors[0].field, errors[0].message)
    after = data.after or datetime.now(UTC)
    timing = Timing(data.schedule, data.timezone, anchor_at=after.replace(microsecond=0))
    try:
        schedule.validate(timing, after)
    except ScheduleError as exc:
        raise invalid(exc.field, str(exc)) from None
    except OverflowError:
        raise invalid("schedule", "its fire times fall outside the years 1 to 9999") from None
    try:
        return NextRuns(next=schedule.fire_times(timing, after, data.count))
    except OverflowError:
        raise invalid("count", "the fire times run past the year 9999; ask for fewer") from None


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    """The interactive API documentation lives under /schema/."""
    return Redirect(path="/schema/")


@get("/metrics", tags=["system"], media_type="text/plain; version=0.0.4; charset=utf-8")
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics of this API (summed over its workers)."""
    metrics: ApiMetrics = request.app.state.metrics
    return Response(content=metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
