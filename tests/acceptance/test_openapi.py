"""Tools that trust the OpenAPI document work against the live API, and it answers as documented.

The API runs as a real `scheduler api` process (uvicorn) on a database of the test's own; the
document itself is checked without one in tests/unit/test_openapi.py.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conftest import Procs, start_api
from tests.unit.test_openapi import PROBLEM_JSON, PUBLIC, schema_validator, served_document

CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document the app serves."""
    return served_document()


def new_key(procs: Procs, namespace: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "scheduler", "keys", "create", "--namespace", namespace],
        env=procs.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


class TestAgainstTheLiveApi:
    """What tools built on the document do against a real `scheduler api` process."""

    def test_unknown_fields_are_refused_as_the_document_says(self, procs):
        base = start_api(procs)
        body = {"name": "strict", "schedule": "@daily", "action": {"type": "log"}, "colour": "red"}
        response = httpx.post(f"{base}/jobs", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["errors"] == [{"field": "colour", "message": "unknown field"}]

    def test_a_body_not_declared_json_gets_the_documented_415(self, procs, document):
        base = start_api(procs)
        body = '{"name": "plain", "schedule": "@daily", "action": {"type": "log"}}'
        response = httpx.post(f"{base}/jobs", content=body, headers={"content-type": "text/plain"})
        assert response.status_code == 415
        assert response.headers["content-type"] == PROBLEM_JSON
        documented = document["paths"]["/jobs"]["post"]["responses"]["415"]["content"][PROBLEM_JSON]
        schema_validator(document, documented["schema"]).validate(response.json())

    def test_a_generated_client_creates_gets_lists_and_triggers(self, procs, tmp_path, monkeypatch):
        base = start_api(procs, auth="required")
        key = new_key(procs, "generated")
        spec = tmp_path / "openapi.json"
        spec.write_bytes(httpx.get(f"{base}/schema/openapi.json").content)
        tools = Path(sys.executable).parent
        env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
        generated = subprocess.run(
            [
                str(tools / "openapi-python-client"),
                "generate",
                "--path",
                str(spec),
                "--meta",
                "none",
                "--output-path",
                str(tmp_path / "scheduler_client"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        output = generated.stdout + generated.stderr
        assert generated.returncode == 0, output
        assert "Warning" not in output, output

        monkeypatch.syspath_prepend(str(tmp_path))
        package = importlib.import_module("scheduler_client")
        jobs_api = importlib.import_module("scheduler_client.api.jobs")
        models = importlib.import_module("scheduler_client.models")
        for name in ("create_job", "get_job", "list_jobs", "trigger_job"):
            importlib.import_module(f"scheduler_client.api.jobs.{name}")
        with (
            package.AuthenticatedClient(base_url=base, token=key) as client,
            package.Client(base_url=base) as anonymous,
        ):
            body = models.JobCreate.from_dict(
                {
                    "name": "from-client",
                    "schedule": "@every 1h",
                    "action": {"type": "log", "payload": {"a": 1}},
                }
            )
            created = jobs_api.create_job.sync_detailed(client=client, body=body)
            assert created.status_code == 201, created.content
            job = created.parsed
            assert isinstance(job, models.JobOut)
            assert (job.name, job.namespace, job.version) == ("from-client", "generated", 1)

            fetched = jobs_api.get_job.sync(job_id=job.id, client=client)
            assert isinstance(fetched, models.JobOut)
            assert fetched.id == job.id

            page = jobs_api.list_jobs.sync(client=client, limit=10)
            assert isinstance(page, models.JobPage)
            assert [item.name for item in page.items] == ["from-client"]

            run = jobs_api.trigger_job.sync(job_id=job.id, client=client)
            assert isinstance(run, models.RunOut)
            assert (run.job_id, run.trigger.value, run.attempt) == (job.id, "manual", 1)

            missing = jobs_api.get_job.sync_detailed(job_id=run.id, client=client)
            assert missing.status_code == 404
            assert isinstance(missing.parsed, models.Problem)
            assert missing.parsed.status == 404

            refused = jobs_api.list_jobs.sync_detailed(client=anonymous)
            assert refused.status_code == 401
            assert isinstance(refused.parsed, models.Problem)

    def test_every_answer_to_generated_requests_is_one_the_document_describes(self, procs):
        base = start_api(procs, auth="required")
        key = new_key(procs, "conformance")
        headers = {"Authorization": f"Bearer {key}"}
        job = httpx.post(
            f"{base}/jobs",
            headers=headers,
            json={"name": "conformance", "schedule": "@every 1h", "action": {"type": "log"}},
        )
        assert job.status_code == 201, job.text
        run = httpx.post(f"{base}/jobs/{job.json()['id']}/trigger", headers=headers)
        assert run.status_code == 202, run.text
        known = {"job_id": job.json()["id"], "run_id": run.json()["id"]}
        schema: Any = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
        strategies = []
        for result in schema.get_all_operations():
            operation = result.ok()
            ids = {name: value for name, value in known.items() if "{" + name + "}" in operation.path}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategies.append(operation.as_strategy(mode))
                if ids:
                    strategies.append(operation.as_strategy(mode, path_parameters=ids))
        plausible = st.sampled_from(
            [
                {"name": "c-1", "schedule": "@every 1h", "action": {"type": "log"}},
                {
                    "name": "c-2",
                    "schedule": "0 9 * * MON",
                    "timezone": "Europe/Berlin",
                    "action": {"type": "log"},
                },
            ]
        )

        @given(case=st.one_of(strategies), body=plausible, keyed=st.booleans())
        @settings(
            max_examples=400,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any, body: dict[str, Any], keyed: bool) -> None:
            if case.operation.label == "POST /jobs" and case.body is not None and keyed:
                case.body = body
            call_headers = headers if keyed or case.operation.path.startswith(PUBLIC) else {}
            case.call_and_validate(base_url=base, headers=call_headers, checks=CONFORMANCE)

        check()
