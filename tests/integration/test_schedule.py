"""The schedule rules as the API applies them: job creation, previews and the fields errors name.

The rules themselves are checked without a database in tests/unit/test_schedule.py.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest


class TestDayFields:
    """Issue 10 items 2 and 3: `?` is `*` in a day field, and restricted day fields are always ORed."""

    async def test_a_job_with_a_question_mark_fires_on_mondays_only(self, client):
        body = {
            "name": "mondays",
            "schedule": "0 9 ? * MON",
            "timezone": "Europe/Berlin",
            "action": {"type": "log"},
        }
        response = await client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        job = response.json()
        berlin = ZoneInfo("Europe/Berlin")
        assert (
            datetime.fromisoformat(job["next_run_at"]).astimezone(berlin).strftime("%a %H:%M") == "Mon 09:00"
        )
        runs = (await client.get(f"/jobs/{job['id']}/next-runs?count=5")).json()["next"]
        assert {datetime.fromisoformat(t).astimezone(berlin).strftime("%a %H:%M") for t in runs} == {
            "Mon 09:00"
        }

    async def test_the_api_answers_the_or_and_refuses_a_misplaced_question_mark(self, client):
        response = await client.post(
            "/schedules/preview",
            json={"schedule": "0 0 1 * MON#1", "after": "2024-01-31T00:00:00Z", "count": 3},
        )
        assert response.status_code == 200, response.text
        assert response.json()["next"] == [
            "2024-02-01T00:00:00Z",
            "2024-02-05T00:00:00Z",
            "2024-03-01T00:00:00Z",
        ]
        response = await client.post("/schedules/preview", json={"schedule": "0 ? * * *"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "schedule"


class TestZones:
    """Issue 10 item 8: only IANA names from the shipped tzdata; nothing that depends on the host."""

    async def test_the_api_refuses_localtime_naming_timezone(self, client):
        response = await client.post(
            "/schedules/preview", json={"schedule": "0 9 * * *", "timezone": "localtime"}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "timezone"


class TestDaylightSaving:
    """SPEC 3.1 examples for America/New_York, checked through the API."""

    @pytest.mark.parametrize(
        ("schedule", "after", "expected"),
        [
            ("30 2 * * *", "2024-03-09T12:00:00-05:00", ["2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"]),
            ("30 1 * * *", "2024-11-02T12:00:00-04:00", ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"]),
            ("30 * * * *", "2024-11-03T00:45:00-04:00", ["2024-11-03T05:30:00Z", "2024-11-03T06:30:00Z"]),
        ],
    )
    async def test_preview_endpoint_applies_the_rules(self, client, schedule, after, expected):
        response = await client.post(
            "/schedules/preview",
            json={"schedule": schedule, "timezone": "America/New_York", "after": after, "count": 2},
        )
        assert response.status_code == 200, response.text
        assert response.json()["next"] == expected


class TestNamesInAnyCase:
    """Issue 21: month and weekday names, in any case, stand wherever a number may.

    L, W and # are read only as the day-field operators they are: WED and JUL hold the letters
    of the W and L operators, and were once refused for it.
    """

    async def test_the_api_previews_wednesdays_and_july(self, client):
        for schedule, expected in [
            ("0 0 * * WED", ["2024-01-03T00:00:00Z", "2024-01-10T00:00:00Z"]),
            ("0 0 1 JUN-JUL *", ["2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z"]),
        ]:
            response = await client.post(
                "/schedules/preview", json={"schedule": schedule, "after": "2024-01-01T00:00:00Z", "count": 2}
            )
            assert response.status_code == 200, response.text
            assert response.json()["next"] == expected


class TestFieldSeparators:
    """Issue 21: only ASCII spaces and tabs separate fields; any other character is refused, named."""

    async def test_the_api_refuses_a_no_break_space_on_schedule(self, client):
        response = await client.post("/schedules/preview", json={"schedule": "0\u00a00 * * *"})
        assert response.status_code == 422, response.text
        error = response.json()["errors"][0]
        assert error["field"] == "schedule"
        assert "U+00A0 (NO-BREAK SPACE)" in error["message"]
