"""Query strings never guess: an unknown or repeated parameter is a 400 that names it (issue 20, item 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.ids import uuid7

JOB = {"name": "hello", "schedule": "@every 1h", "action": {"type": "log"}}


@pytest.fixture
async def job_id(client) -> str:
    response = await client.post("/jobs", json=JOB)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class TestUnknownParameters:
    """A parameter the route does not take answers 400 naming it and listing what the route takes."""

    @pytest.mark.parametrize(
        ("path", "field"),
        [
            ("/jobs?name=hello", "name"),
            ("/jobs?limit=5&verbose=true", "verbose"),
            ("/runs?labels=team=billing", "labels"),
            ("/jobs?stauts=failed", "stauts"),
        ],
    )
    async def test_it_is_refused_by_name(self, client, path, field):
        response = await client.get(path)
        assert response.status_code == 400, response.text
        (error,) = response.json()["errors"]
        assert error["field"] == field
        assert "is not a parameter of GET" in error["message"]
        assert "limit" in error["message"]  # what the route does take

    async def test_on_one_job_and_its_runs_too(self, client, job_id):
        for path in (f"/jobs/{job_id}?verbose=1", f"/jobs/{job_id}/runs?job_id={job_id}"):
            response = await client.get(path)
            assert response.status_code == 400, (path, response.text)

    async def test_on_a_write(self, client, job_id):
        response = await client.post(f"/jobs/{job_id}/pause?force=true")
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "force"
        still = await client.get(f"/jobs/{job_id}")
        assert still.json()["paused"] is False  # refused before anything was written

    async def test_known_parameters_still_work(self, client, job_id):
        response = await client.get("/jobs?limit=5&name_prefix=hel")
        assert response.status_code == 200
        assert [job["name"] for job in response.json()["items"]] == ["hello"]
        assert (await client.get(f"/jobs/{job_id}/next-runs?count=2")).status_code == 200


class TestRepeatedParameters:
    """A parameter given twice is refused instead of keeping its last value."""

    async def test_a_repeat_is_refused(self, client):
        response = await client.get("/jobs?limit=1&limit=2")
        assert response.status_code == 400
        (error,) = response.json()["errors"]
        assert error["field"] == "limit"
        assert "given 2 times" in error["message"]

    async def test_a_repeated_status_points_to_the_comma_list(self, client):
        response = await client.get("/runs?status=failed&status=timed_out")
        assert response.status_code == 400
        assert "comma-separated" in response.json()["errors"][0]["message"]


class TestFiltersThatWork:
    """The filters the docs promise filter: status lists, job_name, label, failing; runs name their job."""

    async def setup_runs(self, client, sql) -> dict[str, str]:
        ids = {}
        for name, labels in (("alpha", {"team": "billing"}), ("beta", {"team": "search"})):
            made = await client.post("/jobs", json={**JOB, "name": name, "labels": labels})
            assert made.status_code == 201, made.text
            ids[name] = made.json()["id"]
        now = datetime.now(UTC)
        for name, status, ago in (
            ("alpha", "failed", 30),
            ("alpha", "timed_out", 20),
            ("beta", "succeeded", 10),
        ):
            slot = now - timedelta(seconds=ago)
            sql(
                "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, finished_at)"
                " VALUES (%s, %s, %s, 'schedule', 1, %s, now())",
                (uuid7(slot), ids[name], slot, status),
            )
        sql(
            "UPDATE jobs SET last_run_status ="
            " CASE name WHEN 'alpha' THEN 'timed_out' ELSE 'succeeded' END::run_status"
        )
        return ids

    async def test_status_takes_a_comma_list_on_both_listings(self, client, sql):
        ids = await self.setup_runs(client, sql)
        wrong = (await client.get("/runs?status=failed,timed_out")).json()["items"]
        assert sorted(run["status"] for run in wrong) == ["failed", "timed_out"]
        mine = (await client.get(f"/jobs/{ids['alpha']}/runs?status=timed_out,succeeded")).json()["items"]
        assert [run["status"] for run in mine] == ["timed_out"]
        bad = await client.get("/runs?status=failed,finished")
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["field"] == "status"

    async def test_runs_by_job_name_and_label_each_naming_its_job(self, client, sql):
        ids = await self.setup_runs(client, sql)
        by_name = (await client.get("/runs?job_name=beta")).json()["items"]
        assert [(run["job_name"], run["status"]) for run in by_name] == [("beta", "succeeded")]
        by_label = (await client.get("/runs?label=team=billing")).json()["items"]
        assert {run["job_name"] for run in by_label} == {"alpha"}
        assert len(by_label) == 2
        assert (await client.get("/runs?job_name=nobody")).json()["items"] == []
        assert (await client.get(f"/runs?job_name=alpha&job_id={ids['beta']}")).json()["items"] == []
        one = (await client.get(f"/runs/{by_name[0]['id']}")).json()
        assert one["job_name"] == "beta"

    async def test_failing_is_a_real_filter(self, client, sql):
        await self.setup_runs(client, sql)
        failing = (await client.get("/jobs?failing=true")).json()["items"]
        assert [job["name"] for job in failing] == ["alpha"]
        everyone = (await client.get("/jobs?failing=false")).json()["items"]
        assert [job["name"] for job in everyone] == ["alpha", "beta"]


class TestNul:
    """NUL cannot reach PostgreSQL text: any query value holding one is a 400 naming it."""

    @pytest.mark.parametrize("query", ["job_name=%00", "label=team=%00", "status=failed%00"])
    async def test_a_nul_in_any_parameter_is_refused(self, client, query):
        response = await client.get(f"/runs?{query}")
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == query.split("=")[0]


class TestTimes:
    """since/until take an RFC 3339 time with an offset, or a time before now (`-1h`)."""

    async def test_a_relative_since(self, client, sql):
        await TestFiltersThatWork().setup_runs(client, sql)
        recent = (await client.get("/runs?since=-25s")).json()["items"]
        assert sorted(run["status"] for run in recent) == ["succeeded", "timed_out"]
        assert len((await client.get("/runs?since=-1h")).json()["items"]) == 3
        assert len((await client.get("/runs?since=-1h&until=-15s")).json()["items"]) == 2

    @pytest.mark.parametrize("value", ["yesterday", "-1y", "2026-11-23T08:00:00", "1h"])
    async def test_anything_else_says_how_to_write_it(self, client, value):
        response = await client.get("/runs", params={"since": value})
        assert response.status_code == 400
        (error,) = response.json()["errors"]
        assert error["field"] == "since"
        assert "-1h30m" in error["message"]
