"""Debian's PgBouncer as a process of the test, in front of the tests' PostgreSQL: started, awaited, stopped.

It runs as the `postgres` OS user (PgBouncer refuses root) from a temp directory of its own, in the
foreground, on a free loopback port, with `auth_type = trust` and a wildcard database entry, so one
PgBouncer serves every test database of the server. Nothing else is configured beyond a stock
Debian `pgbouncer.ini`: no `ignore_startup_parameters`, so a startup parameter PgBouncer refuses
fails the connection, as it does in production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import psycopg

PoolMode = Literal["transaction", "session"]
# Debian's package installs it here; PATH is looked at first for other systems.
DEBIAN_BINARY = "/usr/sbin/pgbouncer"
INSTALL_HINT = "PgBouncer is needed: apt-get install pgbouncer (Debian's 1.18 is what these tests run)"
STARTUP_TIMEOUT_S = 15.0
# A port picked free can be taken before PgBouncer binds it; it is then started again on another.
BIND_ATTEMPTS = 3

INI = """\
[databases]
; Any database name is passed through to the tests' server: one PgBouncer serves every test database.
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
; No unix socket: nothing here may collide with the machine's own PgBouncer or PostgreSQL sockets.
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
; The admin console (SHOW POOLS, SHOW CLIENTS): tests check who came through and how it pooled.
admin_users = {user}
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def binary() -> str | None:
    """Where PgBouncer is installed, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return DEBIAN_BINARY if Path(DEBIAN_BINARY).exists() else None


@dataclass
class PgBouncer:
    """A running PgBouncer: its port, mode and files."""

    mode: PoolMode
    port: int
    pool_size: int
    user: str
    password: str | None
    directory: Path
    popen: subprocess.Popen[bytes]

    def url(self, dbname: str) -> str:
        """A URL of ``dbname`` on the tests' server, through this PgBouncer."""
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def log(self) -> str:
        """What PgBouncer wrote: its log file, then anything it printed before opening it."""
        parts = [
            path.read_text(errors="replace")
            for path in (self.directory / "pgbouncer.log", self.directory / "pgbouncer.out")
            if path.exists()
        ]
        return "\n".join(parts)

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of an admin console command (`SHOW POOLS`, `SHOW CLIENTS` ...) as dicts."""
        # The console speaks the simple query protocol only: no parameters, never prepared.
        with psycopg.connect(self.url("pgbouncer"), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute(f"SHOW {what}".encode())
            names = [column.name for column in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def stop(self) -> None:
        """Stop PgBouncer at once (SIGTERM is its fast shutdown) and remove its files."""
        _stop_group(self.popen)
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_line(server_url: str) -> tuple[str, str, str, str | None]:
    """The `[databases]` entry pointing at the server of ``server_url``, its host, user and password."""
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    user = str(params.get("user") or "postgres")
    password = str(params["password"]) if params.get("password") else None
    host = str(params.get("host") or "127.0.0.1")
    port = str(params.get("port") or 5432)
    line = f"host={host} port={port}"
    if password:
        # A password for the server has to be given here: with auth_type = trust PgBouncer has none
        # of its own to pass on, and naming it requires naming the user it belongs to.
        line += f" user={user} password={password}"
    return line, host, user, password


def _run_as(server_host: str) -> str:
    """The OS user PgBouncer runs as: `postgres`, or whoever owns the server's socket directory.

    The embedded server (pgserver) runs as a user of its own behind a socket directory only that
    user may enter: PgBouncer has to be that user to reach it.
    """
    if server_host.startswith("/"):
        return pwd.getpwuid(Path(server_host).stat().st_uid).pw_name
    return "postgres"


def _as_user(directory: Path, user: str) -> list[str]:
    """The command prefix that runs PgBouncer as ``user`` when we are root (it refuses to run as root).

    ``directory`` and its files are given to ``user`` then, so PgBouncer can write its log and pid.
    """
    if os.geteuid() != 0:
        return []
    entry = pwd.getpwnam(user)
    for path in [directory, *directory.iterdir()]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return ["runuser", "-u", user, "--"]


def start(
    server_url: str,
    *,
    mode: PoolMode,
    pool_size: int = 10,
    max_client_conn: int = 200,
) -> PgBouncer:
    """Start PgBouncer in front of the server of ``server_url`` and return it once it answers.

    ``pool_size`` is PgBouncer's `default_pool_size`: the server connections each database gets.
    """
    program = binary()
    if program is None:
        raise FileNotFoundError(INSTALL_HINT)
    server, host, user, password = _server_line(server_url)
    os_user = _run_as(host)
    last_log = ""
    for _ in range(BIND_ATTEMPTS):
        directory = Path(tempfile.mkdtemp(prefix=f"scheduler-pgbouncer-{mode}-"))
        port = _free_port()
        (directory / "userlist.txt").write_text(f'"{user}" ""\n')
        ini = directory / "pgbouncer.ini"
        ini.write_text(
            INI.format(
                server=server,
                port=port,
                directory=directory,
                user=user,
                mode=mode,
                pool_size=pool_size,
                max_client_conn=max_client_conn,
            )
        )
        prefix = _as_user(directory, os_user)
        with (directory / "pgbouncer.out").open("wb") as out:
            popen = subprocess.Popen(
                [*prefix, program, str(ini)],
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group: runuser and PgBouncer are stopped together.
                start_new_session=True,
            )
        bouncer = PgBouncer(mode, port, pool_size, user, password, directory, popen)
        if _wait_until_answering(bouncer):
            try:
                _reach_server(bouncer)
            except psycopg.Error as exc:
                log = bouncer.log()
                bouncer.stop()
                raise RuntimeError(f"PgBouncer started but cannot reach {server!r}: {exc}\n{log}") from exc
            return bouncer
        last_log = bouncer.log()
        bouncer.stop()
        if "Address already in use" not in last_log:
            break
    raise RuntimeError(f"PgBouncer ({mode} mode) did not start:\n{last_log}")


def _wait_until_answering(bouncer: PgBouncer) -> bool:
    """Poll its admin console until it answers (True), or it exits or the deadline passes (False)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if bouncer.popen.poll() is not None:
            return False
        with contextlib.suppress(psycopg.Error):
            bouncer.show("VERSION")
            return True
        time.sleep(0.05)
    return False


def _reach_server(bouncer: PgBouncer) -> None:
    """One query through PgBouncer to the server's `postgres` database, failing fast when it cannot.

    Without this a PgBouncer that cannot reach the server would keep every client of the test
    waiting until its `client_login_timeout` (60 s) and fail it with "server down".
    """
    with psycopg.connect(bouncer.url("postgres"), autocommit=True, connect_timeout=10) as conn:
        conn.execute(b"SELECT 1")


def _stop_group(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=5)


@contextlib.contextmanager
def running(server_url: str, *, mode: PoolMode, pool_size: int = 10) -> Iterator[PgBouncer]:
    """PgBouncer in front of ``server_url`` for the length of the block."""
    bouncer = start(server_url, mode=mode, pool_size=pool_size)
    try:
        yield bouncer
    finally:
        bouncer.stop()
