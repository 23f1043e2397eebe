"""Logging: structlog JSON lines in production, readable console lines in `make run`.

Values are made plain before either renderer sees them (`plain_values`): ids as their text, times
in ISO 8601 (`Z` for UTC), enums as their value, decimals and addresses as written, so a line
never shows a Python repr such as `UUID('…')` or `datetime.datetime(…)`. The console renderer
quotes a value only when it has to, in JSON's double quotes, and writes nested values as JSON.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import msgspec
import structlog
from structlog.dev import Column, ConsoleRenderer, KeyValueColumnFormatter, LogLevelColumnFormatter

from scheduler.config import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Types that are already plain, looked up by exact type first: most values of most events.
_NATIVE: frozenset[type] = frozenset({str, int, float, bool, type(None)})
# Keys the renderers read as they are: the exception to format, the stack, the standard library's record.
_LEFT_ALONE = frozenset({"exc_info", "exception", "stack", "stack_info"})
# Characters that make a console value ambiguous unless quoted.
_NEEDS_QUOTES = frozenset(" \t\r\n=\"'")

_RESET, _BRIGHT, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
_KEY, _VALUE, _NAME = "\x1b[36m", "\x1b[35m", "\x1b[34m"


def _iso(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def plain(value: object) -> object:  # noqa: PLR0911 - one return per kind of value
    """``value`` as plain data: str, int, float, bool, None, or lists and str-keyed dicts of them."""
    kind = type(value)
    if kind in _NATIVE:
        return value
    if isinstance(value, enum.Enum):  # before str and int: StrEnum and IntEnum members are both
        return plain(value.value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    if isinstance(value, Mapping):
        return {str(plain(key)): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, msgspec.Struct):
        return plain(msgspec.to_builtins(value, enc_hook=str))
    return str(value)  # UUID, Decimal, Path, IP addresses, URLs: their text is their written form


def plain_values(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A structlog processor: every value of the event made plain (see :func:`plain`)."""
    for key, value in event_dict.items():
        if type(value) not in _NATIVE and key not in _LEFT_ALONE and not key.startswith("_"):
            event_dict[key] = plain(value)
    return event_dict


def console_text(value: object) -> str:
    """A plain value as the console shows it: bare when unambiguous, else JSON (quotes, nesting)."""
    if isinstance(value, str) and value and not _NEEDS_QUOTES & set(value):
        return value
    return msgspec.json.encode(value, enc_hook=str).decode()


def console_renderer(*, colors: bool) -> ConsoleRenderer:
    """The console renderer of structlog, with values written by :func:`console_text`."""
    reset = _RESET if colors else ""

    def style(code: str) -> str:
        return code if colors else ""

    levels = ConsoleRenderer.get_default_level_styles(colors=colors)
    names = KeyValueColumnFormatter(None, style(_BRIGHT + _NAME), reset, str, prefix="[", postfix="]")
    columns = [
        Column("", KeyValueColumnFormatter(style(_KEY), style(_VALUE), reset, console_text)),
        Column("timestamp", KeyValueColumnFormatter(None, style(_DIM), reset, str)),
        Column("level", LogLevelColumnFormatter({k: v + style(_BRIGHT) for k, v in levels.items()}, reset)),
        Column("event", KeyValueColumnFormatter(None, style(_BRIGHT), reset, str, width=30)),
        Column("logger", names),
        Column("logger_name", names),
    ]
    return ConsoleRenderer(columns=columns)


def _dumps(event: Any, **_: object) -> str:
    return msgspec.json.encode(event, enc_hook=str).decode()


def configure_logging(settings: Settings) -> None:
    """Route structlog (and the standard library's loggers) to stderr in the configured format."""
    level = _LEVELS[settings.log_level]
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if settings.log_format == "console":
        processors += [plain_values, console_renderer(colors=sys.stderr.isatty())]
    else:
        processors += [
            structlog.processors.format_exc_info,
            plain_values,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
