"""`scheduler jobs …`: a command-line client of the jobs API, with tables for people and JSON for scripts."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler import __version__
from scheduler.domain.models import MisfirePolicy, OverlapPolicy, RunStatus

if TYPE_CHECKING:
    from scheduler.config import Settings

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
REQUEST_TIMEOUT_S = 30.0
PAGE_MAX = 500
# Longest error text shown in the runs table; `--json` has the whole of it.
_ERROR_COLUMN = 60

JsonObject = dict[str, Any]
# The default of --body: `--body null` is a real value (it clears the body), so None cannot mean "not given".
NOT_GIVEN: Any = object()


class UsageError(Exception):
    """The command line asks for something the client cannot send; exit 2, nothing was sent."""


class UnreachableError(Exception):
    """No HTTP answer came back from the API at all."""

    def __init__(self, url: str, reason: str) -> None:
        """Remember which URL failed and why, for the message."""
        super().__init__(f"could not reach the scheduler API at {url}: {reason}")
        self.url = url


class ApiError(Exception):
    """The API answered with an error status; its RFC 9457 problem, when it sent one."""

    def __init__(self, status: int, detail: str, errors: Sequence[tuple[str, str]] = ()) -> None:
        """Keep the status, the problem's detail and its (field, message) pairs."""
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)

    def __str__(self) -> str:
        """The detail and the HTTP status, then one indented line per field the server named."""
        lines = [f"{self.detail} (HTTP {self.status})"]
        lines += [f"  {name}: {message}" for name, message in self.errors]
        return "\n".join(lines)

    @classmethod
    def of(cls, status: int, reason: str, text: str) -> ApiError:
        """Read a problem body; anything else (a proxy's HTML page) is shown briefly as it is."""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            errors = [
                (str(item.get("field", "")), str(item.get("message", "")))
                for item in body.get("errors") or []
                if isinstance(item, dict)
            ]
            return cls(status, body["detail"], errors)
        snippet = " ".join(text.split())[:200]
        return cls(status, f"{reason}: {snippet}" if snippet else reason)


@dataclass(frozen=True)
class Reply:
    """A successful answer: the body exactly as the server sent it, and decoded."""

    text: str
    data: Any


class JobsApi:
    """The HTTP API of one scheduler deployment, one method per route used by the client."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Open a connection pool to ``base_url``; the key, when given, goes in every request."""
        import httpx  # noqa: PLC0415 - keep `scheduler --help` and the server commands fast

        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": f"scheduler-cli/{__version__}", "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        # Proxy and CA variables (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE) are honoured, as curl does.
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> Self:
        """Use as a context manager so the connections close."""
        return self

    def __exit__(self, *_: object) -> None:
        """Close the connections."""
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; return the reply on 2xx, raise ApiError or UnreachableError otherwise."""
        import httpx  # noqa: PLC0415 - see __init__

        content = None if body is None else json.dumps(body)
        sent_headers = dict(headers or {})
        if content is not None:
            sent_headers["content-type"] = "application/json"
        try:
            response = self._http.request(
                method, path, params=dict(params or {}), content=content, headers=sent_headers
            )
        except httpx.TimeoutException:
            raise UnreachableError(self.base_url, "no answer in time") from None
        except httpx.TransportError as exc:
            raise UnreachableError(self.base_url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise ApiError.of(response.status_code, response.reason_phrase, response.text)
        data = response.json() if response.content else None
        return Reply(response.text, data)

    def list_jobs(self, params: Mapping[str, str | int]) -> Reply:
        """GET /jobs: one page."""
        return self.call("GET", "/jobs", params=params)

    def get_job(self, job_id: str) -> Reply:
        """GET /jobs/{id}."""
        return self.call("GET", f"/jobs/{job_id}")

    def create_job(self, job: JsonObject) -> Reply:
        """POST /jobs."""
        return self.call("POST", "/jobs", body=job)

    def update_job(self, job_id: str, patch: JsonObject, *, version: int | None) -> Reply:
        """PATCH /jobs/{id}, refused by the server if the job is no longer at ``version``."""
        headers = {} if version is None else {"if-match": f'"{version}"'}
        return self.call("PATCH", f"/jobs/{job_id}", body=patch, headers=headers)

    def delete_job(self, job_id: str) -> Reply:
        """DELETE /jobs/{id}."""
        return self.call("DELETE", f"/jobs/{job_id}")

    def post_job_action(self, job_id: str, action: str) -> Reply:
        """POST /jobs/{id}/pause, /resume or /trigger."""
        return self.call("POST", f"/jobs/{job_id}/{action}")

    def list_runs(self, job_id: str, params: Mapping[str, str | int]) -> Reply:
        """GET /jobs/{id}/runs: one page, newest first."""
        return self.call("GET", f"/jobs/{job_id}/runs", params=params)

    def preview(self, request: JsonObject) -> Reply:
        """POST /schedules/preview."""
        return self.call("POST", "/schedules/preview", body=request)


# --------------------------------------------------------------------------------- rendering


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, str]]) -> str:
    """`name:  value` lines with the values aligned."""
    width = max(len(name) for name, _ in pairs) + 1
    return "\n".join(f"{name + ':':{width}}  {value}".rstrip() for name, value in pairs)


def _shown(value: Any) -> str:
    if value is None or value in ("", {}, []):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _one_line(text: str | None, limit: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def job_state(job: JsonObject) -> str:
    """`paused`, `active`, or `finished` when nothing is left to fire (a one-time job that ran)."""
    if job.get("paused"):
        return "paused"
    return "active" if job.get("next_run_at") else "finished"


def describe_action(action: JsonObject) -> str:
    """One line saying what the job does."""
    if action.get("type") == "http":
        return f"http {action.get('method', 'POST')} {action.get('url', '')}"
    return f"log {_shown(action.get('payload') or {})}"


def describe_last_run(last_run: JsonObject | None) -> str:
    """`status at slot`, or `-` for a job that never ran."""
    if not last_run:
        return "-"
    return f"{last_run.get('status')} ({last_run.get('scheduled_for')})"


def render_job(job: JsonObject) -> str:
    """Every field of one job, one per line."""
    action = job.get("action") or {}
    retry = job.get("retry") or {}
    misfire = job.get("misfire") or {}
    pairs = [
        ("id", _shown(job.get("id"))),
        ("name", _shown(job.get("name"))),
        ("namespace", _shown(job.get("namespace"))),
        ("description", _shown(job.get("description"))),
        ("schedule", f"{job.get('schedule')}  ({job.get('timezone')})"),
        ("state", job_state(job)),
        ("next run", _shown(job.get("next_run_at"))),
        ("last run", describe_last_run(job.get("last_run"))),
        ("action", describe_action(action)),
    ]
    if action.get("type") == "http":
        pairs += [
            ("  headers", _shown(action.get("headers"))),
            ("  body", _shown(action.get("body"))),
            ("  success codes", _shown(action.get("success_codes"))),
        ]
    backoff = f"{retry.get('min_backoff_s')}-{retry.get('max_backoff_s')} s"
    windows = f"grace {misfire.get('grace_s')} s, window {misfire.get('window_s')} s"
    pairs += [
        ("timeout", f"{job.get('timeout_s')} s"),
        ("retry", f"{retry.get('max_attempts')} attempts, backoff {backoff}"),
        ("misfire", f"{misfire.get('policy')} ({windows})"),
        ("overlap", _shown(job.get("overlap"))),
        ("start at", _shown(job.get("start_at"))),
        ("end at", _shown(job.get("end_at"))),
        ("labels", ", ".join(f"{k}={v}" for k, v in (job.get("labels") or {}).items()) or "-"),
        ("created", _shown(job.get("created_at"))),
        ("updated", _shown(job.get("updated_at"))),
        ("version", _shown(job.get("version"))),
    ]
    return render_fields(pairs)


def render_job_table(jobs: Sequence[JsonObject]) -> str:
    """Jobs as a table, one per row."""
    rows = [
        [
            _shown(job.get("id")),
            _shown(job.get("name")),
            _shown(job.get("schedule")),
            _shown(job.get("timezone")),
            job_state(job),
            _shown(job.get("next_run_at")),
            describe_last_run(job.get("last_run")),
        ]
        for job in jobs
    ]
    headers = ["ID", "NAME", "SCHEDULE", "TIMEZONE", "STATE", "NEXT RUN", "LAST RUN"]
    return render_table(headers, rows)


def render_run(run: JsonObject) -> str:
    """Every field of one run, one per line."""
    keys = [
        "id",
        "job_id",
        "trigger",
        "attempt",
        "status",
        "scheduled_for",
        "started_at",
        "finished_at",
        "duration_ms",
        "runner",
        "http_status",
        "error",
        "output",
    ]
    return render_fields([(key.replace("_", " "), _shown(run.get(key))) for key in keys])


def render_run_table(runs: Sequence[JsonObject]) -> str:
    """Runs as a table, newest first as the server sorts them."""
    rows = [
        [
            _shown(run.get("id")),
            _shown(run.get("scheduled_for")),
            _shown(run.get("trigger")),
            _shown(run.get("attempt")),
            _shown(run.get("status")),
            _shown(run.get("http_status")),
            "-" if run.get("duration_ms") is None else f"{run['duration_ms']} ms",
            _one_line(run.get("error"), _ERROR_COLUMN),
        ]
        for run in runs
    ]
    headers = ["ID", "SCHEDULED FOR", "TRIGGER", "ATTEMPT", "STATUS", "HTTP", "DURATION", "ERROR"]
    return render_table(headers, rows)


def render_fire_times(times: Sequence[str], timezone: str) -> str:
    """Fire times as the server gives them (UTC) beside the wall time in the job's zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    rows = []
    for text in times:
        local = "-"
        if zone is not None:
            local = datetime.fromisoformat(text).astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S %Z")
        rows.append([text, local])
    return render_table(["FIRES AT", f"LOCAL TIME ({timezone})"], rows)


# -------------------------------------------------------------------------- building requests


def key_value(text: str) -> tuple[str, str]:
    """Argparse type for `K=V` flags."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_LABEL_SEPARATOR = re.compile(r"[:=]")


def label(text: str) -> tuple[str, str]:
    """Argparse type for labels, `K=V` or `K:V` alike: a label key holds neither character."""
    match = _LABEL_SEPARATOR.search(text)
    if match is None or match.start() == 0:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (or KEY:VALUE), got {text!r}")
    return text[: match.start()], text[match.end() :]


def json_value(text: str) -> Any:
    """Argparse type for flags that take a JSON document."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def json_object(text: str) -> JsonObject:
    """Argparse type for flags that take a JSON object."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def read_job_file(path: str) -> JsonObject:
    """The JSON object in ``path`` (`-` is standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--from-file: cannot read {path}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--from-file: {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--from-file: {path} must hold one JSON object (a job)")
    return value


# Flags that set a top-level job field as they are: (argparse dest, job field).
_PLAIN_FIELDS = (
    ("name", "name"),
    ("description", "description"),
    ("schedule", "schedule"),
    ("timezone", "timezone"),
    ("timeout_s", "timeout_s"),
    ("overlap", "overlap"),
    ("paused", "paused"),
)


def _http_flags_given(args: argparse.Namespace) -> bool:
    given = (args.http_url, args.http_method, args.header)
    return any(value is not None for value in given) or args.body is not NOT_GIVEN


def needs_current_job(args: argparse.Namespace) -> bool:
    """Whether an update changes part of a nested field, so the rest must be read first."""
    return (
        _http_flags_given(args)
        or args.max_attempts is not None
        or args.misfire is not None
        or bool(args.label)
    )


def _nested(job: JsonObject, current: JsonObject | None, key: str) -> JsonObject:
    """The value a partial change of ``key`` starts from: the file's, else the stored job's."""
    base = job.get(key)
    if isinstance(base, dict):
        return dict(base)
    if current is not None and isinstance(current.get(key), dict):
        return dict(current[key])
    return {}


def _action_from_flags(args: argparse.Namespace, job: JsonObject, current: JsonObject | None) -> None:
    if args.log_payload is not None:
        job["action"] = {"type": "log", "payload": args.log_payload}
        return
    if not _http_flags_given(args):
        return
    action = _nested(job, current, "action")
    if action.get("type") != "http":
        # Switching a log job to HTTP: the log action's payload has no meaning there.
        if args.http_url is None:
            raise UsageError(
                "--http-method, --header and --body need --http-url (the job has no HTTP action)"
            )
        action = {"type": "http"}
    if args.http_url is not None:
        action["url"] = args.http_url
    if args.http_method is not None:
        action["method"] = args.http_method.upper()
    if args.header:
        action["headers"] = {**(action.get("headers") or {}), **dict(args.header)}
    if args.body is not NOT_GIVEN:
        action["body"] = args.body
    job["action"] = action


def apply_flags(args: argparse.Namespace, job: JsonObject, current: JsonObject | None) -> JsonObject:
    """Lay the flags over ``job`` (from --from-file, or empty); nested fields merge over ``current``."""
    for dest, key in _PLAIN_FIELDS:
        value = getattr(args, dest)
        if value is not None:
            job[key] = value
    _action_from_flags(args, job, current)
    if args.max_attempts is not None:
        job["retry"] = {**_nested(job, current, "retry"), "max_attempts": args.max_attempts}
    if args.misfire is not None:
        job["misfire"] = {**_nested(job, current, "misfire"), "policy": args.misfire}
    if args.label:
        job["labels"] = {**_nested(job, current, "labels"), **dict(args.label)}
    return job


# ----------------------------------------------------------------------------------- commands

Handler = Callable[[JobsApi, argparse.Namespace], str]


def resolve_job(api: JobsApi, ref: str) -> str:
    """A job's id from an id or a name (names are unique in a namespace)."""
    try:
        return str(UUID(ref))
    except ValueError:
        pass
    params: dict[str, str | int] = {"name_prefix": ref, "limit": PAGE_MAX}
    while True:
        page = api.list_jobs(params).data
        for job in page["items"]:
            if job["name"] == ref:
                return str(job["id"])
        if not page.get("next_cursor"):
            raise ApiError(404, f"no job named {ref!r} in this namespace")
        params["cursor"] = page["next_cursor"]


def _job_params(args: argparse.Namespace) -> dict[str, str | int]:
    params: dict[str, str | int] = {}
    if args.limit is not None:
        params["limit"] = args.limit
    if args.name_prefix is not None:
        params["name_prefix"] = args.name_prefix
    if args.label is not None:
        key, value = args.label
        params["label"] = f"{key}:{value}"
    if args.paused is not None:
        params["paused"] = args.paused
    return params


def cmd_list(api: JobsApi, args: argparse.Namespace) -> str:
    """List jobs; with --all follow next_cursor to the last page."""
    params = _job_params(args)
    reply = api.list_jobs(params)
    if not args.all:
        if args.json:
            return reply.text
        table = render_job_table(reply.data["items"])
        if reply.data.get("next_cursor"):
            sys.stderr.write("more jobs follow; --all lists every page\n")
        return table
    items: list[JsonObject] = list(reply.data["items"])
    cursor = reply.data.get("next_cursor")
    while cursor:
        reply = api.list_jobs({**params, "cursor": cursor})
        items += reply.data["items"]
        cursor = reply.data.get("next_cursor")
    if args.json:
        # Every page in one document shaped like a page, so `jq '.items[]'` works with or without --all.
        return json.dumps({"items": items, "next_cursor": None})
    return render_job_table(items)


def cmd_get(api: JobsApi, args: argparse.Namespace) -> str:
    """Show one job."""
    reply = api.get_job(resolve_job(api, args.job))
    return reply.text if args.json else render_job(reply.data)


def cmd_create(api: JobsApi, args: argparse.Namespace) -> str:
    """Create a job from flags, a file, or a file with flags laid over it."""
    job = read_job_file(args.from_file) if args.from_file else {}
    apply_flags(args, job, None)
    missing = [
        flag
        for key, flag in (
            ("name", "--name"),
            ("schedule", "--schedule"),
            ("action", "--http-url or --log-payload"),
        )
        if key not in job
    ]
    if missing:
        raise UsageError(f"a job needs {', '.join(missing)} (or --from-file with them)")
    reply = api.create_job(job)
    return reply.text if args.json else render_job(reply.data)


def cmd_update(api: JobsApi, args: argparse.Namespace) -> str:
    """Change the fields given; nested fields (action, retry, misfire, labels) keep what is not given."""
    job_id = resolve_job(api, args.job)
    patch = read_job_file(args.from_file) if args.from_file else {}
    version = args.if_match
    current = None
    if needs_current_job(args):
        current = api.get_job(job_id).data
        # The merge is based on what was just read: refuse the write if someone changed it since.
        if version is None:
            version = int(current["version"])
    apply_flags(args, patch, current)
    if not patch:
        raise UsageError("nothing to change: give at least one field flag or --from-file")
    reply = api.update_job(job_id, patch, version=version)
    return reply.text if args.json else render_job(reply.data)


def cmd_delete(api: JobsApi, args: argparse.Namespace) -> str:
    """Delete a job (its running runs are cancelled)."""
    job_id = resolve_job(api, args.job)
    api.delete_job(job_id)
    return "" if args.json else f"deleted job {job_id}"


def cmd_pause(api: JobsApi, args: argparse.Namespace) -> str:
    """Stop firing a job."""
    reply = api.post_job_action(resolve_job(api, args.job), "pause")
    return reply.text if args.json else render_job(reply.data)


def cmd_resume(api: JobsApi, args: argparse.Namespace) -> str:
    """Fire a paused job again from its next slot."""
    reply = api.post_job_action(resolve_job(api, args.job), "resume")
    return reply.text if args.json else render_job(reply.data)


def cmd_trigger(api: JobsApi, args: argparse.Namespace) -> str:
    """Fire a job now; show the manual run it made."""
    reply = api.post_job_action(resolve_job(api, args.job), "trigger")
    return reply.text if args.json else render_run(reply.data)


def cmd_runs(api: JobsApi, args: argparse.Namespace) -> str:
    """A job's run history, newest first."""
    params: dict[str, str | int] = {}
    if args.status is not None:
        params["status"] = args.status
    if args.limit is not None:
        params["limit"] = args.limit
    reply = api.list_runs(resolve_job(api, args.job), params)
    if args.json:
        return reply.text
    if reply.data.get("next_cursor"):
        sys.stderr.write("older runs follow; raise --limit (at most 500) or use the API's cursor\n")
    return render_run_table(reply.data["items"])


def cmd_preview(api: JobsApi, args: argparse.Namespace) -> str:
    """Upcoming fire times of a schedule, validated by the server, stored nowhere."""
    request: JsonObject = {"schedule": args.schedule, "timezone": args.timezone}
    if args.count is not None:
        request["count"] = args.count
    if args.after is not None:
        request["after"] = args.after
    reply = api.preview(request)
    return reply.text if args.json else render_fire_times(reply.data["next"], args.timezone)


# ------------------------------------------------------------------------------------ parser


def _add_job_field_flags(parser: argparse.ArgumentParser) -> None:
    """The flags create and update share; every one is optional so update can send only what changed."""
    parser.add_argument(
        "--from-file", metavar="PATH", help="a job as JSON (`-` for stdin); flags override it"
    )
    parser.add_argument("--name", help="unique in the namespace: 1-128 of A-Z a-z 0-9 . _ -")
    parser.add_argument("--description")
    parser.add_argument("--schedule", help="cron, @daily, '@every 1h30m' or '@at 2026-12-01T09:00:00Z'")
    parser.add_argument("--timezone", help="IANA zone name (default UTC)")
    action = parser.add_argument_group("action (HTTP call or log line)")
    kinds = action.add_mutually_exclusive_group()
    kinds.add_argument("--http-url", metavar="URL", help="call this URL")
    kinds.add_argument("--log-payload", metavar="JSON", type=json_object, help="log this JSON object")
    action.add_argument("--http-method", metavar="METHOD", help="GET, POST (default), PUT, PATCH, DELETE …")
    action.add_argument(
        "--header", metavar="K=V", type=key_value, action="append", help="request header (repeatable)"
    )
    action.add_argument(
        "--body",
        metavar="JSON",
        type=json_value,
        default=NOT_GIVEN,
        help="request body, as JSON (null clears it)",
    )
    parser.add_argument("--timeout-s", type=int, metavar="S", help="per attempt, 1..3600 (default 30)")
    parser.add_argument("--max-attempts", type=int, metavar="N", help="attempts per slot, 1..20 (default 3)")
    parser.add_argument("--overlap", choices=[p.value for p in OverlapPolicy], help="default skip")
    parser.add_argument("--misfire", choices=[p.value for p in MisfirePolicy], help="default once")
    parser.add_argument("--label", metavar="K=V", type=label, action="append", help="label (repeatable)")
    parser.add_argument(
        "--paused", action=argparse.BooleanOptionalAction, default=None, help="created or set paused"
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    parser.add_argument(
        "--url", help="the API's base URL (default SCHEDULER_URL, else http://127.0.0.1:8000)"
    )


def add_jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `jobs` and its subcommands to the `scheduler` command line; return the `jobs` parser."""
    jobs = sub.add_parser(
        "jobs",
        help="manage jobs through the HTTP API (SCHEDULER_URL, SCHEDULER_API_KEY)",
        description="Manage jobs through a running API at SCHEDULER_URL, sending SCHEDULER_API_KEY as a "
        "bearer key. JOB is a job id or its name.",
        epilog="exit status: 0 done, 1 the API refused (its problem detail is printed), "
        "2 bad usage, 3 the API could not be reached",
    )
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        _add_common(parser)
        parser.set_defaults(jobs_handler=handler)
        return parser

    listing = command("list", cmd_list, "list jobs, in name order")
    listing.add_argument("--name-prefix", metavar="P")
    listing.add_argument("--label", metavar="K:V", type=label, help="only jobs with this label (or K=V)")
    listing.add_argument("--paused", choices=["true", "false"])
    listing.add_argument("--limit", type=int, metavar="N", help="jobs per page, 1..500 (default 50)")
    listing.add_argument("--all", action="store_true", help="follow next_cursor through every page")

    command("get", cmd_get, "show one job").add_argument("job", metavar="JOB")

    create = command("create", cmd_create, "create a job from flags or --from-file")
    _add_job_field_flags(create)

    update = command("update", cmd_update, "change some fields of a job")
    update.add_argument("job", metavar="JOB")
    _add_job_field_flags(update)
    update.add_argument(
        "--if-match", type=int, metavar="VERSION", help="refuse the change unless the job is at this version"
    )

    command("delete", cmd_delete, "delete a job (cancels its running runs)").add_argument(
        "job", metavar="JOB"
    )
    command("pause", cmd_pause, "stop firing a job").add_argument("job", metavar="JOB")
    command("resume", cmd_resume, "fire a paused job again from its next slot").add_argument(
        "job", metavar="JOB"
    )
    command("trigger", cmd_trigger, "fire a job now as a manual run").add_argument("job", metavar="JOB")

    runs = command("runs", cmd_runs, "a job's run history, newest first")
    runs.add_argument("job", metavar="JOB")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--limit", type=int, metavar="N", help="runs to show, 1..500 (default 50)")

    preview = command("preview", cmd_preview, "the next fire times of a schedule, without storing it")
    preview.add_argument("--schedule", required=True)
    preview.add_argument("--timezone", default="UTC")
    preview.add_argument("--count", type=int, metavar="N", help="1..100 (default 10)")
    preview.add_argument("--after", metavar="TIME", help="RFC 3339 instant to start from (default now)")
    return jobs


# ----------------------------------------------------------------------------------- running


def jobs_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `scheduler jobs` subcommand; print its output and return the exit status."""
    base_url = args.url or settings.url
    prog = f"scheduler jobs {args.jobs_command}"
    if not base_url.startswith(("http://", "https://")):
        sys.stderr.write(f"{prog}: SCHEDULER_URL must be an http:// or https:// URL, got {base_url!r}\n")
        return EXIT_USAGE
    handler: Handler = args.jobs_handler
    try:
        with JobsApi(base_url, settings.api_key) as api:
            text = handler(api, args)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return EXIT_USAGE
    except UnreachableError as exc:
        sys.stderr.write(f"{prog}: {exc}\n  is `scheduler api` running there? set SCHEDULER_URL or --url\n")
        return EXIT_UNREACHABLE
    except ApiError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        if exc.status == 401:  # noqa: PLR2004
            hint = "SCHEDULER_API_KEY is not set" if not settings.api_key else "SCHEDULER_API_KEY was refused"
            sys.stderr.write(f"  {hint}; make a key with `scheduler keys create --namespace NAME`\n")
        return EXIT_API_ERROR
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
