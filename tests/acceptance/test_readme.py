"""The README's commands beside `make run`, run as processes: the admin commands and `scheduler dev`.

The admin commands find `make run`'s database, and `scheduler dev` honours SCHEDULER_HOST/PORT. The
links and the shape of the README's blocks are checked without running anything in
tests/unit/test_readme.py; the blocks themselves run against a real `make run` in `.ci/readme-cli`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import httpx

from scheduler.cli.devserver import URL_FILE
from tests.conftest import ROOT, Procs, free_port, wait_for


class TestAdminCommandsBesideMakeRun:
    """`scheduler keys` and `scheduler secrets` find the database of a `make run` in the same directory."""

    def test_keys_and_secrets_use_the_url_make_run_leaves(self, procs: Procs, tmp_path):
        (tmp_path / URL_FILE).parent.mkdir(parents=True)
        (tmp_path / URL_FILE).write_text(procs.db_url + "\n")
        env = {k: v for k, v in procs.env().items() if k != "SCHEDULER_DATABASE_URL"}
        made = subprocess.run(
            [sys.executable, "-m", "scheduler", "keys", "create", "--namespace", "billing"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip().startswith("sk_")
        assert str(URL_FILE) in made.stderr
        shown = subprocess.run(
            [sys.executable, "-m", "scheduler", "secrets", "show", "--namespace", "billing"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "whsec_" in shown.stdout

    def test_without_make_run_they_say_what_is_missing(self, tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "scheduler", "keys", "list"],
            cwd=tmp_path,
            env={"PATH": ""},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2
        assert "SCHEDULER_DATABASE_URL is not set" in result.stderr


class TestMakeRun:
    """`scheduler dev` (`make run`) listens where SCHEDULER_HOST/PORT say and prints its database."""

    def test_it_honours_scheduler_port_and_prints_the_database_it_uses(self, procs: Procs, tmp_path):
        port = free_port()
        log = tmp_path / "dev.log"
        with log.open("wb") as out:
            dev = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "dev"],
                cwd=tmp_path,
                env=procs.env(port=port, host="127.0.0.1"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def up() -> bool:
                assert dev.poll() is None, log.read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, timeout=60, what="scheduler dev on SCHEDULER_PORT")
            wait_for(lambda: "Ctrl-C" in log.read_text(), timeout=30, what="the banner")
            banner = log.read_text()
            assert f"console:    http://127.0.0.1:{port}/ui" in banner
            assert f"http://127.0.0.1:{port}/docs" in banner
            assert f"curl -s -X PUT http://127.0.0.1:{port}/jobs/by-name/hello" in banner
            assert "UUID(" not in banner
            dbname = urlsplit(procs.db_url).path.lstrip("/") or procs.db_url
            assert re.search(rf"database:\s+\S*{re.escape(dbname)}", banner), banner
        finally:
            dev.send_signal(signal.SIGINT)
            assert dev.wait(timeout=60) == 0, log.read_text()


class TestExampleReceiver:
    """The receiver the README starts (docs/examples/receiver.py) answers every call 200 and says so."""

    def test_it_answers_a_post_with_200_and_prints_one_line_for_it(self, tmp_path):
        port = free_port()
        out = tmp_path / "receiver.log"
        with out.open("wb") as sink:
            receiver = subprocess.Popen(
                [sys.executable, str(ROOT / "docs" / "examples" / "receiver.py"), str(port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:

            def post() -> httpx.Response | None:
                assert receiver.poll() is None, out.read_text()
                try:
                    return httpx.post(
                        f"http://127.0.0.1:{port}/hooks/report",
                        json={"kind": "weekly"},
                        headers={"webhook-id": "msg_1"},
                        timeout=2,
                    )
                except httpx.ConnectError:
                    return None

            response = wait_for(post, timeout=15, what="the example receiver")
            assert response.status_code == 200
            assert response.json() == {"received": True}
            wait_for(lambda: "POST /hooks/report" in out.read_text(), timeout=5, what="the receiver's line")
            line = next(line for line in out.read_text().splitlines() if "POST /hooks/report" in line)
            assert line.endswith('POST /hooks/report webhook-id=msg_1 {"kind":"weekly"}'), line
        finally:
            receiver.send_signal(signal.SIGINT)
            assert receiver.wait(timeout=10) == 0, out.read_text()
