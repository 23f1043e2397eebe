"""The servers bench programs measure: our API and the baseline app, started, awaited and always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scheduler_env(url: str, **settings: Any) -> dict[str, str]:
    """The environment of a bench process of ours: the database, auth off, quiet logs."""
    env = dict(os.environ)
    env.update(
        {
            "SCHEDULER_DATABASE_URL": url,
            "SCHEDULER_AUTH": "off",
            "SCHEDULER_LOG_LEVEL": "warning",
        }
    )
    env.update({f"SCHEDULER_{key.upper()}": str(value) for key, value in settings.items()})
    return env


@contextmanager
def serve(args: list[str], env: dict[str, str], probe_url: str, timeout: float = 60) -> Iterator[int]:
    """Start a server in its own process group, wait until ``probe_url`` answers 200, stop it after.

    Yields the server's pid. uvicorn's worker processes are in the same group, so the group is
    terminated (and killed if it lingers) as a whole.
    """
    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(proc, probe_url, timeout, log_path)
        yield proc.pid
    finally:
        _stop_group(proc)
        log_path.unlink(missing_ok=True)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log_path.read_text()}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log_path.read_text()}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    # Whatever is left of the group (a worker that ignored SIGTERM) is killed.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextmanager
def api_server(url: str, *, workers: int = 1, **settings: Any) -> Iterator[str]:
    """Run `scheduler api` on a free port with auth off; yield its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "scheduler", "api", "--port", str(port), "--workers", str(workers)]
    with serve(args, scheduler_env(url, **settings), f"{base}/healthz"):
        yield base


@contextmanager
def baseline_server(url: str, *, workers: int = 1, **settings: Any) -> Iterator[str]:
    """Run bench/baseline_app.py under uvicorn the way `scheduler api` runs the real app; yield its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--no-server-header",
    ]
    with serve(args, scheduler_env(url, **settings), f"{base}/select1"):
        yield base
