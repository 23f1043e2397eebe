"""Several schedule entries per job through the API.

Jobs with `schedules`, the Schedules API at /jobs/{id}/schedules, exclusions, next runs and the
preview, and the runner firing the union.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.operations.timing import first_entry_id
from tests.integration.test_runner_services import make_job

LOG = {"type": "log"}
SLOT = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)  # a Monday, 09:00 in Berlin


def two_entries(**extra: Any) -> dict[str, Any]:
    return {
        "name": "office",
        "action": LOG,
        "timezone": "Europe/Berlin",
        "schedules": [{"schedule": "0 9 * * MON-FRI"}, {"schedule": "0 12 * * SAT"}],
    } | extra


async def created(client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


class TestJobsWithSeveralEntries:
    """A job holds 1 to 20 entries; the single fields repeat the first."""

    async def test_a_job_with_two_entries_shows_both_and_mirrors_the_first(self, client):
        job = await created(client, two_entries())
        assert [entry["schedule"] for entry in job["schedules"]] == ["0 9 * * MON-FRI", "0 12 * * SAT"]
        assert {entry["timezone"] for entry in job["schedules"]} == {"Europe/Berlin"}
        assert (job["schedule"], job["timezone"]) == ("0 9 * * MON-FRI", "Europe/Berlin")
        ids = [entry["id"] for entry in job["schedules"]]
        assert len(set(ids)) == 2
        again = (await client.get(f"/jobs/{job['id']}")).json()
        assert [entry["id"] for entry in again["schedules"]] == ids

    async def test_a_job_with_one_schedule_has_one_entry_whose_id_stays(self, client):
        job = await created(client, {"name": "plain", "schedule": "@hourly", "action": LOG})
        (entry,) = job["schedules"]
        assert entry["id"] == str(first_entry_id(__import__("uuid").UUID(job["id"])))
        listed = (await client.get(f"/jobs/{job['id']}/schedules")).json()["items"]
        assert listed == job["schedules"]

    async def test_next_runs_are_the_union_and_name_their_entries(self, client):
        job = await created(
            client,
            two_entries(
                schedules=[
                    {"schedule": "0 9 * * *"},
                    {"schedule": "0 9 * * MON-FRI"},
                    {"schedule": "0 12 * * SAT"},
                ]
            ),
        )
        fires = (await client.get(f"/jobs/{job['id']}/next-runs", params={"count": 7})).json()["fires"]
        by_weekday = {datetime.fromisoformat(fire["at"]).weekday(): fire["entries"] for fire in fires}
        assert by_weekday[0] == [0, 1]  # Monday 09:00: two entries, one fire
        assert by_weekday[6] == [0]  # Sunday
        saturday = [fire for fire in fires if datetime.fromisoformat(fire["at"]).weekday() == 5]
        assert sorted(fire["entries"] for fire in saturday) == [[0], [2]]
        assert len(fires) == len({fire["at"] for fire in fires}) == 7

    async def test_patching_schedule_of_a_job_with_several_is_a_409_that_says_what_to_do(self, client):
        job = await created(client, two_entries())
        response = await client.patch(f"/jobs/{job['id']}", json={"schedule": "@daily"})
        assert response.status_code == 409
        assert "/schedules" in response.json()["detail"]
        assert (await client.get(f"/jobs/{job['id']}")).json()["version"] == job["version"]

    async def test_a_whole_list_keeps_the_ids_of_entries_it_keeps(self, client):
        job = await created(client, two_entries())
        first, second = job["schedules"]
        response = await client.patch(
            f"/jobs/{job['id']}",
            json={"schedules": [{"schedule": "0 12 * * SAT"}, {"schedule": "0 7 * * SUN"}]},
        )
        assert response.status_code == 200, response.text
        entries = response.json()["schedules"]
        assert entries[0]["id"] == second["id"]
        assert entries[1]["id"] not in (first["id"], second["id"])
        assert response.json()["schedule"] == "0 12 * * SAT"

    async def test_a_definition_read_back_and_written_by_name_changes_nothing(self, client):
        job = await created(client, two_entries(exclusions={"dates": ["2030-12-25"]}))
        body = {
            name: job[name]
            for name in ("name", "action", "schedule", "timezone", "schedules", "exclusions", "labels")
        }
        response = await client.put("/jobs/by-name/office", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == job["version"]
        # Written again with one schedule, the job has one entry again.
        single = {"name": "office", "action": LOG, "schedule": "@daily"}
        response = await client.put("/jobs/by-name/office", json=single)
        assert response.status_code == 200, response.text
        assert [entry["schedule"] for entry in response.json()["schedules"]] == ["@daily"]
        assert response.json()["exclusions"] is None

    async def test_bad_entries_are_422s_naming_the_entry(self, client):
        cases = [
            (
                two_entries(schedules=[{"schedule": "@daily"}, {"schedule": "0 25 * * *"}]),
                "schedules[1].schedule",
            ),
            (two_entries(schedules=[{"schedule": "@daily"}] * 21), "schedules"),
            (two_entries(schedules=[]), "schedules"),
            (two_entries(schedule="@hourly"), "schedule"),
            (two_entries(schedules=[{"schedule": "@daily", "paused": True}]), "schedules"),
            (
                two_entries(schedules=[{"schedule": "@daily", "timezone": "Mars/Olympus"}]),
                "schedules[0].timezone",
            ),
            (two_entries(exclusions={"calendars": ["* * 32 * *"]}), "exclusions"),
            (two_entries(exclusions={"calendars": ["* * * * *"]}), "exclusions"),
            ({"name": "none", "action": LOG}, "schedule"),
        ]
        for body, field in cases:
            response = await client.post("/jobs", json=body)
            assert response.status_code == 422, (body, response.text)
            fields = [error["field"] for error in response.json().get("errors", [])]
            assert any(name == field or name.startswith(field) for name in fields), (body, response.text)
        assert (await client.get("/jobs")).json()["items"] == []


class TestTheSchedulesApi:
    """List, add, read, replace and delete one job's entries, with ETags."""

    async def test_add_read_replace_and_delete_an_entry(self, client):
        job = await created(client, {"name": "plain", "schedule": "0 9 * * *", "action": LOG})
        path = f"/jobs/{job['id']}/schedules"
        added = await client.post(path, json={"schedule": "0 12 * * SAT", "timezone": "Europe/Berlin"})
        assert added.status_code == 201, added.text
        entry = added.json()
        assert added.headers["location"] == f"{path}/{entry['id']}"
        after_add = (await client.get(f"/jobs/{job['id']}")).json()
        assert after_add["version"] == job["version"] + 1
        assert [item["id"] for item in after_add["schedules"]] == [job["schedules"][0]["id"], entry["id"]]

        read = await client.get(f"{path}/{entry['id']}")
        assert read.json() == entry
        etag = read.headers["etag"]
        stale = await client.put(
            f"{path}/{entry['id']}", json={"schedule": "0 13 * * SAT"}, headers={"If-Match": '"x"'}
        )
        assert stale.status_code == 412
        replaced = await client.put(
            f"{path}/{entry['id']}", json={"schedule": "0 13 * * SAT"}, headers={"If-Match": etag}
        )
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["id"] == entry["id"]
        assert replaced.json()["timezone"] == "Europe/Berlin"  # kept: the replaced entry's zone
        assert replaced.headers["etag"] != etag

        assert (await client.delete(f"{path}/{entry['id']}")).status_code == 204
        assert (await client.get(f"{path}/{entry['id']}")).status_code == 404
        last = job["schedules"][0]["id"]
        refused = await client.delete(f"{path}/{last}")
        assert refused.status_code == 409
        assert "last" in refused.json()["detail"]

    async def test_an_entry_changes_next_run_at(self, client):
        job = await created(client, {"name": "plain", "schedule": "@yearly", "action": LOG})
        before = datetime.fromisoformat(job["next_run_at"])
        await client.post(f"/jobs/{job['id']}/schedules", json={"schedule": "@hourly"})
        after = datetime.fromisoformat((await client.get(f"/jobs/{job['id']}")).json()["next_run_at"])
        assert after < before
        assert after - datetime.now(UTC) <= timedelta(hours=1)

    async def test_twenty_entries_at_most(self, client):
        job = await created(
            client, two_entries(schedules=[{"schedule": f"{minute} 9 * * *"} for minute in range(20)])
        )
        response = await client.post(f"/jobs/{job['id']}/schedules", json={"schedule": "@daily"})
        assert response.status_code == 409
        assert "20" in response.json()["detail"]

    async def test_bad_input_is_refused_and_nothing_changes(self, client):
        job = await created(client, two_entries())
        path = f"/jobs/{job['id']}/schedules"
        bodies: list[Any] = [
            {"schedule": "nope"},
            {"schedule": "@daily", "extra": 1},
            {"schedule": ""},
            [],
            "x",
        ]
        for body in bodies:
            response = await client.post(path, json=body)
            assert 400 <= response.status_code < 500, (body, response.text)
        assert (await client.get(f"{path}/{'0' * 8}-0000-0000-0000-{'0' * 12}")).status_code == 404
        assert (await client.get(f"{path}/not-a-uuid")).status_code in (400, 404)
        assert (await client.get(f"/jobs/{job['id']}")).json()["version"] == job["version"]


class TestPreview:
    """The preview takes entries and exclusions, and shows the fires the exclusions take away."""

    async def test_preview_of_two_entries_and_a_holiday(self, client):
        response = await client.post(
            "/schedules/preview",
            json={
                "timezone": "Europe/Berlin",
                "schedules": [{"schedule": "0 9 * * MON-FRI"}, {"schedule": "0 12 * * SAT"}],
                "exclusions": {"dates": ["2030-12-25"]},
                "after": "2030-12-23T00:00:00Z",
                "count": 4,
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [fire["at"][:10] for fire in body["fires"]] == [
            "2030-12-23",
            "2030-12-24",
            "2030-12-26",
            "2030-12-27",
        ]
        assert [fire["at"][:10] for fire in body["excluded"]] == ["2030-12-25"]
        assert body["next"] == [fire["at"] for fire in body["fires"]]


class TestTheRunnerFiresTheUnion:
    """Entries due at the same instant make one run; each entry's own instants fire too."""

    async def test_coinciding_entries_make_one_run_per_instant(self, runner_parts, client, sql):
        job_id = await make_job(client, schedule="0 9 * * *", start_at=None, overlap="allow")
        response = await client.patch(
            f"/jobs/{job_id}",
            json={
                "schedules": [
                    {"schedule": "0 9 * * *", "timezone": "Europe/Berlin"},
                    {"schedule": "0 9 * * MON", "timezone": "Europe/Berlin"},
                    {"schedule": "30 9 * * MON", "timezone": "Europe/Berlin"},
                ]
            },
        )
        assert response.status_code == 200, response.text
        sql("UPDATE jobs SET next_run_at = %s WHERE id = %s", (SLOT, job_id))
        runner = runner_parts.runner
        await runner.claim_due_once(now=SLOT + timedelta(milliseconds=10))
        await runner.claim_due_once(now=SLOT + timedelta(minutes=30, milliseconds=10))
        rows = sql("SELECT scheduled_for FROM runs WHERE job_id = %s ORDER BY 1", (job_id,))
        assert [row[0] for row in rows] == [SLOT, SLOT + timedelta(minutes=30)]
        assert sql("SELECT next_run_at FROM jobs WHERE id = %s", (job_id,))[0][0] == SLOT + timedelta(days=1)


class TestApply:
    """A declared set holds jobs of several entries; applied twice, the second changes nothing."""

    async def test_apply_twice_is_unchanged_and_a_changed_entry_is_an_update(self, client):
        declared = {"jobs": [two_entries(exclusions={"calendars": ["* * 25 12 *"]})]}
        first = await client.post("/jobs/apply", json=declared)
        assert first.status_code == 200, first.text
        assert first.json()["created"] == 1
        again = await client.post("/jobs/apply", json=declared)
        assert again.json()["unchanged"] == 1, again.text
        job = (await client.get("/jobs/by-name/office")).json()
        declared["jobs"][0]["schedules"][1] = {"schedule": "0 11 * * SAT"}
        changed = await client.post("/jobs/apply", json=declared)
        (item,) = changed.json()["items"]
        assert (item["change"], item["fields"]) == ("updated", ["schedules"])
        after = (await client.get("/jobs/by-name/office")).json()
        assert after["schedules"][0]["id"] == job["schedules"][0]["id"]
        assert after["schedules"][1]["id"] != job["schedules"][1]["id"]


class TestCatchUpOfTheUnion:
    """After an outage, one claim catches up the union of the entries minus the exclusions."""

    async def test_an_hour_behind_one_claim_records_each_union_slot_once(self, runner_parts, client, sql):
        job_id = await make_job(
            client,
            schedule="*/10 * * * *",
            start_at=None,
            overlap="allow",
            misfire={"policy": "all", "grace_s": 5, "window_s": 7200},
        )
        response = await client.patch(
            f"/jobs/{job_id}",
            json={
                "schedules": [{"schedule": "*/10 * * * *"}, {"schedule": "*/15 * * * *"}],
                "exclusions": {"calendars": ["30-44 * * * *"]},
            },
        )
        assert response.status_code == 200, response.text
        sql("UPDATE jobs SET next_run_at = %s WHERE id = %s", (SLOT, job_id))
        counts = await runner_parts.runner.claim_due_once(now=SLOT + timedelta(hours=1, seconds=30))
        assert counts.jobs == 1
        rows = sql("SELECT scheduled_for, trigger FROM runs WHERE job_id = %s ORDER BY 1", (job_id,))
        minutes = [(row[0] - SLOT).total_seconds() / 60 for row in rows]
        # :00 :10 :15 :20 (:30 :40 excluded) :45 :50 and the next hour's :00, all past their grace.
        assert minutes == [0, 10, 15, 20, 45, 50, 60]
        assert {row[1] for row in rows} == {"catchup"}
        assert sql("SELECT next_run_at FROM jobs WHERE id = %s", (job_id,))[0][0] == SLOT + timedelta(
            minutes=70
        )
