"""The console's run pages: runs across jobs and their filters, one run and its attempts, cancel, retry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template

from scheduler.db import store
from scheduler.domain.models import Run, RunStatus, RunTrigger
from scheduler.domain.retry import RETRYABLE_BY_REQUEST
from scheduler.operations import pages
from scheduler.operations import runs as run_ops
from scheduler.operations.errors import MalformedError
from scheduler.ui.base import (
    PAGE_SIZE,
    REFUSALS,
    ConsolePages,
    error_page,
    page,
    posted_form,
    redirect,
    viewer_and_namespace,
)
from scheduler.web.state import conn_for, now_of

_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
            "7d": timedelta(days=7)}  # fmt: skip
_STATUS_FILTERS = ("", *[status.value for status in RunStatus])
_TRIGGER_FILTERS = ("", *[trigger.value for trigger in RunTrigger])


class RunPages(ConsolePages):
    """Runs of the viewer's jobs."""

    @get("/runs")
    async def runs_page(self, request: Request[Any, Any, Any]) -> Template:
        """The namespace's runs across jobs: filter by status, trigger, job and time window."""
        viewer, namespace = await viewer_and_namespace(request)
        params = request.query_params
        status_text = params.get("status") or ""
        trigger_text = params.get("trigger") or ""
        window = params.get("window") or ""
        job_text = params.get("job_id") or ""
        error = None
        status = RunStatus(status_text) if status_text in _STATUS_FILTERS[1:] else None
        trigger = RunTrigger(trigger_text) if trigger_text in _TRIGGER_FILTERS[1:] else None
        job_id = None
        if job_text:
            try:
                job_id = UUID(job_text)
            except ValueError:
                error = "That job id is not a UUID."
        cursor = params.get("cursor")
        try:
            pages.before_id(cursor)
        except MalformedError:
            error, cursor = "That page link is no longer valid; showing the first page.", None
        now = now_of(request)
        since = now - _WINDOWS[window] if window in _WINDOWS else None
        async with conn_for(request) as conn:
            found, next_cursor = await run_ops.list_page(
                conn,
                namespace=namespace,
                cursor=cursor,
                limit=PAGE_SIZE,
                now=now,
                job_id=job_id,
                statuses=[status] if status is not None else None,
                trigger=trigger,
                since=since,
            )
            names = await store.job_names(conn, namespace=namespace, job_ids=[run.job_id for run in found])
        query = {k: v for k, v in {"status": status_text, "trigger": trigger_text, "window": window,
                                   "job_id": job_text}.items() if v}  # fmt: skip
        next_link = "/ui/runs?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None
        return await page(
            request,
            viewer,
            "runs.html",
            {
                "runs": found,
                "names": names,
                "status": status_text,
                "trigger": trigger_text,
                "window": window,
                "job_id": job_text,
                "statuses": _STATUS_FILTERS,
                "triggers": _TRIGGER_FILTERS,
                "windows": ["", *_WINDOWS],
                "error": error,
                "next_link": next_link,
                "first_link": "/ui/runs?" + urlencode(query) if cursor else None,
            },
        )

    @get("/runs/{run_id:uuid}")
    async def run_page(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> Template:
        """One run: its slot's attempt chain, status, HTTP status, output, error, runner, timings."""
        viewer, namespace = await viewer_and_namespace(request)
        async with conn_for(request) as conn:
            try:
                run = await run_ops.get(conn, namespace=namespace, run_id=run_id)
            except REFUSALS as refusal:
                raise NotFoundException(str(refusal)) from None
            job = await store.job_get(conn, namespace=namespace, job_id=run.job_id)
            attempts = await store.run_attempts(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
        return await page(
            request,
            viewer,
            "run.html",
            {"run": run, "job": job, "attempts": attempts, **_run_facts(run, attempts)},
        )

    @post("/runs/{run_id:uuid}/{action:str}")
    async def run_action(
        self, request: Request[Any, Any, Any], run_id: FromPath[UUID], action: FromPath[str]
    ) -> Response[Any]:
        """Cancel or retry a run, as the API's routes do."""
        viewer, namespace = await viewer_and_namespace(request)
        if action not in ("cancel", "retry"):
            raise NotFoundException(f"no action {action!r}")
        try:
            await posted_form(request, viewer)
            async with conn_for(request) as conn, conn.transaction():
                if action == "cancel":
                    done, _ = await run_ops.cancel(conn, namespace=namespace, run_id=run_id)
                else:
                    done, _ = await run_ops.retry(conn, namespace=namespace, run_id=run_id)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, f"/ui/runs/{run_id}")
        return redirect(f"/ui/runs/{done.id}", done="cancelled" if action == "cancel" else "retried")


def _run_facts(run: Run, attempts: list[Run]) -> dict[str, Any]:
    latest = max((attempt.attempt for attempt in attempts), default=run.attempt)
    lateness = None
    if run.started_at is not None and run.trigger in (RunTrigger.SCHEDULE, RunTrigger.CATCHUP):
        lateness = (run.started_at - run.scheduled_for).total_seconds() * 1000
    return {
        "can_cancel": run.status in (RunStatus.PENDING, RunStatus.RUNNING),
        "can_retry": run.status in RETRYABLE_BY_REQUEST and run.attempt == latest,
        "lateness_ms": lateness,
    }
