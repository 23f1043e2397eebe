"""A PostgreSQL primary and its streaming standbys, built with PostgreSQL's own tools, for failover tests.

`initdb`, `pg_ctl`, `pg_basebackup -R` and `pg_ctl promote`, as an operator (or Patroni) uses them, in
a temporary directory owned by the `postgres` OS user when we are root (initdb and postgres refuse to
run as root), on free 127.0.0.1 ports with trust authentication and no Unix socket. `Cluster.close`
stops every server it started, whatever state the test left them in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psycopg

from tests.conftest import free_port

# Settings every server gets. fsync and full_page_writes are off for speed: a killed postmaster
# loses nothing the OS page cache holds; only a crash of the machine would.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}
START_TIMEOUT_S = 30
# Our own sessions override the server's default, so that they still write (ALTER SYSTEM, test
# setup) on a server a test has turned read-only.
_WRITABLE_SESSION = "-c default_transaction_read_only=off"


def find_pg_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries: SCHEDULER_TEST_PG_BIN, Debian's 15, any other, PATH."""
    wanted = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
    configured = os.environ.get("SCHEDULER_TEST_PG_BIN")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in wanted):
            return candidate
    return None


def _as_owner(args: list[str]) -> list[str]:
    """The command run as the `postgres` OS user when we are root, else as ourselves."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _chown_to_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _run(args: list[str], *, cwd: Path) -> None:
    """Run a tool to completion; a failure raises with what the tool said."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends, walsender, checkpointer ...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after the last `)`.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class Node:
    """One PostgreSQL server: its data directory, its port, and what an operator does to it."""

    name: str
    data: Path
    port: int
    bin: Path
    log: Path

    def url(self, dbname: str = "postgres", **params: str) -> str:
        """A URL naming this server alone."""
        return psycopg.conninfo.make_conninfo(
            f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}", **params
        )

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = _as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), *args])
        done = subprocess.run(
            command, cwd=self.data.parent, capture_output=True, text=True, check=False, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} on {self.name} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{self.server_log()}"
            )
        return done

    def server_log(self) -> str:
        """The server's log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def configure(self, **settings: str) -> None:
        """Append settings to postgresql.conf (read at the next start; the last line of a name wins)."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        The port was free when chosen; should another process take it meanwhile, the server is
        started again on a new one.
        """
        for _ in range(3):
            self.configure(port=str(self.port))
            logged = self.log.stat().st_size if self.log.exists() else 0
            started = self._pg_ctl(
                "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S), "start", check=False
            )
            if started.returncode == 0:
                return
            if "Address already in use" not in self.log.read_text(errors="replace")[logged:]:
                break
            self.port = free_port()
        raise RuntimeError(
            f"pg_ctl start on {self.name} failed ({started.returncode}):\n"
            f"{started.stdout}{started.stderr}\n{self.server_log()}"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` skips the shutdown checkpoint); a stopped one is left alone."""
        if self.postmaster_pid() is not None:
            self._pg_ctl("-m", mode, "-w", "-t", str(START_TIMEOUT_S), "stop", check=False)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, or None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def crash(self) -> None:
        """`kill -9` the postmaster and every process of it at once, as when its machine dies.

        The postmaster is frozen first so that it forks nothing while its children are listed; no
        backend, walsender included, outlives it to finish a commit or send more WAL.
        """
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        _kill(pid, signal.SIGSTOP)
        children = _children_of(pid)
        _kill(pid, signal.SIGKILL)
        for child in children:
            _kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [pid, *children]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}'s processes outlived kill -9")
            time.sleep(0.01)

    def promote(self) -> None:
        """`pg_ctl promote` and wait for the promotion to finish."""
        self._pg_ctl("-w", "-t", str(START_TIMEOUT_S), "promote")

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit session of ours that may write even while the server defaults to read-only."""
        return psycopg.connect(self.url(options=_WRITABLE_SESSION), autocommit=True, connect_timeout=5)

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement in a session of ours and return its rows."""
        with self.connect() as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []

    def accepts_writes(self) -> bool:
        """Whether a new session with the server's own defaults may write: a primary, not read-only."""
        try:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=1) as conn:
                row = conn.execute(
                    b"SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
                ).fetchone()
        except psycopg.Error:
            return False
        return row is not None and row[0] is False and row[1] == "off"

    def wait_writable(self, timeout: float = 30) -> float:
        """Poll until the server accepts writes; the wall-clock time (``time.time()``) it first did."""
        deadline = time.monotonic() + timeout
        while not self.accepts_writes():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not accept writes within {timeout}s\n{self.server_log()}"
                )
            time.sleep(0.02)
        return time.time()

    def alter_system(self, **settings: str) -> None:
        """`ALTER SYSTEM SET` each setting (values as SQL: `'*'`, `on`), then reload the configuration."""
        with self.connect() as conn:
            for name, value in settings.items():
                # Names are ours, never input; ALTER SYSTEM takes no bind parameters.
                conn.execute(f"ALTER SYSTEM SET {name} = {value}".encode())
            conn.execute(b"SELECT pg_reload_conf()")

    def set_read_only(self, *, read_only: bool) -> None:
        """Turn the server read-only (or writable again) without dropping a connection.

        `default_transaction_read_only` plus a reload reaches every session at its next transaction,
        as a demoted primary that still accepts connections behaves.
        """
        self.alter_system(default_transaction_read_only="on" if read_only else "off")
        deadline = time.monotonic() + 10
        while self.accepts_writes() == read_only:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become {'read-only' if read_only else 'writable'}")
            time.sleep(0.02)

    def freeze_replication(self) -> int:
        """Freeze (SIGSTOP) this primary's walsenders: its standbys get no more WAL, and acknowledge none.

        With a synchronous standby every commit then waits, committed on this server alone, as it
        does when the network to the standby stalls. Returns how many walsenders were frozen.
        """
        pids = [row[0] for row in self.sql("SELECT pid FROM pg_stat_replication")]
        for pid in pids:
            _kill(pid, signal.SIGSTOP)
        return len(pids)


@dataclass
class Cluster:
    """A primary and its standbys in one temporary directory; `close` stops every one of them."""

    bin: Path
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, bin_dir: Path) -> Self:
        """An empty cluster directory, owned by the OS user the servers run as."""
        # Not pytest's tmp_path: its parents are private to root, and the servers run as postgres.
        root = Path(tempfile.mkdtemp(prefix="scheduler-pgcluster-"))
        _chown_to_owner(root)
        return cls(bin=bin_dir, root=root)

    def __enter__(self) -> Self:
        """The cluster, closed when the block ends."""
        return self

    def __exit__(self, *_: object) -> None:
        """Stop every server and remove the directory, however the block ended."""
        self.close()

    @property
    def primary(self) -> Node:
        """The first server made: the primary until a test promotes another."""
        return self.nodes[0]

    def _node(self, name: str) -> Node:
        node = Node(name, self.root / name, free_port(), self.bin, self.root / f"{name}.log")
        self.nodes.append(node)
        return node

    def init_primary(self, *, template: Path | None = None) -> Node:
        """Make and start the primary: a copy of ``template`` (a stopped data directory), else initdb."""
        node = self._node("primary")
        if template is not None:
            _run(["cp", "-a", str(template), str(node.data)], cwd=self.root)
        else:
            _run(
                _as_owner(
                    [
                        str(self.bin / "initdb"),
                        "-D",
                        str(node.data),
                        "--auth=trust",
                        "--username=postgres",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ]
                ),
                cwd=self.root,
            )
            node.configure(**SERVER_SETTINGS)
        node.start()
        return node

    def add_standby(self, *, synchronous: bool = False) -> Node:
        """A streaming standby of the primary (`pg_basebackup -R`), started and caught up.

        ``synchronous`` makes the primary wait for it at every commit (`synchronous_standby_names`
        '*', `synchronous_commit` on). That is set on the primary after the copy, so a promoted
        standby does not wait for a standby of its own that does not exist.
        """
        primary = self.primary
        node = self._node(f"standby{len(self.nodes) - 1}")
        _run(
            _as_owner(
                [
                    str(self.bin / "pg_basebackup"),
                    "-D",
                    str(node.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(primary.port),
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ]
            ),
            cwd=self.root,
        )
        node.start()
        if synchronous:
            primary.alter_system(synchronous_standby_names="'*'", synchronous_commit="on")
        wanted = "sync" if synchronous else "async"
        deadline = time.monotonic() + START_TIMEOUT_S
        while wanted not in {row[0] for row in primary.sql("SELECT sync_state FROM pg_stat_replication")}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} is not streaming ({wanted})\n{node.server_log()}")
            time.sleep(0.02)
        return node

    def close(self) -> None:
        """Stop every server (immediately: nothing of a test's data is kept) and remove the directory."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop("immediate")
            pid = node.postmaster_pid()
            if pid is not None:  # pg_ctl could not stop it: take it down by force
                for child in _children_of(pid):
                    _kill(child, signal.SIGKILL)
                _kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def multi_host_url(nodes: list[Node], dbname: str = "postgres", **params: str) -> str:
    """One URL naming several servers, in order, as clients of a replicated cluster are given."""
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
    url = f"postgresql://postgres@{hosts}/{dbname}"
    if params:
        url += "?" + "&".join(f"{key}={value}" for key, value in params.items())
    return url


def migrate(url: str) -> None:
    """Apply the service's schema the way operators do: `python -m scheduler migrate`."""
    env = dict(os.environ, SCHEDULER_DATABASE_URL=url)
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scheduler migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def migrated_template(bin_dir: Path) -> Iterator[Path]:
    """A stopped data directory with the service's schema, that clusters copy instead of initdb + migrate."""
    with Cluster.create(bin_dir) as cluster:
        primary = cluster.init_primary()
        migrate(primary.url())
        primary.stop()
        yield primary.data
