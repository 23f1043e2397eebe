"""Executing one attempt of an action: the HTTP call or the log event, and how it ended."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from uuid import UUID

import httpx
import msgspec
import structlog

from scheduler import __version__
from scheduler.models import Action, HttpAction, LogAction, RunStatus
from scheduler.webhooks import message_id, sign

OUTPUT_LIMIT = 4096
USER_AGENT = f"pg-scheduler/{__version__}"
job_log = structlog.get_logger("scheduler.job")


class Attempt(msgspec.Struct, kw_only=True, frozen=True):
    """What an action needs to know about the run it executes."""

    run_id: UUID
    job_id: UUID
    namespace: str
    job_name: str
    scheduled_for: datetime
    attempt: int
    timeout_s: int


class Result(msgspec.Struct, kw_only=True, frozen=True):
    """How an attempt ended."""

    status: RunStatus
    duration_ms: int
    http_status: int | None = None
    output: str | None = None
    error: str | None = None


def success_code_matches(spec: str, status: int) -> bool:
    """Whether an HTTP status is in a success_codes list such as `2xx,304`."""
    for raw in spec.split(","):
        item = raw.strip().lower()
        if item.endswith("xx"):
            if str(status)[0] == item[0]:
                return True
        elif item.isdigit() and int(item) == status:
            return True
    return False


def run_log_action(action: LogAction, attempt: Attempt, runner: str) -> Result:
    """Write the payload as one structured event; it cannot fail."""
    job_log.info(
        "job_log",
        job_id=str(attempt.job_id),
        run_id=str(attempt.run_id),
        runner=runner,
        namespace=attempt.namespace,
        job=attempt.job_name,
        scheduled_for=attempt.scheduled_for.isoformat(),
        payload=action.payload,
    )
    return Result(status=RunStatus.SUCCEEDED, duration_ms=0)


def _body(action: HttpAction) -> tuple[bytes | None, dict[str, str]]:
    if action.body is None:
        return None, {}
    if isinstance(action.body, str):
        return action.body.encode(), {"content-type": "text/plain; charset=utf-8"}
    return msgspec.json.encode(action.body), {"content-type": "application/json"}


async def run_http_action(
    client: httpx.AsyncClient, action: HttpAction, attempt: Attempt, secrets: list[str]
) -> Result:
    """Make the signed call within the attempt's timeout; keep the status and the first 4 KiB of the body."""
    content, headers = _body(action)
    msg_id = message_id(attempt.job_id, attempt.scheduled_for)
    timestamp = int(time.time())
    headers = {
        "user-agent": USER_AGENT,
        **headers,
        **action.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, content or b""),
    }
    started = time.perf_counter()
    try:
        async with asyncio.timeout(attempt.timeout_s):
            request = client.build_request(action.method, action.url, content=content, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=action.follow_redirects)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= OUTPUT_LIMIT:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        return Result(
            status=RunStatus.TIMED_OUT,
            duration_ms=_elapsed_ms(started),
            error=f"no complete response within timeout_s={attempt.timeout_s}",
        )
    except httpx.HTTPError as exc:
        return Result(
            status=RunStatus.FAILED,
            duration_ms=_elapsed_ms(started),
            error=f"{type(exc).__name__}: {exc}"[:OUTPUT_LIMIT],
        )
    output = bytes(body[:OUTPUT_LIMIT]).decode("utf-8", errors="replace")
    ok = success_code_matches(action.success_codes, response.status_code)
    return Result(
        status=RunStatus.SUCCEEDED if ok else RunStatus.FAILED,
        duration_ms=_elapsed_ms(started),
        http_status=response.status_code,
        output=output,
        error=None if ok else f"HTTP {response.status_code} is not in success_codes {action.success_codes!r}",
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def is_local(action: Action) -> bool:
    """Actions that finish at once in-process (no I/O to wait on) and need no concurrency slot."""
    return isinstance(action, LogAction)
