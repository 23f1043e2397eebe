"""The console's job pages: the list with its filters and bulk actions, one job, its edit form and actions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template

from scheduler.db import store
from scheduler.domain import names
from scheduler.domain.fields import JobPatch
from scheduler.domain.models import HttpAction, Job
from scheduler.domain.schedule import Timing
from scheduler.operations import jobs as job_ops
from scheduler.operations import pages
from scheduler.operations.errors import MalformedError
from scheduler.ui import charts, session
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
from scheduler.ui.timing import upcoming
from scheduler.web.state import conn_for, now_of


class JobPages(ConsolePages):
    """Jobs of the viewer's namespace."""

    @get("/jobs")
    async def jobs_page(self, request: Request[Any, Any, Any]) -> Template:
        """Jobs by name: search by prefix, filter by label and state, page by keyset."""
        viewer, namespace = await viewer_and_namespace(request)
        params = request.query_params
        # NUL cannot reach PostgreSQL text; a name or label never holds one anyway.
        prefix = (params.get("q") or "").replace("\x00", "").strip()[:128]
        label_text = (params.get("label") or "").replace("\x00", "").strip()[:320]
        state = params.get("state") or "all"
        cursor = params.get("cursor")
        labels: dict[str, str] = {}
        error = None
        if label_text:
            try:
                key, value = names.parse_label(label_text)
                labels = {key: value}
            except ValueError as exc:
                error = f"Label filter: {exc}."
        after = None
        if cursor:
            try:
                after = pages.after_name(cursor)
            except MalformedError:
                error = "That page link is no longer valid; showing the first page."
        paused = {"paused": True, "active": False}.get(state)
        now = now_of(request)
        async with conn_for(request) as conn:
            found = await store.job_list(
                conn,
                namespace=namespace,
                after_name=after,
                limit=PAGE_SIZE,
                name_prefix=prefix or None,
                paused=paused,
                labels=labels,
                failing=state == "failing",
            )
            ids = [job.id for job in found]
            recent = await store.job_recent_outcomes(conn, job_ids=ids, now=now)
        rows = [
            {
                "job": job,
                "strip": charts.outcome_strip(recent[job.id].outcomes if job.id in recent else []),
                "p95": _p95_ms(recent.get(job.id)),
                "note": job.pause_note,
            }
            for job in found
        ]
        query = {
            k: v for k, v in {"q": prefix, "label": label_text, "state": state}.items() if v and v != "all"
        }
        next_link = None
        if len(found) == PAGE_SIZE:
            next_link = "/ui/jobs?" + urlencode({**query, "cursor": pages.name_cursor(found[-1].name)})
        return await page(
            request,
            viewer,
            "jobs.html",
            {
                "rows": rows,
                "q": prefix,
                "label": label_text,
                "state": state,
                "error": error,
                "next_link": next_link,
                "first_link": "/ui/jobs?" + urlencode(query) if cursor else None,
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

    @get("/jobs/{job_id:uuid}")
    async def job_page(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """One job: definition and edit form, next fires with DST notes, runs and charts."""
        viewer, namespace = await viewer_and_namespace(request)
        return await self._job_view(request, viewer, namespace, job_id)

    async def _job_view(
        self,
        request: Request[Any, Any, Any],
        viewer: session.Viewer,
        namespace: str,
        job_id: UUID,
        *,
        error: str | None = None,
        status_code: int = 200,
    ) -> Template:
        now = now_of(request)
        async with conn_for(request) as conn:
            try:
                job = await job_ops.get(conn, namespace=namespace, job_id=job_id)
            except REFUSALS as refusal:
                raise NotFoundException(str(refusal)) from None
            runs = await store.run_list_for_job(conn, job_id=job_id, before=None, limit=100, now=now)
        return await page(
            request,
            viewer,
            "job.html",
            {
                "job": job,
                "note": job.pause_note,
                "fires": upcoming(Timing.of(job), now, 10),
                "runs": runs[:25],
                "timeline": charts.timeline(runs),
                "chart": charts.lateness_and_duration(runs),
                "action_summary": _action_summary(job),
                "action_json": msgspec.json.format(msgspec.json.encode(job.action), indent=2).decode(),
                "labels_text": "\n".join(names.format_label(k, v) for k, v in job.labels.items()),
                "error": error,
            },
            status_code=status_code,
        )

    @post("/jobs/{job_id:uuid}/edit")
    async def job_edit(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[Any]:
        """Save the edit form through the API's update, with the version it was loaded at as If-Match."""
        viewer, namespace = await viewer_and_namespace(request)
        try:
            form = await posted_form(request, viewer)
            changes = {
                "description": str(form.get("description") or ""),
                "schedule": str(form.get("schedule") or "").strip(),
                "timezone": str(form.get("timezone") or "").strip(),
                "timeout_s": int(str(form.get("timeout_s") or "0")),
                "overlap": str(form.get("overlap") or ""),
                "labels": names.parse_labels(str(form.get("labels") or "")),
                "action": msgspec.json.decode(str(form.get("action") or "null")),
            }
            patch = msgspec.convert(changes, JobPatch)
            async with conn_for(request) as conn, conn.transaction():
                await job_ops.update(
                    conn,
                    namespace=namespace,
                    job_id=job_id,
                    changes={name: getattr(patch, name) for name in changes},
                    if_match=f'"{form.get("version")}"',
                    now=now_of(request),
                )
        except REFUSALS as problem:
            message = problem.detail
            status = status_of_refusal(problem)
            if status == 412:  # noqa: PLR2004 - Precondition Failed
                message = (
                    "Someone changed this job after you opened it, so your edit was not saved. "
                    "The page now shows the current definition; make your change again."
                )
            if status == 404:  # noqa: PLR2004
                raise NotFoundException(problem.detail) from None
            return await self._job_view(request, viewer, namespace, job_id, error=message, status_code=status)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return await self._job_view(
                request, viewer, namespace, job_id, error=f"Not saved: {exc}", status_code=422
            )
        return redirect(f"/ui/jobs/{job_id}", done="saved")

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
