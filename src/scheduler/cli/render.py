"""What `scheduler jobs …` prints for people: tables, one record's fields, fire times in the job's zone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.cli.transport import JsonObject
from scheduler.domain.names import format_label

# Longest error text shown in the runs table; `--json` has the whole of it.
_ERROR_COLUMN = 60


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
    return "\n".join(f"{name + ':' if name else '':{width}}  {value}".rstrip() for name, value in pairs)


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


def _schedule_lines(job: JsonObject) -> list[tuple[str, str]]:
    """The job's schedule, or each of its entries, and its exclusions."""
    entries = job.get("schedules") or []
    if len(entries) <= 1:
        lines = [("schedule", f"{job.get('schedule')}  ({job.get('timezone')})")]
    else:
        lines = [
            (
                "schedule" if index == 0 else "",
                f"{entry.get('schedule')}  ({entry.get('timezone')})"
                + ("  paused" if entry.get("paused") else ""),
            )
            for index, entry in enumerate(entries)
        ]
    exclusions = job.get("exclusions")
    if exclusions:
        parts = [*(exclusions.get("dates") or []), *(exclusions.get("calendars") or [])]
        lines.append(("excluded", f"{', '.join(parts)}  ({exclusions.get('timezone')})"))
    return lines


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
        *_schedule_lines(job),
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
        ("labels", ", ".join(format_label(k, v) for k, v in (job.get("labels") or {}).items()) or "-"),
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


def render_run_table(runs: Sequence[JsonObject], *, with_job: bool = False) -> str:
    """Runs as a table, newest first as the server sorts them (``with_job``: each with its job's name)."""
    rows = [
        [
            *([_shown(run.get("job_name"))] if with_job else []),
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
    if with_job:
        headers = ["JOB", *headers]
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
