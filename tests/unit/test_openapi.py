"""The OpenAPI document the service serves, built without a database: valid, stable, strict.

Tools that trust it, against a live `scheduler api` process: tests/acceptance/test_openapi.py.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from scheduler.api import notifications, schemas
from scheduler.api.app import create_app
from scheduler.api.openapi import BODY_EXAMPLES, OPERATIONS
from scheduler.config import load_settings
from scheduler.domain import fields

PROBLEM_JSON = "application/problem+json"
PUBLIC = ("/healthz", "/readyz", "/metrics")
BODY_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "JobCreate": schemas.JobCreate,
    "JobPatch": fields.JobPatch,
    "PreviewIn": schemas.PreviewIn,
    "JobOut": schemas.JobOut,
    "JobPage": schemas.JobPage,
    "RunOut": schemas.RunOut,
    "RunPage": schemas.RunPage,
    "NextRuns": schemas.NextRuns,
    "Health": schemas.Health,
    "EntrySpec": fields.EntrySpec,
    "ScheduleEntryOut": schemas.ScheduleEntryOut,
    "NotificationPage": notifications.NotificationPage,
}


def served_document() -> dict[str, Any]:
    """The document the app serves, built without a database."""
    app = create_app(load_settings({"SCHEDULER_DATABASE_URL": "postgresql://unused/unused"}))
    # Encoded and decoded as the JSON route does: examples are pre-encoded JSON inside the model.
    decoded: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))
    return decoded


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document the app serves."""
    return served_document()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    """Validate against a schema of the document, resolving its #/components references."""
    return OAS31Validator({**schema, "components": document["components"]})


class TestTheDocument:
    """Its structure: valid OpenAPI 3.1, stable ids, bearer auth, Problem errors, strict bodies."""

    def test_it_is_valid_openapi_3_1(self, document):
        assert document["openapi"].startswith("3.1")
        validate(document)

    def test_operation_ids_are_the_stable_readable_ones(self, document):
        ids = {(method, path): operation["operationId"] for method, path, operation in operations(document)}
        assert len(set(ids.values())) == len(ids)
        for key, operation_id in ids.items():
            assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), operation_id
            assert key in OPERATIONS, f"{key} has no chosen operationId in scheduler.api.openapi.OPERATIONS"
            assert operation_id == OPERATIONS[key][0]
        assert ids[("POST", "/jobs")] == "createJob"
        assert ids[("GET", "/jobs")] == "listJobs"

    def test_bearer_auth_is_declared_and_applied_to_every_guarded_operation(self, document):
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        for method, path, operation in operations(document):
            if path.startswith(PUBLIC):
                assert "security" not in operation, f"{method} {path} needs no key"
            else:
                assert operation["security"] == [{"bearerAuth": []}], f"{method} {path}"
                assert "401" in operation["responses"], f"{method} {path}"

    def test_every_error_response_is_a_problem(self, document):
        for method, path, operation in operations(document):
            assert "500" in operation["responses"], f"{method} {path}"
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                assert list(response["content"]) == [PROBLEM_JSON], f"{method} {path} {status}"
                schema = response["content"][PROBLEM_JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, f"{method} {path} {status}"
                assert "Validation Exception" not in str(response)

    def test_request_bodies_refuse_unknown_fields(self, document):
        components = document["components"]["schemas"]
        for name in (
            "JobCreate",
            "JobPatch",
            "PreviewIn",
            "HttpAction",
            "LogAction",
            "RetryPolicy",
            "Misfire",
        ):
            assert components[name]["additionalProperties"] is False, name
            assert "Unknown fields are refused" in components[name]["description"], name
        for method, path, operation in operations(document):
            body = operation.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                assert components[ref]["additionalProperties"] is False, f"{method} {path}"

    def test_every_operation_has_an_example(self, document):
        for method, path, operation in operations(document):
            contents = [
                content
                for response in operation["responses"].values()
                for content in response.get("content", {}).values()
            ] + list(operation.get("requestBody", {}).get("content", {}).values())
            params = [p for p in operation.get("parameters", []) if "example" in p]
            assert any("examples" in content for content in contents) or params, f"{method} {path}"

    def test_the_examples_are_valid_bodies(self, document):
        for name, example in BODY_EXAMPLES.items():
            schema_validator(document, {"$ref": f"#/components/schemas/{name}"}).validate(example)
            msgspec.json.decode(msgspec.json.encode(example), type=BODY_STRUCTS[name], strict=True)
        for method, path, operation in operations(document):
            for status, response in operation["responses"].items():
                for content in response.get("content", {}).values():
                    for example in content.get("examples", {}).values():
                        validator = schema_validator(document, content["schema"])
                        assert validator.is_valid(example["value"]), f"{method} {path} {status}"
