"""The console's pages and form actions: jobs, one job, runs, one run, sign-in.

Every query is scoped to the viewer's namespace, exactly as the API's, and every change goes through
the API's own domain functions (scheduler.api.jobs / scheduler.api.runs), so the console cannot do
anything the API would refuse. Forms post back here with a CSRF token and answer with a redirect
(post/redirect/get); a refused change renders the page again with the problem's words.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, Request, Response, Router, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from scheduler.api import jobs as job_rules
from scheduler.api import runs as run_rules
from scheduler.api.jobs import decode_cursor, encode_cursor, timing_of
from scheduler.api.problems import ProblemError
from scheduler.api.schemas import NAME_PATTERN, JobPatch
from scheduler.api.state import conn_for, settings_of
from scheduler.db import store
from scheduler.domain.models import HttpAction, Job, Run, RunStatus, RunTrigger
from scheduler.domain.retry import RETRYABLE_BY_REQUEST
from scheduler.domain.schedule import zone
from scheduler.ui import charts, session
from scheduler.ui.timing import describe, upcoming

HERE = Path(__file__).parent
PAGE_SIZE = 50
# One directive per kind of content: only our own files, no inline script, no plugin, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
            "7d": timedelta(days=7)}  # fmt: skip
_DONE = {
    "paused": "Paused.",
    "resumed": "Resumed.",
    "triggered": "Triggered: a manual run is on its way.",
    "deleted": "Deleted.",
    "saved": "Saved.",
    "cancelled": "Cancelled.",
    "retried": "A new attempt is on its way.",
    "signed-out": "Signed out.",
}
_STATUS_FILTERS = ("", *[status.value for status in RunStatus])
_TRIGGER_FILTERS = ("", *[trigger.value for trigger in RunTrigger])


# ------------------------------------------------------------------------------- templates


def _utc(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _in_zone(moment: datetime | None, name: str) -> str:
    if moment is None:
        return "—"
    local = moment.astimezone(zone(name))
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 60_000:  # noqa: PLR2004 - a minute
        return f"{value / 60_000:.1f} min"
    if value >= 1000:  # noqa: PLR2004 - a second
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The console's Jinja environment: autoescaped, templates shipped inside the package."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=_utc, in_zone=_in_zone, iso=_iso, ms=_ms, describe=describe)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def static_router() -> Router:
    """The console's script and stylesheet, served by the API itself (nothing from elsewhere)."""
    return create_static_files_router(
        path="/ui/static", directories=[HERE / "static"], name="console-static", include_in_schema=False
    )


# --------------------------------------------------------------------------------- helpers


def _with_security(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


def _set_cookie(request: Request[Any, Any, Any], response: Response[Any], value: str) -> None:
    response.set_cookie(
        session.COOKIE,
        value,
        path="/ui",
        max_age=session.SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=session.cookie_secure(request),
    )


async def _page(
    request: Request[Any, Any, Any],
    viewer: session.Viewer,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Template:
    secret = await session.secret_of(request)
    done = _DONE.get(request.query_params.get("done", ""))
    response = Template(
        template_name=name,
        context={
            "viewer": viewer,
            "csrf": session.csrf_token(secret, viewer.session),
            "auth_required": settings_of(request).auth != "off",
            "done": done,
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
        media_type="text/html",
    )
    if viewer.fresh_cookie:
        _set_cookie(request, response, viewer.fresh_cookie)
    return response


class SignInNeeded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The viewer must sign in first."""


async def _viewer(request: Request[Any, Any, Any]) -> tuple[session.Viewer, str]:
    viewer = await session.viewer_of(request)
    if viewer.namespace is None:
        raise SignInNeeded
    return viewer, viewer.namespace


async def _form(request: Request[Any, Any, Any], viewer: session.Viewer) -> dict[str, Any]:
    """The posted form, once its CSRF token proves it came from one of our pages."""
    form = await request.form()
    secret = await session.secret_of(request)
    token = form.get("csrf")
    if (
        viewer.fresh_cookie
        or not isinstance(token, str)
        or not session.csrf_valid(secret, viewer.session, token)
    ):
        raise ProblemError(
            403, "the form's security token is missing or stale; reload the page and try again", kind="csrf"
        )
    fields = {key: form.getall(key) if key == "ids" else form.get(key) for key in form}
    if any("\x00" in str(value) for value in fields.values()):
        raise ProblemError(
            422, "a field holds a NUL character, which cannot be stored", kind="invalid-request"
        )
    return fields


def _redirect(path: str, **query: str) -> Redirect:
    target = path + ("?" + urlencode(query) if query else "")
    return Redirect(path=target, status_code=303)


def _safe_next(value: Any) -> str:
    """Where to go after sign-in: a console path of ours, never another site."""
    text = str(value or "")
    return text if text.startswith("/ui/") and not text.startswith("//") and "\\" not in text else "/ui/jobs"


def _job_not_found(job_id: UUID) -> NotFoundException:
    return NotFoundException(f"job {job_id} not found")


def _to_sign_in(request: Request[Any, Any, Any]) -> Redirect:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/ui/login", next=here)


async def _error_page(
    request: Request[Any, Any, Any], viewer: session.Viewer, problem: ProblemError, back: str
) -> Template:
    return await _page(
        request,
        viewer,
        "error.html",
        {"title": HTTPStatus(problem.status).phrase, "message": problem.detail, "back": back},
        status_code=problem.status,
    )


def _not_found_page(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    """Another namespace's ids land here too: exactly like ids that do not exist."""
    return _with_security(
        Template(
            template_name="error.html",
            context={
                "viewer": None,
                "csrf": "",
                "path": request.url.path,
                "title": "Not found",
                "message": exc.detail,
                "back": "/ui/jobs",
            },
            status_code=404,
            media_type="text/html",
        )
    )


def _p95_ms(recent: store.RecentOutcomes | None) -> float | None:
    if recent is None or recent.p95_lateness_s is None:
        return None
    return recent.p95_lateness_s * 1000


def _check_confirmed(action: str, form: dict[str, Any]) -> None:
    if action == "delete" and form.get("confirm") != "yes":
        raise ProblemError(422, "tick the box to confirm the deletion", kind="invalid-request")


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for line in text.replace(",", "\n").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise ProblemError(
                422, f"labels: write each as key=value, not {line.strip()!r}", kind="invalid-request"
            )
        labels[key.strip()] = value.strip()
    return labels


# ------------------------------------------------------------------------------ controller


class ConsoleController(Controller):
    """The web console's pages; each resolves the viewer's namespace from the session cookie."""

    path = "/ui"
    include_in_schema = False
    after_request = staticmethod(_with_security)
    exception_handlers = {  # noqa: RUF012 - Litestar reads it as a class attribute
        SignInNeeded: lambda request, _: _to_sign_in(request),
        NotFoundException: _not_found_page,
    }

    @get("/")
    async def home(self) -> Redirect:
        """The jobs page is the console's front door."""
        return _redirect("/ui/jobs")

    # -------------------------------------------------------------------------- sign-in

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Ask for an API key (with auth off there is nothing to ask)."""
        viewer = await session.viewer_of(request)
        if viewer.namespace is not None:
            return _redirect(_safe_next(request.query_params.get("next")))
        return await _page(
            request, viewer, "login.html", {"next": _safe_next(request.query_params.get("next"))}
        )

    @post("/login")
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the key; on success start a new session naming its hash (never the key itself)."""
        viewer = await session.viewer_of(request)
        try:
            form = await _form(request, viewer)
        except ProblemError as problem:
            return await _error_page(request, viewer, problem, "/ui/login")
        digest = session.digest_of_key(str(form.get("key") or ""))
        namespace = None
        if digest is not None:
            session.forget_key(request, digest)
            namespace = await session.namespace_of_key(request, digest)
        if digest is None or namespace is None:
            return await _page(
                request,
                viewer,
                "login.html",
                {"next": _safe_next(form.get("next")), "error": "That key is not valid (or was revoked)."},
                status_code=401,
            )
        secret = await session.secret_of(request)
        fresh = session.new_session(digest, time.time())
        response = _redirect(_safe_next(form.get("next")))
        _set_cookie(request, response, session.seal(secret, fresh))
        return response

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """End the session: the cookie is replaced by a signed-out one."""
        viewer = await session.viewer_of(request)
        try:
            await _form(request, viewer)
        except ProblemError as problem:
            return await _error_page(request, viewer, problem, "/ui/jobs")
        secret = await session.secret_of(request)
        response = _redirect("/ui/login", done="signed-out")
        _set_cookie(request, response, session.seal(secret, session.new_session(None, time.time())))
        return response

    # -------------------------------------------------------------------------------- jobs

    @get("/jobs")
    async def jobs_page(self, request: Request[Any, Any, Any]) -> Template:
        """Jobs by name: search by prefix, filter by label and state, page by keyset."""
        viewer, namespace = await _viewer(request)
        params = request.query_params
        # NUL cannot reach PostgreSQL text; a name or label never holds one anyway.
        prefix = (params.get("q") or "").replace("\x00", "").strip()[:128]
        label_text = (params.get("label") or "").replace("\x00", "").strip()[:320]
        state = params.get("state") or "all"
        cursor = params.get("cursor")
        labels: dict[str, str] = {}
        error = None
        if label_text:
            key, sep, value = label_text.partition(":")
            if not sep:
                key, sep, value = label_text.partition("=")
            if sep and key:
                labels = {key: value}
            else:
                error = "Filter labels as key:value."
        after = None
        if cursor:
            try:
                after = decode_cursor(cursor)
            except ProblemError:
                after = None
            if after is None or not re.fullmatch(NAME_PATTERN, after):
                after, error = None, "That page link is no longer valid; showing the first page."
        paused = {"paused": True, "active": False}.get(state)
        now = datetime.now(UTC)
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
            next_link = "/ui/jobs?" + urlencode({**query, "cursor": encode_cursor(found[-1].name)})
        return await _page(
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
        viewer, namespace = await _viewer(request)
        try:
            form = await _form(request, viewer)
        except ProblemError as problem:
            return await _error_page(request, viewer, problem, "/ui/jobs")
        action = form.get("action")
        ids: list[UUID] = []
        for raw in form.get("ids") or []:
            try:
                ids.append(UUID(str(raw)))
            except ValueError:
                continue
        if action not in ("pause", "resume", "trigger") or not ids:
            return _redirect("/ui/jobs")
        now = datetime.now(UTC)
        refused: list[str] = []
        for job_id in ids:
            try:
                async with conn_for(request) as conn, conn.transaction():
                    if action == "trigger":
                        await job_rules.trigger(conn, namespace=namespace, job_id=job_id, now=now)
                    else:
                        await job_rules.set_paused(
                            conn, namespace=namespace, job_id=job_id, paused=action == "pause", now=now
                        )
                        if action == "resume":
                            await store.job_pause_note_set(
                                conn, namespace=namespace, job_id=job_id, note=None
                            )
            except ProblemError as problem:
                refused.append(problem.detail)
        if refused:
            message = f"{len(ids) - len(refused)} of {len(ids)} done; refused: " + "; ".join(refused)
            return await _error_page(request, viewer, ProblemError(409, message), "/ui/jobs")
        back = _safe_next(form.get("back"))
        done = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action]
        joiner = "&" if "?" in back else "?"
        return Redirect(path=f"{back}{joiner}done={done}", status_code=303)

    @get("/jobs/{job_id:uuid}")
    async def job_page(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """One job: definition and edit form, next fires with DST notes, runs and charts."""
        viewer, namespace = await _viewer(request)
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
        now = datetime.now(UTC)
        async with conn_for(request) as conn:
            job = await store.job_get(conn, namespace=namespace, job_id=job_id)
            if job is None:
                raise _job_not_found(job_id)
            runs = await store.run_list_for_job(conn, job_id=job_id, before=None, limit=100, now=now)
        return await _page(
            request,
            viewer,
            "job.html",
            {
                "job": job,
                "note": job.pause_note,
                "fires": upcoming(timing_of(job), now, 10),
                "runs": runs[:25],
                "timeline": charts.timeline(runs),
                "chart": charts.lateness_and_duration(runs),
                "action_summary": _action_summary(job),
                "action_json": msgspec.json.format(msgspec.json.encode(job.action), indent=2).decode(),
                "labels_text": "\n".join(f"{k}={v}" for k, v in job.labels.items()),
                "error": error,
            },
            status_code=status_code,
        )

    @post("/jobs/{job_id:uuid}/edit")
    async def job_edit(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[Any]:
        """Save the edit form through the API's update, with the version it was loaded at as If-Match."""
        viewer, namespace = await _viewer(request)
        try:
            form = await _form(request, viewer)
            patch = msgspec.convert(
                {
                    "description": str(form.get("description") or ""),
                    "schedule": str(form.get("schedule") or "").strip(),
                    "timezone": str(form.get("timezone") or "").strip(),
                    "timeout_s": int(str(form.get("timeout_s") or "0")),
                    "overlap": str(form.get("overlap") or ""),
                    "labels": _parse_labels(str(form.get("labels") or "")),
                    "action": msgspec.json.decode(str(form.get("action") or "null")),
                },
                JobPatch,
            )
            async with conn_for(request) as conn, conn.transaction():
                await job_rules.update(
                    conn,
                    namespace=namespace,
                    job_id=job_id,
                    patch=patch,
                    if_match=f'"{form.get("version")}"',
                    now=datetime.now(UTC),
                )
        except ProblemError as problem:
            message = problem.detail
            if problem.status == 412:  # noqa: PLR2004 - Precondition Failed
                message = (
                    "Someone changed this job after you opened it, so your edit was not saved. "
                    "The page now shows the current definition; make your change again."
                )
            if problem.status == 404:  # noqa: PLR2004
                raise _job_not_found(job_id) from None
            return await self._job_view(
                request, viewer, namespace, job_id, error=message, status_code=problem.status
            )
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return await self._job_view(
                request, viewer, namespace, job_id, error=f"Not saved: {exc}", status_code=422
            )
        return _redirect(f"/ui/jobs/{job_id}", done="saved")

    @post("/jobs/{job_id:uuid}/{action:str}")
    async def job_action(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], action: FromPath[str]
    ) -> Response[Any]:
        """Pause (with a note), resume, run now or delete, as the API's routes do."""
        viewer, namespace = await _viewer(request)
        if action not in ("pause", "resume", "trigger", "delete"):
            raise NotFoundException(f"no action {action!r}")
        here = f"/ui/jobs/{job_id}"
        try:
            form = await _form(request, viewer)
            _check_confirmed(action, form)
            now = datetime.now(UTC)
            async with conn_for(request) as conn, conn.transaction():
                if action == "trigger":
                    await job_rules.trigger(conn, namespace=namespace, job_id=job_id, now=now)
                elif action == "delete":
                    await job_rules.remove(conn, namespace=namespace, job_id=job_id)
                else:
                    await job_rules.set_paused(
                        conn, namespace=namespace, job_id=job_id, paused=action == "pause", now=now
                    )
                    note = str(form.get("note") or "").strip()[:500] or None
                    await store.job_pause_note_set(
                        conn, namespace=namespace, job_id=job_id, note=note if action == "pause" else None
                    )
        except ProblemError as problem:
            if problem.status == 404:  # noqa: PLR2004
                raise _job_not_found(job_id) from None
            return await _error_page(request, viewer, problem, here)
        if action == "delete":
            return _redirect("/ui/jobs", done="deleted")
        return _redirect(here, done={"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action])

    # -------------------------------------------------------------------------------- runs

    @get("/runs")
    async def runs_page(self, request: Request[Any, Any, Any]) -> Template:
        """The namespace's runs across jobs: filter by status, trigger, job and time window."""
        viewer, namespace = await _viewer(request)
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
        before_id = None
        cursor = params.get("cursor")
        if cursor:
            try:
                before_id = UUID(decode_cursor(cursor))
            except (ProblemError, ValueError):
                error = "That page link is no longer valid; showing the first page."
        now = datetime.now(UTC)
        since = now - _WINDOWS[window] if window in _WINDOWS else None
        async with conn_for(request) as conn:
            found = await store.run_list_namespace(
                conn,
                namespace=namespace,
                now=now,
                limit=PAGE_SIZE,
                before_id=before_id,
                job_id=job_id,
                status=status,
                trigger=trigger,
                since=since,
            )
            names = await store.job_names(conn, namespace=namespace, job_ids=[run.job_id for run in found])
        query = {k: v for k, v in {"status": status_text, "trigger": trigger_text, "window": window,
                                   "job_id": job_text}.items() if v}  # fmt: skip
        next_link = None
        if len(found) == PAGE_SIZE:
            next_link = "/ui/runs?" + urlencode({**query, "cursor": encode_cursor(str(found[-1].id))})
        return await _page(
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
        viewer, namespace = await _viewer(request)
        async with conn_for(request) as conn:
            run = await store.run_get(conn, namespace=namespace, run_id=run_id)
            if run is None:
                raise NotFoundException(f"run {run_id} not found")
            job = await store.job_get(conn, namespace=namespace, job_id=run.job_id)
            attempts = await store.run_attempts(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
        return await _page(
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
        viewer, namespace = await _viewer(request)
        if action not in ("cancel", "retry"):
            raise NotFoundException(f"no action {action!r}")
        try:
            await _form(request, viewer)
            async with conn_for(request) as conn, conn.transaction():
                if action == "cancel":
                    done = await run_rules.cancel(conn, namespace=namespace, run_id=run_id)
                else:
                    done = await run_rules.retry(conn, namespace=namespace, run_id=run_id)
        except ProblemError as problem:
            if problem.status == 404:  # noqa: PLR2004
                raise NotFoundException(f"run {run_id} not found") from None
            return await _error_page(request, viewer, problem, f"/ui/runs/{run_id}")
        return _redirect(f"/ui/runs/{done.id}", done="cancelled" if action == "cancel" else "retried")


def _action_summary(job: Job) -> str:
    action = job.action
    if isinstance(action, HttpAction):
        return f"http {action.method} {action.url}"
    return "log"


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
