"""The console's job pages in-process on a real PostgreSQL: the job form, counts, sorting, per-slot outcomes.

The same pages in a real browser: tests/acceptance/test_ui_jobs_browser.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar.testing import AsyncTestClient

from scheduler.ids import uuid7
from tests.integration.test_ui import csrf_of, make_job

Sql = Any

EVERY_FIELD = {
    "name": "nightly-export",
    "description": "Export yesterday's orders",
    "paused": "yes",
    "schedule": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "start_at": "2030-01-01T00:00:00Z",
    "end_at": "2031-01-01T00:00:00+01:00",
    "action.type": "http",
    "action.method": "PUT",
    "action.url": "https://example.com/hooks/export",
    "action.headers": "X-Team: billing\nX-Trace: on",
    "action.body_kind": "json",
    "action.body": '{"kind": "nightly", "days": 1}',
    "action.success_codes": "2xx,304",
    "action.follow_redirects": "yes",
    "action.payload": "{}",
    "timeout_s": "120",
    "retry.max_attempts": "5",
    "retry.min_backoff_s": "2",
    "retry.max_backoff_s": "600",
    "misfire.policy": "all",
    "misfire.grace_s": "30",
    "misfire.window_s": "7200",
    "overlap": "queue",
    "labels": "team=billing\nservice = export",
}


def errors_of(html: str) -> dict[str, str]:
    """The form's errors, by the input they stand beside."""
    return dict(re.findall(r'data-error-for="([^"]+)">([^<]*)<', html))


async def form_token(client: AsyncTestClient[Any], path: str = "/ui/jobs/new") -> str:
    """The CSRF token of a console form."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


class TestCreate:
    """The create form: every field, the API's rules, errors beside their inputs."""

    async def test_the_form_creates_a_job_with_every_field(self, client: AsyncTestClient[Any]) -> None:
        """Each input lands in its API field."""
        token = await form_token(client)
        answer = await client.post("/ui/jobs/new", data=EVERY_FIELD | {"csrf": token}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        job_id = answer.headers["location"].split("/")[3].split("?")[0]
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert {
            k: job[k] for k in ("name", "description", "paused", "schedule", "timezone", "timeout_s")
        } == {
            "name": "nightly-export",
            "description": "Export yesterday's orders",
            "paused": True,
            "schedule": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "timeout_s": 120,
        }
        assert job["start_at"] == "2030-01-01T00:00:00Z"
        assert job["end_at"] == "2030-12-31T23:00:00Z"
        assert job["action"] == {
            "type": "http",
            "method": "PUT",
            "url": "https://example.com/hooks/export",
            "headers": {"X-Team": "billing", "X-Trace": "on"},
            "body": {"kind": "nightly", "days": 1},
            "success_codes": "2xx,304",
            "follow_redirects": True,
        }
        assert job["retry"] == {"max_attempts": 5, "min_backoff_s": 2.0, "max_backoff_s": 600.0}
        assert job["misfire"] == {"policy": "all", "grace_s": 30, "window_s": 7200}
        assert job["overlap"] == "queue"
        assert job["labels"] == {"team": "billing", "service": "export"}
        assert "Created." in (await client.get(answer.headers["location"])).text

    async def test_a_log_job_with_a_text_body_left_empty(self, client: AsyncTestClient[Any]) -> None:
        """A log action takes its payload; the HTTP inputs it hides are ignored."""
        token = await form_token(client)
        form = EVERY_FIELD | {"csrf": token, "name": "say-hello", "paused": "no", "action.type": "log",
                              "action.payload": '{"msg": "hello"}', "start_at": "", "end_at": ""}  # fmt: skip
        answer = await client.post("/ui/jobs/new", data=form, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        job = (await client.get("/jobs/by-name/say-hello")).json()
        assert job["action"] == {"type": "log", "payload": {"msg": "hello"}}
        assert job["start_at"] is None
        assert job["next_run_at"] is not None

    async def test_every_wrong_input_is_named_beside_it_and_the_form_stays_filled(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """Several mistakes at once: each gets its message, nothing is created, the values stay."""
        token = await form_token(client)
        form = EVERY_FIELD | {
            "csrf": token,
            "name": "bad name!",
            "start_at": "2030-01-01 09:00",
            "retry.max_attempts": "0",
            "misfire.grace_s": "soon",
            "labels": "team",
            "action.body": "{not json",
        }
        answer = await client.post("/ui/jobs/new", data=form)
        assert answer.status_code == 422
        errors = errors_of(answer.text)
        assert set(errors) == {
            "name",
            "start_at",
            "retry.max_attempts",
            "misfire.grace_s",
            "labels",
            "action.body",
        }
        assert "A-Z a-z 0-9" in errors["name"]
        assert errors["retry.max_attempts"] == "must be at least 1"
        assert errors["misfire.grace_s"] == "must be a whole number"
        assert "key=value" in errors["labels"]
        assert 'value="bad name!"' in answer.text
        assert 'value="https://example.com/hooks/export"' in answer.text
        assert "{not json</textarea>" in answer.text
        assert (await client.get("/jobs")).json()["items"] == []

    async def test_the_operations_refusals_land_beside_their_inputs(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """A schedule that never fires, an unknown zone, backoffs the wrong way round: the API's words."""
        token = await form_token(client)
        form = EVERY_FIELD | {"csrf": token, "schedule": "0 0 30 2 *", "retry.min_backoff_s": "900"}
        answer = await client.post("/ui/jobs/new", data=form)
        assert answer.status_code == 422
        errors = errors_of(answer.text)
        assert "retry.min_backoff_s" in errors
        assert errors["retry.min_backoff_s"] == "must not exceed retry.max_backoff_s"
        zone = await client.post(
            "/ui/jobs/new", data=EVERY_FIELD | {"csrf": token, "timezone": "Mars/Olympus"}
        )
        assert zone.status_code == 422
        assert "unknown IANA time zone" in errors_of(zone.text)["timezone"]
        never = await client.post(
            "/ui/jobs/new", data=EVERY_FIELD | {"csrf": token, "schedule": "0 0 30 2 *"}
        )
        assert "never fires" in errors_of(never.text)["schedule"]

    async def test_a_taken_name_is_refused_beside_the_name(self, client: AsyncTestClient[Any]) -> None:
        """409, as the API answers, with the message at the name input."""
        await make_job(client, "nightly-export")
        token = await form_token(client)
        answer = await client.post("/ui/jobs/new", data=EVERY_FIELD | {"csrf": token})
        assert answer.status_code == 409
        assert errors_of(answer.text) == {"name": "already exists"}

    async def test_the_form_needs_its_csrf_token(self, client: AsyncTestClient[Any]) -> None:
        """Without the token: 403 and no job."""
        answer = await client.post("/ui/jobs/new", data=EVERY_FIELD)
        assert answer.status_code == 403
        assert (await client.get("/jobs")).json()["items"] == []


class TestCloneAndEdit:
    """Clone fills the create form from a job; edit shows and saves every field."""

    async def test_clone_fills_the_form_under_a_new_name(self, client: AsyncTestClient[Any]) -> None:
        """The clone form holds the job's fields and name-copy; saving makes a second, equal job."""
        token = await form_token(client)
        await client.post("/ui/jobs/new", data=EVERY_FIELD | {"csrf": token})
        original = (await client.get("/jobs/by-name/nightly-export")).json()
        page = await client.get(f"/ui/jobs/new?from={original['id']}")
        assert page.status_code == 200
        assert 'value="nightly-export-copy"' in page.text
        assert 'value="30 2 * * *"' in page.text
        form = dict(re.findall(r'<input type="(?:text|number)" name="([^"]+)" value="([^"]*)"', page.text))
        assert form["retry.max_attempts"] == "5"
        assert form["misfire.window_s"] == "7200"
        post = EVERY_FIELD | {"csrf": token, "name": "nightly-export-copy", "clone_of": original["id"]}
        answer = await client.post("/ui/jobs/new", data=post, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        copy = (await client.get("/jobs/by-name/nightly-export-copy")).json()
        same = (
            "schedule",
            "timezone",
            "action",
            "retry",
            "misfire",
            "overlap",
            "labels",
            "start_at",
            "end_at",
        )
        assert {k: copy[k] for k in same} == {k: original[k] for k in same}
        assert copy["id"] != original["id"]

    async def test_cloning_a_job_of_nobody_is_not_found(self, client: AsyncTestClient[Any]) -> None:
        """An unknown id to clone is the console's 404."""
        assert (await client.get(f"/ui/jobs/new?from={uuid7()}")).status_code == 404
        assert (await client.get("/ui/jobs/new?from=nope")).status_code == 404

    async def test_the_edit_form_changes_every_field(self, client: AsyncTestClient[Any]) -> None:
        """Retry, misfire, start and end (missing from the old form) and the rest are saved."""
        job_id = await make_job(client, "editable")
        page = await client.get(f"/ui/jobs/{job_id}/edit")
        assert page.status_code == 200
        assert 'name="retry.max_attempts"' in page.text
        assert 'name="misfire.policy"' in page.text
        form = EVERY_FIELD | {"csrf": csrf_of(page.text), "version": "1", "name": "edited"}
        answer = await client.post(f"/ui/jobs/{job_id}/edit", data=form, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert job["name"] == "edited"
        assert job["version"] == 2
        assert job["retry"]["max_attempts"] == 5
        assert job["misfire"] == {"policy": "all", "grace_s": 30, "window_s": 7200}
        assert job["start_at"] == "2030-01-01T00:00:00Z"
        assert job["paused"] is True
        again = await client.get(f"/ui/jobs/{job_id}/edit")
        assert 'name="version" value="2"' in again.text
        assert "X-Team: billing" in again.text

    async def test_a_stale_edit_keeps_the_values_and_offers_the_new_version(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """412: the form stays filled with what was typed and now carries the current version."""
        job_id = await make_job(client, "contested")
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}/edit")).text)
        await client.patch(f"/jobs/{job_id}", json={"description": "someone else"})
        form = EVERY_FIELD | {"csrf": token, "version": "1", "name": "contested", "description": "mine"}
        answer = await client.post(f"/ui/jobs/{job_id}/edit", data=form)
        assert answer.status_code == 412
        assert "Someone changed this job" in answer.text
        assert 'value="mine"' in answer.text
        assert 'name="version" value="2"' in answer.text
        assert (await client.get(f"/jobs/{job_id}")).json()["description"] == "someone else"

    async def test_the_edit_refusal_names_the_field(self, client: AsyncTestClient[Any]) -> None:
        """Bad values are shown beside their inputs and nothing changes."""
        job_id = await make_job(client, "strict")
        token = csrf_of((await client.get(f"/ui/jobs/{job_id}/edit")).text)
        form = EVERY_FIELD | {
            "csrf": token,
            "version": "1",
            "name": "strict",
            "end_at": "2029-01-01T00:00:00Z",
        }
        answer = await client.post(f"/ui/jobs/{job_id}/edit", data=form)
        assert answer.status_code == 422
        assert set(errors_of(answer.text)) == {"end_at"}
        assert (await client.get(f"/jobs/{job_id}")).json()["version"] == 1


def seed_slot(sql: Sql, job_id: str, slot: datetime, statuses: list[str], *, trigger: str = "schedule",
              late_ms: int = 50, error: str | None = None) -> None:  # fmt: skip
    """Record one slot's attempts: attempt 1 with ``trigger``, the rest retries a minute apart each."""
    for number, status in enumerate(statuses, start=1):
        started = slot + timedelta(milliseconds=late_ms) + timedelta(minutes=number - 1)
        sql(
            "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at,"
            " finished_at, duration_ms, error) VALUES (%s, %s, %s, %s, %s, %s, 'r-1', %s, %s, 12, %s)",
            (uuid7(slot), job_id, slot, trigger if number == 1 else "retry", number, status, started,
             started + timedelta(milliseconds=12), error if status != "succeeded" else None),
        )  # fmt: skip


class TestOutcomesPerSlot:
    """A slot retried four times is one outcome, everywhere on the jobs pages."""

    async def test_the_strip_shows_each_slot_once_as_its_last_attempt_ended(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """Five failed attempts are one red cell; a slot that failed then succeeded is one green cell."""
        job_id = await make_job(client, "flaky")
        now = datetime.now(UTC).replace(microsecond=0)
        seed_slot(sql, job_id, now - timedelta(minutes=30), ["failed"] * 5, trigger="manual", error="boom")
        seed_slot(sql, job_id, now - timedelta(minutes=20), ["failed", "succeeded"])
        seed_slot(sql, job_id, now - timedelta(minutes=10), ["succeeded"])
        page = (await client.get("/ui/jobs")).text
        assert 'data-slots="3"' in page
        assert "last 3 slots: 2 succeeded, 1 failed" in page
        job_page = (await client.get(f"/ui/jobs/{job_id}")).text
        rows = re.findall(r'data-status="([a-z_]+)" data-attempts="(\d+)"', job_page)
        assert rows == [("succeeded", "1"), ("succeeded", "2"), ("failed", "5")]
        assert "boom" in job_page  # the error column

    async def test_p95_lateness_counts_first_attempts_only(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """Retries started minutes after their slot (their backoff) do not make the job look late."""
        job_id = await make_job(client, "retried")
        now = datetime.now(UTC).replace(microsecond=0)
        for minutes in range(1, 6):
            seed_slot(sql, job_id, now - timedelta(minutes=minutes * 10), ["failed", "failed", "succeeded"])
        page = (await client.get("/ui/jobs")).text
        row = page[page.index('data-job="retried"') :]
        p95 = re.search(r'<td class="num">([^<]+)</td>', row)
        assert p95
        assert p95.group(1) == "50 ms"


class TestJobsPage:
    """Counts per state and sorting with keyset pages."""

    async def test_counts_per_state(self, client: AsyncTestClient[Any], sql: Sql) -> None:
        """All, active, paused and failing, within the search."""
        for name in ("etl-a", "etl-b", "etl-c", "web-a"):
            await make_job(client, name)
        await make_job(client, "etl-paused", paused=True)
        sql("UPDATE jobs SET last_run_status = 'failed' WHERE name IN ('etl-b', 'web-a')")
        page = (await client.get("/ui/jobs")).text
        counts = dict(re.findall(r'data-state="(\w+)"[^>]*>\w+ <span class="count">(\d+)</span>', page))
        assert counts == {"all": "5", "active": "4", "paused": "1", "failing": "2"}
        narrowed = (await client.get("/ui/jobs?q=etl-&state=failing")).text
        counts = dict(re.findall(r'data-state="(\w+)"[^>]*>\w+ <span class="count">(\d+)</span>', narrowed))
        assert counts == {"all": "4", "active": "3", "paused": "1", "failing": "1"}
        assert narrowed.count('name="ids"') == 1

    async def test_each_order_pages_through_every_job_once(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """By next run, last run and creation, over 120 jobs with ties and none-values, page after page."""
        base = datetime(2031, 1, 1, tzinfo=UTC)
        for n in range(120):
            await make_job(client, f"job-{n:03d}")
        # Ties (every fifth shares a time), nulls (paused, never run) and distinct times mixed.
        sql("UPDATE jobs SET next_run_at = CASE WHEN right(name, 1) = '7' THEN NULL"
            " ELSE %s + make_interval(mins => (substr(name, 5)::int %% 23)) END,"
            " paused = right(name, 1) = '7',"
            " last_run_id = CASE WHEN right(name, 1) = '3' THEN NULL ELSE gen_random_uuid() END,"
            " last_run_status = CASE WHEN right(name, 1) = '3' THEN NULL ELSE 'succeeded'::run_status END,"
            " last_run_scheduled_for = CASE WHEN right(name, 1) = '3' THEN NULL"
            " ELSE %s - make_interval(mins => (substr(name, 5)::int %% 17)) END,"
            " created_at = %s - make_interval(secs => (substr(name, 5)::int / 5))",
            (base, base, base))  # fmt: skip
        rows = sql("SELECT name, next_run_at, last_run_scheduled_for, created_at FROM jobs")
        far, early = datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)
        expected = {
            "next": [r[0] for r in sorted(rows, key=lambda r: (r[1] or far, r[0]))],
            "last": [
                r[0] for r in sorted(rows, key=lambda r: (-((r[2] or early) - early).total_seconds(), r[0]))
            ],
            "created": [r[0] for r in sorted(rows, key=lambda r: (-(r[3] - early).total_seconds(), r[0]))],
            "name": sorted(r[0] for r in rows),
        }
        for sort, names in expected.items():
            seen: list[str] = []
            link: str | None = f"/ui/jobs?sort={sort}"
            while link:
                page = (await client.get(link.replace("&amp;", "&"))).text
                seen += re.findall(r'<tr data-job="([^"]+)"', page)
                found = re.search(r'href="([^"]+)" rel="next"', page)
                link = found.group(1) if found else None
            assert seen == names, sort

    async def test_a_cursor_of_another_order_starts_over(self, client: AsyncTestClient[Any]) -> None:
        """A next-run cursor used with another sort is not ours: the first page, and a message."""
        for n in range(51):
            await make_job(client, f"job-{n:02d}")
        first = (await client.get("/ui/jobs?sort=next")).text
        found = re.search(r'href="[^"]*cursor=([^"&]+)"', first)
        assert found
        other = await client.get(f"/ui/jobs?sort=created&cursor={found.group(1)}")
        assert other.status_code == 200
        assert "no longer valid" in other.text

    async def test_times_are_relative_with_the_exact_time_on_hover(
        self, client: AsyncTestClient[Any]
    ) -> None:
        """The cell says "in 52 min", its title the exact time in the one format, "2026-… UTC"."""
        job_id = await make_job(client, "hourly", schedule="@every 1h")
        page = (await client.get("/ui/jobs")).text
        cell = re.search(r'<time datetime="([^"]+)" data-when title="([^"]+)">([^<]+)</time>', page)
        assert cell
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cell.group(2))
        assert re.fullmatch(r"in \d+ min|in 1 h", cell.group(3))
        assert UUID(job_id)

    async def test_labels_are_written_key_equals_value(self, client: AsyncTestClient[Any]) -> None:
        """Shown as team=billing and filtered by team=billing (the old team:billing still reads)."""
        await make_job(client, "billed", labels={"team": "billing"})
        await make_job(client, "other", labels={"team": "web"})
        page = (await client.get("/ui/jobs?label=team%3Dbilling")).text
        assert page.count('name="ids"') == 1
        assert "team=billing" in page
        assert "team:billing" not in page
