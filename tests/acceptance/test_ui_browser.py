"""The web console in a real browser: Debian's chromium, a real API process with auth required, real runners.

Each test saves a screenshot, console-NAME.png, in `.artifacts/screenshots/` (where CI can keep them);
`SCHEDULER_SCREENSHOT_DIR=docs/img make test` refreshes the README's pictures. Without chromium these
tests skip (saying `apt-get install chromium`), unless SCHEDULER_REQUIRE_BROWSER=1, where they fail (the
`browser` fixture).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.ids import uuid7
from tests.conftest import ROOT, OfflinePage, Procs, Receiver, create_api_key, start_api, wait_for

SHOTS = Path(os.environ.get("SCHEDULER_SCREENSHOT_DIR") or ROOT / ".artifacts" / "screenshots")
TIMEOUT_MS = 20_000
Sql = Callable[..., list[tuple[Any, ...]]]


@dataclass
class Console:
    """A running API (auth required) with two namespaces' keys, and a way to drive it."""

    url: str
    alpha_key: str
    beta_key: str
    procs: Procs

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        """Call the API as alpha (or as the given key)."""
        headers = {"Authorization": f"Bearer {key or self.alpha_key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def job(self, name: str, key: str | None = None, **fields: Any) -> str:
        """Create a job through the API; return its id."""
        body = {"name": name, "schedule": "0 9 * * 1", "timezone": "Europe/Berlin", "action": {"type": "log"}}
        made = self.api("POST", "/jobs", key, json=body | fields)
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def run_status(self, run_id: str) -> str:
        """The run's status as the API tells it."""
        return str(self.api("GET", f"/runs/{run_id}").json()["status"])


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
    """A browser tab that may reach only loopback; it must never break the CSP or fetch elsewhere."""
    tab = offline_page.page
    tab.set_default_timeout(TIMEOUT_MS)
    tab.set_viewport_size({"width": 1360, "height": 860})
    violations: list[str] = []
    tab.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    yield tab
    assert offline_page.refused == [], "the console fetched from outside the service"
    assert violations == [], violations


def sign_in(page: Any, console: Console, key: str | None = None, then: str = "/ui/jobs") -> None:
    """Open a console page, get sent to sign-in, type the key, land where we were going."""
    page.goto(f"{console.url}{then}")
    page.wait_for_url(re.compile(r"/ui/login"))
    page.fill("input[name=key]", key or console.alpha_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(then.partition("?")[0])))


def shot(page: Any, name: str) -> None:
    """Save the page as console-NAME.png in the screenshot folder."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


def seed_history(sql: Sql, job_id: str, count: int = 60, shift: int = 0) -> None:
    """Record a varied hour of finished runs, so the strip and charts have something to show."""
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(count):
        slot = now - timedelta(minutes=count - n)
        status = "failed" if (n + shift) % 17 == 5 else "timed_out" if n == 40 - shift else "succeeded"
        late = timedelta(
            milliseconds=40 + (n * 37 + shift * 11) % (260 + shift * 40) + (900 if n in (22, 23) else 0)
        )
        duration = 80 + (n * 53) % 400
        sql(
            "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at,"
            " finished_at, duration_ms, http_status) VALUES (%s, %s, %s, 'schedule', 1, %s, 'runner-1:4242',"
            " %s, %s, %s, %s)",
            (uuid7(slot), job_id, slot, status, slot + late, slot + late + timedelta(milliseconds=duration),
             duration, 500 if status == "failed" else 200),
        )  # fmt: skip
    sql(
        "UPDATE jobs SET last_run_status = 'succeeded', last_run_scheduled_for = now(), last_run_id = %s"
        " WHERE id = %s",
        (uuid7(now), job_id),
    )


class TestFindingJobs:
    """Signing in and finding jobs among many."""

    def test_sign_in_and_find_a_job_by_name_prefix(self, page: Any, console: Console, sql: Sql) -> None:
        """After sign-in, a name prefix narrows the jobs table to the matching jobs."""
        for shift, name in enumerate(
            ("billing-invoices", "billing-report", "crm-sync", "etl-orders", "etl-users")
        ):
            job_id = console.job(name, labels={"team": name.split("-")[0]}, schedule="*/15 * * * *")
            seed_history(sql, job_id, 50 if name != "crm-sync" else 12, shift * 3)
        console.job("warehouse-vacuum", schedule="30 2 * * *", timezone="America/New_York", paused=True)
        sign_in(page, console)
        page.wait_for_selector("text=warehouse-vacuum")
        shot(page, "jobs")
        page.fill("input[name=q]", "billing-")
        page.click("form[role=search] button[type=submit]")
        page.wait_for_url(re.compile(r"q=billing-"))
        names = page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")
        assert names == ["billing-invoices", "billing-report"]


class TestSteeringJobs:
    """Pause with a note, run now, bulk pause."""

    def test_pause_a_job_with_a_note(self, page: Any, console: Console, sql: Sql) -> None:
        """The note shows on the job page and the API reports the job paused."""
        job_id = console.job("nightly-export", schedule="30 2 * * *", timezone="America/New_York",
                             description="Export yesterday's orders to the warehouse")  # fmt: skip
        seed_history(sql, job_id)
        sign_in(page, console, then=f"/ui/jobs/{job_id}")
        page.fill("input[name=note]", "warehouse migration until Friday")
        page.click("text=Pause")
        page.wait_for_selector("#pause-note")
        assert "warehouse migration until Friday" in page.inner_text("#pause-note")
        job = console.api("GET", f"/jobs/{job_id}").json()
        assert job["paused"] is True
        assert job["next_run_at"] is None
        shot(page, "job")

    def test_run_now_and_see_the_run_appear(self, page: Any, console: Console, receiver: Receiver) -> None:
        """Run now records a manual run; a runner calls the target and the page shows it succeeded."""
        job_id = console.job("ping-target", action={"type": "http", "method": "POST", "url": receiver.url})
        console.procs.runner()
        sign_in(page, console, then=f"/ui/jobs/{job_id}")
        page.click("button:has-text('Run now')")
        page.wait_for_selector("tr[data-run]")
        page.wait_for_selector("tr[data-run][data-status=succeeded]")  # the live refresh brings it
        assert receiver.count() == 1
        runs = console.api("GET", f"/jobs/{job_id}/runs").json()["items"]
        assert [(run["trigger"], run["status"]) for run in runs] == [("manual", "succeeded")]
        assert page.get_attribute("html", "data-live-polling") == "on"

    def test_bulk_pause_three_jobs(self, page: Any, console: Console) -> None:
        """Ticking three of four jobs and pressing Pause pauses exactly those three."""
        ids = {name: console.job(name) for name in ("batch-a", "batch-b", "batch-c", "batch-d")}
        sign_in(page, console)
        for name in ("batch-a", "batch-b", "batch-c"):
            page.check(f"tr[data-job={name}] input[name=ids]")
        page.click("#bulk button[value=pause]")
        page.wait_for_selector("text=Paused.")
        paused = {
            name: console.api("GET", f"/jobs/{job_id}").json()["paused"] for name, job_id in ids.items()
        }
        assert paused == {"batch-a": True, "batch-b": True, "batch-c": True, "batch-d": False}
        assert page.locator("tr[data-job] .badge.paused").count() == 3


class TestSteeringRuns:
    """Retry a failed run, cancel a running one."""

    def test_retry_a_failed_run(self, page: Any, console: Console, receiver: Receiver) -> None:
        """A failed run's Retry starts attempt 2, which succeeds once the target is fixed."""
        receiver.status = 500
        receiver.reply = b'{"error": "database is read-only"}'
        job_id = console.job(
            "charge-cards", action={"type": "http", "method": "POST", "url": receiver.url},
            retry={"max_attempts": 1, "min_backoff_s": 1, "max_backoff_s": 1},
        )  # fmt: skip
        console.procs.runner()
        run_id = console.api("POST", f"/jobs/{job_id}/trigger").json()["id"]
        wait_for(lambda: console.run_status(run_id) == "failed", timeout=20, what="the run to fail")
        receiver.status = 200
        receiver.reply = b'{"charged": 42}'
        sign_in(page, console, then=f"/ui/runs/{run_id}")
        assert "database is read-only" in page.inner_text("#run-output")
        page.click("button:has-text('Retry')")
        page.wait_for_url(re.compile(r"done=retried"))
        page.wait_for_selector("#run-status .s-succeeded")
        assert "attempt 2" in page.inner_text("ol.chain")
        runs = console.api("GET", f"/jobs/{job_id}/runs").json()["items"]
        assert [(run["attempt"], run["status"]) for run in runs] == [(2, "succeeded"), (1, "failed")]
        shot(page, "run")

    def test_cancel_a_running_run(self, page: Any, console: Console, receiver: Receiver) -> None:
        """A run stuck on a slow target is cancelled from its page and its runner lets go."""
        receiver.delay_s = 60
        job_id = console.job("slow-call", action={"type": "http", "method": "POST", "url": receiver.url},
                             timeout_s=120)  # fmt: skip
        console.procs.runner()
        run_id = console.api("POST", f"/jobs/{job_id}/trigger").json()["id"]
        wait_for(lambda: console.run_status(run_id) == "running", timeout=20, what="the run to start")
        sign_in(page, console, then=f"/ui/runs/{run_id}")
        page.click("button:has-text('Cancel run')")
        page.wait_for_selector("#run-status .s-cancelled")
        assert console.run_status(run_id) == "cancelled"
        shot(page, "cancelled")


class TestNamespaces:
    """A key of namespace B sees nothing of namespace A."""

    def test_another_namespace_sees_nothing_even_by_url(self, page: Any, console: Console) -> None:
        """Beta's lists are empty of alpha's job, and alpha's job and run URLs are not found."""
        job_id = console.job("alpha-secret")
        run_id = console.api("POST", f"/jobs/{job_id}/trigger").json()["id"]
        sign_in(page, console, key=console.beta_key)
        assert page.inner_text("#namespace") == "beta"
        assert "alpha-secret" not in page.content()
        page.goto(f"{console.url}/ui/runs")
        assert "alpha-secret" not in page.content()
        assert page.locator("tr[data-run]").count() == 0
        for path in (f"/ui/jobs/{job_id}", f"/ui/runs/{run_id}"):
            answer = page.goto(f"{console.url}{path}")
            assert answer.status == 404
            assert "alpha-secret" not in page.content()
        shot(page, "not-found")


class TestLiveRefresh:
    """Pages poll while visible and stop while hidden."""

    def test_polling_stops_when_the_tab_is_hidden(self, page: Any, console: Console) -> None:
        """The script polls on a visible tab and stops at visibilitychange to hidden."""
        console.job("watched")
        sign_in(page, console)
        page.wait_for_selector("html[data-refreshed]", state="attached")
        page.evaluate(
            "Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
        assert page.get_attribute("html", "data-live-polling") == "off"
        before = page.get_attribute("html", "data-refreshed")
        page.wait_for_timeout(4000)  # longer than a polling period: nothing may happen in it
        assert page.get_attribute("html", "data-refreshed") == before
