"""From flags to requests: the argparse types of `scheduler jobs` flags, the job create and update send."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scheduler.cli.transport import JsonObject, UsageError
from scheduler.domain.names import parse_label

# The default of --body: `--body null` is a real value (it clears the body), so None cannot mean "not given".
NOT_GIVEN: Any = object()


def key_value(text: str) -> tuple[str, str]:
    """Argparse type for `K=V` flags."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def label(text: str) -> tuple[str, str]:
    """Argparse type for `--label key=value` (`key:value` reads the same): the domain's one label reader."""
    try:
        return parse_label(text)
    except ValueError as exc:
        # ArgumentTypeError, not ValueError: argparse then prints this message after the flag's name.
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    ("timezone", "timezone"),
    ("timeout_s", "timeout_s"),
    ("overlap", "overlap"),
    ("paused", "paused"),
)


def _http_flags_given(args: argparse.Namespace) -> bool:
    given = (args.http_url, args.http_method, args.header)
    return any(value is not None for value in given) or args.body is not NOT_GIVEN


# Flags that set a field of notify: (argparse dest, notify field).
_NOTIFY_FIELDS = (("notify_url", "url"), ("notify_after", "after"), ("notify_pause_after", "pause_after"))


def _notify_flags_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, dest, None) is not None for dest, _ in _NOTIFY_FIELDS)


def needs_current_job(args: argparse.Namespace) -> bool:
    """Whether an update changes part of a nested field, so the rest must be read first."""
    return (
        _http_flags_given(args)
        or args.max_attempts is not None
        or args.misfire is not None
        or bool(args.label)
        or _notify_flags_given(args)
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


def _timing_from_flags(args: argparse.Namespace, job: JsonObject) -> None:
    """One --schedule sets `schedule`; several make the job's `schedules`; exclusions as given."""
    given = getattr(args, "schedule", None) or []
    if len(given) == 1:
        job["schedule"] = given[0]
        job.pop("schedules", None)
    elif given:
        job["schedules"] = [{"schedule": text} for text in given]
        job.pop("schedule", None)
    dates = getattr(args, "exclude_date", None)
    calendars = getattr(args, "exclude_calendar", None)
    if dates or calendars:
        job["exclusions"] = {"dates": dates or [], "calendars": calendars or []}


def apply_flags(args: argparse.Namespace, job: JsonObject, current: JsonObject | None) -> JsonObject:
    """Lay the flags over ``job`` (from --from-file, or empty); nested fields merge over ``current``."""
    for dest, key in _PLAIN_FIELDS:
        value = getattr(args, dest)
        if value is not None:
            job[key] = value
    _timing_from_flags(args, job)
    _action_from_flags(args, job, current)
    if args.max_attempts is not None:
        job["retry"] = {**_nested(job, current, "retry"), "max_attempts": args.max_attempts}
    if args.misfire is not None:
        job["misfire"] = {**_nested(job, current, "misfire"), "policy": args.misfire}
    if args.label:
        job["labels"] = {**_nested(job, current, "labels"), **dict(args.label)}
    if getattr(args, "no_notify", False):
        if _notify_flags_given(args):
            raise UsageError("--no-notify turns notifications off: give it without the other --notify flags")
        job["notify"] = None
    elif _notify_flags_given(args):
        notify = _nested(job, current, "notify")
        for dest, key in _NOTIFY_FIELDS:
            value = getattr(args, dest)
            if value is not None:
                notify[key] = value
        job["notify"] = notify
    return job
