"""The console's job pages: the list (counts, sorting, filters, bulk actions), one job, its form, actions."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import names
from scheduler.domain.models import HttpAction, Job
from scheduler.domain.schedule import Timing
from scheduler.operations import jobs as job_ops
from scheduler.operations import pages
from scheduler.operations.errors import MalformedError, OperationError
from scheduler.ui import charts, job_form, session
from scheduler.ui.base import (
    PAGE_SIZE,
    REFUSALS,
    ConsolePages,
    PageRefused,
    error_page,
    page,
    posted_form,
    redirect,
    safe_next,
    status_of_refusal,
    viewer_and_namespace,
)
from scheduler.ui.timing import clock_changes, upcoming
from scheduler.web.state import conn_for, now_of, settings_of

SORTS = {
    "name": "Name",
    "next": "Next run (soonest first)",
    "last": "Last run (newest first)",
    "created": "Created (newest first)",
}
"""The jobs page's orders, by their `sort` query value."""
STATES = (("all", "All"), ("active", "Active"), ("paused", "Paused"), ("failing", "Failing"))
# Runs read for one job's page: its last slots, retries and all (the oldest slot, maybe cut, is dropped).
_JOB_PAGE_RUNS = 300
_CHART_SLOTS = 60
_TABLE_SLOTS = 25
# The state tabs count the namespace's jobs (a pass over its rows): once per search every few seconds
# per API process is enough for counts, and the page refreshes every 3 s.
COUNTS_TTL_S = 5.0
_COUNTS_KEPT = 512
_COUNTS_KEY = "console.job_counts"
_STALE_EDIT = (
    "Someone changed this job after you opened it (it is now at version {version}), so your edit was "
    "not saved. Your values are kept below: compare them with the job page and save again."
)


# ------------------------------------------------------------------------------------ cursors


def _at_text(moment: datetime | None, none: str) -> str:
    return none if moment is None else moment.isoformat()


def order_cursor(sort: str, job: Job) -> str:
    """The cursor of a page of jobs in order ``sort`` that ends at ``job``."""
    if sort == "name":
        return pages.name_cursor(job.name)
    moment = {
        "next": job.next_run_at,
        "last": job.last_run.scheduled_for if job.last_run is not None else None,
        "created": job.created_at,
    }[sort]
    none = "infinity" if sort == "next" else "-infinity"
    return pages.encode_cursor(f"{sort}|{_at_text(moment, none)}|{job.name}")


def after_of(sort: str, cursor: str) -> tuple[str, str]:
    """The (time, name) keyset an ordered page continues after; MalformedError for a cursor not ours."""
    kind, _, rest = pages.decode_cursor(cursor).partition("|")
    at, _, name = rest.rpartition("|")
    if kind != sort or not names.is_job_name(name):
        raise MalformedError.field("cursor", "is not a cursor of this order")
    if at not in ("infinity", "-infinity"):
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise MalformedError.field("cursor", "is not a cursor of this order") from None
        if moment.utcoffset() is None:
            raise MalformedError.field("cursor", "is not a cursor of this order")
    return at, name


# ------------------------------------------------------------------------------------- helpers


def _p95_ms(recent: store.RecentOutcomes | None) -> float | None:
    if recent is None or recent.p95_lateness_s is None:
        return None
    return recent.p95_lateness_s * 1000


def _check_confirmed(action: str, form: dict[str, Any]) -> None:
    if action == "delete" and form.get("confirm") != "yes":
        raise PageRefused(422, "tick the box to confirm the deletion")


def _action_summary(job: Job) -> str:
    action = job.action
    if isinstance(action, HttpAction):
        return f"http {action.method} {action.url}"
    return "log"


def _counts_cache(
    request: Request[Any, Any, Any],
) -> dict[tuple[str, str, str], tuple[float, store.JobCounts]]:
    state = request.app.state
    cache: dict[tuple[str, str, str], tuple[float, store.JobCounts]] | None = state.get(_COUNTS_KEY)
    if cache is None:
        cache = {}
        state[_COUNTS_KEY] = cache
    return cache


async def _state_counts(
    request: Request[Any, Any, Any], conn: AsyncConn, namespace: str, prefix: str, labels: dict[str, str]
) -> store.JobCounts | None:
    """The state tabs' counts, counted at most every few seconds per search (a pass over the namespace).

    The page's own refresh (its script replaces the live table only) reuses the last count, or none.
    """
    cache = _counts_cache(request)
    key = (namespace, prefix, "\n".join(names.format_label(k, v) for k, v in sorted(labels.items())))
    held = cache.get(key)
    now = time.monotonic()
    if held is not None and now - held[0] < COUNTS_TTL_S:
        return held[1]
    if request.headers.get("x-console-refresh"):
        return held[1] if held is not None else None
    counts = await store.console_job_counts(
        conn, namespace=namespace, name_prefix=prefix or None, labels=labels
    )
    if len(cache) >= _COUNTS_KEPT:
        cache.clear()
    cache[key] = (now, counts)
    return counts


def _link(search: dict[str, str], state: str, sort: str) -> str:
    """The jobs page with this search, in this state and order (defaults left out of the URL)."""
    query = search | ({"state": state} if state != "all" else {}) | ({"sort": sort} if sort != "name" else {})
    return "/ui/jobs?" + urlencode(query)


def _posted_values(form: dict[str, Any], version: str | None = None) -> dict[str, str]:
    """The inputs as posted, to show the form again still filled in."""
    values = job_form.blank_values()
    values.update({key: str(form[key]) for key in job_form.INPUTS if form.get(key) is not None})
    if version is not None:
        values["version"] = version
    return values


def _refusal_into(errors: job_form.FormErrors, refusal: OperationError | PageRefused) -> None:
    """An operation's refusal, beside the inputs it names (or above the form when it names none)."""
    field_errors = refusal.errors if isinstance(refusal, OperationError) else []
    if field_errors:
        errors.add_all(field_errors)
    else:
        errors.other.append(refusal.detail)


class JobPages(ConsolePages):
    """Jobs of the viewer's namespace."""

    @get("/jobs")
    async def jobs_page(self, request: Request[Any, Any, Any]) -> Template:
        """Jobs: counts by state, search by prefix, filter by label and state, sort, page by keyset."""
        viewer, namespace = await viewer_and_namespace(request)
        params = request.query_params
        # NUL cannot reach PostgreSQL text; a name or label never holds one anyway.
        prefix = (params.get("q") or "").replace("\x00", "").strip()[:128]
        label_text = (params.get("label") or "").replace("\x00", "").strip()[:320]
        state = params.get("state") or "all"
        state = state if state in dict(STATES) else "all"
        sort = params.get("sort") or "name"
        sort = sort if sort in SORTS else "name"
        cursor = params.get("cursor")
        labels: dict[str, str] = {}
        error = None
        if label_text:
            try:
                key, value = names.parse_label(label_text)
                labels = {key: value}
            except ValueError as exc:
                error = f"Label filter: {exc}."
        after_name: str | None = None
        after: tuple[str, str] | None = None
        if cursor:
            try:
                if sort == "name":
                    after_name = pages.after_name(cursor)
                else:
                    after = after_of(sort, cursor)
            except MalformedError:
                error = "That page link is no longer valid; showing the first page."
        paused = {"paused": True, "active": False}.get(state)
        now = now_of(request)
        async with conn_for(request) as conn:
            counts = await _state_counts(request, conn, namespace, prefix, labels)
            if sort == "name":
                found = await store.job_list(
                    conn,
                    namespace=namespace,
                    after_name=after_name,
                    limit=PAGE_SIZE,
                    name_prefix=prefix or None,
                    paused=paused,
                    labels=labels,
                    failing=state == "failing",
                )
            else:
                found = await store.console_job_list_ordered(
                    conn,
                    namespace=namespace,
                    order=store.JobOrder(sort),
                    after=after,
                    limit=PAGE_SIZE,
                    name_prefix=prefix or None,
                    paused=paused,
                    labels=labels,
                    failing=state == "failing",
                )
            recent = await store.console_job_recent_slots(conn, job_ids=[job.id for job in found], now=now)
        rows = [
            {
                "job": job,
                "strip": charts.outcome_strip(recent[job.id].outcomes if job.id in recent else []),
                "p95": _p95_ms(recent.get(job.id)),
                "note": job.pause_note,
            }
            for job in found
        ]
        search = {k: v for k, v in {"q": prefix, "label": label_text}.items() if v}
        next_link = None
        if len(found) == PAGE_SIZE:
            next_link = (
                _link(search, state, sort) + "&" + urlencode({"cursor": order_cursor(sort, found[-1])})
            )
        state_links = [
            (
                value,
                text,
                None if counts is None else counts.total if value == "all" else getattr(counts, value),
                _link(search, value, sort),
            )
            for value, text in STATES
        ]
        sort_links = {value: _link(search, state, value) for value in SORTS}
        return await page(
            request,
            viewer,
            "jobs.html",
            {
                "rows": rows,
                "q": prefix,
                "label": label_text,
                "state": state,
                "sort": sort,
                "sorts": SORTS,
                "sort_links": sort_links,
                "state_links": state_links,
                "counts": counts,
                "now": now,
                "error": error,
                "next_link": next_link,
                "first_link": _link(search, state, sort) if cursor else None,
            },
        )

    @post("/jobs/bulk")
    async def jobs_bulk(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Pause, resume or trigger every selected job, each as its own API call would."""
        viewer, namespace = await viewer_and_namespace(request)
        try:
            form = await posted_form(request, viewer)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, "/ui/jobs")
        action = form.get("action")
        ids: list[UUID] = []
        for raw in form.get("ids") or []:
            try:
                ids.append(UUID(str(raw)))
            except ValueError:
                continue
        if action not in ("pause", "resume", "trigger") or not ids:
            return redirect("/ui/jobs")
        now = now_of(request)
        refused: list[str] = []
        for job_id in ids:
            try:
                async with conn_for(request) as conn, conn.transaction():
                    if action == "trigger":
                        await job_ops.trigger(conn, namespace=namespace, job_id=job_id, now=now)
                    else:
                        await job_ops.set_paused(
                            conn, namespace=namespace, job_id=job_id, paused=action == "pause", now=now
                        )
                        if action == "resume":
                            await store.job_pause_note_set(
                                conn, namespace=namespace, job_id=job_id, note=None
                            )
            except REFUSALS as problem:
                refused.append(problem.detail)
        if refused:
            message = f"{len(ids) - len(refused)} of {len(ids)} done; refused: " + "; ".join(refused)
            return await error_page(request, viewer, PageRefused(409, message), "/ui/jobs")
        back = safe_next(form.get("back"))
        done = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action]
        joiner = "&" if "?" in back else "?"
        return Redirect(path=f"{back}{joiner}done={done}", status_code=303)

    # ------------------------------------------------------------------------- the job form

    async def _form(
        self,
        request: Request[Any, Any, Any],
        viewer: session.Viewer,
        *,
        values: dict[str, str],
        errors: job_form.FormErrors | None = None,
        job: Job | None = None,
        cloned: Job | None = None,
        message: str | None = None,
        status_code: int = 200,
    ) -> Template:
        errors = errors or job_form.FormErrors()
        if errors and message is None:
            count = len(errors.by_input) + len(errors.other)
            message = f"Not saved: {count} {'thing needs' if count == 1 else 'things need'} fixing."
        return await page(
            request,
            viewer,
            "job_form.html",
            {
                "job": job,
                "cloned": cloned,
                "values": values,
                "errors": errors.by_input,
                "other_errors": errors.other,
                "error": message,
                "methods": job_form.METHODS,
                "zones": job_form.ZONES,
                "target": f"/ui/jobs/{job.id}/edit" if job is not None else "/ui/jobs/new",
            },
            status_code=status_code,
        )

    async def _job_or_404(self, request: Request[Any, Any, Any], namespace: str, job_id: UUID) -> Job:
        async with conn_for(request) as conn:
            try:
                return await job_ops.get(conn, namespace=namespace, job_id=job_id)
            except REFUSALS as refusal:
                raise NotFoundException(str(refusal)) from None

    @get("/jobs/new")
    async def job_new(self, request: Request[Any, Any, Any]) -> Template:
        """The form for a new job; `?from=<id>` fills it from that job, under a new name (a clone)."""
        viewer, namespace = await viewer_and_namespace(request)
        source = request.query_params.get("from")
        if not source:
            return await self._form(request, viewer, values=job_form.blank_values())
        try:
            source_id = UUID(source)
        except ValueError:
            raise NotFoundException(f"job {source} not found") from None
        cloned = await self._job_or_404(request, namespace, source_id)
        values = job_form.values_of(cloned) | {"name": job_form.clone_name(cloned.name)}
        return await self._form(request, viewer, values=values, cloned=cloned)

    @post("/jobs/new")
    async def job_create(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Create a job from the form through the API's create; refusals are shown beside their inputs."""
        viewer, namespace = await viewer_and_namespace(request)
        try:
            form = await posted_form(request, viewer)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, "/ui/jobs/new")
        cloned = None
        if form.get("clone_of"):
            try:
                cloned = await self._job_or_404(request, namespace, UUID(str(form["clone_of"])))
            except (ValueError, NotFoundException):
                cloned = None  # deleted since: the form's fields are the whole job
        changes, errors = job_form.read(form)
        status = 422
        if not errors:
            try:
                async with conn_for(request) as conn, conn.transaction():
                    job = await job_ops.create(
                        conn,
                        namespace=namespace,
                        spec=job_form.NewJob(changes, cloned),
                        now=now_of(request),
                        quota=settings_of(request).namespace_job_quota,
                    )
            except REFUSALS as problem:
                status = status_of_refusal(problem)
                _refusal_into(errors, problem)
            else:
                return redirect(f"/ui/jobs/{job.id}", done="created")
        return await self._form(
            request, viewer, values=_posted_values(form), errors=errors, cloned=cloned, status_code=status
        )

    @get("/jobs/{job_id:uuid}/edit")
    async def job_edit_form(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """The edit form with every field, at the job's current version."""
        viewer, namespace = await viewer_and_namespace(request)
        job = await self._job_or_404(request, namespace, job_id)
        values = job_form.values_of(job) | {"version": str(job.version)}
        return await self._form(request, viewer, values=values, job=job)

    @post("/jobs/{job_id:uuid}/edit")
    async def job_edit(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[Any]:
        """Save the edit form through the API's update, with the version it was loaded at as If-Match."""
        viewer, namespace = await viewer_and_namespace(request)
        try:
            form = await posted_form(request, viewer)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, f"/ui/jobs/{job_id}")
        changes, errors = job_form.read(form)
        status, message = 422, None
        if not errors:
            try:
                async with conn_for(request) as conn, conn.transaction():
                    await job_ops.update(
                        conn,
                        namespace=namespace,
                        job_id=job_id,
                        changes=changes,
                        if_match=f'"{form.get("version")}"',
                        now=now_of(request),
                    )
            except REFUSALS as problem:
                status = status_of_refusal(problem)
                if status == 404:  # noqa: PLR2004 - Not Found
                    raise NotFoundException(problem.detail) from None
                if status != 412:  # noqa: PLR2004 - Precondition Failed: said below, with the version
                    _refusal_into(errors, problem)
            else:
                return redirect(f"/ui/jobs/{job_id}", done="saved")
        job = await self._job_or_404(request, namespace, job_id)
        version = str(form.get("version") or job.version)
        if status == 412:  # noqa: PLR2004
            message, version = _STALE_EDIT.format(version=job.version), str(job.version)
        return await self._form(
            request,
            viewer,
            values=_posted_values(form, version),
            errors=errors,
            job=job,
            message=message,
            status_code=status,
        )

    # ------------------------------------------------------------------------------ one job

    @get("/jobs/{job_id:uuid}")
    async def job_page(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """One job: its definition, next fires and clock changes with DST notes, its slots and charts."""
        viewer, namespace = await viewer_and_namespace(request)
        now = now_of(request)
        async with conn_for(request) as conn:
            try:
                job = await job_ops.get(conn, namespace=namespace, job_id=job_id)
            except REFUSALS as refusal:
                raise NotFoundException(str(refusal)) from None
            runs = await store.run_list_for_job(
                conn, job_id=job_id, before=None, limit=_JOB_PAGE_RUNS, now=now
            )
        slots = charts.slots_of(runs, complete=len(runs) < _JOB_PAGE_RUNS)
        timing = Timing.of(job)
        return await page(
            request,
            viewer,
            "job.html",
            {
                "job": job,
                "note": job.pause_note,
                "now": now,
                "fires": upcoming(timing, now, 10),
                "changes": clock_changes(timing, now),
                "slots": slots[:_TABLE_SLOTS],
                "durations": charts.duration_chart(slots[:_CHART_SLOTS]),
                "lateness": charts.lateness_chart(slots[:_CHART_SLOTS]),
                "action_summary": _action_summary(job),
            },
        )

    @post("/jobs/{job_id:uuid}/{action:str}")
    async def job_action(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], action: FromPath[str]
    ) -> Response[Any]:
        """Pause (with a note), resume, run now or delete, as the API's routes do."""
        viewer, namespace = await viewer_and_namespace(request)
        if action not in ("pause", "resume", "trigger", "delete"):
            raise NotFoundException(f"no action {action!r}")
        here = f"/ui/jobs/{job_id}"
        try:
            form = await posted_form(request, viewer)
            _check_confirmed(action, form)
            now = now_of(request)
            async with conn_for(request) as conn, conn.transaction():
                if action == "trigger":
                    await job_ops.trigger(conn, namespace=namespace, job_id=job_id, now=now)
                elif action == "delete":
                    await job_ops.remove(conn, namespace=namespace, job_id=job_id)
                else:
                    await job_ops.set_paused(
                        conn, namespace=namespace, job_id=job_id, paused=action == "pause", now=now
                    )
                    note = str(form.get("note") or "").strip()[:500] or None
                    await store.job_pause_note_set(
                        conn, namespace=namespace, job_id=job_id, note=note if action == "pause" else None
                    )
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, here)
        if action == "delete":
            return redirect("/ui/jobs", done="deleted")
        return redirect(here, done={"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action])
