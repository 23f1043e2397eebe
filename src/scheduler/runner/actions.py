"""Executing one attempt of an action: the HTTP call or the log event, and how it ended."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from uuid import UUID

import httpx
import msgspec
import structlog

from scheduler import __version__
from scheduler.models import Action, HttpAction, LogAction, RunStatus
from scheduler.netguard import BlockedAddressError, canonical_url
from scheduler.webhooks import message_id, sign

OUTPUT_LIMIT = 4096
# Redirects a job that opts into following them may take; each hop is checked like the first.
MAX_REDIRECTS = 5
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


def run_log_action(
    action: LogAction,
    *,
    job_id: UUID,
    run_id: UUID,
    scheduled_for: datetime,
    namespace: str,
    job_name: str,
    runner: str,
) -> Result:
    """Write the payload as one structured event; it cannot fail."""
    job_log.info(
        "job_log",
        job_id=job_id,
        run_id=run_id,
        runner=runner,
        namespace=namespace,
        job=job_name,
        scheduled_for=scheduled_for,
        payload=action.payload,
    )
    return Result(status=RunStatus.SUCCEEDED, duration_ms=0)


def _body(action: HttpAction) -> tuple[bytes | None, dict[str, str]]:
    if action.body is None:
        return None, {}
    if isinstance(action.body, str):
        return action.body.encode(), {"content-type": "text/plain; charset=utf-8"}
    return msgspec.json.encode(action.body), {"content-type": "application/json"}


def traceparent(attempt: Attempt) -> str:
    """A W3C trace context for one attempt: the run id is the trace id, each call a fresh span.

    The sampled flag is set so that receivers sampling by their parent record the call's trace.
    """
    span_id = int.from_bytes(os.urandom(8)) or 1  # an all-zero span id is invalid
    return f"00-{attempt.run_id.hex}-{span_id:016x}-01"


async def _read_capped(response: httpx.Response) -> bytes:
    """The first OUTPUT_LIMIT bytes of the body as sent; reading stops there.

    Raw bytes, not decoded ones: a small compressed body must not inflate into memory (the call asks
    for `identity`, so only a server that ignores that sends anything compressed).
    """
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= OUTPUT_LIMIT:
            break
    return bytes(body[:OUTPUT_LIMIT])


def _failed(started: float, error: str) -> Result:
    return Result(status=RunStatus.FAILED, duration_ms=_elapsed_ms(started), error=error[:OUTPUT_LIMIT])


async def run_http_action(
    client: httpx.AsyncClient, action: HttpAction, attempt: Attempt, secrets: list[str]
) -> Result:
    """Make the signed call within the attempt's timeout; keep the status and the first 4 KiB of the body.

    ``client`` should come from `scheduler.runner.service.http_client`, whose transport refuses
    addresses the outbound rules block (redirect hops included, when the action follows them).
    """
    content, headers = _body(action)
    msg_id = message_id(attempt.job_id, attempt.scheduled_for)
    timestamp = int(time.time())
    headers = {
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",
        "traceparent": traceparent(attempt),
        **headers,
        **action.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, content or b""),
    }
    url = canonical_url(action.url)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(attempt.timeout_s):
            request = client.build_request(action.method, url, content=content, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=action.follow_redirects)
            try:
                output_bytes = await _read_capped(response)
            finally:
                await response.aclose()
    except TimeoutError:
        return Result(
            status=RunStatus.TIMED_OUT,
            duration_ms=_elapsed_ms(started),
            error=f"no complete response within timeout_s={attempt.timeout_s}",
        )
    except BlockedAddressError as exc:
        return _failed(started, _blocked_error(exc, action.url, url))
    except httpx.InvalidURL as exc:
        return _failed(started, f"invalid URL: {exc}")
    except httpx.TooManyRedirects:
        return _failed(started, f"more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as exc:
        return _failed(started, f"{type(exc).__name__}: {exc}")
    output = output_bytes.decode("utf-8", errors="replace")
    ok = success_code_matches(action.success_codes, response.status_code)
    return Result(
        status=RunStatus.SUCCEEDED if ok else RunStatus.FAILED,
        duration_ms=_elapsed_ms(started),
        http_status=response.status_code,
        output=output,
        error=None if ok else f"HTTP {response.status_code} is not in success_codes {action.success_codes!r}",
    )


def _blocked_error(exc: BlockedAddressError, written: str, called: str) -> str:
    """The run's error for a refused call, saying where a redirect or a numeric spelling led."""
    message = str(exc)
    try:
        hop = str(exc.request.url)
    except RuntimeError:  # raised outside a request context: no hop to report
        hop = called
    if hop != called:
        message += f" (redirected to {hop})"
    elif called != written:
        message += f" (the URL writes {written})"
    return message


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def is_local(action: Action) -> bool:
    """Actions that finish at once in-process (no I/O to wait on) and need no concurrency slot."""
    return isinstance(action, LogAction)
