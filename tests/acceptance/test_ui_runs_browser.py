"""The console's runs pages in a real browser, from a phone's width up.

Runs by job name, a slot's attempts in order, an every-second job folded, the run page with the
masked request and the response headers, and both pages at 360 px.

Same setting as tests/acceptance/test_ui_browser.py (whose fixtures these tests use): Debian's
chromium, a real API process with auth required, real runners, a page that may reach only loopback
and must never break the CSP. Screenshots land beside theirs (console-runs.png, console-run.png ...).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from scheduler.ids import uuid7
from tests.acceptance import test_ui_browser as ui
from tests.acceptance.test_ui_browser import Console, Sql, shot, sign_in
from tests.conftest import Receiver, wait_for

# The fixtures of the console's browser tests: an API process with auth required, an offline tab.
console = ui.console
page = ui.page

SECRET = "tok-9f8e7d6c5b4a"  # noqa: S105 - the value that must never reach the page


def run_id_at(slot: datetime, order: int) -> UUID:
    """A UUIDv7 of the slot's millisecond whose place among that millisecond's ids is ``order``."""
    base = uuid7(slot).int & ~((1 << 62) - 1) & ~(0xFFF << 64)
    return UUID(int=base | order)


def insert_run(sql: Sql, job_id: str, slot: datetime, attempt: int, status: str, **more: Any) -> None:
    """Record a finished attempt of a slot straight into the runs table."""
    started = slot + timedelta(milliseconds=40 + attempt * 1500)
    sql(
        "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at,"
        " finished_at, duration_ms, http_status, error) VALUES (%s, %s, %s, %s, %s, %s, 'runner-1', %s, %s,"
        " 120, %s, %s)",
        (more.get("run_id", uuid7(slot)), job_id, slot,
         more.get("trigger", "schedule" if attempt == 1 else "retry"), attempt, status, started,
         started + timedelta(milliseconds=120), 200 if status == "succeeded" else 503,
         None if status == "succeeded" else "HTTP 503 is not in success_codes '2xx'"),
    )  # fmt: skip


def rows(page: Any) -> list[dict[str, Any]]:
    """The slot rows of the runs page: job, status, slot and attempt numbers, in the order shown."""
    return list(
        page.locator("tr[data-run]").evaluate_all(
            "rows => rows.map(r => ({job: r.dataset.job, status: r.dataset.status, slot: r.dataset.slot,"
            " attempts: [...r.querySelectorAll('[data-attempt]')].map(a => Number(a.dataset.attempt))}))"
        )
    )


def header_table(page: Any, table: str) -> dict[str, str]:
    """A headers table of the run page, names in lower case."""
    return dict(
        page.locator(f"{table} tr").evaluate_all(
            "rows => rows.map(r => [r.querySelector('th').textContent.toLowerCase(),"
            " r.querySelector('td').textContent])"
        )
    )


def fits(page: Any, width: int) -> None:
    """The page does not scroll sideways at ``width`` px (a wide table scrolls inside its own box)."""
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow} px wide in a {width} px window"


class TestRunsByJobName:
    """The job filter takes a name, and keeps only that job's slots."""

    def test_a_name_narrows_the_runs_to_that_job(self, page: Any, console: Console, sql: Sql) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        for name, minutes in (("billing-report", (3, 9)), ("crm-sync", (4, 6, 8))):
            job_id = console.job(name)
            for minute in minutes:
                insert_run(sql, job_id, now - timedelta(minutes=minute), 1, "succeeded")
        sign_in(page, console, then="/ui/runs")
        assert sorted({row["job"] for row in rows(page)}) == ["billing-report", "crm-sync"]
        page.fill("input[name=job]", "crm-sync")
        page.click("form[role=search] button[type=submit]")
        page.wait_for_url(re.compile(r"job=crm-sync"))
        assert [row["job"] for row in rows(page)] == ["crm-sync"] * 3
        assert "crm-sync" in page.inner_text("h1")
        page.fill("input[name=job]", "no-such-job")
        page.click("form[role=search] button[type=submit]")
        page.wait_for_url(re.compile(r"job=no-such-job"))
        assert "No job is named 'no-such-job'" in page.inner_text("[role=alert]")
        assert rows(page) == []


class TestAttemptsUnderTheirSlot:
    """A slot's attempts are one row, in attempt order, whatever order their ids sort in."""

    def test_five_attempts_show_as_one_slot_in_order(self, page: Any, console: Console, sql: Sql) -> None:
        job_id = console.job("charge-cards")
        slot = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        # Their ids sort 2, 4, 1, 3, 5 (newest first), the order a listing by id would show them in.
        for attempt, order in ((2, 5), (4, 4), (1, 3), (3, 2), (5, 1)):
            status = "succeeded" if attempt == 5 else "failed"
            insert_run(sql, job_id, slot, attempt, status, run_id=run_id_at(slot, order))
        listed = console.api("GET", "/runs?job_name=charge-cards").json()["items"]
        assert [run["attempt"] for run in listed] == [2, 4, 1, 3, 5]
        sign_in(page, console, then="/ui/runs?job=charge-cards")
        assert [(row["status"], row["attempts"]) for row in rows(page)] == [("succeeded", [1, 2, 3, 4, 5])]
        page.click("tr[data-run] [data-attempt='3']")
        page.wait_for_selector("ol.chain li[aria-current]")
        chain = page.locator("ol.chain li").evaluate_all("items => items.map(i => Number(i.dataset.attempt))")
        assert chain == [1, 2, 3, 4, 5]
        assert page.get_attribute("ol.chain li[aria-current]", "data-attempt") == "3"


class TestABusyJob:
    """A job firing every second folds into one row per page and leaves room for the others."""

    def test_an_every_second_job_does_not_drown_the_rest(self, page: Any, console: Console, sql: Sql) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        busy = console.job("heartbeat-ping", schedule="* * * * * *")
        for second in range(1, 241):
            insert_run(
                sql, busy, now - timedelta(seconds=second), 1, "failed" if second % 60 == 0 else "succeeded"
            )
        calm = {name: console.job(name) for name in ("nightly-export", "orders-sync", "weekly-report")}
        for number, job_id in enumerate(calm.values()):  # a success, a retried success, three failures
            for attempt in range(1, number + 2):
                status = "succeeded" if number < 2 and attempt == number + 1 else "failed"
                insert_run(sql, job_id, now - timedelta(seconds=50 + number * 70), attempt, status)
        page.set_viewport_size({"width": 1280, "height": 800})
        sign_in(page, console, then="/ui/runs")
        shown = [row["job"] for row in rows(page)]
        assert shown.count("heartbeat-ping") == 3
        assert sorted(set(shown) - {"heartbeat-ping"}) == sorted(calm)
        folded = page.locator("tr[data-folded=heartbeat-ping]")
        assert folded.count() == 1
        assert "237 more slots of heartbeat-ping" in folded.inner_text()
        assert "4 not succeeded" in folded.inner_text()
        shot(page, "runs")
        folded.locator("a:has-text('only this job')").click()
        page.wait_for_url(re.compile(r"job=heartbeat-ping"))
        only = rows(page)
        assert {row["job"] for row in only} == {"heartbeat-ping"}
        assert len(only) >= 50
        page.click("a[rel=next]")
        page.wait_for_url(re.compile(r"cursor="))
        older = rows(page)
        assert older
        assert not {row["slot"] for row in only} & {row["slot"] for row in older}  # no slot twice
        assert max(row["slot"] for row in older) < min(row["slot"] for row in only)


class TestWhatARunSent:
    """The run page shows the request as sent, secrets masked, and the response's headers."""

    def test_the_run_page_shows_the_masked_request_and_the_response_headers(
        self, page: Any, console: Console, receiver: Receiver
    ) -> None:
        job_id = console.job(
            "post-invoice",
            action={"type": "http", "method": "POST", "url": f"{receiver.url}/hooks/invoice?api_key={SECRET}",
                    "headers": {"Authorization": f"Bearer {SECRET}", "X-Team": "billing"},
                    "body": {"invoice": 42}},
        )  # fmt: skip
        console.procs.runner()
        run_id = console.api("POST", f"/jobs/{job_id}/trigger").json()["id"]
        wait_for(lambda: console.run_status(run_id) == "succeeded", timeout=20, what="the run to succeed")
        (got,) = receiver.snapshot()
        page.set_viewport_size({"width": 1280, "height": 800})
        sign_in(page, console, then=f"/ui/runs/{run_id}")
        line = page.inner_text("#request-line")
        assert line == f"POST {receiver.url}/hooks/invoice?api_key=[masked]"
        headers = header_table(page, "#request-headers")
        assert headers["authorization"] == "Bearer [masked]"
        assert headers["webhook-signature"] == "[masked]"
        assert headers["x-team"] == "billing"
        assert headers["webhook-id"] == got.headers["webhook-id"]
        assert headers["content-length"] == got.headers["content-length"]
        assert page.inner_text("#request-body") == '{"invoice":42}'
        assert header_table(page, "#response-headers")["content-length"] == "2"
        assert page.inner_text("#run-output") == "ok"
        assert SECRET not in page.content()
        assert got.headers["webhook-signature"] not in page.content()
        # The slot, once: in the job's zone, its UTC time on hover.
        slot_text = page.inner_text("#slot")
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", slot_text)) == 1
        assert "CET" in slot_text or "CEST" in slot_text
        shot(page, "run")


class TestNarrowWindow:
    """Both runs pages fit a phone's width: nothing scrolls the page sideways."""

    def test_the_runs_pages_fit_360_px(self, page: Any, console: Console, sql: Sql) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        job_id = console.job("a-rather-long-job-name-for-a-phone", schedule="*/5 * * * *")
        for minute in range(5, 60, 5):
            for attempt in (1, 2, 3):
                status = "succeeded" if attempt == 3 else "failed"
                insert_run(sql, job_id, now - timedelta(minutes=minute), attempt, status)
        page.set_viewport_size({"width": 360, "height": 780})
        sign_in(page, console, then="/ui/runs")
        assert len(rows(page)) == 3
        fits(page, 360)
        shot(page, "runs-narrow")
        page.click("tr[data-run] td.when a")
        page.wait_for_selector("ol.chain")
        fits(page, 360)
        shot(page, "run-narrow")
