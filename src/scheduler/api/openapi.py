"""The OpenAPI document as the service behaves, and the offline Swagger UI page that renders it.

Litestar builds the document from the route handlers; `finish` then corrects what it cannot know:
operation ids and summaries that stay stable when handlers are renamed, the bearer scheme on every
route the auth middleware guards, Problem bodies (never Litestar's default "Validation Exception")
for every error an operation can answer, `additionalProperties: false` on the shapes that refuse
unknown fields, and an example for every operation.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.types import Method

from scheduler.api import auth, schemas
from scheduler.api.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE, Problem
from scheduler.domain import fields, models

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/docs/assets"
SPEC_PATH = "/schema/openapi.json"
BEARER = "bearerAuth"

# (method, path template) -> (operationId, summary). Ids are what generated clients name their
# functions after, so they are chosen here once, not derived from handler names that may change.
OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/jobs"): ("createJob", "Create a job"),
    ("GET", "/jobs"): ("listJobs", "List jobs by name"),
    ("GET", "/jobs/{job_id}"): ("getJob", "Get a job"),
    ("PATCH", "/jobs/{job_id}"): ("updateJob", "Change some fields of a job"),
    ("DELETE", "/jobs/{job_id}"): ("deleteJob", "Delete a job"),
    ("POST", "/jobs/{job_id}/pause"): ("pauseJob", "Pause a job"),
    ("POST", "/jobs/{job_id}/resume"): ("resumeJob", "Resume a paused job"),
    ("POST", "/jobs/{job_id}/trigger"): ("triggerJob", "Fire a job now"),
    ("GET", "/jobs/{job_id}/next-runs"): ("listJobNextRuns", "Upcoming fire times of a job"),
    ("GET", "/jobs/{job_id}/runs"): ("listJobRuns", "Run history of a job"),
    ("GET", "/jobs/{job_id}/notifications"): ("listJobNotifications", "Notifications of a job"),
    ("GET", "/jobs/{job_id}/schedules"): ("listScheduleEntries", "Schedule entries of a job"),
    ("POST", "/jobs/{job_id}/schedules"): ("addScheduleEntry", "Add a schedule entry to a job"),
    ("GET", "/jobs/{job_id}/schedules/{schedule_id}"): ("getScheduleEntry", "Get a schedule entry"),
    ("PUT", "/jobs/{job_id}/schedules/{schedule_id}"): ("replaceScheduleEntry", "Replace a schedule entry"),
    ("DELETE", "/jobs/{job_id}/schedules/{schedule_id}"): ("deleteScheduleEntry", "Delete a schedule entry"),
    ("PUT", "/jobs/by-name/{name}"): ("putJobByName", "Create or replace a job by its name"),
    ("GET", "/jobs/by-name/{name}"): ("getJobByName", "Get a job by its name"),
    ("DELETE", "/jobs/by-name/{name}"): ("deleteJobByName", "Delete a job by its name"),
    ("POST", "/jobs/apply"): ("applyJobs", "Make the namespace's jobs match a declared set"),
    ("GET", "/runs"): ("listRuns", "Runs of every job in the namespace"),
    ("GET", "/runs/{run_id}"): ("getRun", "Get a run"),
    ("POST", "/runs/{run_id}/cancel"): ("cancelRun", "Cancel a pending or running run"),
    ("POST", "/runs/{run_id}/retry"): ("retryRun", "Retry a finished run as a new attempt"),
    ("POST", "/schedules/preview"): ("previewSchedule", "Preview a schedule's fire times"),
    ("GET", "/healthz"): ("getHealth", "Liveness probe"),
    ("GET", "/readyz"): ("getReadiness", "Readiness probe (checks the database)"),
    ("GET", "/metrics"): ("getMetrics", "Prometheus metrics of the API"),
}

_METHODS = ("get", "put", "post", "delete", "patch")


def operation_id(route_handler: HTTPRouteHandler, http_method: Method, path_components: list[Any]) -> str:
    """Litestar's operation_id_creator: the id from OPERATIONS, else the handler's name in camelCase."""
    parts = [f"{{{part.name}}}" if hasattr(part, "name") else str(part) for part in path_components]
    template = "/" + "/".join(part.strip("/") for part in parts if part.strip("/"))
    method = str(getattr(http_method, "value", http_method)).upper()
    known = OPERATIONS.get((method, template))
    if known:
        return known[0]
    head, *rest = route_handler.handler_name.split("_")
    return head + "".join(part.title() for part in rest)


def bearer_components() -> Components:
    """The security scheme Swagger UI's Authorize button and generated clients use."""
    return Components(
        security_schemes={
            BEARER: SecurityScheme(
                type="http",
                scheme="bearer",
                description="An API key from `scheduler keys create --namespace NAME` (it starts `sk_`), "
                "or a JWT from the configured identity provider (SCHEDULER_AUTH_JWT_ISSUER), whose "
                "namespace claim names the namespace. Every key belongs to one namespace; a service "
                "started with SCHEDULER_AUTH=off ignores it.",
            )
        }
    )


# ------------------------------------------------------------------------------------ examples

_JOB_ID = "0193a4b2-7c1e-7d3a-9f00-5b1c2d3e4f50"
_RUN_ID = "0193a4b2-9a00-7000-8000-0a1b2c3d4e5f"
_JOB: dict[str, Any] = {
    "id": _JOB_ID,
    "namespace": "billing",
    "name": "weekly-report",
    "description": "",
    "schedule": "0 9 * * MON",
    "timezone": "Europe/Berlin",
    "start_at": None,
    "end_at": None,
    "action": {
        "type": "http",
        "url": "https://billing.internal/hooks/report",
        "method": "POST",
        "headers": {},
        "body": {"kind": "weekly"},
        "success_codes": "2xx",
        "follow_redirects": False,
    },
    "timeout_s": 30,
    "retry": {"max_attempts": 5, "min_backoff_s": 2.0, "max_backoff_s": 600.0},
    "misfire": {"policy": "once", "grace_s": 5, "window_s": 3600},
    "overlap": "skip",
    "paused": False,
    "labels": {"team": "billing"},
    "next_run_at": "2026-11-30T08:00:00Z",
    "last_run": None,
    "created_at": "2026-11-23T19:30:00.120Z",
    "updated_at": "2026-11-23T19:30:00.120Z",
    "version": 1,
    "consecutive_failures": 0,
    "schedules": [
        {
            "id": "5b0e4c8e-2f7d-5a41-9c3e-0d6f1a2b3c4d",
            "schedule": "0 9 * * MON",
            "timezone": "Europe/Berlin",
            "start_at": None,
            "end_at": None,
            "paused": False,
        }
    ],
    "exclusions": None,
    "notify": {
        "url": "https://billing.internal/hooks/alerts",
        "after": 3,
        "on_recovery": True,
        "pause_after": None,
    },
    "failed_slots": 0,
}
_RUN: dict[str, Any] = {
    "id": _RUN_ID,
    "job_id": _JOB_ID,
    "job_name": "weekly-report",
    "scheduled_for": "2026-11-30T08:00:00Z",
    "trigger": "schedule",
    "attempt": 1,
    "status": "succeeded",
    "runner": "runner-1",
    "started_at": "2026-11-30T08:00:00.012Z",
    "finished_at": "2026-11-30T08:00:00.243Z",
    "duration_ms": 231,
    "http_status": 200,
    "output": "ok",
    "error": None,
}
_PENDING_RUN = _RUN | {
    "scheduled_for": "2026-11-23T19:31:05.402Z",
    "trigger": "manual",
    "status": "pending",
    "runner": None,
    "started_at": None,
    "finished_at": None,
    "duration_ms": None,
    "http_status": None,
    "output": None,
}

# Examples of bodies, by the component schema they follow. A test decodes each with the struct of
# the same name (strictly) and validates it against the document, so they cannot drift.
BODY_EXAMPLES: dict[str, Any] = {
    "JobCreate": {
        "name": "weekly-report",
        "schedule": "0 9 * * MON",
        "timezone": "Europe/Berlin",
        "action": {
            "type": "http",
            "url": "https://billing.internal/hooks/report",
            "body": {"kind": "weekly"},
        },
        "retry": {"max_attempts": 5, "min_backoff_s": 2, "max_backoff_s": 600},
        "labels": {"team": "billing"},
        "notify": {"url": "https://billing.internal/hooks/alerts", "after": 3},
    },
    "JobPatch": {"schedule": "0 8 * * MON"},
    "PreviewIn": {
        "schedule": "30 2 * * *",
        "timezone": "America/New_York",
        "after": "2024-03-09T12:00:00Z",
        "count": 2,
    },
    "JobOut": _JOB,
    "JobPage": {"items": [_JOB], "next_cursor": "d2Vla2x5LXJlcG9ydA"},
    "RunOut": _RUN,
    "RunPage": {"items": [_RUN], "next_cursor": None},
    "NextRuns": {
        "next": ["2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"],
        "fires": [
            {"at": "2024-03-10T07:00:00Z", "entries": [0]},
            {"at": "2024-03-11T06:30:00Z", "entries": [0]},
        ],
        "excluded": [],
    },
    "EntrySpec": {"schedule": "0 12 * * SAT", "timezone": "Europe/Berlin"},
    "ScheduleEntryOut": {
        "id": "0193a4b3-1d00-7c00-8000-6e7f8a9b0c1d",
        "schedule": "0 12 * * SAT",
        "timezone": "Europe/Berlin",
        "start_at": None,
        "end_at": None,
        "paused": False,
    },
    "Health": {"status": "ok"},
    "NotificationPage": {
        "items": [
            {
                "id": "0193a4c0-0000-4000-8000-1a2b3c4d5e6f",
                "job_id": _JOB_ID,
                "event": "job.failing",
                "run_id": _RUN_ID,
                "run_scheduled_for": "2026-11-30T08:00:00Z",
                "failed_slots": 3,
                "paused": False,
                "url": "https://billing.internal/hooks/alerts",
                "status": "delivered",
                "attempts": 1,
                "last_attempt_at": "2026-11-30T08:00:01.002Z",
                "last_http_status": 204,
                "last_error": None,
                "created_at": "2026-11-30T08:00:00.250Z",
                "delivered_at": "2026-11-30T08:00:01.031Z",
            }
        ],
        "next_cursor": None,
    },
}
# Where one operation answers with a shape in a state worth showing (operationId -> example).
OPERATION_EXAMPLES: dict[str, Any] = {
    "updateJob": _JOB | {"schedule": "0 8 * * MON", "version": 2},
    "pauseJob": _JOB | {"paused": True, "next_run_at": None, "version": 2},
    "triggerJob": _PENDING_RUN,
    "cancelRun": _RUN | {"status": "cancelled", "error": "cancelled by request", "http_status": None},
    "retryRun": _PENDING_RUN | {"trigger": "retry", "attempt": 2, "scheduled_for": _RUN["scheduled_for"]},
    "getReadiness": {"status": "ready"},
}
_METRICS_EXAMPLE = (
    "# TYPE scheduler_http_requests_total counter\n"
    'scheduler_http_requests_total{method="GET",route="/jobs/{job_id}",status="200"} 42.0\n'
)
_PROBLEM_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {
        "type": PROBLEM_TYPE_BASE + "invalid-request",
        "title": "Bad Request",
        "status": 400,
        "detail": "cursor: is not a cursor this API returned",
        "errors": [{"field": "cursor", "message": "is not a cursor this API returned"}],
    },
    401: {
        "type": PROBLEM_TYPE_BASE + "unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "missing or invalid API key; send Authorization: Bearer <key>",
    },
    404: {
        "type": PROBLEM_TYPE_BASE + "not-found",
        "title": "Not Found",
        "status": 404,
        "detail": f"job {_JOB_ID} not found",
    },
    409: {
        "type": PROBLEM_TYPE_BASE + "conflict",
        "title": "ConflictError",
        "status": 409,
        "detail": "a job named 'weekly-report' already exists in namespace 'billing'",
        "errors": [{"field": "name", "message": "already exists"}],
    },
    412: {
        "type": PROBLEM_TYPE_BASE + "precondition-failed",
        "title": "Precondition Failed",
        "status": 412,
        "detail": 'the job changed: its ETag is now "3", not "2"',
    },
    415: {
        "type": PROBLEM_TYPE_BASE + "unsupported-media-type",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": "Content-Type is text/plain; send the body as application/json (or a +json type, UTF-8)",
        "errors": [
            {
                "field": "Content-Type",
                "message": "is text/plain; send the body as application/json (or a +json type, UTF-8)",
            }
        ],
    },
    413: {
        "type": PROBLEM_TYPE_BASE + "request-entity-too-large",
        "title": "Request Entity Too Large",
        "status": 413,
        "detail": "request body is larger than 1 MiB",
        "errors": [{"field": "body", "message": "request body is larger than 1 MiB"}],
    },
    422: {
        "type": PROBLEM_TYPE_BASE + "invalid-request",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "schedule: schedule '0 0 30 2 *' never fires",
        "errors": [{"field": "schedule", "message": "schedule '0 0 30 2 *' never fires"}],
    },
    429: {
        "type": PROBLEM_TYPE_BASE + "rate-limited",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "rate limit exceeded: each key may make 50 requests per second (bursts of 100); "
        "retry after 1 s",
    },
    500: {
        "type": PROBLEM_TYPE_BASE + "internal-server-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "internal error; the service logged the details",
    },
    503: {
        "type": PROBLEM_TYPE_BASE + "service-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "database unavailable: OperationalError",
    },
}

_REFUSED = "Unknown fields are refused (422 naming them), never ignored."
_INTERNAL_ERROR = "Unexpected error; the service logged the details and answers without them"
_UNSUPPORTED = "The request body is not declared as application/json (or a +json type)"
_UNAVAILABLE = "The database does not answer; Retry-After says when to try again"
_RETRY_AFTER = "Seconds to wait before trying again"
_SECONDS = Schema(type=OpenAPIType.INTEGER, minimum=1)


# ------------------------------------------------------------------------------ the document


def _structs() -> dict[str, type[msgspec.Struct]]:
    """Every wire struct by the name Litestar gives its component."""
    found: dict[str, type[msgspec.Struct]] = {
        name: value
        for module in (models, fields, schemas)
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, msgspec.Struct)
    }
    found["Problem"] = Problem
    return found


def _ref_name(schema: Schema | Reference | None) -> str | None:
    if isinstance(schema, Reference):
        return schema.ref.rsplit("/", 1)[-1]
    return None


def _example(name: str, value: Any) -> dict[str, Example | Reference]:
    # Pre-encoded: Litestar's document builder drops every null from plain values, and a job's
    # example needs its `"end_at": null`; msgspec writes Raw out verbatim.
    return {name: Example(summary=name.replace("-", " "), value=msgspec.Raw(msgspec.json.encode(value)))}


def _is_validation_default(response: OpenAPIResponse | Reference) -> bool:
    """Litestar's default 400, documented for any handler with parameters: not what we send."""
    if not isinstance(response, OpenAPIResponse) or not response.content:
        return False
    return PROBLEM_JSON not in response.content


def _problem(status: int, description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={
            PROBLEM_JSON: OpenAPIMediaType(
                schema=Reference(ref="#/components/schemas/Problem"),
                examples=_example(f"problem-{status}", _PROBLEM_EXAMPLES[status]),
            )
        },
    )


def _response_examples(op_id: str, responses: dict[str, OpenAPIResponse | Reference]) -> None:
    for status, response in responses.items():
        if not isinstance(response, OpenAPIResponse) or not response.content:
            continue
        for media_type, content in response.content.items():
            if content.examples or content.example is not None:
                continue
            if media_type == PROBLEM_JSON:
                content.examples = _example(f"problem-{status}", _PROBLEM_EXAMPLES[int(status)])
            elif media_type.startswith("text/plain"):
                content.examples = _example("metrics", _METRICS_EXAMPLE)
            elif op_id in OPERATION_EXAMPLES and int(status) < 300:  # noqa: PLR2004 - HTTP's success class
                content.examples = _example(op_id, OPERATION_EXAMPLES[op_id])
            elif (name := _ref_name(content.schema)) in BODY_EXAMPLES:
                content.examples = _example(str(name), BODY_EXAMPLES[str(name)])


def _request_examples(operation: Operation) -> None:
    body = operation.request_body
    if body is not None and not isinstance(body, Reference):
        for content in body.content.values():
            name = _ref_name(content.schema)
            if name in BODY_EXAMPLES and not content.examples:
                content.examples = _example(str(name), BODY_EXAMPLES[str(name)])
    for parameter in operation.parameters or []:
        if isinstance(parameter, Parameter) and parameter.param_in == "path" and parameter.example is None:
            parameter.example = _RUN_ID if parameter.name == "run_id" else _JOB_ID


def _finish_operation(path: str, method: str, operation: Operation) -> None:
    known = OPERATIONS.get((method.upper(), path))
    if known:
        operation.summary = known[1]
    elif operation.summary:
        operation.summary = re.sub(r"(?<!^)(?=[A-Z])", " ", operation.summary).capitalize()
    if not path.startswith(auth._PUBLIC):  # noqa: SLF001 - the same prefixes the middleware lets through
        operation.security = [{BEARER: []}]
    responses = operation.responses or {}
    for status in [code for code, response in responses.items() if _is_validation_default(response)]:
        if int(status) >= 400:  # noqa: PLR2004 - HTTP's error classes
            del responses[status]
    responses.setdefault("500", _problem(500, _INTERNAL_ERROR))
    # Every body is refused unless declared JSON (StrictJsonRequest), and every route that reads the
    # database or a key answers 503 while the database is away.
    if operation.request_body is not None:
        responses.setdefault("415", _problem(415, _UNSUPPORTED))
    if not path.startswith(auth._PUBLIC):  # noqa: SLF001
        responses.setdefault("503", _problem(503, _UNAVAILABLE))
    for status in ("429", "503"):
        response = responses.get(status)
        if isinstance(response, OpenAPIResponse) and not response.headers:
            response.headers = {"Retry-After": OpenAPIHeader(schema=_SECONDS, description=_RETRY_AFTER)}
    operation.responses = dict(sorted(responses.items()))
    _response_examples(operation.operation_id or "", operation.responses)
    _request_examples(operation)


def finish(openapi: OpenAPI) -> OpenAPI:
    """Correct the generated document in place (see the module docstring) and return it."""
    for path, item in (openapi.paths or {}).items():
        for method in _METHODS:
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                _finish_operation(path, method, operation)
    structs = _structs()
    for name, schema in (openapi.components.schemas or {}).items():
        struct = structs.get(name)
        if struct is not None and struct.__struct_config__.forbid_unknown_fields:
            # The API answers 422 naming any field it does not know, rather than ignoring it.
            schema.additional_properties = False
            summary = (inspect.getdoc(struct) or "").split("\n\n", 1)[0].replace("\n", " ")
            if _REFUSED not in summary:
                summary = f"{summary} {_REFUSED}".strip()
            schema.description = summary
    return openapi


# ----------------------------------------------------------------------------- the docs page

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} API</title>
  <link rel="icon" type="image/png" href="{assets}/swagger-ui/favicon-32x32.png">
  <link rel="stylesheet" href="{assets}/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{assets}/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="{assets}/docs.js"></script>
</body>
</html>
"""


class OfflineSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI from the copy this package ships (static/swagger-ui), so /docs works offline."""

    def __init__(self, path: str = "/") -> None:
        """Serve the page at ``path`` under the OpenAPI router (/schema)."""
        super().__init__(path=path)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: our stylesheet, Swagger UI's bundle and our initializer, nothing inline."""
        del request
        title = str(openapi_schema["info"]["title"])
        return _PAGE.format(title=title, assets=ASSETS_PATH, spec=SPEC_PATH).encode()
