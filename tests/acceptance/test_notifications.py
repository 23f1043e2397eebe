"""A job that keeps failing tells its owner once, and once more when it recovers: processes end to end.

The job is created with the real CLI through a real API process; a real runner process calls a
target that refuses connections, then a target that answers; the events reach a real HTTP
receiver and are verified with the namespace's secret by an independent Standard Webhooks library.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.acceptance.test_signing import shown_secrets
from tests.conftest import Procs, Receiver, free_port, start_api, wait_for
from tests.integration.test_signing import verifies


@contextlib.contextmanager
def answering_on(port: int) -> Iterator[None]:
    """The job's target, fixed: an HTTP server on ``port`` that answers 200 to everything."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def cli(api_url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "jobs", *args, "--json"],
        env=os.environ | {"SCHEDULER_URL": api_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def events_of(receiver: Receiver, kind: str) -> list[Any]:
    return [call for call in receiver.snapshot() if json.loads(call.body)["type"] == kind]


class TestFailingThenFixed:
    """Three failed slots send one signed job.failing; the fixed target, one job.recovered."""

    def test_one_failure_event_then_one_recovery_event_each_signed(
        self, procs: Procs, receiver: Receiver, db_url: str
    ) -> None:
        api = start_api(procs)
        procs.runner()
        target_port = free_port()  # nothing listens there yet: every call is refused
        job = cli(
            api,
            "create",
            "--name",
            "flaky-export",
            "--schedule",
            "@every 1s",
            "--http-url",
            f"http://127.0.0.1:{target_port}/export",
            "--max-attempts",
            "1",
            "--notify-url",
            f"{receiver.url}/alerts",
            "--notify-after",
            "3",
            "--label",
            "team=billing",
        )
        assert job["notify"]["after"] == 3
        (failing,) = wait_for(lambda: events_of(receiver, "job.failing"), timeout=30, what="job.failing")
        body = json.loads(failing.body)
        assert body["data"]["job"]["name"] == "flaky-export"
        assert body["data"]["job"]["labels"] == {"team": "billing"}
        assert body["data"]["failed_slots"] == 3
        assert len(body["data"]["failed_runs"]) == 3
        assert all("Connect" in run["error"] for run in body["data"]["failed_runs"])
        with answering_on(target_port):
            (recovered,) = wait_for(
                lambda: events_of(receiver, "job.recovered"), timeout=30, what="job.recovered"
            )

            def succeeded_since() -> bool:
                runs = subprocess.run(
                    [sys.executable, "-m", "scheduler", "jobs", "runs", "flaky-export", "--json"],
                    env=os.environ | {"SCHEDULER_URL": api},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                items = json.loads(runs.stdout)["items"]
                return sum(1 for run in items if run["status"] == "succeeded") >= 3

            wait_for(succeeded_since, timeout=30, what="three successes after the fix")
            assert cli(api, "get", "flaky-export")["failed_slots"] == 0
            # Counted while the target still answers: once it stops, a new streak would begin.
            assert len(events_of(receiver, "job.failing")) == 1
            assert len(events_of(receiver, "job.recovered")) == 1
        assert json.loads(recovered.body)["data"]["failed_slots"] >= 3
        ((secret, _state),) = shown_secrets(db_url)
        assert verifies(secret, failing)
        assert verifies(secret, recovered)
        assert failing.headers["webhook-id"] != recovered.headers["webhook-id"]
