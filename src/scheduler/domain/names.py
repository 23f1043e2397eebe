"""What names look like: jobs, namespaces, label keys, and the one way a label is written.

A label is written `key=value` everywhere a person types one: the API's `?label=` filter, the
console's label fields and filters, the command line's `--label`. `key:value`, the API's first
spelling, is read the same way: a key never holds `=` or `:`, so the first of them ends it.
"""

from __future__ import annotations

import re

JOB_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
NAMESPACE_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9._/-]{1,63}$"
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
DEFAULT_NAMESPACE = "default"

# fullmatch everywhere: a pattern's `$` would let a final newline by.
_JOB_NAME = re.compile(JOB_NAME_PATTERN)
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
_SEPARATOR = re.compile(r"[=:]")

JOB_NAME_RULE = "must be 1-128 of A-Z a-z 0-9 . _ -"
NAMESPACE_RULE = "must be 1-64 of A-Z a-z 0-9 . _ -"
LABEL_KEY_RULE = "keys are 1-63 of A-Z a-z 0-9 . _ / -"
LABEL_RULE = "write a label as key=value"


def is_job_name(text: str) -> bool:
    """Whether ``text`` is a valid job name."""
    return _JOB_NAME.fullmatch(text) is not None


def is_namespace(text: str) -> bool:
    """Whether ``text`` is a valid namespace name."""
    return _NAMESPACE.fullmatch(text) is not None


def is_label_key(text: str) -> bool:
    """Whether ``text`` is a valid label key."""
    return _LABEL_KEY.fullmatch(text) is not None


def label_problems(labels: dict[str, str]) -> list[tuple[str, str]]:
    """What is wrong with a job's labels, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if len(labels) > MAX_LABELS:
        problems.append(("labels", f"at most {MAX_LABELS} labels"))
    for key, value in labels.items():
        if not is_label_key(key):
            problems.append((f"labels.{key}", LABEL_KEY_RULE))
        if len(value) > MAX_LABEL_VALUE:
            problems.append((f"labels.{key}", f"values are at most {MAX_LABEL_VALUE} characters"))
    return problems


def parse_label(text: str) -> tuple[str, str]:
    """Read one `key=value` (or `key:value`) label; ValueError saying how to write it otherwise.

    Spaces around the key and the value are dropped, so `team = billing` reads as it looks.
    """
    match = _SEPARATOR.search(text)
    if match is None:
        raise ValueError(f"{text.strip()!r} has no '=': {LABEL_RULE}")
    key, value = text[: match.start()].strip(), text[match.end() :].strip()
    if not is_label_key(key):
        raise ValueError(f"{key!r}: label {LABEL_KEY_RULE}")
    return key, value


def parse_labels(lines: str) -> dict[str, str]:
    """Read labels one per line (blank lines skipped), as the console's label field holds them."""
    labels: dict[str, str] = {}
    for line in lines.splitlines():
        if line.strip():
            key, value = parse_label(line)
            labels[key] = value
    return labels


def format_label(key: str, value: str) -> str:
    """Write a label the way parse_label reads it."""
    return f"{key}={value}"
