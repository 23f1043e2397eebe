"""A run records the request its runner sent and the response's headers, masked before they are stored.

A real HTTP server on 127.0.0.1 receives each call; what the run stored is compared with what that
server received, header by header, and the secrets (credential headers, signature, secret-named
headers and query parameters, cookies both ways) must be absent from the stored row itself, not only
from what the API shows.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scheduler.config import ConfigError
from scheduler.runner import exchange
from scheduler.runner.service import http_client
from tests.conftest import Received, eventually, settings_for

SECRET = "s3cr3t-value-never-stored"  # noqa: S105 - the value the test looks for


@dataclass
class Answering:
    """A receiver that records each request and answers with the headers a test gives it."""

    server: ThreadingHTTPServer
    headers: list[tuple[str, str]] = field(default_factory=list)
    reply: bytes = b'{"ok": true}'
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def target() -> Iterator[Answering]:
    holder: dict[str, Answering] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            me = holder["a"]
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with me.lock:
                me.got.append(Received(self.command, self.path, dict(self.headers.items()), body, 0.0))
            self.send_response(200)
            for name, value in me.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(me.reply)))
            self.end_headers()
            self.wfile.write(me.reply)

        do_GET = do_POST = do_PUT = _handle  # noqa: N815

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["a"] = Answering(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["a"]
    server.shutdown()
    server.server_close()


async def run_once(client, runner_parts, action: dict[str, Any], **job: Any) -> dict[str, Any]:
    """Create a job with ``action``, trigger it, let the in-process runner call and record it; the run."""
    made = await client.post(
        "/jobs",
        json={"name": "exchange", "schedule": "@every 1h", "retry": {"max_attempts": 1}, "action": action}
        | job,
    )
    assert made.status_code == 201, made.text
    run_id = (await client.post(f"/jobs/{made.json()['id']}/trigger")).json()["id"]
    runner, completer = runner_parts.runner, runner_parts.completer
    assert (await runner.claim_pending_once()).jobs == 1
    await eventually(lambda: completer.waiting == 1, what="the call to end")
    assert await completer.flush() == 1
    shown = await client.get(f"/runs/{run_id}")
    assert shown.status_code == 200
    run: dict[str, Any] = shown.json()
    return run


def stored_text(sql, run_id: str) -> str:
    """The run's two stored columns as the database holds them."""
    ((text,),) = sql(
        "SELECT coalesce(request::text, '') || coalesce(response_headers::text, '') FROM runs WHERE id = %s",
        (run_id,),
    )
    return str(text)


class TestWhatARunSent:
    """The stored request is the one the receiver got, secrets masked; the response headers are kept."""

    async def test_the_stored_request_matches_what_the_receiver_got_with_secrets_masked(
        self, client, runner_parts, target, sql
    ):
        target.headers = [("X-Request-Id", "req-77"), ("Set-Cookie", f"sid={SECRET}; HttpOnly")]
        run = await run_once(
            client,
            runner_parts,
            {
                "type": "http",
                "method": "PUT",
                "url": f"{target.url}/hooks/report?page=2&access_token={SECRET}",
                "headers": {
                    "Authorization": f"Bearer {SECRET}",
                    "X-Api-Key": SECRET,
                    "Cookie": f"session={SECRET}",
                    "X-Team": "billing",
                },
                "body": {"kind": "weekly"},
            },
        )
        assert run["status"] == "succeeded"
        (got,) = target.got
        sent = run["request"]
        assert sent["method"] == got.method == "PUT"
        assert sent["url"] == f"{target.url}/hooks/report?page=2&access_token=[masked]"
        assert got.path == f"/hooks/report?page=2&access_token={SECRET}"
        assert sent["body"] == got.body.decode() == '{"kind":"weekly"}'
        assert sent["body_truncated"] is False
        stored = {name.lower(): value for name, value in sent["headers"].items()}
        received = {name.lower(): value for name, value in got.headers.items()}
        assert stored.keys() == received.keys()  # Host, Content-Length, Accept ... as sent
        masked = {"authorization", "x-api-key", "cookie", "webhook-signature"}
        for name, value in received.items():
            if name not in masked:
                assert stored[name] == value, name
        assert stored["authorization"] == "Bearer [masked]"
        assert stored["x-api-key"] == stored["cookie"] == stored["webhook-signature"] == "[masked]"
        assert received["webhook-signature"].startswith("v1,")
        assert stored["x-team"] == "billing"
        assert stored["webhook-id"] == received["webhook-id"]
        answered = {name.lower(): value for name, value in run["response_headers"].items()}
        assert answered["x-request-id"] == "req-77"
        assert answered["set-cookie"] == "[masked]"
        assert answered["content-length"] == str(len(target.reply))
        row = stored_text(sql, run["id"])
        assert SECRET not in row
        assert received["webhook-signature"] not in row

    async def test_a_long_body_and_a_flood_of_response_headers_are_capped(
        self, client, runner_parts, target, sql
    ):
        target.headers = [(f"X-Filler-{n}", "v" * 200) for n in range(100)]
        body = "é" * 3000  # 6,000 bytes: the cap falls inside a two-byte character
        run = await run_once(client, runner_parts, {"type": "http", "url": target.url, "body": body})
        (got,) = target.got
        assert got.body.decode() == body
        sent = run["request"]
        assert sent["body_truncated"] is True
        assert sent["body"] == "é" * (exchange.BODY_LIMIT // 2)
        answered = run["response_headers"]
        assert sum(len(name) + len(value) for name, value in answered.items()) <= exchange.HEADERS_LIMIT + 40
        assert answered[exchange.LEFT_OUT].endswith("more headers not recorded")
        assert len(stored_text(sql, run["id"])) < 3 * exchange.BODY_LIMIT + exchange.HEADERS_LIMIT

    async def test_a_refused_connection_records_what_was_tried_and_no_response(
        self, client, runner_parts, sql
    ):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        run = await run_once(
            client,
            runner_parts,
            {"type": "http", "url": f"http://127.0.0.1:{port}/down", "headers": {"X-Auth-Token": SECRET}},
        )
        assert run["status"] == "failed"
        assert run["request"]["url"] == f"http://127.0.0.1:{port}/down"
        assert run["request"]["headers"]["X-Auth-Token"] == "[masked]"
        assert run["request"]["headers"]["webhook-signature"] == "[masked]"
        assert run["response_headers"] is None
        assert SECRET not in stored_text(sql, run["id"])

    async def test_listings_leave_the_exchange_out_and_a_log_run_has_none(self, client, runner_parts, target):
        http = await run_once(client, runner_parts, {"type": "http", "url": target.url})
        listed = (await client.get("/runs")).json()["items"]
        assert [item["id"] for item in listed] == [http["id"]]
        assert "request" not in listed[0]
        assert "response_headers" not in listed[0]
        made = await client.post(
            "/jobs", json={"name": "quiet", "schedule": "@every 1h", "action": {"type": "log"}}
        )
        run_id = (await client.post(f"/jobs/{made.json()['id']}/trigger")).json()["id"]
        assert (await runner_parts.runner.claim_pending_once()).jobs == 1
        await eventually(lambda: runner_parts.completer.waiting == 1, what="the log run to end")
        await runner_parts.completer.flush()
        logged = (await client.get(f"/runs/{run_id}")).json()
        assert logged["status"] == "succeeded"
        assert logged["request"] is None
        assert logged["response_headers"] is None


class TestWhichRunsKeepTheirExchange:
    """SCHEDULER_HTTP_RECORD_EXCHANGE: every run keeps its exchange, only the runs that failed, or none."""

    def test_the_setting_reaches_the_runners_client_and_refuses_other_values(self, db_url):
        assert http_client(settings_for(db_url)).record_exchange == "all"
        assert (
            http_client(settings_for(db_url, http_record_exchange="failures")).record_exchange == "failures"
        )
        with pytest.raises(ConfigError, match="SCHEDULER_HTTP_RECORD_EXCHANGE"):
            settings_for(db_url, http_record_exchange="some")

    async def test_failures_keeps_the_exchange_of_a_failed_run_only(self, client, runner_parts, target, sql):
        runner_parts.runner.client.record_exchange = "failures"
        target.headers = [("X-Request-Id", "req-9")]
        fine = await run_once(client, runner_parts, {"type": "http", "url": target.url})
        assert fine["status"] == "succeeded"
        assert (fine["request"], fine["response_headers"]) == (None, None)
        assert stored_text(sql, fine["id"]) == ""
        refused = await run_once(
            client, runner_parts, {"type": "http", "url": target.url, "success_codes": "201"}, name="picky"
        )
        assert refused["status"] == "failed"
        assert refused["request"]["url"] == target.url
        assert refused["request"]["headers"]["webhook-signature"] == "[masked]"
        answered = {name.lower(): value for name, value in refused["response_headers"].items()}
        assert answered["x-request-id"] == "req-9"

    async def test_off_keeps_no_exchange_even_for_a_failed_run(self, client, runner_parts, target, sql):
        runner_parts.runner.client.record_exchange = "off"
        run = await run_once(
            client, runner_parts, {"type": "http", "url": target.url, "success_codes": "201"}
        )
        assert run["status"] == "failed"
        assert run["http_status"] == 200
        assert (run["request"], run["response_headers"]) == (None, None)
        assert stored_text(sql, run["id"]) == ""
        assert len(target.got) == 1  # the call was made all the same


class TestMasking:
    """Which names are secrets, and how values are kept."""

    @pytest.mark.parametrize(
        "name",
        ["Authorization", "proxy-authorization", "Cookie", "Set-Cookie", "webhook-signature",
         "X-Api-Key", "X-API_KEY", "x-auth-token", "X-Session-Id", "Private-Token", "client_secret",
         "X-Hub-Signature-256", "password"],
    )  # fmt: skip
    def test_secret_names_are_masked(self, name):
        assert exchange.is_secret(name)
        assert exchange.MASK in exchange.masked(name, "Bearer abc" if "auth" in name.lower() else "abc")
        assert "abc" not in exchange.masked(name, "Bearer abc")

    @pytest.mark.parametrize(
        "name", ["Content-Type", "X-Team", "traceparent", "webhook-id", "Host", "Accept"]
    )
    def test_plain_names_are_kept(self, name):
        assert not exchange.is_secret(name)
        assert exchange.masked(name, "abc") == "abc"

    def test_the_authorization_scheme_is_kept_and_a_bare_value_is_masked_whole(self):
        assert exchange.masked("Authorization", "Basic dXNlcjpwYXNz") == "Basic [masked]"
        assert exchange.masked("Authorization", "dXNlcjpwYXNz") == "[masked]"

    def test_secret_query_values_are_masked_and_the_rest_kept(self):
        url = "https://x.test/a?page=2&api_key=abc&sig&token=&x=1#frag"
        assert (
            exchange.masked_url(url) == "https://x.test/a?page=2&api_key=[masked]&sig&token=[masked]&x=1#frag"
        )
        assert exchange.masked_url("https://x.test/a") == "https://x.test/a"

    def test_repeated_names_are_joined_and_unstorable_text_is_mended(self):
        kept = exchange.capped_headers([("Vary", "a"), ("Vary", "b"), ("X-Odd", "\udcff\x00z")])
        assert kept == {"Vary": "a, b", "X-Odd": "?z"}

    def test_a_long_value_is_cut_with_a_mark(self):
        kept = exchange.capped_headers([("X-Long", "v" * 5000)])
        assert len(kept["X-Long"]) == exchange.VALUE_LIMIT
        assert kept["X-Long"].endswith("…")

    def test_no_body_is_recorded_as_none(self):
        sent = exchange.sent_request("GET", "http://x.test/", {"Accept": "*/*"}, None)
        assert (sent.body, sent.body_truncated) == (None, False)
        assert exchange.sent_request("POST", "http://x.test/", {}, b"\xff\x00ok").body == "\ufffdok"
