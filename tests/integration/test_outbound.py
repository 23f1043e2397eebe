"""Outbound calls: the address rules, checked at connect time on real sockets, and what a call carries.

Only loopback addresses are ever connected to: every other blocked range is checked by classifying
the address (tests/unit/test_outbound.py), since a test must never send traffic to a private or
public network. Runner processes applying the rules: tests/acceptance/test_outbound.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest

from scheduler.domain.models import HttpAction, RunStatus
from scheduler.runner.actions import OUTPUT_LIMIT, Attempt, run_http_action
from scheduler.runner.outbound import (
    BlockedAddressError,
    GuardedResolver,
    IPAddress,
    OutboundClient,
    guarded_socket_factory,
)
from scheduler.runner.service import http_client
from tests.conftest import settings_for

LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
ONLY_127_0_0_1 = ipaddress.ip_network("127.0.0.1/32")


# ------------------------------------------------------------------------ real HTTP targets


@dataclass
class Target:
    """A real HTTP server on 127.0.0.1 whose answer each test scripts."""

    server: ThreadingHTTPServer
    answer: Callable[[BaseHTTPRequestHandler], None]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return list(self.requests)


def _ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("content-length", "2")
    handler.end_headers()
    handler.wfile.write(b"ok")


@contextlib.contextmanager
def serving() -> Iterator[Target]:
    """A scripted HTTP server; by default it answers 200 `ok` and records each request."""
    holder: dict[str, Target] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            current = holder["t"]
            with current.lock:
                current.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            with contextlib.suppress(OSError):
                current.answer(self)

        do_GET = do_POST = _handle  # noqa: N815

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["t"] = Target(server, _ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["t"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    """A scripted HTTP server of this test's own (see :func:`serving`)."""
    with serving() as scripted:
        yield scripted


def redirect_to(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("location", location)
        handler.send_header("content-length", "0")
        handler.end_headers()

    return answer


def endless_body(handler: BaseHTTPRequestHandler) -> None:
    """A chunked body that never ends: only a reader that stops at its cap can finish."""
    handler.send_response(200)
    handler.send_header("transfer-encoding", "chunked")
    handler.end_headers()
    chunk = b"x" * 1024
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")


def attempt_for(timeout_s: int = 10) -> Attempt:
    return Attempt(
        run_id=uuid4(),
        job_id=uuid4(),
        namespace="default",
        job_name="probe",
        scheduled_for=datetime.now(UTC).replace(microsecond=0),
        attempt=1,
        timeout_s=timeout_s,
    )


async def call(url: str, *, allow: str = "", **action: Any):
    """One attempt of an HTTP action through the runner's own client, allowing ``allow``."""
    settings = settings_for("postgresql://unused/unused", http_allow_nets=allow)
    async with http_client(settings) as client:
        return await run_http_action(
            client, HttpAction(url=url, method="GET", **action), attempt_for(), ["whsec_" + "A" * 44]
        )


class TestConnectTimeChecks:
    """The runner's HTTP client checks every address at connect time, redirect hops included."""

    @pytest.mark.parametrize(
        ("host", "shown"),
        [
            ("127.0.0.1", r"^blocked: 127\.0\.0\.1 is a loopback address"),
            ("localhost", r"^blocked: localhost resolves to (127\.0\.0\.1|::1), a loopback address"),
            ("2130706433", r"^blocked: 127\.0\.0\.1 is a loopback address"),
            ("0177.0.0.1", r"^blocked: 127\.0\.0\.1 is a loopback address"),
            ("0x7f.1", r"^blocked: 127\.0\.0\.1 is a loopback address"),
            ("127.1", r"^blocked: 127\.0\.0\.1 is a loopback address"),
            ("[::1]", r"^blocked: ::1 is a loopback address"),
            ("[::ffff:127.0.0.1]", r"is an IPv4-mapped form of 127\.0\.0\.1, a loopback address"),
        ],
    )
    async def test_every_spelling_of_loopback_fails_the_call_saying_why(self, target, host, shown):
        result = await call(f"http://{host}:{target.port}/probe")
        assert result.status is RunStatus.FAILED
        assert result.error is not None
        assert re.search(shown, result.error), result.error
        assert "SCHEDULER_HTTP_ALLOW_NETS can open it" in result.error
        assert result.http_status is None
        assert target.seen() == []

    async def test_a_numeric_spelling_says_how_the_url_wrote_it(self, target):
        result = await call(f"http://0x7f.1:{target.port}/probe")
        assert result.error is not None
        assert f"(the URL writes http://0x7f.1:{target.port}/probe)" in result.error

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0177.0.0.1", "0x7f.1"])
    async def test_an_allowed_network_is_reached_however_it_is_spelled(self, target, host):
        result = await call(f"http://{host}:{target.port}/probe", allow="127.0.0.0/8,::1/128")
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert (result.http_status, result.output) == (200, "ok")
        assert [path for path, _ in target.seen()] == ["/probe"]

    async def test_a_redirect_to_a_blocked_address_fails_when_followed(self, target):
        target.answer = redirect_to(f"http://127.0.0.2:{target.port}/inner")
        result = await call(f"{target.url}/outer", allow="127.0.0.1/32", follow_redirects=True)
        assert result.status is RunStatus.FAILED
        assert result.error is not None
        assert result.error.startswith("blocked: 127.0.0.2 is a loopback address")
        assert f"(redirected to http://127.0.0.2:{target.port}/inner)" in result.error
        assert [path for path, _ in target.seen()] == ["/outer"]

    async def test_a_redirect_is_not_followed_unless_the_action_asks(self, target):
        target.answer = redirect_to(f"http://127.0.0.2:{target.port}/inner")
        result = await call(f"{target.url}/outer", allow="127.0.0.0/8")
        assert result.status is RunStatus.FAILED
        assert result.http_status == 302
        assert [path for path, _ in target.seen()] == ["/outer"]

    async def test_an_allowed_redirect_is_followed_and_each_hop_reached(self, target):
        def answer(handler: BaseHTTPRequestHandler) -> None:
            if handler.path == "/outer":
                redirect_to("/inner")(handler)
            else:
                _ok(handler)

        target.answer = answer
        result = await call(f"{target.url}/outer", allow="127.0.0.1/32", follow_redirects=True)
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert [path for path, _ in target.seen()] == ["/outer", "/inner"]

    async def test_redirects_stop_after_five_hops(self, target):
        target.answer = redirect_to("/again")
        result = await call(f"{target.url}/start", allow="127.0.0.1/32", follow_redirects=True)
        assert result.status is RunStatus.FAILED
        assert result.error == "more than 5 redirects"
        assert len(target.seen()) == 6  # the first request and five redirects

    async def test_reading_stops_at_the_output_cap(self, target):
        target.answer = endless_body
        result = await call(f"{target.url}/stream", allow="127.0.0.1/32")
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert result.output == "x" * OUTPUT_LIMIT

    async def test_a_call_carries_trace_context_and_names_the_service(self, target):
        settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
        attempt = attempt_for()
        async with http_client(settings) as client:
            await run_http_action(client, HttpAction(url=target.url, method="GET"), attempt, ["whsec_AAAA"])
            await run_http_action(client, HttpAction(url=target.url, method="GET"), attempt, ["whsec_AAAA"])
        first, second = (headers for _, headers in target.seen())
        match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", first["traceparent"])
        assert match is not None
        assert UUID(hex=match.group(1)) == attempt.run_id
        assert match.group(2) != "0" * 16
        assert second["traceparent"] != first["traceparent"]  # a fresh span per call
        assert first["user-agent"].startswith("pg-scheduler/")
        assert first["accept-encoding"] == "identity"


class TestFinalFailures:
    """Failures no retry can mend are final at once; the others stay retryable (SPEC 3.3)."""

    @pytest.mark.parametrize(
        "url",
        [
            "http://LOCALHOST:{port}/",
            "HTTP://127.0.0.1:{port}/",
            "http://127.0.0.1:0{port}/",
            "http://127\uff0e0\uff0e0\uff0e1:{port}/",
        ],
    )
    async def test_a_blocked_call_names_no_redirect_that_never_happened(self, target, url):
        result = await call(url.format(port=target.port))
        assert result.status is RunStatus.FAILED
        assert result.error is not None
        assert result.error.startswith("blocked: "), result.error
        assert "redirected" not in result.error
        assert result.retryable is False
        assert target.seen() == []

    async def test_a_blocked_address_is_final(self, target):
        result = await call(f"{target.url}/probe")
        assert (result.status, result.retryable) == (RunStatus.FAILED, False)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("ftp://example.com/file", "invalid URL: the scheme must be http or https, not 'ftp'"),
            ("http://example.com:99999/", "invalid URL: Port out of range"),
            ("http:///no-host", "invalid URL: no host"),
        ],
    )
    async def test_an_invalid_url_is_final_and_says_why(self, url, shown):
        result = await call(url)
        assert (result.status, result.retryable, result.http_status) == (RunStatus.FAILED, False, None)
        assert result.error is not None
        assert result.error.startswith(shown), result.error

    async def test_a_header_value_no_request_can_carry_is_final(self, target):
        result = await call(f"{target.url}/probe", allow="127.0.0.1/32", headers={"X-A": "a\x01b"})
        assert (result.status, result.retryable, result.http_status) == (RunStatus.FAILED, False, None)
        assert result.error is not None
        assert result.error.startswith("invalid request: ")
        assert target.seen() == []

    async def test_a_redirect_to_an_unusable_url_is_final(self, target):
        target.answer = redirect_to("gopher://example.com/")
        result = await call(f"{target.url}/outer", allow="127.0.0.1/32", follow_redirects=True)
        assert (result.status, result.retryable) == (RunStatus.FAILED, False)
        assert result.error is not None
        assert result.error.startswith("invalid URL: the scheme must be http or https, not 'gopher'")
        assert "(redirected to gopher://example.com/)" in result.error

    async def test_a_status_outside_success_codes_stays_retryable(self, target):
        def unavailable(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(503)
            handler.send_header("content-length", "4")
            handler.end_headers()
            handler.wfile.write(b"busy")

        target.answer = unavailable
        result = await call(f"{target.url}/busy", allow="127.0.0.1/32")
        assert (result.status, result.http_status, result.output) == (RunStatus.FAILED, 503, "busy")
        assert result.retryable is True

    async def test_a_refused_connection_stays_retryable(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens on it once closed
        result = await call(f"http://127.0.0.1:{port}/", allow="127.0.0.1/32")
        assert (result.status, result.retryable, result.http_status) == (RunStatus.FAILED, True, None)
        assert result.error is not None
        assert result.error.startswith(f"connection refused by 127.0.0.1:{port} (ClientConnectorError: ")


class TestSession:
    """The runner's session shares only connections between calls, and takes nothing from the environment."""

    async def test_connections_are_kept_alive_and_reused_per_host(self, target):
        peers: list[int] = []

        def answer(handler: BaseHTTPRequestHandler) -> None:
            peers.append(handler.client_address[1])
            _ok(handler)

        target.answer = answer
        settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
        async with http_client(settings) as client:
            for _ in range(3):
                result = await run_http_action(
                    client, HttpAction(url=target.url, method="GET"), attempt_for(), ["whsec_AAAA"]
                )
                assert result.status is RunStatus.SUCCEEDED
        assert len(peers) == 3
        assert len(set(peers)) == 1  # one connection served all three calls

    async def test_a_cookie_a_target_sets_is_never_sent_back(self, target):
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("set-cookie", "session=tenant-a; Path=/")
            handler.send_header("content-length", "0")
            handler.end_headers()

        target.answer = answer
        settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
        async with http_client(settings) as client:
            for _ in range(2):
                await run_http_action(
                    client, HttpAction(url=target.url, method="GET"), attempt_for(), ["whsec_AAAA"]
                )
        assert [headers.get("cookie") for _, headers in target.seen()] == [None, None]

    async def test_a_proxy_in_the_environment_is_ignored(self, target, monkeypatch):
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, "http://127.0.0.1:9/")  # the discard port: a proxy there answers nothing
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result = await call(f"{target.url}/direct", allow="127.0.0.1/32")
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert [path for path, _ in target.seen()] == ["/direct"]

    async def test_the_attempt_timeout_covers_a_target_that_never_answers(self, target):
        release = threading.Event()
        target.answer = lambda _handler: release.wait(10)
        settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
        started = time.monotonic()
        try:
            async with http_client(settings) as client:
                result = await run_http_action(
                    client, HttpAction(url=target.url, method="GET"), attempt_for(timeout_s=1), ["whsec_AAAA"]
                )
        finally:
            release.set()
        assert result.status is RunStatus.TIMED_OUT
        assert result.error == (
            f"timed out after 1 s waiting for a response from 127.0.0.1:{target.port} (timeout_s=1)"
        )
        assert result.retryable is True
        assert time.monotonic() - started < 5


class TestResolution:
    """A name is resolved once per connection; every answer is checked; the connection uses the answer."""

    async def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(self, target):
        lookups: list[str] = []

        async def resolve(host: str, port: int) -> list[IPAddress]:
            lookups.append(host)
            return [ipaddress.ip_address("127.0.0.1")]

        # The system resolver knows no such name: only the checked address can have been used.
        async with (
            OutboundClient(allow_nets=[ONLY_127_0_0_1], resolve=resolve) as client,
            client.session.get(f"http://service.invalid:{target.port}/hello") as response,
        ):
            status = response.status
        assert status == 200
        assert lookups == ["service.invalid"]
        assert target.seen()[0][1]["host"] == f"service.invalid:{target.port}"

    async def test_one_blocked_answer_among_several_blocks_the_name(self):
        async def resolve(host: str, port: int) -> list[IPAddress]:
            return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.9")]

        resolver = GuardedResolver([ONLY_127_0_0_1], resolve=resolve)
        with pytest.raises(BlockedAddressError, match=r"rebind\.invalid resolves to 127\.0\.0\.9"):
            await resolver.resolve("rebind.invalid", 80)

    async def test_a_name_that_changes_its_answer_is_checked_again_on_the_next_connection(self, target):
        answers = iter([ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.9")])

        async def resolve(host: str, port: int) -> list[IPAddress]:
            return [next(answers)]

        async with OutboundClient(allow_nets=[ONLY_127_0_0_1], resolve=resolve) as client:
            url = f"http://rebind.invalid:{target.port}/first"
            # `connection: close` ends the first connection; clearing the cache stands for its TTL ending.
            async with client.session.get(url, headers={"connection": "close"}) as response:
                assert response.status == 200
            client.session.connector.clear_dns_cache()  # type: ignore[union-attr]
            with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.9, a loopback address"):
                await client.session.get(f"http://rebind.invalid:{target.port}/second")
        assert [path for path, _ in target.seen()] == ["/first"]

    async def test_an_ip_literal_host_is_checked_by_the_socket_factory(self, target):
        """An IP literal never reaches aiohttp's resolver: the connection itself is refused."""
        async with OutboundClient(allow_nets=[ONLY_127_0_0_1]) as client:
            with pytest.raises(BlockedAddressError, match=r"^blocked: 127\.0\.0\.2 is a loopback address"):
                await client.session.get(f"http://127.0.0.2:{target.port}/literal")
            async with client.session.get(f"http://127.0.0.1:{target.port}/allowed") as response:
                assert response.status == 200
        assert [path for path, _ in target.seen()] == ["/allowed"]

    def test_the_socket_factory_refuses_a_blocked_address_whatever_produced_it(self):
        open_socket = guarded_socket_factory([ONLY_127_0_0_1])
        with pytest.raises(BlockedAddressError, match=r"169\.254\.169\.254 is the cloud metadata address"):
            open_socket((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("169.254.169.254", 80)))
        with pytest.raises(
            BlockedAddressError, match=r"::ffff:7f00:2 is an IPv4-mapped form of 127\.0\.0\.2"
        ):
            open_socket(
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::ffff:127.0.0.2", 80, 0, 0))
            )
        allowed = open_socket((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)))
        allowed.close()

    async def test_an_unresolvable_name_is_a_connect_error(self):
        settings = settings_for("postgresql://unused/unused")
        async with http_client(settings) as client:
            with pytest.raises(aiohttp.ClientConnectorError, match="cannot resolve"):
                await client.session.get("http://no-such-host.invalid/")

    def test_local_sockets_are_refused(self):
        with pytest.raises(BlockedAddressError, match="local socket"):
            guarded_socket_factory()((socket.AF_UNIX, socket.SOCK_STREAM, 0, "", "/run/docker.sock"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- through a runner
