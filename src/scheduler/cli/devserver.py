"""`scheduler dev` (what `make run` starts): embedded PostgreSQL, migrations, the API and one runner.

Every child runs in this process group; Ctrl-C (or SIGTERM) stops the children, then the database,
and leaves no stray process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from scheduler.cli.embedded import EmbeddedUnavailableError
from scheduler.cli.embedded import start as start_embedded
from scheduler.cli.embedded import stop as stop_embedded
from scheduler.config import ConfigError, load_settings
from scheduler.db.migrate import migrate
from scheduler.logs import configure_logging

DATA_DIR = Path(".scheduler") / "pgdata"
# Where `scheduler dev` leaves the embedded server's URL while it runs, so that admin commands started
# from a second terminal in the same directory (`scheduler keys`, `scheduler secrets`) find it.
URL_FILE = Path(".scheduler") / "database-url"
STOP_TIMEOUT_S = 15.0
# The README's first job, calm enough to watch: `PUT` by name, so the same command run again (the
# data survives restarts) answers 200 with the same job instead of 409.
EXAMPLE_JOB = (
    '{"name": "hello", "schedule": "@every 10s", "action": {"type": "log", "payload": {"msg": "hello"}}}'
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # noqa: T201


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own local URL
                if response.status == 200:  # noqa: PLR2004
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def embedded_url() -> str | None:
    """The URL of the embedded server a `scheduler dev` in this directory runs, if one does."""
    try:
        return URL_FILE.read_text().strip() or None
    except OSError:
        return None


def shown_url(url: str) -> str:
    """The URL with any password replaced, fit for a banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _cli() -> str:
    """How to call the `scheduler` command from here: the virtualenv's script, as the README does."""
    script = Path(sys.executable).parent / "scheduler"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return "scheduler"


def example_curl(host: str, port: int, *, auth: bool) -> str:
    """The curl that creates (or, run again, finds) the first job, as the README shows it."""
    bearer = ' -H "Authorization: Bearer $KEY"' if auth else ""
    return (
        f"curl -s -X PUT http://{host}:{port}/jobs/by-name/hello{bearer} "
        f"-H 'content-type: application/json' -d '{EXAMPLE_JOB}'"
    )


def banner(host: str, port: int, url: str, *, embedded: bool, auth: bool) -> list[str]:
    """What `scheduler dev` prints once the API answers: where everything is and a first job."""
    base = f"http://{host}:{port}"
    lines = [""]
    if auth:
        lines += [
            f"  console:    {base}/ui  (SCHEDULER_AUTH=required: sign in with an API key, made by",
            f'              KEY=$({_cli()} keys create --namespace default); echo "$KEY")',
        ]
    else:
        lines.append(f"  console:    {base}/ui  (auth off: the 'default' namespace, no sign-in)")
    lines.append(f"  API docs:   {base}/docs")
    if embedded:
        lines += [
            f"  database:   {url}",
            "              (embedded: `scheduler keys` and `scheduler secrets` started in this",
            "              directory find it while this runs; anywhere else, export it:)",
            f"              export SCHEDULER_DATABASE_URL='{url}'",
        ]
    else:
        lines.append(f"  database:   {shown_url(url)}  (SCHEDULER_DATABASE_URL)")
    lines += [
        "  a first job, which logs a line every 10 s (run it again: same job, nothing changes):",
        "  " + example_curl(host, port, auth=auth),
        f"  then:       curl -s {base}/jobs" + (' -H "Authorization: Bearer $KEY"' if auth else ""),
        "  Ctrl-C stops everything.",
        "",
    ]
    return lines


def run_dev(*, host: str | None = None, port: int | None = None) -> int:
    """Start everything, print how to use it, and wait for Ctrl-C.

    ``host`` and ``port`` default to SCHEDULER_HOST and SCHEDULER_PORT (127.0.0.1:8000).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        _say(f"scheduler dev: {exc}")
        return 2
    host = host or settings.host
    port = port or settings.port
    # This process logs as its children do (migrations, the embedded server): console lines by default.
    log_format = settings.log_format if "SCHEDULER_LOG_FORMAT" in os.environ else "console"
    configure_logging(replace(settings, log_format=log_format))
    server = None
    url = settings.database_url
    if url is None:
        try:
            url, server = start_embedded(DATA_DIR.resolve())
        except EmbeddedUnavailableError as exc:
            _say(f"scheduler dev: {exc}")
            return 2
        _say(f"embedded PostgreSQL running, data in {DATA_DIR}/")
        URL_FILE.write_text(url + "\n")
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        applied = migrate(url)
        _say(f"migrations: {len(applied)} applied" if applied else "migrations: up to date")
        env = dict(os.environ)
        env["SCHEDULER_DATABASE_URL"] = url
        env.setdefault("SCHEDULER_AUTH", "off")
        env.setdefault("SCHEDULER_LOG_FORMAT", "console")
        env.setdefault("SCHEDULER_HTTP_ALLOW_NETS", "127.0.0.0/8,::1/128")
        if env["SCHEDULER_AUTH"] == "off":
            _say("warning: SCHEDULER_AUTH=off: every request acts on the 'default' namespace")
        api = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "scheduler", "api", "--host", host, "--port", str(port)], env=env
        )
        children["api"] = api
        children["runner"] = subprocess.Popen([sys.executable, "-m", "scheduler.runner"], env=env)
        if not _wait_healthy(f"http://{host}:{port}/healthz", api):
            _say("scheduler dev: the API did not come up; see the messages above")
            return 1
        for line in banner(host, port, url, embedded=server is not None, auth=env["SCHEDULER_AUTH"] != "off"):
            _say(line)
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    _say(f"scheduler dev: the {name} exited with status {child.returncode}; stopping")
                    return 1
            time.sleep(0.2)
        _say("stopping…")
        return 0
    finally:
        _stop(children)
        if server is not None:
            URL_FILE.unlink(missing_ok=True)
            stop_embedded(server)
            _say("embedded PostgreSQL stopped")
