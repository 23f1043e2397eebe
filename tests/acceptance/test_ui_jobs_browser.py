"""The console's job pages in a real browser: the job form, sorting, DST notes, slots, a phone's width.

The set-up is tests/acceptance/test_ui_browser.py's: a real API process with auth required, Debian's
chromium that may reach only loopback, and a CSP violation fails the test. The December test runs
the app in-process on a clock of its own, served by uvicorn on a free port. Screenshots land beside
the others (console-jobs.png and console-job.png are the README's).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import httpx
import pytest
import uvicorn

from scheduler.api.app import create_app
from scheduler.ids import uuid7
from tests.acceptance.test_ui_browser import TIMEOUT_MS, Console, Sql, seed_history, shot, sign_in
from tests.conftest import (
    OfflinePage,
    Procs,
    create_api_key,
    free_port,
    settings_for,
    start_api,
    wait_for,
)

NARROW = {"width": 360, "height": 780}


@pytest.fixture
def console(procs: Procs, db_url: str) -> Console:
    """The API as a separate process with SCHEDULER_AUTH=required, and keys for alpha and beta."""
    # Playwright's sync API keeps an event loop running on this thread: make the keys on another.
    with ThreadPoolExecutor(1) as pool:
        alpha = pool.submit(asyncio.run, create_api_key(db_url, "alpha")).result()
        beta = pool.submit(asyncio.run, create_api_key(db_url, "beta")).result()
    return Console(start_api(procs, auth="required"), alpha, beta, procs)


@pytest.fixture
def page(offline_page: OfflinePage) -> Iterator[Any]:
    """A wide browser tab that may reach only loopback; it must never break the CSP or fetch elsewhere."""
    tab = offline_page.page
    tab.set_default_timeout(TIMEOUT_MS)
    tab.set_viewport_size({"width": 1280, "height": 860})
    violations: list[str] = []
    tab.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    yield tab
    assert offline_page.refused == [], "the console fetched from outside the service"
    assert violations == [], violations


def fill_form(page: Any, values: dict[str, str]) -> None:
    """Type or choose each value into the job form's input of that name."""
    for name, value in values.items():
        field = page.locator(f'[name="{name}"]')
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


EVERY_FIELD = {
    "name": "invoice-run",
    "description": "Bill the month's usage",
    "paused": "yes",
    "schedule": "0 6 1 * *",
    "timezone": "Europe/Berlin",
    "start_at": "2030-01-01T00:00:00Z",
    "end_at": "2032-01-01T00:00:00Z",
    "action.type": "http",
    "action.method": "PUT",
    "action.url": "https://billing.example/hooks/invoice",
    "action.headers": "X-Team: billing",
    "action.body_kind": "json",
    "action.body": '{"month": "previous"}',
    "action.success_codes": "2xx,409",
    "action.follow_redirects": "yes",
    "timeout_s": "300",
    "retry.max_attempts": "6",
    "retry.min_backoff_s": "5",
    "retry.max_backoff_s": "900",
    "misfire.policy": "all",
    "misfire.grace_s": "60",
    "misfire.window_s": "86400",
    "overlap": "queue",
    "labels": "team=billing\ntier=gold",
}


def no_sideways_scroll(page: Any) -> None:
    """The page is no wider than the window (a table may scroll inside its own box)."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def seed_slot(sql: Sql, job_id: str, slot: datetime, statuses: list[str], trigger: str = "schedule") -> None:
    """Record one slot's attempts, the first with ``trigger`` and the rest retries."""
    for number, status in enumerate(statuses, start=1):
        started = slot + timedelta(milliseconds=60, minutes=number - 1)
        ok = status == "succeeded"
        duration = 3 if ok else 0  # a 3 ms success, 0 ms failures (a refused connection)
        sql(
            "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at,"
            " finished_at, duration_ms, http_status, error) VALUES (%s, %s, %s, %s, %s, %s, 'runner-1:4242',"
            " %s, %s, %s, %s, %s)",
            (uuid7(slot), job_id, slot, trigger if number == 1 else "retry", number, status, started,
             started + timedelta(milliseconds=duration), duration, 200 if ok else 503,
             None if ok else "503 Service Unavailable from billing.example"),
        )  # fmt: skip


class TestTheJobForm:
    """Create, clone and edit a job with every field."""

    def test_create_a_job_with_every_field(self, page: Any, console: Console) -> None:
        """New job, every input filled, Create: the API holds exactly those values."""
        sign_in(page, console)
        page.click("#new-job")
        page.wait_for_url(re.compile(r"/ui/jobs/new$"))
        assert page.locator('[name="action.payload"]').is_hidden()  # http is chosen: the log input hides
        fill_form(page, EVERY_FIELD)
        page.click("#save-job")
        page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}\?done=created"))
        assert "Created." in page.inner_text("main")
        job = console.api("GET", "/jobs/by-name/invoice-run").json()
        assert job["paused"] is True
        assert job["action"] == {
            "type": "http", "method": "PUT", "url": "https://billing.example/hooks/invoice",
            "headers": {"X-Team": "billing"}, "body": {"month": "previous"}, "success_codes": "2xx,409",
            "follow_redirects": True,
        }  # fmt: skip
        assert job["retry"] == {"max_attempts": 6, "min_backoff_s": 5.0, "max_backoff_s": 900.0}
        assert job["misfire"] == {"policy": "all", "grace_s": 60, "window_s": 86400}
        assert (job["start_at"], job["end_at"]) == ("2030-01-01T00:00:00Z", "2032-01-01T00:00:00Z")
        assert (job["timeout_s"], job["overlap"], job["labels"]) == (
            300,
            "queue",
            {"team": "billing", "tier": "gold"},
        )

    def test_wrong_inputs_are_named_beside_them_and_kept(self, page: Any, console: Console) -> None:
        """Three mistakes: three messages by their inputs, the typed values still there, no job."""
        sign_in(page, console, then="/ui/jobs/new")
        fill_form(page, EVERY_FIELD | {"name": "invoice run", "retry.max_attempts": "0", "labels": "team"})
        page.click("#save-job")
        page.wait_for_selector('[data-error-for="name"]')
        assert page.inner_text('[data-error-for="retry.max_attempts"]') == "must be at least 1"
        assert "key=value" in page.inner_text('[data-error-for="labels"]')
        assert page.input_value('[name="name"]') == "invoice run"
        assert page.input_value('[name="action.url"]') == "https://billing.example/hooks/invoice"
        assert console.api("GET", "/jobs").json()["items"] == []
        shot(page, "job-form-errors")

    def test_clone_a_job_under_a_new_name(self, page: Any, console: Console) -> None:
        """Clone opens the create form filled from the job with name-copy; saving makes an equal job."""
        job_id = console.job("nightly-export", schedule="30 2 * * *", retry={"max_attempts": 4},
                             labels={"team": "data"}, overlap="allow")  # fmt: skip
        sign_in(page, console, then=f"/ui/jobs/{job_id}")
        page.click("#clone-job")
        page.wait_for_url(re.compile(r"/ui/jobs/new\?from="))
        assert page.input_value('[name="name"]') == "nightly-export-copy"
        assert page.input_value('[name="retry.max_attempts"]') == "4"
        assert page.locator('[name="action.url"]').is_hidden()  # a log job: the http inputs hide
        page.fill('[name="name"]', "nightly-export-eu")
        page.click("#save-job")
        page.wait_for_url(re.compile(r"done=created"))
        original = console.api("GET", f"/jobs/{job_id}").json()
        copy = console.api("GET", "/jobs/by-name/nightly-export-eu").json()
        same = ("schedule", "timezone", "action", "retry", "misfire", "overlap", "labels", "timeout_s")
        assert {k: copy[k] for k in same} == {k: original[k] for k in same}

    def test_edit_every_field(self, page: Any, console: Console) -> None:
        """The edit form shows retry, misfire, start and end; changing the action's kind shows its inputs."""
        job_id = console.job("warehouse-vacuum")
        sign_in(page, console, then=f"/ui/jobs/{job_id}")
        page.click("#edit-job")
        page.wait_for_url(re.compile(r"/edit$"))
        assert page.input_value('[name="retry.max_attempts"]') == "3"
        assert page.input_value('[name="misfire.policy"]') == "once"
        assert page.locator('[name="action.url"]').is_hidden()
        page.select_option('[name="action.type"]', "http")
        assert page.locator('[name="action.url"]').is_visible()
        fill_form(page, EVERY_FIELD | {"name": "warehouse-vacuum", "paused": "no"})
        page.click("#save-job")
        page.wait_for_url(re.compile(r"done=saved"))
        job = console.api("GET", f"/jobs/{job_id}").json()
        assert job["version"] == 2
        assert job["action"]["url"] == "https://billing.example/hooks/invoice"
        assert job["misfire"] == {"policy": "all", "grace_s": 60, "window_s": 86400}
        assert job["retry"]["max_attempts"] == 6
        assert job["start_at"] == "2030-01-01T00:00:00Z"


class TestTheJobsPage:
    """Counts per state, sorting, outcomes per slot, relative times."""

    def test_counts_and_sorting_by_next_run(self, page: Any, console: Console, sql: Sql) -> None:
        """The tabs count each state; the Next run header orders soonest first, paused last."""
        for name, every in (("c-slow", "@every 3h"), ("a-soon", "@every 10m"), ("b-mid", "@every 1h")):
            console.job(name, schedule=every)
        console.job("d-paused", paused=True)
        sql("UPDATE jobs SET last_run_status = 'failed' WHERE name = 'b-mid'")
        sign_in(page, console)
        counts = {
            tab.get_attribute("data-state"): tab.locator(".count").inner_text()
            for tab in page.locator("nav.tabs a").all()
        }
        assert counts == {"all": "4", "active": "3", "paused": "1", "failing": "1"}
        page.click("th a[data-sort=next]")
        page.wait_for_url(re.compile(r"sort=next"))
        order = page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")
        assert order == ["a-soon", "b-mid", "c-slow", "d-paused"]
        relative = page.locator("tr[data-job=a-soon] time[data-when]").first
        assert re.fullmatch(r"in \d+ min", relative.inner_text())
        title = relative.get_attribute("title") or ""
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", title)
        assert "yours: " in title
        page.click("nav.tabs a[data-state=failing]")
        page.wait_for_url(re.compile(r"state=failing"))
        assert page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)") == ["b-mid"]

    def test_outcomes_per_slot(self, page: Any, console: Console, sql: Sql) -> None:
        """A manual run failing five times is one red cell and one bar; a retried success is one green."""
        job_id = console.job("billing-sync", schedule="*/15 * * * *")
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        seed_slot(sql, job_id, now - timedelta(minutes=45), ["succeeded"])
        seed_slot(sql, job_id, now - timedelta(minutes=30), ["failed"] * 5, trigger="manual")
        seed_slot(sql, job_id, now - timedelta(minutes=15), ["failed", "succeeded"])
        sign_in(page, console)
        strip = page.locator("tr[data-job=billing-sync] svg.strip")
        assert strip.get_attribute("data-slots") == "3"
        assert strip.get_attribute("aria-label") == "last 3 slots: 2 succeeded, 1 failed"
        page.click("text=billing-sync")
        page.wait_for_selector("svg.chart")
        assert page.locator("svg.chart rect").count() == 3
        rows = page.locator("tr[data-run]")
        assert rows.evaluate_all("rows => rows.map(r => [r.dataset.status, r.dataset.attempts])") == [
            ["succeeded", "2"], ["failed", "5"], ["succeeded", "1"],
        ]  # fmt: skip
        assert "503 Service Unavailable" in page.inner_text("tr[data-attempts='5'] td.error")
        # The 0 ms failures still show: a bar of the minimum height, not a flat line.
        failed_bar = page.locator("svg.chart rect.s-failed")
        assert float(failed_bar.get_attribute("height") or 0) >= 3

    def test_the_readme_pictures(self, page: Any, console: Console, sql: Sql) -> None:
        """A namespace with some history, for the README's jobs page and job page screenshots."""
        jobs = [("billing-invoices", "*/15 * * * *", "Europe/Berlin", "billing"),
                ("billing-report", "0 9 * * MON", "Europe/Berlin", "billing"),
                ("crm-sync", "*/5 * * * *", "UTC", "crm"),
                ("etl-orders", "30 2 * * *", "America/New_York", "data"),
                ("etl-users", "@every 1h", "UTC", "data")]  # fmt: skip
        ids = {}
        for shift, (name, schedule, zone, team) in enumerate(jobs):
            ids[name] = console.job(name, schedule=schedule, timezone=zone, labels={"team": team},
                                    description="Nightly export of orders to the warehouse"
                                    if name == "etl-orders" else "")  # fmt: skip
            seed_history(sql, ids[name], 50 if name != "crm-sync" else 12, shift * 3)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        seed_slot(sql, ids["etl-orders"], now - timedelta(seconds=30), ["failed", "failed", "succeeded"])
        console.job("warehouse-vacuum", schedule="30 2 * * *", timezone="America/New_York", paused=True)
        sql("UPDATE jobs SET pause_note = 'warehouse migration until Friday' WHERE name = 'warehouse-vacuum'")
        sign_in(page, console)
        page.wait_for_selector("tr[data-job=warehouse-vacuum]")
        shot(page, "jobs")
        page.goto(f"{console.url}/ui/jobs/{ids['etl-orders']}")
        page.wait_for_selector("#clock-changes")
        shot(page, "job")
        page.set_viewport_size(NARROW)
        page.goto(f"{console.url}/ui/jobs")
        shot(page, "jobs-narrow")
        page.goto(f"{console.url}/ui/jobs/{ids['etl-orders']}")
        shot(page, "job-narrow")


class TestNarrowLayout:
    """From a phone's width up the page never scrolls sideways."""

    def test_every_jobs_page_fits_360_px(self, page: Any, console: Console, sql: Sql) -> None:
        """Jobs, one job, the form and its errors fit; the wide tables scroll inside their own box."""
        name = "a-job-with-a-rather-long-name-for-a-phone-screen-to-hold"
        job_id = console.job(
            name, schedule="*/15 * * * *", labels={"team": "billing", "owner": "someone-else"}
        )
        seed_history(sql, job_id)
        page.set_viewport_size(NARROW)
        sign_in(page, console)
        for path in ("/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/edit", "/ui/jobs/new"):
            page.goto(f"{console.url}{path}")
            no_sideways_scroll(page)
        page.click("#save-job")  # an empty form: errors beside every required input
        page.wait_for_selector('[data-error-for="name"]')
        no_sideways_scroll(page)
        page.goto(f"{console.url}/ui/jobs")
        table = page.locator("#jobs-live")
        assert table.evaluate("box => box.scrollWidth > box.clientWidth")  # the table scrolls in its box


# ------------------------------------------------------------------------ a December clock


class ClockedApp:
    """The API in-process on a clock of its own, served by uvicorn on 127.0.0.1."""

    def __init__(self, db_url: str, start: datetime) -> None:
        """Make the app; its clock reads ``start`` plus the real time passed since."""
        began = time.monotonic()
        app = create_app(
            settings_for(db_url), clock=lambda: start + timedelta(seconds=time.monotonic() - began)
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        """Serve until the block ends."""
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=30, what="the in-process API to start")
        return self

    def __exit__(self, *_: object) -> None:
        """Stop serving."""
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def december(db_url: str) -> Iterator[ClockedApp]:
    """The console (auth off) on 3 December 2026 at noon UTC."""
    with ClockedApp(db_url, datetime(2026, 12, 3, 12, tzinfo=UTC)) as app:
        yield app


class TestDaylightSaving:
    """DST notes are looked up a year ahead."""

    def test_a_daily_job_in_december_shows_the_march_change(self, page: Any, december: ClockedApp) -> None:
        """02:30 in Berlin: nothing in the next ten fires, the March gap and the October repeat below."""
        made = httpx.post(f"{december.url}/jobs", timeout=10, json={
            "name": "nightly-berlin", "schedule": "30 2 * * *", "timezone": "Europe/Berlin",
            "action": {"type": "log"},
        })  # fmt: skip
        assert made.status_code == 201, made.text
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{december.url}/ui/jobs/{made.json()['id']}")
        assert page.locator("table.fires tr.dst").count() == 0  # the next ten fires are all in December
        changes = page.locator("ul.changes li")
        assert changes.count() == 2
        march = changes.nth(0).inner_text()
        assert "Sunday 28 March 2027, 02:00 CET: clocks go forward 1 h, to 03:00 CEST" in march
        assert "02:30 does not exist on 28 March: fires at 03:00 CEST" in march
        assert "02:30 happens twice on 31 October" in changes.nth(1).inner_text()
        shot(page, "job-dst")
