"""Hostile targets: whatever a target answers, or fails to, a call ends in bounded time and memory.

The targets are real sockets on 127.0.0.1 writing raw HTTP/1.1, so they can send what no well-behaved
server library would: binary and invalid UTF-8 bodies, NUL bytes, a 100 MB body, an endless chunked
body, headers or a body trickled past the timeout, a gzip bomb, an endless flood of headers. Every call ends
with a final status and an output PostgreSQL stores as text. A runner process recording a healthy
job's runs beside them: tests/acceptance/test_hostile_targets.py.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import socket
import socketserver
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from scheduler.domain.models import HttpAction, Outcome, RunStatus
from scheduler.runner.actions import OUTPUT_LIMIT, Attempt, run_http_action
from scheduler.runner.service import http_client
from tests.conftest import eventually, settings_for

TIMEOUT_S = 2
# What one call may allocate at its peak, whatever the target sends (100 MB bodies, 1 GB bombs).
MEMORY_BOUND = 4 * 1024 * 1024
BOMB_BYTES = 1 << 30  # a gzip body that inflates to 1 GiB of text


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of `A` as one valid gzip member of about 1 MB, made in a fraction of a second.

    After a full flush the compressor forgets its history, so every further 1 MiB block of `A`
    compresses to the same bytes: the body repeats them instead of compressing 1 GiB.
    """
    block = b"A" * (1 << 20)
    count = BOMB_BYTES // len(block)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip framing is written here
    first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    deflated = first + again * (count - 1) + packer.flush(zlib.Z_FINISH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + deflated + struct.pack("<II", crc, BOMB_BYTES & 0xFFFFFFFF)


def _head(status: str = "200 OK", *headers: str) -> bytes:
    return ("HTTP/1.1 " + status + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def _fixed(body: bytes, *headers: str) -> bytes:
    return _head("200 OK", f"content-length: {len(body)}", *headers) + body


@dataclass
class Hostile:
    """A raw HTTP server on 127.0.0.1: each path answers in its own hostile way."""

    server: socketserver.ThreadingTCPServer
    sent: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str, sent: int) -> None:
        with self.lock:
            self.sent[path] = self.sent.get(path, 0) + sent


def _trickle(sock: socket.socket, data: bytes, every_s: float) -> int:
    """Send ``data`` a byte at a time, ``every_s`` apart: the slowness is the hostile answer itself."""
    sent = 0
    for index in range(len(data)):
        sock.sendall(data[index : index + 1])
        sent += 1
        time.sleep(every_s)
    return sent


def _stream_forever(sock: socket.socket, head: bytes, piece: bytes, limit: int) -> int:
    """Send ``head`` then ``piece`` repeatedly until the client hangs up or ``limit`` bytes went out."""
    sock.sendall(head)
    sent = len(head)
    while sent < limit:
        sock.sendall(piece)
        sent += len(piece)
    return sent


def answer(path: str, sock: socket.socket) -> int:
    """Write the hostile answer of ``path``; return the bytes sent."""
    if path == "/binary":
        payload = _fixed(bytes(range(256)) * 8 + os.urandom(2048))
    elif path == "/invalid-utf8":
        payload = _fixed(b"ok \xff\xfe caf\xc3 \xed\xa0\x80 end")
    elif path == "/nul":
        payload = _fixed(b"a\x00b")
    elif path == "/gzip-text":
        payload = _fixed(gzip.compress("héllo".encode()), "content-encoding: gzip")
    elif path == "/gzip-bomb":
        payload = _fixed(gzip_bomb(), "content-encoding: gzip")
    elif path == "/cut-body":
        payload = _head("200 OK", "content-length: 1000") + b"partial"
    elif path == "/huge":
        return _stream_forever(sock, _head("200 OK", f"content-length: {100 << 20}"), b"h" * 65536, 100 << 20)
    elif path == "/endless-chunked":
        chunk = b"c" * 4096
        piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        return _stream_forever(sock, _head("200 OK", "transfer-encoding: chunked"), piece, 1 << 40)
    elif path == "/header-flood":
        return _stream_forever(sock, b"HTTP/1.1 200 OK\r\n", b"x-flood: " + b"v" * 100 + b"\r\n", 100 << 20)
    elif path == "/slow-headers":
        return _trickle(sock, _head("200 OK", "content-length: 2", "x-slow: " + "s" * 200) + b"ok", 0.05)
    elif path == "/slow-body":
        sock.sendall(_head("200 OK", "content-length: 200"))
        return _trickle(sock, b"b" * 200, 0.05)
    else:
        payload = _fixed(b"fine")
    sock.sendall(payload)
    return len(payload)


@contextlib.contextmanager
def serving() -> Iterator[Hostile]:
    """The hostile server; the bytes it managed to send per path are recorded."""
    holder: dict[str, Hostile] = {}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode()
            sent = 0
            with contextlib.suppress(OSError):
                sent = answer(path, sock)
            holder["h"].count(path, sent)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, *_: Any) -> None:
            return

    server = Server(("127.0.0.1", 0), Handler)
    holder["h"] = Hostile(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["h"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    """The hostile server, for one test (see :func:`serving`)."""
    with serving() as server:
        yield server


def attempt() -> Attempt:
    return Attempt(
        run_id=uuid4(),
        job_id=uuid4(),
        namespace="default",
        job_name="hostile",
        scheduled_for=datetime.now(UTC),
        attempt=1,
        timeout_s=TIMEOUT_S,
    )


async def measured_call(url: str, **action: Any) -> tuple[Outcome, float, int]:
    """One call through the runner's client: its result, its seconds, and its peak allocation."""
    settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
    async with http_client(settings) as client:
        tracemalloc.start()
        started = time.monotonic()
        try:
            result = await run_http_action(
                client, HttpAction(url=url, method="GET", **action), attempt(), ["whsec_AAAA"]
            )
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return result, elapsed, peak


def assert_recordable(result: Outcome, sql: Callable[..., list[tuple[Any, ...]]]) -> None:
    """The result is final and PostgreSQL stores its output and error as text, unchanged."""
    assert result.status in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT}
    for text in (result.output, result.error):
        if text is not None:
            assert "\x00" not in text
            assert len(text) <= OUTPUT_LIMIT
            assert sql("SELECT %s::text", (text,)) == [(text,)]


class TestHostileAnswers:
    """Each hostile answer ends in bounded time and memory with a final status and storable text."""

    async def test_a_binary_body_is_recorded_as_text(self, hostile, sql):
        result, _, _ = await measured_call(f"{hostile.url}/binary")
        assert (result.status, result.http_status) == (RunStatus.SUCCEEDED, 200)
        assert result.output is not None
        assert "\ufffd" in result.output
        assert_recordable(result, sql)

    async def test_invalid_utf8_is_replaced(self, hostile, sql):
        result, _, _ = await measured_call(f"{hostile.url}/invalid-utf8")
        assert result.output == "ok \ufffd\ufffd caf\ufffd \ufffd\ufffd\ufffd end"
        assert_recordable(result, sql)

    async def test_nul_bytes_are_dropped(self, hostile, sql):
        result, _, _ = await measured_call(f"{hostile.url}/nul")
        assert (result.status, result.output) == (RunStatus.SUCCEEDED, "ab")
        assert_recordable(result, sql)

    async def test_a_100_mb_body_is_read_no_further_than_the_cap(self, hostile, sql):
        result, elapsed, peak = await measured_call(f"{hostile.url}/huge")
        assert (result.status, result.output) == (RunStatus.SUCCEEDED, "h" * OUTPUT_LIMIT)
        assert elapsed < TIMEOUT_S
        assert peak < MEMORY_BOUND
        # The connection is dropped once the cap is read: the target gets nowhere near 100 MB out.
        await eventually(lambda: "/huge" in hostile.sent, timeout=10, what="the target to notice")
        assert hostile.sent["/huge"] < 20 << 20
        assert_recordable(result, sql)

    async def test_an_endless_chunked_body_is_cut_at_the_cap(self, hostile, sql):
        result, elapsed, peak = await measured_call(f"{hostile.url}/endless-chunked")
        assert (result.status, result.output) == (RunStatus.SUCCEEDED, "c" * OUTPUT_LIMIT)
        assert elapsed < TIMEOUT_S
        assert peak < MEMORY_BOUND
        assert_recordable(result, sql)

    @pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
    async def test_a_target_trickling_past_the_timeout_times_out(self, hostile, sql, path):
        result, elapsed, _ = await measured_call(f"{hostile.url}{path}")
        assert result.status is RunStatus.TIMED_OUT
        assert result.error is not None
        assert result.error.startswith(
            f"timed out after {TIMEOUT_S} s waiting for a response from 127.0.0.1:"
        )
        assert TIMEOUT_S - 0.1 <= elapsed < TIMEOUT_S + 2
        assert_recordable(result, sql)

    async def test_a_gzip_body_the_job_asked_for_is_inflated(self, hostile, sql):
        result, _, _ = await measured_call(f"{hostile.url}/gzip-text", headers={"Accept-Encoding": "gzip"})
        assert (result.status, result.output) == (RunStatus.SUCCEEDED, "héllo")
        assert_recordable(result, sql)

    async def test_a_gzip_bomb_inflates_no_further_than_the_cap(self, hostile, sql):
        bomb = gzip_bomb()
        assert len(bomb) < 8 << 20  # what the target sends is small; what it inflates to is 1 GiB
        result, elapsed, peak = await measured_call(
            f"{hostile.url}/gzip-bomb", headers={"Accept-Encoding": "gzip"}
        )
        assert (result.status, result.output) == (RunStatus.SUCCEEDED, "A" * OUTPUT_LIMIT)
        assert elapsed < TIMEOUT_S
        assert peak < MEMORY_BOUND
        assert_recordable(result, sql)

    async def test_a_flood_of_headers_fails_the_call(self, hostile, sql):
        result, elapsed, peak = await measured_call(f"{hostile.url}/header-flood")
        assert result.status is RunStatus.FAILED
        assert result.http_status is None
        assert elapsed < TIMEOUT_S
        assert peak < MEMORY_BOUND
        assert_recordable(result, sql)

    async def test_a_body_cut_short_fails_the_call_and_stays_retryable(self, hostile, sql):
        result, _, _ = await measured_call(f"{hostile.url}/cut-body")
        assert result.status is RunStatus.FAILED
        assert result.retryable is True
        assert result.error is not None
        assert result.error.startswith("the target stopped sending before the response was complete")
        assert "(ClientPayloadError: " in result.error
        assert_recordable(result, sql)
