"""The console shows a job's schedule entries and exclusions, and its form edits them."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.test_ui import csrf_of
from tests.integration.test_ui_jobs import EVERY_FIELD, errors_of

SEVERAL = {
    "name": "office",
    "action": {"type": "log"},
    "timezone": "Europe/Berlin",
    "schedules": [
        {"schedule": "0 9 * * MON-FRI"},
        {"schedule": "0 12 * * SAT", "timezone": "America/New_York", "paused": True},
    ],
    "exclusions": {"dates": ["2030-12-25"], "calendars": ["* * 1 1 *"]},
}


async def test_the_job_page_lists_every_entry_and_the_exclusions(client: AsyncTestClient[Any]) -> None:
    job = (await client.post("/jobs", json=SEVERAL)).json()
    page = (await client.get(f"/ui/jobs/{job['id']}")).text
    entries = re.search(r'<ul class="entries wrap" id="schedule-entries">(.*?)</ul>', page, re.DOTALL)
    assert entries is not None
    items = re.findall(r"<li>(.*?)</li>", entries.group(1), re.DOTALL)
    assert len(items) == 2
    assert "0 9 * * MON-FRI" in items[0]
    assert "Europe/Berlin" in items[0]
    assert "America/New_York" in items[1]
    assert "paused" in items[1]
    assert "2030-12-25" in page
    assert "* * 1 1 *" in page


async def test_the_edit_form_shows_and_saves_entries_and_exclusions(client: AsyncTestClient[Any]) -> None:
    job = (await client.post("/jobs", json=SEVERAL)).json()
    page = await client.get(f"/ui/jobs/{job['id']}/edit")
    assert "0 12 * * SAT | America/New_York | paused" in page.text
    assert "2030-12-25" in page.text
    form = EVERY_FIELD | {
        "csrf": csrf_of(page.text),
        "version": str(job["version"]),
        "name": "office",
        "schedule": "0 9 * * MON-FRI",
        "start_at": "",
        "end_at": "",
        "schedules": "0 12 * * SAT | America/New_York | paused\n0 8 * * SUN",
        "exclusions.dates": "2030-12-25, 2030-12-26",
        "exclusions.calendars": "",
        "exclusions.timezone": "",
    }
    answer = await client.post(f"/ui/jobs/{job['id']}/edit", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    saved = (await client.get(f"/jobs/{job['id']}")).json()
    assert [(e["schedule"], e["timezone"], e["paused"]) for e in saved["schedules"]] == [
        ("0 9 * * MON-FRI", "Europe/Berlin", False),
        ("0 12 * * SAT", "America/New_York", True),
        ("0 8 * * SUN", "Europe/Berlin", False),
    ]
    # Entries the list keeps keep their ids.
    assert [e["id"] for e in saved["schedules"][:2]] == [e["id"] for e in job["schedules"]]
    assert saved["exclusions"] == {
        "dates": ["2030-12-25", "2030-12-26"],
        "calendars": [],
        "timezone": "Europe/Berlin",
    }


async def test_a_bad_entry_line_is_named_beside_its_input(client: AsyncTestClient[Any]) -> None:
    job = (await client.post("/jobs", json=SEVERAL)).json()
    page = await client.get(f"/ui/jobs/{job['id']}/edit")
    for line, words in (("0 25 * * *", "hour"), ("@daily | Europe/Berlin | sometimes", "sometimes")):
        form = EVERY_FIELD | {
            "csrf": csrf_of(page.text),
            "version": str(job["version"]),
            "name": "office",
            "start_at": "",
            "end_at": "",
            "schedules": line,
        }
        answer = await client.post(f"/ui/jobs/{job['id']}/edit", data=form)
        assert answer.status_code == 422, answer.text
        assert words in errors_of(answer.text).get("schedules", ""), errors_of(answer.text)
    assert (await client.get(f"/jobs/{job['id']}")).json()["version"] == job["version"]
