"""Logging: structlog JSON lines in production, readable console lines in `make run`."""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog

from scheduler.config import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(event: object, **_: object) -> str:
    # msgspec writes UUIDs and datetimes natively, and faster than json.dumps writes anything.
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
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    else:
        processors += [
            structlog.processors.format_exc_info,
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
