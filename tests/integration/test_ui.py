"""The web console in-process: sessions, CSRF, headers, namespace scoping, and its domain actions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.operations.pages import encode_cursor
from scheduler.ui import session
from tests.conftest import create_api_key, settings_for

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def make_job(client: AsyncTestClient[Any], name: str, headers: dict[str, str] | None = None,
                   **fields: Any) -> str:  # fmt: skip
    """Create a job through the API and return its id."""
    body = {"name": name, "schedule": "@every 1h", "action": {"type": "log"}} | fields
    made = await client.post("/jobs", json=body, headers=headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


@dataclass
class Signed:
    """The console with auth required, one browser-like client signed in per namespace."""

    alpha: AsyncTestClient[Any]
    beta: AsyncTestClient[Any]
    alpha_key: str
    beta_key: str


async def sign_in(client: AsyncTestClient[Any], key: str) -> None:
    """Sign in through the form, as a person would."""
    page = await client.get("/ui/login")
    assert page.status_code == 200, page.text
    answer = await client.post(
        "/ui/login", data={"csrf": csrf_of(page.text), "key": key, "next": "/ui/jobs"}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/jobs"


@pytest.fixture
async def signed(db_url: str) -> AsyncIterator[Signed]:
    """Two namespaces, alpha and beta, each signed in on its own client (its own cookie jar)."""
    alpha_key = await create_api_key(db_url, "alpha")
    beta_key = await create_api_key(db_url, "beta")
    # An app each: two API processes on one database, as two replicas would be.
    alpha_app = create_app(settings_for(db_url, auth="required"))
    beta_app = create_app(settings_for(db_url, auth="required"))
    async with AsyncTestClient(app=alpha_app) as alpha, AsyncTestClient(app=beta_app) as beta:
        await sign_in(alpha, alpha_key)
        await sign_in(beta, beta_key)
        yield Signed(alpha, beta, alpha_key, beta_key)


class TestSignIn:
    """With auth required, pages need a signed-in session; the cookie is protected."""

    async def test_pages_redirect_to_sign_in_without_a_session(self, db_url: str) -> None:
        """Every page sends an anonymous visitor to the sign-in form, keeping where they were going."""
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            for path in ("/ui/jobs", "/ui/runs", "/ui/jobs/00000000-0000-7000-8000-000000000000"):
                answer = await client.get(path, follow_redirects=False)
                assert answer.status_code == 303, path
                assert answer.headers["location"].startswith("/ui/login?next=")

    async def test_a_wrong_key_is_refused(self, db_url: str) -> None:
        """A key that does not exist signs nobody in."""
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            page = await client.get("/ui/login")
            answer = await client.post(
                "/ui/login",
                data={"csrf": csrf_of(page.text), "key": "sk_" + "x" * 43},
                follow_redirects=False,
            )
            assert answer.status_code == 401
            assert "not valid" in answer.text
            assert (await client.get("/ui/jobs", follow_redirects=False)).status_code == 303

    async def test_cookie_is_httponly_strict_and_holds_no_key(self, db_url: str) -> None:
        """The session cookie is HttpOnly and SameSite=Strict, scoped to /ui, and never holds the key."""
        key = await create_api_key(db_url, "alpha")
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            page = await client.get("/ui/login")
            answer = await client.post(
                "/ui/login", data={"csrf": csrf_of(page.text), "key": key}, follow_redirects=False
            )
            cookie = answer.headers["set-cookie"]
            assert cookie.startswith(f"{session.COOKIE}=")
            assert "HttpOnly" in cookie
            assert "samesite=strict" in cookie.lower()
            assert "Path=/ui" in cookie
            assert "Secure" not in cookie  # plain http here; see the next test
            assert key not in cookie
            assert key[3:20] not in cookie

    async def test_cookie_is_secure_behind_https(self, db_url: str) -> None:
        """Reached over https (a TLS proxy says so), the cookie is marked Secure."""
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            page = await client.get("/ui/login", headers={"x-forwarded-proto": "https"})
            assert "Secure" in page.headers["set-cookie"]

    async def test_a_tampered_cookie_is_not_a_session(self, signed: Signed) -> None:
        """Changing one character of the signed cookie ends the session."""
        value = signed.alpha.cookies[session.COOKIE]
        flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
        signed.alpha.cookies.set(session.COOKIE, flipped)
        answer = await signed.alpha.get("/ui/jobs", follow_redirects=False)
        assert answer.status_code == 303

    async def test_signing_out_ends_the_session(self, signed: Signed) -> None:
        """After sign-out the pages ask for a key again."""
        page = await signed.alpha.get("/ui/jobs")
        out = await signed.alpha.post("/ui/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
        assert out.status_code == 303
        assert (await signed.alpha.get("/ui/jobs", follow_redirects=False)).status_code == 303


class TestCsrf:
    """Every state-changing request needs the session's CSRF token."""

    async def test_a_post_without_the_token_changes_nothing(self, signed: Signed) -> None:
        """Pause, trigger and bulk posts with no token or a wrong one are 403 and leave the job alone."""
        headers = {"Authorization": f"Bearer {signed.alpha_key}"}
        job_id = await make_job(signed.alpha, "guarded", headers)
        for data in ({}, {"csrf": "forged"}):
            for path, body in (
                (f"/ui/jobs/{job_id}/pause", data),
                (f"/ui/jobs/{job_id}/trigger", data),
                ("/ui/jobs/bulk", data | {"action": "pause", "ids": job_id}),
                (f"/ui/jobs/{job_id}/delete", data | {"confirm": "yes"}),
            ):
                answer = await signed.alpha.post(path, data=body, follow_redirects=False)
                assert answer.status_code == 403, (path, answer.text)
        job = (await signed.alpha.get(f"/jobs/{job_id}", headers=headers)).json()
        assert job["paused"] is False
        runs = (await signed.alpha.get(f"/jobs/{job_id}/runs", headers=headers)).json()
        assert runs["items"] == []

    async def test_another_sessions_token_is_refused(self, signed: Signed) -> None:
        """A token is bound to its session: beta's token does not work in alpha's session."""
        job_id = await make_job(signed.alpha, "bound", {"Authorization": f"Bearer {signed.alpha_key}"})
        beta_token = csrf_of((await signed.beta.get("/ui/jobs")).text)
        answer = await signed.alpha.post(
            f"/ui/jobs/{job_id}/pause", data={"csrf": beta_token}, follow_redirects=False
        )
        assert answer.status_code == 403

    async def test_the_sign_in_form_needs_the_token_too(self, db_url: str) -> None:
        """Login CSRF: a sign-in post without the pre-session's token is refused."""
        key = await create_api_key(db_url, "alpha")
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            answer = await client.post("/ui/login", data={"key": key}, follow_redirects=False)
            assert answer.status_code == 403


class TestHeaders:
    """Pages forbid inline script and outside assets."""

    async def test_content_security_policy_allows_only_our_own_files(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """The CSP names 'self' for scripts and styles, no unsafe-inline; framing is refused."""
        page = await client.get("/ui/jobs")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"

    async def test_pages_load_nothing_from_elsewhere_and_run_no_inline_script(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """Every src and href is a path of ours, and no <script> has a body."""
        job_id = await make_job(client, "self-contained")
        for path in ("/ui/jobs", f"/ui/jobs/{job_id}", "/ui/runs"):
            html = (await client.get(path)).text
            for url in re.findall(r'(?:src|href)="([^"]+)"', html):
                assert url.startswith(("/", "#")), (path, url)
                assert not url.startswith("//"), (path, url)
            assert not re.search(r"<script[^>]*>\s*[^<\s]", html), path
            assert " on" not in re.sub(r'"[^"]*"', "", html).replace(" one", "")  # no onclick= handlers

    async def test_static_script_and_stylesheet_are_served(self, client: AsyncTestClient[Any]) -> None:
        """The console's own script and stylesheet come from the service."""
        script = await client.get("/ui/static/console.js")
        assert script.status_code == 200
        assert "visibilityState" in script.text
        assert (await client.get("/ui/static/console.css")).status_code == 200


class TestNamespaces:
    """The console shows and acts on the signed-in key's namespace only, as the API does."""

    async def test_another_namespaces_ids_are_not_found(self, signed: Signed) -> None:
        """Beta gets 404 for alpha's job and run pages, and its actions change nothing."""
        alpha_headers = {"Authorization": f"Bearer {signed.alpha_key}"}
        job_id = await make_job(signed.alpha, "secret-report", alpha_headers)
        run = await signed.alpha.post(f"/jobs/{job_id}/trigger", headers=alpha_headers)
        run_id = run.json()["id"]
        token = csrf_of((await signed.beta.get("/ui/jobs")).text)
        assert (await signed.beta.get(f"/ui/jobs/{job_id}")).status_code == 404
        assert (await signed.beta.get(f"/ui/runs/{run_id}")).status_code == 404
        for path in (f"/ui/jobs/{job_id}/pause", f"/ui/jobs/{job_id}/delete", f"/ui/runs/{run_id}/cancel"):
            answer = await signed.beta.post(
                path, data={"csrf": token, "confirm": "yes"}, follow_redirects=False
            )
            assert answer.status_code == 404, path
        bulk = await signed.beta.post(
            "/ui/jobs/bulk", data={"csrf": token, "action": "pause", "ids": job_id}, follow_redirects=False
        )
        assert bulk.status_code == 409
        job = (await signed.alpha.get(f"/jobs/{job_id}", headers=alpha_headers)).json()
        assert job["paused"] is False
        status = (await signed.alpha.get(f"/runs/{run_id}", headers=alpha_headers)).json()["status"]
        assert status == "pending"

    async def test_lists_show_only_the_own_namespace(self, signed: Signed) -> None:
        """Beta's jobs and runs pages never mention alpha's job, whatever the filters."""
        alpha_headers = {"Authorization": f"Bearer {signed.alpha_key}"}
        job_id = await make_job(signed.alpha, "alpha-only", alpha_headers)
        await signed.alpha.post(f"/jobs/{job_id}/trigger", headers=alpha_headers)
        assert "alpha-only" in (await signed.alpha.get("/ui/jobs")).text
        assert "alpha-only" in (await signed.alpha.get("/ui/runs")).text
        for path in ("/ui/jobs", "/ui/jobs?q=alpha", "/ui/runs", f"/ui/runs?job_id={job_id}"):
            page = await signed.beta.get(path)
            assert page.status_code == 200
            assert "alpha-only" not in page.text
            assert "data-run=" not in page.text
            assert 'name="ids"' not in page.text


class TestActions:
    """The console's actions do what the API's routes do."""

    async def test_pause_with_a_note_then_resume(self, client: AsyncTestClient[Any]) -> None:
        """Pausing sets paused and next_run_at null and shows the note; resuming clears both."""
        job_id = await make_job(client, "noted")
        first_slot = (await client.get(f"/jobs/{job_id}")).json()["next_run_at"]
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}")).text)
        paused = await client.post(f"/ui/jobs/{job_id}/pause", data={"csrf": token, "note": "deploy freeze"})
        assert paused.status_code == 200
        assert "deploy freeze" in paused.text
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert job["paused"] is True
        assert job["next_run_at"] is None
        assert "deploy freeze" in (await client.get("/ui/jobs?state=paused")).text
        await client.post(f"/ui/jobs/{job_id}/resume", data={"csrf": token})
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert job["paused"] is False
        # Resumed from the next slot after now: for an hourly job made seconds ago, still its first.
        assert job["next_run_at"] == first_slot
        assert "deploy freeze" not in (await client.get(f"/ui/jobs/{job_id}")).text

    async def test_a_stale_edit_says_so_and_saves_nothing(self, client: AsyncTestClient[Any]) -> None:
        """An edit made from version 1 after someone saved version 2 is refused with a clear message."""
        job_id = await make_job(client, "contested", description="first")
        page = (await client.get(f"/ui/jobs/{job_id}")).text
        token = csrf_of(page)
        await client.patch(f"/jobs/{job_id}", json={"description": "someone else"})
        form = {"csrf": token, "version": "1", "description": "mine", "schedule": "@every 1h",
                "timezone": "UTC", "timeout_s": "30", "overlap": "skip", "labels": "",
                "action": '{"type": "log"}'}  # fmt: skip
        answer = await client.post(f"/ui/jobs/{job_id}/edit", data=form)
        assert answer.status_code == 412
        assert "Someone changed this job" in answer.text
        assert (await client.get(f"/jobs/{job_id}")).json()["description"] == "someone else"
        fresh = await client.post(f"/ui/jobs/{job_id}/edit", data=form | {"version": "2"})
        assert fresh.status_code == 200
        assert (await client.get(f"/jobs/{job_id}")).json()["description"] == "mine"

    async def test_an_invalid_edit_names_the_problem(self, client: AsyncTestClient[Any]) -> None:
        """A schedule that never fires is refused with the API's words."""
        job_id = await make_job(client, "strict")
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}")).text)
        form = {"csrf": token, "version": "1", "description": "", "schedule": "0 0 30 2 *", "timezone": "UTC",
                "timeout_s": "30", "overlap": "skip", "labels": "", "action": '{"type": "log"}'}  # fmt: skip
        answer = await client.post(f"/ui/jobs/{job_id}/edit", data=form)
        assert answer.status_code == 422
        assert "never fires" in answer.text

    async def test_bulk_pause_and_run_now(self, client: AsyncTestClient[Any]) -> None:
        """Selecting three jobs and pausing pauses exactly those; run now records a manual run each."""
        ids = [await make_job(client, f"bulk-{n}") for n in range(4)]
        token = csrf_of((await client.get("/ui/jobs")).text)
        await client.post("/ui/jobs/bulk", data={"csrf": token, "action": "pause", "ids": ids[:3]})
        states = [(await client.get(f"/jobs/{job_id}")).json()["paused"] for job_id in ids]
        assert states == [True, True, True, False]
        await client.post("/ui/jobs/bulk", data={"csrf": token, "action": "trigger", "ids": ids[2:]})
        for job_id in ids[2:]:
            runs = (await client.get(f"/jobs/{job_id}/runs")).json()["items"]
            assert [run["trigger"] for run in runs] == ["manual"]

    async def test_delete_needs_the_confirmation(self, client: AsyncTestClient[Any]) -> None:
        """Without the box ticked the job stays; with it the job is gone."""
        job_id = await make_job(client, "doomed")
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}")).text)
        refused = await client.post(f"/ui/jobs/{job_id}/delete", data={"csrf": token})
        assert refused.status_code == 422
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200
        await client.post(f"/ui/jobs/{job_id}/delete", data={"csrf": token, "confirm": "yes"})
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404

    async def test_cancel_then_retry_a_run(self, client: AsyncTestClient[Any]) -> None:
        """A pending run is cancelled from its page, then retried as attempt 2 in the same slot."""
        job_id = await make_job(client, "flaky")
        run = (await client.post(f"/jobs/{job_id}/trigger")).json()
        token = csrf_of((await client.get(f"/ui/runs/{run['id']}")).text)
        cancelled = await client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf": token})
        assert cancelled.status_code == 200
        assert (await client.get(f"/runs/{run['id']}")).json()["status"] == "cancelled"
        retried = await client.post(f"/ui/runs/{run['id']}/retry", data={"csrf": token})
        assert retried.status_code == 200
        runs = (await client.get(f"/jobs/{job_id}/runs")).json()["items"]
        assert [(r["attempt"], r["trigger"]) for r in runs] == [(2, "retry"), (1, "manual")]
        assert "attempt 2" in retried.text


class TestPages:
    """What the pages show."""

    async def test_nul_characters_are_refused_not_stored(self, client: AsyncTestClient[Any]) -> None:
        """A NUL in a search is dropped; in a form it is a 422 and nothing changes."""
        job_id = await make_job(client, "plain")
        assert (await client.get("/ui/jobs?q=pl%00ain&label=a%00:b")).status_code == 200
        odd_cursor = await client.get("/ui/jobs?cursor=" + encode_cursor("a\x00b"))
        assert odd_cursor.status_code == 200
        assert "no longer valid" in odd_cursor.text
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}")).text)
        answer = await client.post(f"/ui/jobs/{job_id}/pause", data={"csrf": token, "note": "a\x00b"})
        assert answer.status_code == 422
        assert (await client.get(f"/jobs/{job_id}")).json()["paused"] is False

    async def test_jobs_page_filters_and_pages(self, client: AsyncTestClient[Any]) -> None:
        """Prefix search, label filter and keyset paging over 55 jobs."""
        for n in range(55):
            await make_job(client, f"etl-{n:02d}", labels={"team": "data" if n % 2 else "web"})
        await make_job(client, "payroll")
        first = await client.get("/ui/jobs?q=etl-")
        assert first.text.count('name="ids"') == 50
        assert "payroll" not in first.text
        next_link = re.search(r'href="(/ui/jobs\?[^"]*cursor=[^"]+)"', first.text)
        assert next_link
        second = await client.get(next_link.group(1).replace("&amp;", "&"))
        assert second.text.count('name="ids"') == 5
        assert "etl-54" in second.text
        labelled = await client.get("/ui/jobs?label=team:web")
        assert labelled.text.count('name="ids"') == 28

    async def test_the_failing_filter_shows_jobs_whose_last_run_did_not_succeed(
        self, client: AsyncTestClient[Any], sql: Any
    ) -> None:
        """Only jobs whose last run ended other than succeeded; never-run jobs are not failing."""
        for name in ("broken", "healthy", "fresh"):
            await make_job(client, name)
        sql("UPDATE jobs SET last_run_status = 'failed' WHERE name = 'broken'")
        sql("UPDATE jobs SET last_run_status = 'succeeded' WHERE name = 'healthy'")
        page = (await client.get("/ui/jobs?state=failing")).text
        assert page.count('name="ids"') == 1
        assert "broken" in page
        assert "healthy" not in page
        assert "fresh" not in page

    async def test_job_page_shows_schedule_words_and_dst_notes(self, client: AsyncTestClient[Any]) -> None:
        """The job page shows the schedule in words and its next fires in the job's zone."""
        job_id = await make_job(client, "nightly", schedule="30 2 * * *", timezone="America/New_York")
        page = (await client.get(f"/ui/jobs/{job_id}")).text
        assert "at 02:30 every day" in page
        assert page.count("02:30:00 E") >= 9  # EST or EDT, in the job's zone
