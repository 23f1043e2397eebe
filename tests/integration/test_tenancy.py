"""Tenant isolation: a key sees only its namespace, and another namespace's ids look like no ids at all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.db import connections, store
from scheduler.operations.timing import first_entry_id
from tests.conftest import create_api_key, settings_for


@dataclass
class Tenant:
    """One namespace's key and the job and run it made."""

    namespace: str
    headers: dict[str, str]
    job_id: str
    run_id: str


@dataclass
class Tenants:
    client: AsyncTestClient[Any]
    alpha: Tenant
    beta: Tenant

    async def call(self, who: Tenant, method: str, path: str, body: Any = None) -> Any:
        return await self.client.request(method, path, json=body, headers=who.headers)


async def _tenant(client: AsyncTestClient[Any], db_url: str, namespace: str) -> Tenant:
    headers = {"Authorization": f"Bearer {await create_api_key(db_url, namespace)}"}
    job = await client.post(
        "/jobs",
        json={"name": "report", "schedule": "@every 1h", "action": {"type": "log"}},
        headers=headers,
    )
    assert job.status_code == 201, job.text
    assert job.json()["namespace"] == namespace
    run = await client.post(f"/jobs/{job.json()['id']}/trigger", headers=headers)
    assert run.status_code == 202, run.text
    return Tenant(namespace, headers, job.json()["id"], run.json()["id"])


@pytest.fixture
async def tenants(db_url) -> AsyncIterator[Tenants]:
    """The API with auth required and two namespaces, each with a job named `report` and a run."""
    app = create_app(settings_for(db_url, auth="required"))
    async with AsyncTestClient(app=app) as client:
        alpha = await _tenant(client, db_url, "alpha")
        beta = await _tenant(client, db_url, "beta")
        yield Tenants(client, alpha, beta)


# Every route that takes a job or run id, with a body where it needs one.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/jobs/{job}", None),
    ("PATCH", "/jobs/{job}", {"description": "taken over"}),
    ("DELETE", "/jobs/{job}", None),
    ("POST", "/jobs/{job}/pause", None),
    ("POST", "/jobs/{job}/resume", None),
    ("POST", "/jobs/{job}/trigger", None),
    ("GET", "/jobs/{job}/next-runs", None),
    ("GET", "/jobs/{job}/runs", None),
    ("GET", "/jobs/{job}/schedules", None),
    ("POST", "/jobs/{job}/schedules", {"schedule": "@daily"}),
    ("GET", "/jobs/{job}/schedules/{entry}", None),
    ("PUT", "/jobs/{job}/schedules/{entry}", {"schedule": "@every 2h"}),
    ("DELETE", "/jobs/{job}/schedules/{entry}", None),
    ("GET", "/runs/{run}", None),
    ("POST", "/runs/{run}/cancel", None),
    ("POST", "/runs/{run}/retry", None),
]


def _path(template: str, tenant: Tenant) -> str:
    # A job made with one schedule has one entry, whose id is made from the job's.
    entry = first_entry_id(uuid.UUID(tenant.job_id))
    return template.format(job=tenant.job_id, run=tenant.run_id, entry=entry)


def _without_ids(problem: dict[str, Any], *ids: str) -> dict[str, Any]:
    detail = problem["detail"]
    for value in ids:
        detail = detail.replace(value, "<id>")
    return problem | {"detail": detail}


class TestIsolation:
    """Another namespace's ids answer exactly as ids that do not exist, and change nothing."""

    @pytest.mark.parametrize(("method", "template", "body"), ROUTES, ids=[f"{m} {t}" for m, t, _ in ROUTES])
    async def test_another_namespaces_id_is_a_404_like_a_missing_one(self, tenants, method, template, body):
        alpha, beta = tenants.alpha, tenants.beta
        before = (await tenants.call(alpha, "GET", f"/jobs/{alpha.job_id}")).json()
        runs_before = (await tenants.call(alpha, "GET", f"/jobs/{alpha.job_id}/runs")).json()

        foreign = await tenants.call(beta, method, _path(template, alpha), body)
        missing_ids = Tenant("none", {}, str(uuid.uuid4()), str(uuid.uuid4()))
        missing = await tenants.call(beta, method, _path(template, missing_ids), body)

        assert foreign.status_code == missing.status_code == 404
        assert foreign.headers["content-type"] == missing.headers["content-type"]
        assert _without_ids(foreign.json(), alpha.job_id, alpha.run_id) == _without_ids(
            missing.json(), missing_ids.job_id, missing_ids.run_id
        )
        assert (await tenants.call(alpha, "GET", f"/jobs/{alpha.job_id}")).json() == before
        assert (await tenants.call(alpha, "GET", f"/jobs/{alpha.job_id}/runs")).json() == runs_before

    @pytest.mark.parametrize(("method", "template", "body"), ROUTES, ids=[f"{m} {t}" for m, t, _ in ROUTES])
    async def test_the_owner_reaches_the_same_route(self, tenants, method, template, body):
        beta = tenants.beta
        response = await tenants.call(beta, method, _path(template, beta), body)
        # 409: a retry of a pending run, or the deletion of a job's only schedule entry.
        assert response.status_code in (200, 201, 202, 204, 409), response.text

    async def test_a_list_holds_only_the_callers_jobs(self, tenants):
        for tenant in (tenants.alpha, tenants.beta):
            for query in ({}, {"name_prefix": "rep"}, {"paused": "false"}):
                page = (await tenants.client.get("/jobs", params=query, headers=tenant.headers)).json()
                assert [job["id"] for job in page["items"]] == [tenant.job_id]
                assert {job["namespace"] for job in page["items"]} == {tenant.namespace}

    async def test_names_are_unique_per_namespace_only(self, tenants):
        again = await tenants.call(
            tenants.beta, "POST", "/jobs", {"name": "report", "schedule": "@daily", "action": {"type": "log"}}
        )
        assert again.status_code == 409
        assert "'beta'" in again.json()["detail"]
        assert "alpha" not in again.text

    async def test_a_run_cancelled_by_its_owner_stays_invisible_to_others(self, tenants):
        alpha, beta = tenants.alpha, tenants.beta
        assert (await tenants.call(alpha, "POST", f"/runs/{alpha.run_id}/cancel")).status_code == 202
        assert (await tenants.call(beta, "POST", f"/runs/{alpha.run_id}/retry")).status_code == 404
        assert (await tenants.call(alpha, "POST", f"/runs/{alpha.run_id}/retry")).status_code == 202


class TestAuthentication:
    """Requests without a valid key get one 401 that says nothing about what was wrong."""

    async def test_every_kind_of_bad_key_gets_the_same_401(self, db_url):
        live = await create_api_key(db_url, "alpha")
        revoked = await create_api_key(db_url, "alpha")
        conn = await connections.connect(db_url, application_name="tests")
        async with conn:
            assert await store.api_key_revoke(conn, key=revoked[:12]) is not None
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            assert (await client.get("/jobs", headers={"Authorization": f"Bearer {live}"})).status_code == 200
            answers = []
            for headers in (
                {},
                {"Authorization": "Bearer"},
                {"Authorization": f"Basic {live}"},
                {"Authorization": "Bearer sk_" + "x" * 43},
                {"Authorization": f"Bearer {live}x"},
                {"Authorization": f"Bearer {revoked}"},
                {"Authorization": "Bearer " + "y" * 300},
            ):
                response = await client.get("/jobs", headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == 'Bearer realm="scheduler"'
                answers.append(response.json())
            assert all(answer == answers[0] for answer in answers)
            assert answers[0]["detail"] == "missing or invalid API key; send Authorization: Bearer <key>"

    async def test_probes_and_the_api_document_need_no_key(self, db_url):
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            for path in ("/healthz", "/readyz", "/schema/openapi.json"):
                assert (await client.get(path)).status_code == 200, path
            assert (await client.post("/jobs/" + str(uuid.uuid4()) + "/trigger")).status_code == 401
