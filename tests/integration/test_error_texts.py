"""A failed call's run error says what happened in plain words, with the client's own message after.

Each failure is produced for real on loopback (a closed port, a server that never answers, one that
hangs up, one that resets, one that speaks something else, a self-signed certificate) and called
through the runner's own HTTP client; the DNS failure uses an `.invalid` name, which never resolves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from yarl import URL

from scheduler.domain.models import HttpAction, Outcome, RunStatus
from scheduler.runner.actions import Attempt, run_http_action
from scheduler.runner.errors_text import timeout_text
from scheduler.runner.outbound import OutboundClient
from tests.conftest import ROOT, free_port

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SECRET = "whsec_" + "A" * 44


def attempt(timeout_s: int = 5) -> Attempt:
    return Attempt(
        run_id=uuid4(),
        job_id=uuid4(),
        namespace="default",
        job_name="probe",
        scheduled_for=datetime.now(UTC).replace(microsecond=0),
        attempt=1,
        timeout_s=timeout_s,
    )


async def call(
    url: str, *, timeout_s: int = 5, ssl_context: ssl.SSLContext | None = None, **action: Any
) -> Outcome:
    """One attempt of a POST to ``url`` through the runner's client, loopback allowed."""
    async with OutboundClient(allow_nets=LOOPBACK, ssl_context=ssl_context) as client:
        return await run_http_action(
            client,
            HttpAction(url=url, method="POST", body={"kind": "probe"}, **action),
            attempt(timeout_s),
            [SECRET],
        )


def failed_with(outcome: Outcome) -> str:
    assert outcome.status in {RunStatus.FAILED, RunStatus.TIMED_OUT}, outcome
    assert outcome.http_status is None
    assert outcome.error is not None
    return outcome.error


@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that hands each connection to ``handle``; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so that the accept loop sees `stop` promptly
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=_quietly, args=(handle, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()


def _quietly(handle: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the client gave up first: nothing to report
        handle(conn)


def _read_request(conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk


def hang_up(conn: socket.socket) -> None:
    _read_request(conn)
    conn.close()


def reset(conn: socket.socket) -> None:
    _read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def speak_ssh(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    conn.close()


def answer_in_plain_http(conn: socket.socket) -> None:
    conn.recv(65536)  # a TLS ClientHello, never a whole HTTP request
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    conn.close()


def cut_body_short(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    conn.close()


def never_answer(conn: socket.socket) -> None:
    _read_request(conn)
    with contextlib.suppress(OSError):
        conn.recv(1)  # blocks until the client gives up and closes


def closed_port() -> int:
    return free_port()  # bound, then closed: nothing listens there


class TestConnectionErrors:
    """A connection that cannot be opened says why, naming the host and port it tried."""

    async def test_a_closed_port_says_the_connection_was_refused(self):
        port = closed_port()
        error = failed_with(await call(f"http://127.0.0.1:{port}/hooks/report"))
        assert error.startswith(f"connection refused by 127.0.0.1:{port} (ClientConnectorError: ")
        assert f"Cannot connect to host 127.0.0.1:{port}" in error  # the client's own words, kept

    async def test_a_name_that_does_not_resolve_says_the_dns_lookup_failed(self):
        error = failed_with(await call("http://nosuch.invalid/hook"))
        assert error.startswith("DNS lookup failed for nosuch.invalid (ClientConnectorDNSError: ")
        assert "cannot resolve nosuch.invalid" in error

    async def test_a_refusal_after_a_redirect_names_the_host_it_was_sent_to(self):
        port = closed_port()

        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(307)
                self.send_header("location", f"http://127.0.0.1:{port}/moved")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            outcome = await call(f"http://127.0.0.1:{server.server_address[1]}/old", follow_redirects=True)
        finally:
            server.shutdown()
            server.server_close()
        error = failed_with(outcome)
        assert error.startswith(f"connection refused by 127.0.0.1:{port} (ClientConnectorError: ")
        assert error.endswith(f"(redirected to http://127.0.0.1:{port}/moved)")


class TestAnswersThatNeverCame:
    """A target that takes the connection and then fails to answer: which way it failed, in words."""

    async def test_a_target_that_never_answers_times_out_naming_it(self):
        with tcp_server(never_answer) as port:
            outcome = await call(f"http://127.0.0.1:{port}/slow", timeout_s=1)
        assert outcome.status is RunStatus.TIMED_OUT
        assert (
            outcome.error == f"timed out after 1 s waiting for a response from 127.0.0.1:{port} (timeout_s=1)"
        )

    async def test_a_target_that_hangs_up_closed_the_connection_before_answering(self):
        with tcp_server(hang_up) as port:
            error = failed_with(await call(f"http://127.0.0.1:{port}/"))
        assert error == (
            "the target closed the connection before answering (ServerDisconnectedError: Server disconnected)"
        )

    async def test_a_target_that_resets_the_connection_says_so(self):
        with tcp_server(reset) as port:
            error = failed_with(await call(f"http://127.0.0.1:{port}/"))
        assert error.startswith("the target reset the connection before answering (")
        assert "Connection reset by peer" in error

    async def test_a_body_cut_short_says_the_response_was_incomplete(self):
        with tcp_server(cut_body_short) as port:
            error = failed_with(await call(f"http://127.0.0.1:{port}/"))
        assert error.startswith(
            "the target stopped sending before the response was complete (ClientPayloadError: "
        )
        assert "received 3 of 100 bytes" in error

    async def test_an_answer_that_is_not_http_says_so_on_one_line(self):
        with tcp_server(speak_ssh) as port:
            error = failed_with(await call(f"http://127.0.0.1:{port}/"))
        assert error.startswith(f"the answer from 127.0.0.1:{port} is not valid HTTP (ClientResponseError: ")
        assert "\n" not in error

    async def test_these_failures_stay_retryable(self):
        with tcp_server(hang_up) as port:
            outcome = await call(f"http://127.0.0.1:{port}/")
        assert (outcome.status, outcome.retryable) == (RunStatus.FAILED, True)


# ------------------------------------------------------------------------------------ TLS


def make_certificate(directory: Path, *, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``san`` made by the openssl command, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate: apt-get install openssl")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def https_server(cert: Path, key: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 answering 200 with the given certificate; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            _read_request(tls)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with tcp_server(handle) as port:
        yield port


class TestTls:
    """A certificate the runner does not trust, or a handshake that fails, says so and why."""

    async def test_a_self_signed_certificate_is_not_trusted(self, tmp_path):
        cert, key = make_certificate(tmp_path, name="selfsigned", san="IP:127.0.0.1")
        with https_server(cert, key) as port:
            error = failed_with(await call(f"https://127.0.0.1:{port}/"))
        assert error.startswith("TLS certificate of 127.0.0.1 not trusted: self-signed certificate (")
        assert "ClientConnectorCertificateError: " in error

    async def test_a_certificate_for_another_name_is_not_trusted_and_says_which_name(self, tmp_path):
        cert, key = make_certificate(tmp_path, name="other", san="DNS:other.example")
        trusting = ssl.create_default_context(cafile=str(cert))
        with https_server(cert, key) as port:
            error = failed_with(await call(f"https://127.0.0.1:{port}/", ssl_context=trusting))
        assert re.match(r"TLS certificate of 127\.0\.0\.1 not trusted: .*mismatch.*'127\.0\.0\.1'", error), (
            error
        )

    async def test_https_to_a_plain_http_port_is_a_failed_handshake(self):
        with tcp_server(answer_in_plain_http) as port:
            error = failed_with(await call(f"https://127.0.0.1:{port}/"))
        assert error.startswith(f"TLS handshake with 127.0.0.1:{port} failed (ClientConnectorSSLError: ")

    async def test_a_trusted_certificate_succeeds(self, tmp_path):
        # The same server and client as above: the failures come from the certificate, not the setup.
        cert, key = make_certificate(tmp_path, name="trusted", san="IP:127.0.0.1")
        trusting = ssl.create_default_context(cafile=str(cert))
        with https_server(cert, key) as port:
            outcome = await call(f"https://127.0.0.1:{port}/", ssl_context=trusting)
        assert (outcome.status, outcome.http_status, outcome.error) == (RunStatus.SUCCEEDED, 200, None)


class TestWording:
    """How hosts are written in the texts, and the README quoting the refused text exactly."""

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("https://example.com/x", "example.com"),
            ("http://example.com:80/x", "example.com"),
            ("http://example.com:8080/x", "example.com:8080"),
            ("https://[2001:db8::1]:8443/", "[2001:db8::1]:8443"),
        ],
    )
    def test_a_timeout_names_the_host_with_its_port_unless_it_is_the_default(self, url, shown):
        assert (
            timeout_text(10, URL(url))
            == f"timed out after 10 s waiting for a response from {shown} (timeout_s=10)"
        )

    async def test_the_readme_quotes_the_refused_text_as_a_run_records_it(self):
        port = closed_port()
        error = failed_with(await call(f"http://127.0.0.1:{port}/hooks/report"))
        as_in_readme = error.replace(str(port), "9000")
        assert as_in_readme.startswith("connection refused by 127.0.0.1:9000 (")
        assert as_in_readme in (ROOT / "README.md").read_text(), as_in_readme
