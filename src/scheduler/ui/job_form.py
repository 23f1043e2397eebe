"""The console's job form, for create, clone and edit: its inputs read as the API reads a job's JSON.

Each section of the form becomes the JSON value the API would be sent for that field and is decoded
into the domain's `JobPatch`, so a limit is the API's limit and the message is the API's message
(reworded where msgspec's wording is for programmers). Every section is decoded on its own, so every
wrong input is named at once; the operation then checks the fields together, and its field errors
are put beside the inputs they name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from scheduler.domain import names
from scheduler.domain.fields import JobPatch
from scheduler.domain.models import HttpAction, Job, JobValues, Misfire, RetryPolicy
from scheduler.domain.schedule import Entry
from scheduler.domain.validation import FieldError
from scheduler.operations import jobs as job_ops

# The form's inputs, named after the API fields they set (dotted for nested ones), in page order.
INPUTS = (
    "name",
    "description",
    "schedule",
    "timezone",
    "start_at",
    "end_at",
    "schedules",
    "exclusions.dates",
    "exclusions.calendars",
    "exclusions.timezone",
    "action.type",
    "action.method",
    "action.url",
    "action.headers",
    "action.body_kind",
    "action.body",
    "action.success_codes",
    "action.follow_redirects",
    "action.payload",
    "timeout_s",
    "retry.max_attempts",
    "retry.min_backoff_s",
    "retry.max_backoff_s",
    "misfire.policy",
    "misfire.grace_s",
    "misfire.window_s",
    "overlap",
    "labels",
    "paused",
)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
TIMEOUT_DEFAULT_S = 30  # the API's default for a new job
ZONES = (
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "Europe/Madrid", "Europe/Moscow",
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo",
    "Asia/Kolkata", "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney",
    "Pacific/Auckland",
)  # fmt: skip
"""Suggested in the time zone input; any IANA name is accepted."""

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")
_REWORDS = (
    (re.compile(r"^Expected `(?:int|float)` >= (\S+)$"), "must be at least {0}"),
    (re.compile(r"^Expected `(?:int|float)` <= (\S+)$"), "must be at most {0}"),
    (re.compile(r"^Expected `str` of length >= 1$"), "is required"),
    (re.compile(r"^Expected `str` of length <= (\d+)$"), "must be at most {0} characters"),
    (re.compile(r"^Expected `datetime` with a timezone component$"), "needs an offset: 2026-12-01T09:00:00Z"),
    (re.compile(r"^Expected `datetime`, got `str`$"), "is not an RFC 3339 time such as 2026-12-01T09:00:00Z"),
    (re.compile(r"^Invalid value '([^']*)'$"), "{0!r} is not one of the choices"),
    (re.compile(r"^Invalid enum value '([^']*)'$"), "{0!r} is not one of the choices"),
)
_NAME_REGEX = re.compile(r"^Expected `str` matching regex")


class FormErrors(msgspec.Struct):
    """What is wrong with a posted form: messages by input, and those that name no input."""

    by_input: dict[str, str] = msgspec.field(default_factory=dict)
    other: list[str] = msgspec.field(default_factory=list)

    def __bool__(self) -> bool:
        """Whether anything is wrong."""
        return bool(self.by_input or self.other)

    def add(self, field: str, message: str) -> None:
        """Put a field's message beside the input that sets it (the first message an input gets stays)."""
        target = input_of(field)
        if target is None:
            self.other.append(f"{field}: {message}" if field else message)
        else:
            self.by_input.setdefault(target, message)

    def add_all(self, errors: Sequence[FieldError]) -> None:
        """Add an operation's field errors."""
        for error in errors:
            self.add(error.field, error.message)


def input_of(field: str) -> str | None:  # noqa: PLR0911 - one exit per kind of field
    """The input that sets an API field: itself, or the input of the field it is inside.

    `labels.team` is the labels input's, `action.headers.X-Token` the headers input's.
    """
    parts = field.split(".")
    for length in range(len(parts), 0, -1):
        candidate = ".".join(parts[:length])
        if candidate in INPUTS:
            return candidate
    if field == "action":
        return "action.type"
    if field.startswith("schedules[0]."):  # the first entry is the schedule inputs' own
        return input_of(field.removeprefix("schedules[0]."))
    if field.startswith("schedules"):
        return "schedules"
    if field.startswith("exclusions"):
        return "exclusions.calendars"
    if field in ("retry", "misfire"):
        return f"{field}.{'max_attempts' if field == 'retry' else 'policy'}"
    return None


def _message_of(error: msgspec.ValidationError | msgspec.DecodeError, field: str) -> tuple[str, str]:
    """The (field, message) of a decode error, in the API's field paths and in words for people."""
    message = str(error)
    at = _AT_PATH.search(message)
    if at:
        message = message[: at.start()]
        field = at.group(1) or field
    missing = _MISSING.match(message)
    if missing:
        return f"{field}.{missing.group(1)}", "is required"
    if _NAME_REGEX.match(message) and field == "name":
        return field, names.JOB_NAME_RULE
    for pattern, words in _REWORDS:
        found = pattern.match(message)
        if found:
            return field, words.format(*found.groups())
    return field, message


# ------------------------------------------------------------------------------ from a job


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _json_text(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def blank_values() -> dict[str, str]:
    """The inputs of the create form: the API's defaults for everything but the name and schedule."""
    retry, misfire = RetryPolicy(), Misfire()
    http = HttpAction(url="")
    return {
        "name": "",
        "description": "",
        "schedule": "",
        "timezone": "UTC",
        "start_at": "",
        "end_at": "",
        "schedules": "",
        "exclusions.dates": "",
        "exclusions.calendars": "",
        "exclusions.timezone": "",
        "action.type": "http",
        "action.method": http.method,
        "action.url": "",
        "action.headers": "",
        "action.body_kind": "json",
        "action.body": "",
        "action.success_codes": http.success_codes,
        "action.follow_redirects": "yes" if http.follow_redirects else "no",
        "action.payload": "{}",
        "timeout_s": str(TIMEOUT_DEFAULT_S),
        "retry.max_attempts": str(retry.max_attempts),
        "retry.min_backoff_s": _number(retry.min_backoff_s),
        "retry.max_backoff_s": _number(retry.max_backoff_s),
        "misfire.policy": misfire.policy.value,
        "misfire.grace_s": str(misfire.grace_s),
        "misfire.window_s": str(misfire.window_s),
        "overlap": "skip",
        "labels": "",
        "paused": "no",
    }


def _instant_text(value: Any) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def values_of(job: Job) -> dict[str, str]:
    """The inputs that show a job as it is (the edit form, and the clone form before its new name)."""
    values = blank_values()
    values.update(
        {
            "name": job.name,
            "description": job.description,
            "schedule": job.schedule,
            "timezone": job.timezone,
            "start_at": _instant_text(job.start_at),
            "end_at": _instant_text(job.end_at),
            "schedules": "\n".join(entry_line(entry) for entry in job.schedules[1:]),
            "exclusions.dates": "\n".join(day.isoformat() for day in job.exclusions.dates)
            if job.exclusions
            else "",
            "exclusions.calendars": "\n".join(job.exclusions.calendars) if job.exclusions else "",
            "exclusions.timezone": job.exclusions.timezone if job.exclusions else "",
            "timeout_s": str(job.timeout_s),
            "retry.max_attempts": str(job.retry.max_attempts),
            "retry.min_backoff_s": _number(job.retry.min_backoff_s),
            "retry.max_backoff_s": _number(job.retry.max_backoff_s),
            "misfire.policy": job.misfire.policy.value,
            "misfire.grace_s": str(job.misfire.grace_s),
            "misfire.window_s": str(job.misfire.window_s),
            "overlap": job.overlap.value,
            "labels": "\n".join(names.format_label(key, value) for key, value in job.labels.items()),
            "paused": "yes" if job.paused else "no",
        }
    )
    action = job.action
    if isinstance(action, HttpAction):
        values.update(
            {
                "action.type": "http",
                "action.method": action.method,
                "action.url": action.url,
                "action.headers": "\n".join(f"{key}: {value}" for key, value in action.headers.items()),
                "action.body_kind": "text" if isinstance(action.body, str) else "json",
                "action.body": ""
                if action.body is None
                else action.body
                if isinstance(action.body, str)
                else _json_text(action.body),
                "action.success_codes": action.success_codes,
                "action.follow_redirects": "yes" if action.follow_redirects else "no",
            }
        )
    else:
        values.update({"action.type": "log", "action.payload": _json_text(action.payload)})
    return values


def entry_line(entry: Entry) -> str:
    """A further schedule entry as the form writes it: `EXPRESSION | ZONE`, then flags.

    The flags are `paused`, `from=TIME` and `until=TIME`.
    """
    parts = [entry.schedule, entry.timezone]
    if entry.paused:
        parts.append("paused")
    if entry.start_at is not None:
        parts.append(f"from={_instant_text(entry.start_at)}")
    if entry.end_at is not None:
        parts.append(f"until={_instant_text(entry.end_at)}")
    return " | ".join(parts)


def _entry_spec(line: str, zone: str) -> dict[str, Any]:
    """The API's JSON of one line of the form's further schedule entries."""
    expression, *rest = (part.strip() for part in line.split("|"))
    spec: dict[str, Any] = {"schedule": expression, "timezone": zone}
    for index, part in enumerate(rest):
        if part == "paused":
            spec["paused"] = True
        elif part.startswith("from="):
            spec["start_at"] = part.removeprefix("from=").strip()
        elif part.startswith("until="):
            spec["end_at"] = part.removeprefix("until=").strip()
        elif index == 0 and part:
            spec["timezone"] = part
        elif part:
            raise ValueError(f"{part!r} in {line!r} is none of a zone, paused, from=TIME or until=TIME")
    return spec


def _timing_sections(form: Mapping[str, Any], raw: dict[str, Any], errors: FormErrors) -> None:
    """Further schedule entries and exclusions: the whole list, from the first entry's inputs on."""
    if "schedules" in form:
        zone = _text(form, "timezone").strip() or "UTC"
        first = {
            "schedule": _text(form, "schedule").strip(),
            "timezone": zone,
            "start_at": _text(form, "start_at").strip() or None,
            "end_at": _text(form, "end_at").strip() or None,
        }
        lines = [line.strip() for line in _text(form, "schedules").splitlines() if line.strip()]
        try:
            raw["schedules"] = [first, *(_entry_spec(line, zone) for line in lines)]
        except ValueError as exc:
            errors.add("schedules", str(exc))
    if "exclusions.dates" in form:
        dates = [part for part in re.split(r"[\s,]+", _text(form, "exclusions.dates")) if part]
        calendars = [
            line.strip() for line in _text(form, "exclusions.calendars").splitlines() if line.strip()
        ]
        read_in = _text(form, "exclusions.timezone").strip() or None
        raw["exclusions"] = (
            {"dates": dates, "calendars": calendars, "timezone": read_in} if dates or calendars else None
        )


def clone_name(name: str) -> str:
    """A new name for a copy of the job ``name``: the name with `-copy`, cut to fit."""
    return name[: 128 - len("-copy")] + "-copy"


# ------------------------------------------------------------------------------ from a post


def _text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return "" if value is None else str(value)


def _whole(form: Mapping[str, Any], key: str, errors: FormErrors) -> int | None:
    text = _text(form, key).strip()
    try:
        return int(text)
    except ValueError:
        errors.add(key, "is required" if not text else "must be a whole number")
        return None


def _decimal(form: Mapping[str, Any], key: str, errors: FormErrors) -> float | None:
    text = _text(form, key).strip()
    try:
        value = float(text)
    except ValueError:
        errors.add(key, "is required" if not text else "must be a number")
        return None
    if value != value or value in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN is not equal to itself
        errors.add(key, "must be a number")
        return None
    return value


def _json_value(text: str, key: str, errors: FormErrors) -> tuple[bool, Any]:
    try:
        return True, msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        errors.add(key, f"is not valid JSON ({str(exc).removeprefix('JSON is malformed: ')})")
        return False, None


def _headers(text: str, errors: FormErrors) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            errors.add("action.headers", f"line {number}: write a header as Name: value")
            return None
        headers[name.strip()] = value.strip()
    return headers


def _action(form: Mapping[str, Any], errors: FormErrors) -> tuple[bool, Any]:
    """The action's JSON from its inputs; (False, None) when an input could not be read."""
    kind = _text(form, "action.type")
    if kind == "log":
        payload_text = _text(form, "action.payload").strip() or "{}"
        read, payload = _json_value(payload_text, "action.payload", errors)
        if read and not isinstance(payload, dict):
            errors.add("action.payload", 'must be a JSON object, such as {"msg": "hello"}')
            return False, None
        return read, {"type": "log", "payload": payload}
    if kind != "http":
        errors.add("action.type", "choose log or http")
        return False, None
    headers = _headers(_text(form, "action.headers"), errors)
    body_text = _text(form, "action.body")
    read, body = True, None
    if body_text.strip():
        if _text(form, "action.body_kind") == "text":
            body = body_text
        else:
            read, body = _json_value(body_text, "action.body", errors)
    if headers is None or not read:
        return False, None
    return True, {
        "type": "http",
        "method": _text(form, "action.method") or "POST",
        "url": _text(form, "action.url").strip(),
        "headers": headers,
        "body": body,
        "success_codes": _text(form, "action.success_codes").strip() or "2xx",
        "follow_redirects": _text(form, "action.follow_redirects") == "yes",
    }


def _sections(form: Mapping[str, Any], errors: FormErrors) -> dict[str, Any]:  # noqa: C901 - one branch a section
    """Each field's JSON value from the inputs the form holds (an edit may post only some)."""
    raw: dict[str, Any] = {}
    for key in ("name", "schedule", "timezone"):
        if key in form:
            raw[key] = _text(form, key).strip()
    if "description" in form:
        raw["description"] = _text(form, "description").strip()
    for key in ("start_at", "end_at"):
        if key in form:
            raw[key] = _text(form, key).strip() or None
    if "timeout_s" in form and (timeout := _whole(form, "timeout_s", errors)) is not None:
        raw["timeout_s"] = timeout
    if "retry.max_attempts" in form:
        attempts = _whole(form, "retry.max_attempts", errors)
        low = _decimal(form, "retry.min_backoff_s", errors)
        high = _decimal(form, "retry.max_backoff_s", errors)
        if attempts is not None and low is not None and high is not None:
            raw["retry"] = {"max_attempts": attempts, "min_backoff_s": low, "max_backoff_s": high}
    if "misfire.policy" in form:
        grace = _whole(form, "misfire.grace_s", errors)
        window = _whole(form, "misfire.window_s", errors)
        if grace is not None and window is not None:
            raw["misfire"] = {"policy": _text(form, "misfire.policy"), "grace_s": grace, "window_s": window}
    if "overlap" in form:
        raw["overlap"] = _text(form, "overlap")
    if "paused" in form:
        raw["paused"] = _text(form, "paused") == "yes"
    if "labels" in form:
        try:
            raw["labels"] = names.parse_labels(_text(form, "labels"))
        except ValueError as exc:
            errors.add("labels", str(exc))
    _timing_sections(form, raw, errors)
    if "action.type" in form:
        read, action = _action(form, errors)
        if read:
            raw["action"] = action
    elif "action" in form:  # the whole action as the API's JSON
        read, action = _json_value(_text(form, "action") or "null", "action", errors)
        if read:
            raw["action"] = action
    return raw


def read(form: Mapping[str, Any]) -> tuple[dict[str, Any], FormErrors]:
    """The fields a posted form sets, decoded as the API decodes them, and what is wrong with it.

    Only the fields whose inputs the form holds are returned: an edit changes those and no other.
    """
    errors = FormErrors()
    changes: dict[str, Any] = {}
    for field, value in _sections(form, errors).items():
        try:
            patch = msgspec.json.decode(msgspec.json.encode({field: value}), type=JobPatch)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            errors.add(*_message_of(exc, field))
            continue
        changes[field] = getattr(patch, field)
    return changes, errors


class NewJob:
    """A new job's fields, as `operations.jobs.create` reads them from a spec.

    The form's values first; a field the form does not show comes from the job being cloned, if
    any, else its default, so a field the jobs gain later is neither lost by a clone nor required.
    Timing fields the form does not show (several schedule entries, exclusions) are left absent,
    which the operation reads as "not given", as for a JSON body without them.
    """

    def __init__(self, changes: Mapping[str, Any], cloned: Job | None) -> None:
        """Keep the form's fields and the job they were cloned from."""
        self._changes = dict(changes)
        self._cloned = cloned

    def __getattr__(self, name: str) -> Any:
        """A field of the new job."""
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._changes:
            return self._changes[name]
        if name in job_ops.TIMING_FIELDS:
            raise AttributeError(name)
        if self._cloned is not None and hasattr(self._cloned, name):
            return getattr(self._cloned, name)
        for field in msgspec.structs.fields(JobValues):
            if field.name == name:
                if field.default is not msgspec.NODEFAULT:
                    return field.default
                if field.default_factory is not msgspec.NODEFAULT:
                    return field.default_factory()
        raise AttributeError(name)
