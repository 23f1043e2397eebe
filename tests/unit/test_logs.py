"""Log lines show values as people write them, never as Python reprs, in the console and in JSON."""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

import msgspec
import pytest
import structlog

from scheduler.domain.models import RunStatus
from scheduler.logs import configure_logging, console_text, plain
from tests.conftest import settings_for

JOB_ID = UUID("0193a4b2-7c1e-7d3a-9f00-5b1c2d3e4f50")
RUN_ID = UUID("0193a4b2-9a00-7000-8000-0a1b2c3d4e5f")
SLOT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
BERLIN_SLOT = datetime(2026, 11, 30, 9, 0, tzinfo=timezone(timedelta(hours=1)))


class Colour(enum.Enum):
    RED = "red"


class Priority(enum.IntEnum):
    HIGH = 1


class Where(msgspec.Struct):
    host: str
    at: datetime


# Any Python repr a value of the kinds below would show: `UUID('…')`, `datetime.datetime(…)`, …
REPR = re.compile(r"UUID\(|datetime\.|Decimal\(|<\w+\.\w+: |IPv4Address\(|PurePosixPath\(|b'")


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], str]]:
    """Configure logging in a format, log one event with values of every kind, return what was written.

    structlog's configuration and the root logger's handlers are put back afterwards.
    """
    saved = structlog.get_config()
    handlers = list(logging.getLogger().handlers)

    def log_in(log_format: str) -> str:
        configure_logging(settings_for("postgresql://unused/unused", log_format=log_format))
        capsys.readouterr()
        structlog.get_logger("scheduler.job").info(
            "job_log",
            job_id=JOB_ID,
            scheduled_for=SLOT,
            local=BERLIN_SLOT,
            day=date(2026, 11, 30),
            backoff=timedelta(seconds=90),
            amount=Decimal("1.50"),
            status=RunStatus.SUCCEEDED,
            colour=Colour.RED,
            priority=Priority.HIGH,
            address=ipaddress.ip_address("127.0.0.1"),
            path=PurePosixPath("/srv/exports"),
            raw=b"bytes",
            where=Where(host="example.com", at=SLOT),
            payload={"msg": "hello", "run": RUN_ID, "at": [SLOT]},
            error="connection refused by 127.0.0.1:9000",
            runner="runner-1",
            count=3,
        )
        return capsys.readouterr().err

    yield log_in
    structlog.configure(**saved)
    for handler in logging.getLogger().handlers:
        if handler not in handlers:
            logging.getLogger().removeHandler(handler)


class TestPlainValues:
    """Each kind of value becomes the text a person would write for it."""

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (JOB_ID, "0193a4b2-7c1e-7d3a-9f00-5b1c2d3e4f50"),
            (SLOT, "2026-11-30T08:00:00Z"),
            (BERLIN_SLOT, "2026-11-30T09:00:00+01:00"),
            (datetime(2026, 11, 30, 8, 0, 0, 250000, tzinfo=UTC), "2026-11-30T08:00:00.250000Z"),
            (date(2026, 11, 30), "2026-11-30"),
            (timedelta(milliseconds=1500), "1.5s"),
            (Decimal("1.50"), "1.50"),
            (RunStatus.TIMED_OUT, "timed_out"),
            (Colour.RED, "red"),
            (Priority.HIGH, 1),
            (ipaddress.ip_address("::1"), "::1"),
            (b"caf\xc3\xa9", "café"),
            (ValueError("bad"), "ValueError: bad"),
            ({"id": JOB_ID, 2: (SLOT,)}, {"id": str(JOB_ID), "2": ["2026-11-30T08:00:00Z"]}),
            (Where(host="h", at=SLOT), {"host": "h", "at": "2026-11-30T08:00:00Z"}),
            ("text", "text"),
            (None, None),
            (True, True),
        ],
    )
    def test_a_value_becomes_plain(self, value: Any, shown: Any):
        assert plain(value) == shown
        assert type(plain(value)) is type(shown)

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            ("runner-1", "runner-1"),
            ("two words", '"two words"'),
            ("key=value", '"key=value"'),
            ("it's", '"it\'s"'),
            ("", '""'),
            ({"msg": "hello"}, '{"msg":"hello"}'),
            (3, "3"),
            (None, "null"),
        ],
    )
    def test_the_console_quotes_only_what_would_be_ambiguous(self, value: Any, shown: str):
        assert console_text(value) == shown


class TestRenderedLines:
    """Both renderers write the plain values; neither shows a repr."""

    def test_the_console_line_shows_plain_values(self, logged: Callable[[str], str]):
        line = logged("console")
        assert not REPR.search(line), line
        for shown in (
            f"job_id={JOB_ID}",
            "scheduled_for=2026-11-30T08:00:00Z",
            "local=2026-11-30T09:00:00+01:00",
            "backoff=90s",
            "amount=1.50",
            "status=succeeded",
            "colour=red",
            "priority=1",
            "address=127.0.0.1",
            "path=/srv/exports",
            "raw=bytes",
            'where={"host":"example.com","at":"2026-11-30T08:00:00Z"}',
            f'payload={{"msg":"hello","run":"{RUN_ID}","at":["2026-11-30T08:00:00Z"]}}',
            'error="connection refused by 127.0.0.1:9000"',
            "runner=runner-1",
            "count=3",
        ):
            assert shown in line, f"{shown} not in {line}"
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[info\s*\] job_log ", line), line

    def test_the_json_line_holds_the_same_plain_values(self, logged: Callable[[str], str]):
        line = logged("json")
        assert not REPR.search(line), line
        event = json.loads(line)
        assert event["job_id"] == str(JOB_ID)
        assert event["scheduled_for"] == "2026-11-30T08:00:00Z"
        assert event["local"] == "2026-11-30T09:00:00+01:00"
        assert event["amount"] == "1.50"
        assert (event["status"], event["colour"], event["priority"]) == ("succeeded", "red", 1)
        assert event["payload"] == {"msg": "hello", "run": str(RUN_ID), "at": ["2026-11-30T08:00:00Z"]}
        assert event["where"] == {"host": "example.com", "at": "2026-11-30T08:00:00Z"}
        assert (event["event"], event["level"]) == ("job_log", "info")

    @pytest.mark.parametrize("log_format", ["console", "json"])
    def test_an_exception_is_still_rendered_as_a_traceback(self, log_format: str, capsys):
        saved = structlog.get_config()
        try:
            configure_logging(settings_for("postgresql://unused/unused", log_format=log_format))
            capsys.readouterr()
            try:
                raise RuntimeError("the disk is full")  # noqa: TRY301 - the exception being logged
            except RuntimeError:
                structlog.get_logger().exception("claim_failed", run_id=RUN_ID)
            written = capsys.readouterr().err
        finally:
            structlog.configure(**saved)
        assert "RuntimeError" in written
        assert "the disk is full" in written
        assert str(RUN_ID) in written
        assert "UUID(" not in written
