"""What every console page shares: templates and their filters, security headers, the viewer and its form.

The console acts through `scheduler.operations`, as the API does; an operation's refusal becomes an
error page here with the status the API would answer (`web.errors.status_of`), and a job or run
that is not the viewer's is the same 404 page as one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, Request, Response, Router
from litestar.exceptions import NotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from scheduler.domain.zones import zone
from scheduler.operations.errors import NotFoundError, OperationError
from scheduler.ui import session
from scheduler.ui.timing import describe, relative
from scheduler.web.errors import status_of
from scheduler.web.state import settings_of

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
_DONE = {
    "paused": "Paused.",
    "resumed": "Resumed.",
    "triggered": "Triggered: a manual run is on its way.",
    "deleted": "Deleted.",
    "saved": "Saved.",
    "created": "Created.",
    "cancelled": "Cancelled.",
    "retried": "A new attempt is on its way.",
    "signed-out": "Signed out.",
}


class PageRefused(Exception):  # noqa: N818 - a refusal shown as a page, like the operations' ones
    """A form the console itself refuses (a stale security token, a NUL, an unticked box)."""

    def __init__(self, status: int, detail: str) -> None:
        """Say why, with the status the page answers."""
        super().__init__(detail)
        self.status = status
        self.detail = detail


Refusal = OperationError | PageRefused
REFUSALS = (OperationError, PageRefused)
"""What a page catches to show as a refusal."""


def status_of_refusal(refusal: Refusal) -> int:
    """The HTTP status of a page that shows a refusal."""
    return refusal.status if isinstance(refusal, PageRefused) else status_of(refusal)


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
    env.filters.update(utc=_utc, in_zone=_in_zone, iso=_iso, ms=_ms, describe=describe, relative=relative)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def static_router() -> Router:
    """The console's script and stylesheet, served by the API itself (nothing from elsewhere)."""
    return create_static_files_router(
        path="/ui/static", directories=[HERE / "static"], name="console-static", include_in_schema=False
    )


# --------------------------------------------------------------------------------- helpers


def with_security(response: Response[Any]) -> Response[Any]:
    """Add the console's security headers to a response."""
    response.headers.update(SECURITY_HEADERS)
    return response


def set_cookie(request: Request[Any, Any, Any], response: Response[Any], value: str) -> None:
    """Set the session cookie: the console's paths only, HTTP-only, same-site strict."""
    response.set_cookie(
        session.COOKIE,
        value,
        path="/ui",
        max_age=session.SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=session.cookie_secure(request),
    )


async def page(
    request: Request[Any, Any, Any],
    viewer: session.Viewer,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Template:
    """Render a console page for the viewer, with its security token and any done-message."""
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
        set_cookie(request, response, viewer.fresh_cookie)
    return response


class SignInNeeded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The viewer must sign in first."""


async def viewer_and_namespace(request: Request[Any, Any, Any]) -> tuple[session.Viewer, str]:
    """The signed-in viewer and their namespace; SignInNeeded sends anyone else to sign in."""
    viewer = await session.viewer_of(request)
    if viewer.namespace is None:
        raise SignInNeeded
    return viewer, viewer.namespace


async def posted_form(request: Request[Any, Any, Any], viewer: session.Viewer) -> dict[str, Any]:
    """The posted form, once its CSRF token proves it came from one of our pages."""
    form = await request.form()
    secret = await session.secret_of(request)
    token = form.get("csrf")
    if (
        viewer.fresh_cookie
        or not isinstance(token, str)
        or not session.csrf_valid(secret, viewer.session, token)
    ):
        raise PageRefused(403, "the form's security token is missing or stale; reload the page and try again")
    fields = {key: form.getall(key) if key == "ids" else form.get(key) for key in form}
    if any("\x00" in str(value) for value in fields.values()):
        raise PageRefused(422, "a field holds a NUL character, which cannot be stored")
    return fields


def redirect(path: str, **query: str) -> Redirect:
    """A 303 to ``path`` with ``query``, the answer to a posted form."""
    target = path + ("?" + urlencode(query) if query else "")
    return Redirect(path=target, status_code=303)


def safe_next(value: Any) -> str:
    """Where to go after sign-in: a console path of ours, never another site."""
    text = str(value or "")
    return text if text.startswith("/ui/") and not text.startswith("//") and "\\" not in text else "/ui/jobs"


def to_sign_in(request: Request[Any, Any, Any]) -> Redirect:
    """The redirect to sign in, coming back here after."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect("/ui/login", next=here)


async def error_page(
    request: Request[Any, Any, Any], viewer: session.Viewer, refusal: Refusal, back: str
) -> Template:
    """The page that shows a refusal; a job or run not found is the console's 404 page instead."""
    if isinstance(refusal, NotFoundError):
        raise NotFoundException(refusal.detail)
    status = status_of_refusal(refusal)
    return await page(
        request,
        viewer,
        "error.html",
        {"title": HTTPStatus(status).phrase, "message": refusal.detail, "back": back},
        status_code=status,
    )


def not_found_page(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    """Another namespace's ids land here too: exactly like ids that do not exist."""
    return with_security(
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


class ConsolePages(Controller):
    """The base of the console's page groups: under /ui, outside the OpenAPI document, secured headers."""

    path = "/ui"
    include_in_schema = False
    after_request = staticmethod(with_security)
    exception_handlers = {  # noqa: RUF012 - Litestar reads it as a class attribute
        SignInNeeded: lambda request, _: to_sign_in(request),
        NotFoundException: not_found_page,
    }
