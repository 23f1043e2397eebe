"""The servers bench programs use: our API, the baseline app and the HTTP receivers, always stopped.

Receivers for HTTP jobs: `nginx()` runs Debian's nginx answering 204 (a receiver no one here wrote);
`slow_receiver()` runs the asyncio receiver at the bottom of this file, which answers 204 after 200 ms
(or after `?delay=<seconds>`), keep-alive, in a process of its own; GET /stats tells the calls it holds:

    python -m bench.processes --port 8080 --delay 0.2

`CpuMeter` reads the CPU time of given processes and of every PostgreSQL backend over a window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

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
    # To measure another checkout's service in the same run (a before/after pair), point this at its
    # src/: the processes we start import the service from there, while the bench itself stays ours.
    if other := os.environ.get("SCHEDULER_BENCH_SERVICE_SRC"):
        env["PYTHONPATH"] = other
    return env


@contextmanager
def serve(args: list[str], env: dict[str, str], probe_url: str, timeout: float = 60) -> Iterator[int]:
    """Start a server in its own process group, wait until ``probe_url`` answers 2xx, stop it after.

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


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start a process in its own group, output to a temp log; yield both, stop the group after."""
    with tempfile.NamedTemporaryFile(prefix="bench-process-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc, log_path
    finally:
        _stop_group(proc)
        log_path.unlink(missing_ok=True)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log_path.read_text()}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).is_success:
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


# ------------------------------------------------------------------------------------- receivers

NGINX_INSTALL = "nginx is needed as the HTTP receiver: `apt-get install nginx-light` (Debian/Ubuntu)"

NGINX_CONF = """
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{ return 204; }}
    }}
}}
"""


def nginx_binary() -> str:
    """Where nginx is; SystemExit with the install command when it is missing."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise SystemExit(NGINX_INSTALL)
    return found


@contextmanager
def nginx() -> Iterator[str]:
    """Run nginx (one worker, 204 to everything) on a free loopback port; yield its base URL.

    Its config, pid file and error log live in a temp dir removed afterwards; the access log is off.
    """
    binary = nginx_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
        args = [binary, "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(conf)]
        base = f"http://127.0.0.1:{port}"
        with serve(args, dict(os.environ), f"{base}/healthz", timeout=20):
            yield base


@contextmanager
def slow_receiver(delay_s: float = 0.2) -> Iterator[str]:
    """Run the asyncio receiver below in its own process; yield its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "bench.processes", "--port", str(port), "--delay", str(delay_s)]
    base = f"http://127.0.0.1:{port}"
    with serve(args, dict(os.environ), f"{base}/healthz?delay=0"):
        yield base


# Calls held and answered by this receiver process, for GET /stats.
_STATS = {"in_flight": 0, "answered": 0}


class _SlowHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: each request is answered 204 `delay` seconds after it was read, in order."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # TCP is all this serves (uvloop's transports are not asyncio.Transport subclasses).
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the Protocol's signature
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length, close = 0, False
            lines = head.split("\r\n")
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            target = urlsplit(lines[0].split(" ")[1] if " " in lines[0] else "/")
            if target.path == "/stats":
                # Answered at once, so a bench can see how many calls the receiver holds.
                body = json.dumps(_STATS).encode()
                status = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                loop.call_soon(self._write, status + body, close)
                continue
            delay = float(parse_qs(target.query).get("delay", [self.delay_s])[0])
            _STATS["in_flight"] += 1
            loop.call_later(delay, self._answer, close)

    def _answer(self, close: bool) -> None:  # noqa: FBT001 - a callback of call_later
        _STATS["in_flight"] -= 1
        _STATS["answered"] += 1
        self._write(b"HTTP/1.1 204 No Content\r\nserver: bench-slow\r\n\r\n", close)

    def _write(self, data: bytes, close: bool) -> None:  # noqa: FBT001 - a callback
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()


async def _serve_slow(port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _SlowHttp(delay_s), "127.0.0.1", port, backlog=16384)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


# ------------------------------------------------------------------------------------------ CPU


def postgres_pids() -> list[int]:
    """Every process named postgres on this machine (the server and its backends)."""
    import psutil  # noqa: PLC0415 - a bench extra

    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in {"postgres", "postmaster"}]


class CpuMeter:
    """CPU time used over a window by chosen processes and by PostgreSQL, in % of one core.

    PostgreSQL backends come and go (each runner keeps a pool, so few do): the server's processes are
    listed again at the end, and a backend born inside the window counts from zero.
    """

    def __init__(self, groups: dict[str, list[int]], *, postgres: bool = True) -> None:
        """Name each group of pids; `postgres` adds a group of every postgres process."""
        self.groups = groups
        self.postgres = postgres
        self._start: dict[int, float] = {}
        self._started = 0.0
        # What the last stop() measured, for figures per unit of work (CPU seconds per fire).
        self.elapsed_s = 0.0
        self.used_s: dict[str, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float | None:
        import psutil  # noqa: PLC0415

        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return float(times.user + times.system)

    def _pids(self) -> list[int]:
        found = [pid for pids in self.groups.values() for pid in pids]
        return found + (postgres_pids() if self.postgres else [])

    def start(self) -> None:
        """Note every process's CPU time now."""
        self._started = time.monotonic()
        self._start = {pid: cpu for pid in self._pids() if (cpu := self._cpu(pid)) is not None}

    def stop(self) -> dict[str, float]:
        """Per group (and `postgres`), the CPU used since start() as % of one core.

        The CPU seconds behind those figures stay in ``used_s``, the window's length in ``elapsed_s``.
        """
        seconds = time.monotonic() - self._started
        groups = dict(self.groups)
        if self.postgres:
            groups["postgres"] = postgres_pids()
        found: dict[str, float] = {}
        self.elapsed_s, self.used_s = seconds, {}
        for name, pids in groups.items():
            used = 0.0
            for pid in pids:
                cpu = self._cpu(pid)
                if cpu is not None:
                    used += cpu - self._start.get(pid, 0.0)
            self.used_s[name] = used
            found[name] = round(100 * used / seconds, 1) if seconds else 0.0
        return found


def main() -> None:
    """Run the slow receiver until SIGTERM."""
    parser = argparse.ArgumentParser(description="an HTTP receiver that answers 204 after a delay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - the faster loop when it is there

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_slow(args.port, args.delay))


if __name__ == "__main__":
    main()
