"""The console's sign-in: an API key (or bearer token) for a session cookie, and signing out."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect

from scheduler.ui import session
from scheduler.ui.base import (
    REFUSALS,
    ConsolePages,
    error_page,
    page,
    posted_form,
    redirect,
    safe_next,
    set_cookie,
)
from scheduler.web.tokens import KeysUnavailableError


class SignInPages(ConsolePages):
    """The front door, sign-in and sign-out."""

    @get("/")
    async def home(self) -> Redirect:
        """The jobs page is the console's front door."""
        return redirect("/ui/jobs")

    # -------------------------------------------------------------------------- sign-in

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Ask for an API key (with auth off there is nothing to ask)."""
        viewer = await session.viewer_of(request)
        if viewer.namespace is not None:
            return redirect(safe_next(request.query_params.get("next")))
        return await page(
            request, viewer, "login.html", {"next": safe_next(request.query_params.get("next"))}
        )

    @post("/login")
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the key; on success start a new session naming its hash (never the key itself).

        A bearer token from the identity provider (when one is configured) signs in too: the session
        names the token's namespace and ends when the token does.
        """
        viewer = await session.viewer_of(request)
        try:
            form = await posted_form(request, viewer)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, "/ui/login")
        typed = str(form.get("key") or "")
        digest = session.digest_of_key(typed)
        fresh = None
        if digest is not None:
            session.forget_key(request, digest)
            if await session.namespace_of_key(request, digest) is not None:
                fresh = session.new_session(digest, time.time())
        else:
            try:
                fresh = await session.token_session(request, typed)
            except KeysUnavailableError as exc:
                error = (
                    "Tokens cannot be checked right now: the identity provider's signing keys could "
                    f"not be fetched. Try again in {max(1, round(exc.retry_after_s))} s."
                )
                context = {"next": safe_next(form.get("next")), "error": error}
                return await page(request, viewer, "login.html", context, status_code=503)
        if fresh is None:
            return await page(
                request,
                viewer,
                "login.html",
                {"next": safe_next(form.get("next")), "error": "That key is not valid (or was revoked)."},
                status_code=401,
            )
        secret = await session.secret_of(request)
        response = redirect(safe_next(form.get("next")))
        set_cookie(request, response, session.seal(secret, fresh))
        return response

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """End the session: the cookie is replaced by a signed-out one."""
        viewer = await session.viewer_of(request)
        try:
            await posted_form(request, viewer)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, "/ui/jobs")
        secret = await session.secret_of(request)
        response = redirect("/ui/login", done="signed-out")
        set_cookie(request, response, session.seal(secret, session.new_session(None, time.time())))
        return response
