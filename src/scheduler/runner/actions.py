"""Executing one attempt of an action: the HTTP call or the log event, and how it ended."""

from __future__ import annotations

import asyncio
import codecs
import functools
import random
import time
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import msgspec
import structlog
from yarl import URL

from scheduler import __version__
from scheduler.config import Network
from scheduler.domain.models import Action, HttpAction, LogAction, Outcome, RunStatus
from scheduler.domain.webhooks import message_id, sign
from scheduler.runner.errors_text import call_error_text, timeout_text
from scheduler.runner.exchange import capped_headers, sent_request
from scheduler.runner.outbound import (
    BlockedAddressError,
    IPAddress,
    OutboundClient,
    blocked_reason,
    canonical_url,
    check_literal,
    literal_address,
)

OUTPUT_LIMIT = 4096
# Compressed bytes read for one output at most, so a body that inflates to almost nothing cannot
# keep a call reading until its timeout.
COMPRESSED_READ_LIMIT = 64 * 1024
# Redirects a job that opts into following them may take; each hop is checked like the first.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"pg-scheduler/{__version__}"
# Headers that must not follow a redirect to another origin (credentials meant for the first one).
_ORIGIN_BOUND_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
_INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})
_TARGET_CACHE_SIZE = 4096
job_log = structlog.get_logger("scheduler.job")

__all__ = ["OutboundClient"]  # re-exported: the client run_http_action takes


class Attempt(msgspec.Struct, kw_only=True, frozen=True):
    """What an action needs to know about the run it executes."""

    run_id: UUID
    job_id: UUID
    namespace: str
    job_name: str
    scheduled_for: datetime
    attempt: int
    timeout_s: int


@functools.lru_cache(maxsize=1024)
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
) -> Outcome:
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
    return _LOGGED


# Every log run ends the same way; the outcome is frozen, so one is shared (a log run per fire).
_LOGGED = Outcome(status=RunStatus.SUCCEEDED, duration_ms=0)


# ----------------------------------------------------------------------------------- text


def output_text(raw: bytes, *, truncated: bool = False) -> str:
    """What a run records of a body: UTF-8 text, invalid bytes as U+FFFD, NUL dropped.

    ``truncated`` says the bytes were cut at the output cap: a character the cut split in two is
    dropped rather than shown as U+FFFD. Any bytes give text PostgreSQL can store.
    """
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=not truncated)
    return text.replace("\x00", "") if "\x00" in text else text


def storable(message: str) -> str:
    """A message (an error naming target-sent text) made storable: no lone surrogates, no NUL, capped."""
    clean = message.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return clean[:OUTPUT_LIMIT]


async def _read_capped(content: aiohttp.StreamReader) -> tuple[bytes, bool]:
    """The first OUTPUT_LIMIT bytes of the body as sent, and whether more followed; reading stops there."""
    body = b""
    while len(body) < OUTPUT_LIMIT:
        chunk = await content.read(OUTPUT_LIMIT - len(body))
        if not chunk:
            return body, False
        body += chunk
    return body, not content.at_eof()


async def _read_inflated(content: aiohttp.StreamReader) -> tuple[bytes, bool]:
    """The first OUTPUT_LIMIT bytes of a gzip or deflate body once inflated, and whether more followed.

    Inflation is asked for at most what is kept, and at most COMPRESSED_READ_LIMIT bytes are read,
    so a compression bomb costs a few KiB. A body that does not inflate is kept as sent.
    """
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or a zlib header, whichever it has
    out = b""
    sent = b""
    read = 0
    try:
        while len(out) < OUTPUT_LIMIT and read < COMPRESSED_READ_LIMIT and not inflater.eof:
            chunk = await content.read(min(16384, COMPRESSED_READ_LIMIT - read))
            if not chunk:
                break
            read += len(chunk)
            if len(sent) < OUTPUT_LIMIT:
                sent += chunk[: OUTPUT_LIMIT - len(sent)]
            pending = chunk
            while pending and len(out) < OUTPUT_LIMIT and not inflater.eof:
                out += inflater.decompress(pending, OUTPUT_LIMIT - len(out))
                pending = inflater.unconsumed_tail
    except zlib.error:
        if not out:
            return sent, len(sent) >= OUTPUT_LIMIT
    return out, len(out) >= OUTPUT_LIMIT and not inflater.eof


async def _read_output(response: aiohttp.ClientResponse) -> str:
    encoding = response.headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() in _INFLATABLE:
        raw, truncated = await _read_inflated(response.content)
    else:
        raw, truncated = await _read_capped(response.content)
    return output_text(raw, truncated=truncated)


# -------------------------------------------------------------------------------- targets


class InvalidTargetError(ValueError):
    """A URL no call can be made to (its scheme, host or port); retrying cannot mend it."""


class Target(NamedTuple):
    """A URL as the call makes it: parsed, numeric hosts rewritten, the literal address if any."""

    url: URL
    literal: IPAddress | None
    respelled: bool
    """The host called is spelled differently from the URL as written (e.g. `0x7f.1`)."""


def _parse_target(written: str) -> Target:
    try:
        url = URL(canonical_url(written))
        port = url.port
        written_host = urlsplit(written).hostname
    except ValueError as exc:
        raise InvalidTargetError(f"invalid URL: {exc}") from exc
    if url.scheme not in {"http", "https"}:
        raise InvalidTargetError(
            f"invalid URL: the scheme must be http or https, not {url.scheme or 'none'!r}"
        )
    host = url.raw_host
    if not host or port is None:
        raise InvalidTargetError("invalid URL: no host")
    return Target(url=url, literal=literal_address(host), respelled=written_host != host)


# Parsed targets (or why a URL is unusable) by URL string: jobs call the same few URLs over and over.
_targets: dict[str, Target | str] = {}


def target_for(written: str) -> Target:
    """The parsed target of a URL, cached; raises InvalidTargetError for a URL no call can use."""
    found = _targets.get(written)
    if found is None:
        try:
            found = _parse_target(written)
        except InvalidTargetError as exc:
            found = str(exc)
        if len(_targets) >= _TARGET_CACHE_SIZE:
            _targets.clear()
        _targets[written] = found
    if isinstance(found, str):
        raise InvalidTargetError(found)  # a fresh error each time: a cached one would grow its traceback
    return found


@functools.lru_cache(maxsize=_TARGET_CACHE_SIZE)
def _is_blocked(literal: IPAddress, allow_nets: tuple[Network, ...]) -> bool:
    # Cached: a job calls the same address every time, and the rules walk a few dozen networks.
    return blocked_reason(literal, allow_nets) is not None


def _refuse_blocked_literal(target: Target, allow_nets: tuple[Network, ...]) -> None:
    """Refuse an IP-literal host before asking for a connection (the socket factory would too)."""
    literal = target.literal
    if literal is not None and _is_blocked(literal, allow_nets):
        check_literal(target.url.raw_host or str(literal), allow_nets)  # raises, naming the spelling


# ---------------------------------------------------------------------------------- calls


def _body(action: HttpAction) -> tuple[bytes | None, str | None]:
    if action.body is None:
        return None, None
    if isinstance(action.body, str):
        return action.body.encode(), "text/plain; charset=utf-8"
    return msgspec.json.encode(action.body), "application/json"


def traceparent(attempt: Attempt) -> str:
    """A W3C trace context for one attempt: the run id is the trace id, each call a fresh span.

    The sampled flag is set so that receivers sampling by their parent record the call's trace.
    """
    # A span id needs to be unique, not secret; an all-zero span id is invalid.
    span_id = random.getrandbits(64) or 1
    return f"00-{attempt.run_id.hex}-{span_id:016x}-01"


class TooManyRedirectsError(Exception):
    """A call that follows redirects met more than MAX_REDIRECTS of them."""


class _Request(NamedTuple):
    method: str
    target: Target
    content: bytes | None
    headers: Mapping[str, str]


class _Trail:
    """How far a call got: the request last sent and the headers of its response, whatever ends the call."""

    __slots__ = ("request", "response_headers", "sent_headers")

    def __init__(self, request: _Request) -> None:
        self.request = request
        self.sent_headers: Mapping[str, str] | None = None
        """The headers exactly as the client sent them (`Host`, `Content-Length` ...), once it did."""
        self.response_headers: Mapping[str, str] | None = None
        """The response's headers as received (aiohttp's read-only view): masked and capped only in
        `kept`, so a run that keeps no exchange never pays for it."""

    def kept(self, outcome: Outcome) -> Outcome:
        """The outcome with the request and the response headers, masked and capped (`runner.exchange`)."""
        request = self.request
        headers = request.headers if self.sent_headers is None else self.sent_headers
        sent = sent_request(request.method, str(request.target.url), headers, request.content)
        answered = None if self.response_headers is None else capped_headers(self.response_headers.items())
        return msgspec.structs.replace(outcome, request=sent, response_headers=answered)


def _next_hop(request: _Request, status: int, location: str, hops: list[URL]) -> _Request:
    """The request a redirect asks for, as browsers and httpx make it; its URL joins ``hops`` first."""
    try:
        joined = request.target.url.join(URL(location))
    except ValueError as exc:
        raise InvalidTargetError(f"invalid URL: a redirect to {location!r}: {exc}") from exc
    hops.append(joined)
    target = target_for(str(joined))
    method, content, headers = request.method, request.content, request.headers
    if (status == 303 and method != "HEAD") or (status in {301, 302} and method == "POST"):  # noqa: PLR2004
        method, content = "GET", None
        headers = {name: value for name, value in headers.items() if name.lower() not in _BODY_HEADERS}
    if target.url.origin() != request.target.url.origin():
        headers = {
            name: value for name, value in headers.items() if name.lower() not in _ORIGIN_BOUND_HEADERS
        }
    return _Request(method, target, content, headers)


async def _exchange(
    client: OutboundClient,
    request: _Request,
    *,
    follow_redirects: bool,
    hops: list[URL],
    trail: _Trail | None = None,
) -> tuple[int, str]:
    """Send the request (and the redirects it leads to, when followed); the final status and output.

    ``hops`` collects every redirect target, so an error can say where the call had got to;
    ``trail`` the request last sent and its response's headers, for the run to record.
    """
    session = client.session
    while True:
        if trail is not None:
            trail.request, trail.sent_headers, trail.response_headers = request, None, None
        _refuse_blocked_literal(request.target, client.allow_nets)
        async with session.request(
            request.method,
            request.target.url,
            data=request.content,
            headers=request.headers,
            allow_redirects=False,
        ) as response:
            status = response.status
            if trail is not None:
                trail.sent_headers = response.request_info.headers
                trail.response_headers = response.headers
            location = (
                response.headers.get("location") if follow_redirects and status in REDIRECT_STATUSES else None
            )
            if location is None:
                return status, await _read_output(response)
        if len(hops) >= MAX_REDIRECTS:
            raise TooManyRedirectsError
        request = _next_hop(request, status, location, hops)


async def run_http_action(
    client: OutboundClient, action: HttpAction, attempt: Attempt, secrets: list[str]
) -> Outcome:
    """Make the signed call within the attempt's timeout; keep the status and the first 4 KiB of the body.

    ``client`` is the runner's `OutboundClient` (`scheduler.runner.service.http_client`), whose
    every connection passes the outbound address rules; redirect hops, when the action follows
    them, are made here one by one through the same client. The timeout covers the whole attempt:
    connecting, sending, every hop and reading. The outcome also carries the request last sent and
    its response's headers, masked and capped (`runner.exchange`), however the call ended, when the
    client's ``record_exchange`` asks for it (every run, only runs that did not succeed, or none).
    """
    record = client.record_exchange
    trails: list[_Trail] | None = None if record == "off" else []
    outcome = await _call(client, action, attempt, secrets, trails)
    if not trails or (record == "failures" and outcome.status is RunStatus.SUCCEEDED):
        return outcome
    return trails[0].kept(outcome)


async def _call(
    client: OutboundClient,
    action: HttpAction,
    attempt: Attempt,
    secrets: list[str],
    trails: list[_Trail] | None,
) -> Outcome:
    """The call of `run_http_action`; ``trails`` gets its `_Trail` once the request is made (None: none)."""
    started = time.perf_counter()
    try:
        target = target_for(action.url)
    except InvalidTargetError as exc:
        return _failed(started, str(exc), retryable=False)
    content, content_type = _body(action)
    msg_id = message_id(attempt.job_id, attempt.scheduled_for)
    timestamp = int(time.time())
    headers = {"user-agent": USER_AGENT, "accept-encoding": "identity", "traceparent": traceparent(attempt)}
    if content_type is not None:
        headers["content-type"] = content_type
    if action.headers:
        headers.update(action.headers)
    headers["webhook-id"] = msg_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = sign(secrets, msg_id, timestamp, content or b"")
    hops: list[URL] = []
    request = _Request(action.method, target, content, headers)
    trail = None
    if trails is not None:
        trail = _Trail(request)
        trails.append(trail)
    try:
        async with asyncio.timeout(attempt.timeout_s):
            status, output = await _exchange(
                client, request, follow_redirects=action.follow_redirects, hops=hops, trail=trail
            )
    except TimeoutError:
        return Outcome(
            status=RunStatus.TIMED_OUT,
            duration_ms=_elapsed_ms(started),
            error=_where(
                timeout_text(attempt.timeout_s, hops[-1] if hops else target.url), action.url, target, hops
            ),
        )
    except (aiohttp.ClientError, InvalidTargetError, TooManyRedirectsError) as exc:
        return _failed_by(exc, started, action.url, target, hops)
    except ValueError as exc:
        # aiohttp refuses to build the request (a control character in a header value, say): the
        # same request would be refused on every attempt.
        return _failed(started, f"invalid request: {exc}", retryable=False)
    ok = success_code_matches(action.success_codes, status)
    return Outcome(
        status=RunStatus.SUCCEEDED if ok else RunStatus.FAILED,
        duration_ms=_elapsed_ms(started),
        http_status=status,
        output=output,
        error=None if ok else f"HTTP {status} is not in success_codes {action.success_codes!r}",
    )


def _failed(started: float, error: str, *, retryable: bool = True) -> Outcome:
    return Outcome(
        status=RunStatus.FAILED, duration_ms=_elapsed_ms(started), error=storable(error), retryable=retryable
    )


def _failed_by(exc: Exception, started: float, written: str, target: Target, hops: list[URL]) -> Outcome:
    """The result of a call that ended in ``exc``; final when no retry can mend it."""
    if isinstance(exc, TooManyRedirectsError):
        return _failed(started, f"more than {MAX_REDIRECTS} redirects")
    if isinstance(exc, BlockedAddressError | InvalidTargetError):
        return _failed(started, _where(str(exc), written, target, hops), retryable=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return _failed(started, _where(f"invalid URL: {exc}", written, target, hops), retryable=False)
    return _failed(
        started, _where(call_error_text(exc, hops[-1] if hops else target.url), written, target, hops)
    )


def _where(message: str, written: str, target: Target, hops: list[URL]) -> str:
    """An error saying where the call had got to: the redirect it followed, or how the URL spelled the host.

    A redirect is named only when one was followed: a URL the client merely normalised (an
    upper-case host, a zero-padded port) was not redirected anywhere.
    """
    if hops:
        return f"{message} (redirected to {hops[-1]})"
    if target.respelled:
        return f"{message} (the URL writes {written})"
    return message


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def is_local(action: Action) -> bool:
    """Actions that finish at once in-process (no I/O to wait on) and need no concurrency slot."""
    return isinstance(action, LogAction)
