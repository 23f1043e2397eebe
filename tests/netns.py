"""Hosts as Linux network namespaces, for tests of the service spread over several machines.

As root, a `Network` is one bridge in the root namespace with an address from the benchmark range
198.18.0.0/15 (RFC 2544), and each `Host` is a network namespace joined to it by a veth pair, with
an address of its own on the bridge's /24 and no default route: a host reaches the bridge's other
addresses and nothing else, so no packet of these tests can leave the machine. The root namespace
serves what every host shares: our own PostgreSQL (`HostPostgres`, a cluster of tests/pgcluster.py
listening on the bridge address), HTTP targets (`HostReceiver`) and HAProxy (`HAProxy`).

What a test does to a host is what happens to a machine: its link goes down (`Host.link_down`), or a
firewall in it drops the PostgreSQL port (`Host.drop_tcp_port`). Every name carries this process's
pid, so leftovers of a run that died are found and removed by the next (`remove_leftovers`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import psycopg

from tests import pgcluster
from tests.conftest import Proc, free_port

# Names of everything made here start with this, followed by the pid of the process that made it.
PREFIX = "schedtest"
# The benchmark range: no real network uses it, and our own address rules refuse it by default.
BENCHMARK_NET = ipaddress.IPv4Network("198.18.0.0/15")
# Linux limits interface names to 15 characters.
IFNAME_MAX = 15
COMMAND_TIMEOUT_S = 30


class NetnsUnavailableError(RuntimeError):
    """This machine cannot build namespaced hosts (not root, or `ip` missing); the message says which."""


def why_unavailable() -> str | None:
    """Why namespaced hosts cannot be made here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); CI runs as root"
    if shutil.which("ip") is None:
        return "the `ip` command is missing: apt-get install iproute2"
    return None


def run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a failure raises with what it said."""
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete namespaces and bridges made by test processes that are gone; return what was removed.

    A test run killed before its finalizers ran leaves them behind; they would hold addresses of
    the benchmark range that a later run may pick.
    """
    removed: list[str] = []
    owner = re.compile(rf"^{PREFIX}-(\d+)-")
    for line in run(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = owner.match(name)
        if found and not _pid_alive(int(found.group(1))):
            run(["ip", "netns", "delete", name], check=False)
            removed.append(name)
    links = json.loads(run(["ip", "-json", "-details", "link", "show", "type", "bridge"]).stdout or "[]")
    for link in links:
        found = owner.match(str(link.get("ifalias", "")) + "-")
        if found and not _pid_alive(int(found.group(1))):
            run(["ip", "link", "delete", link["ifname"]], check=False)
            removed.append(link["ifname"])
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of the benchmark range that no address or route of this machine touches."""
    used = run(["ip", "-4", "route", "show", "table", "all"]).stdout + run(["ip", "-4", "addr"]).stdout
    candidates: list[ipaddress.IPv4Network] = list(BENCHMARK_NET.subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        stem = str(subnet.network_address).rsplit(".", 1)[0] + "."
        if stem not in used:
            return subnet
    raise RuntimeError("no free /24 left in 198.18.0.0/15")


@dataclass
class Host:
    """A machine of the test: a network namespace with one interface (`eth0`) on the test network."""

    name: str
    netns: str
    address: str
    prefixlen: int
    root_veth: str
    dev: str = "eth0"

    def exec_args(self, args: list[str]) -> list[str]:
        """``args`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it."""
        return run(self.exec_args(args), check=check)

    def spawn(self, args: list[str], *, env: Mapping[str, str], log_path: Path, name: str = "") -> Proc:
        """Start a long-running process inside this host, its output going to ``log_path``.

        `ip netns exec` execs the command, so the pid is the process itself: signals reach it.
        """
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                self.exec_args(args), env=dict(env), stdout=out, stderr=subprocess.STDOUT
            )
        return Proc(popen, log_path, name or self.name)

    def link_down(self) -> None:
        """Take the host's interface down on its own side: a cable pulled, a NIC or switch port dead."""
        self.run(["ip", "link", "set", self.dev, "down"])

    def link_up(self) -> None:
        """Bring the interface back; its address and on-link route come back with it."""
        self.run(["ip", "link", "set", self.dev, "up"])

    def drop_tcp_port(self, address: str, port: int) -> None:
        """A firewall in this host that silently drops TCP to and from ``address``:``port``.

        Nothing is refused or reset, as when a network between two machines goes away: packets
        simply vanish, and each end learns of it only from its own timeouts.
        """
        table = "schedtest"
        self.run(["nft", "add", "table", "inet", table])
        for chain, hook, match in (
            ("out", "output", f"ip daddr {address} tcp dport {port}"),
            ("in", "input", f"ip saddr {address} tcp sport {port}"),
        ):
            self.run(
                [
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    table,
                    chain,
                    f"{{ type filter hook {hook} priority 0; policy accept; }}",
                ]
            )
            self.run(["nft", "add", "rule", "inet", table, chain, *match.split(), "drop"])

    def heal(self) -> None:
        """Undo what a test did to the host: its link up, its firewall gone."""
        self.run(["nft", "flush", "ruleset"], check=False)
        self.run(["ip", "link", "set", self.dev, "up"], check=False)

    def can_reach(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``address``:``port`` opens."""
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return self.run([sys.executable, "-c", probe], check=False).returncode == 0


@dataclass
class Network:
    """A bridge in the root namespace and the hosts joined to it; `close` removes them all."""

    subnet: ipaddress.IPv4Network
    bridge: str
    tag: str
    hosts: list[Host] = field(default_factory=list)

    @classmethod
    def create(cls) -> Self:
        """A fresh bridge on a free /24 of the benchmark range, its first address in the root namespace."""
        reason = why_unavailable()
        if reason is not None:
            raise NetnsUnavailableError(reason)
        remove_leftovers()
        tag = f"{PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}"
        bridge = f"stb{tag[-4:]}{os.getpid() % 10000}"[:IFNAME_MAX]
        subnet = _free_subnet()
        made = cls(subnet=subnet, bridge=bridge, tag=tag)
        try:
            run(["ip", "link", "add", bridge, "type", "bridge"])
            run(["ip", "link", "set", bridge, "alias", tag])
            run(["ip", "addr", "add", f"{made.gateway}/{subnet.prefixlen}", "dev", bridge])
            run(["ip", "link", "set", bridge, "up"])
        except BaseException:
            made.close()
            raise
        return made

    def __enter__(self) -> Self:
        """The network, removed when the block ends."""
        return self

    def __exit__(self, *_: object) -> None:
        """Remove every host and the bridge, however the block ended."""
        self.close()

    @property
    def gateway(self) -> str:
        """The root namespace's address on the network: where PostgreSQL, targets and HAProxy listen."""
        return str(self.subnet.network_address + 1)

    def add_host(self, name: str) -> Host:
        """A new namespace joined to the bridge, with the next free address."""
        index = len(self.hosts)
        netns = f"{self.tag}-{name}"
        root_veth = f"{self.bridge[:11]}v{index}"[:IFNAME_MAX]
        peer = f"{self.bridge[:11]}p{index}"[:IFNAME_MAX]
        host = Host(
            name=name,
            netns=netns,
            address=str(self.subnet.network_address + 10 + index),
            prefixlen=self.subnet.prefixlen,
            root_veth=root_veth,
        )
        self.hosts.append(host)
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", root_veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", netns])
        run(["ip", "link", "set", root_veth, "master", self.bridge])
        run(["ip", "link", "set", root_veth, "up"])
        host.run(["ip", "link", "set", peer, "name", host.dev])
        host.run(["ip", "addr", "add", f"{host.address}/{host.prefixlen}", "dev", host.dev])
        host.run(["ip", "link", "set", host.dev, "up"])
        host.run(["ip", "link", "set", "lo", "up"])
        return host

    def close(self) -> None:
        """Delete every namespace (its veth goes with it) and the bridge."""
        for host in self.hosts:
            run(["ip", "netns", "delete", host.netns], check=False)
            run(["ip", "link", "delete", host.root_veth], check=False)
        run(["ip", "link", "delete", self.bridge], check=False)


# ------------------------------------------------------------------------------ PostgreSQL


@dataclass
class HostPostgres:
    """Our own PostgreSQL, listening on loopback and on the network's bridge address.

    The machine's own server listens on 127.0.0.1 only, which no namespace can reach: this is a
    cluster of tests/pgcluster.py, with the bridge address added to `listen_addresses` and the
    network's /24 trusted in `pg_hba.conf`. A migrated database `template` is made once; `database`
    clones it for each test.
    """

    cluster: pgcluster.Cluster
    node: pgcluster.Node
    address: str
    template: str = "sched_template"
    made: int = 0

    @classmethod
    def start(cls, bin_dir: Path, network: Network) -> Self:
        """initdb, listen on the bridge too, migrate the template database."""
        cluster = pgcluster.Cluster.create(bin_dir)
        try:
            node = cluster.init_primary()
            node.configure(listen_addresses=f"'127.0.0.1,{network.gateway}'")
            with (node.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {network.subnet} trust\n")
            node.stop()
            node.start()
            server = cls(cluster=cluster, node=node, address=network.gateway)
            node.sql(f'CREATE DATABASE "{server.template}"')
            pgcluster.migrate(node.url(server.template))
        except BaseException:
            cluster.close()
            raise
        return server

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.cluster.close()

    @property
    def port(self) -> int:
        """The server's port, the same on loopback and on the bridge."""
        return self.node.port

    def database(self) -> str:
        """A new database cloned from the migrated template; returns its name."""
        self.made += 1
        name = f"sched_hosts_{os.getpid()}_{self.made}"
        self.node.sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        """Drop a test's database, whoever is still connected."""
        with contextlib.suppress(psycopg.Error):
            self.node.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def host_url(self, dbname: str) -> str:
        """The URL a process in a namespace uses: the bridge address."""
        return f"postgresql://postgres@{self.address}:{self.port}/{dbname}"

    def local_url(self, dbname: str) -> str:
        """The URL the test itself uses, on loopback."""
        return self.node.url(dbname)


# --------------------------------------------------------------------------- HTTP targets


@dataclass(frozen=True)
class Call:
    """One request a target received: from which host address, when, and whether it was held."""

    method: str
    path: str
    source: str
    headers: dict[str, str]
    at: float
    held: bool


@dataclass
class HostReceiver:
    """A real HTTP server on the bridge address that records every call with the caller's address.

    Calls from the addresses in ``hold_from`` (decided when each call arrives) are held unanswered
    until `release` or ``hold_max_s``: the slow target a runner is mid-call to when its host is cut.
    Every other call is answered 200, after ``slow_s`` when its path starts with ``slow_prefix``.
    """

    server: ThreadingHTTPServer
    calls: list[Call] = field(default_factory=list)
    hold_from: set[str] = field(default_factory=set)
    hold_max_s: float = 60.0
    slow_prefix: str | None = None
    slow_s: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, address: str) -> Self:
        """Serve on ``address`` (a free port) in a thread of this process."""
        holder: dict[str, HostReceiver] = {}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                target = holder["r"]
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                source = str(self.client_address[0])
                with target.lock:
                    held = source in target.hold_from
                    slow = target.slow_prefix is not None and self.path.startswith(target.slow_prefix)
                    delay = target.slow_s if slow else 0.0
                    target.calls.append(
                        Call(
                            self.command,
                            self.path,
                            source,
                            {k.lower(): v for k, v in self.headers.items()},
                            time.time(),
                            held,
                        )
                    )
                if held:
                    target.released.wait(target.hold_max_s)
                elif delay:
                    target.released.wait(delay)  # the slow target a test asked for
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = _handle  # noqa: N815

            def log_message(self, *_: Any) -> None:
                return

        class QuietServer(ThreadingHTTPServer):
            # Runners open many connections at once; the default backlog of 5 would queue them.
            request_queue_size = 1024
            daemon_threads = True

            def handle_error(self, *_: Any) -> None:
                # Runners cut off mid-call drop their connections: that is the test.
                return

        server = QuietServer((address, 0), Handler)
        receiver = cls(server)
        holder["r"] = receiver
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return receiver

    @property
    def url(self) -> str:
        """The base URL runners call."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def snapshot(self) -> list[Call]:
        """Every call so far."""
        with self.lock:
            return list(self.calls)

    def from_host(self, host: Host, *, since: float = 0.0) -> list[Call]:
        """The calls made from ``host`` that arrived after ``since`` (wall-clock seconds)."""
        return [c for c in self.snapshot() if c.source == host.address and c.at > since]

    def close(self) -> None:
        """Answer whatever is held and stop serving."""
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------- HAProxy

HAPROXY_CONFIG = """\
global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 15s
    timeout server 15s
    timeout check 1s
    # A request whose server refused the connection or vanished is sent to another server, up to
    # three times: `option redispatch` lets a retry pick another server than the first.
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout

frontend api
    bind {bind}
    default_backend api

backend api
    balance roundrobin
    # Only idempotent requests are sent twice: a POST that reached a server that died may have
    # been applied, so it fails to the client rather than risk creating a job twice.
    http-request disable-l7-retry if !METH_GET !METH_HEAD
    option httpchk GET /readyz
    http-check expect status 200
    # Which server answered, so a test can see both served.
    http-response set-header x-served-by %[srv_name]
    default-server inter 300ms fastinter 200ms downinter 300ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


@dataclass
class HAProxy:
    """Debian's HAProxy in front of API hosts, in the root namespace, as a process of the test."""

    popen: subprocess.Popen[bytes]
    port: int
    directory: Path

    @classmethod
    def start(cls, servers: Mapping[str, str]) -> Self:
        """Balance over ``servers`` (name to `address:port`), listening on a free loopback port."""
        program = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(program).exists():
            raise FileNotFoundError("HAProxy is needed: apt-get install haproxy")
        directory = Path(tempfile.mkdtemp(prefix="scheduler-haproxy-"))
        port = free_port()
        lines = "\n".join(f"    server {name} {target} check" for name, target in servers.items())
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(bind=f"127.0.0.1:{port}", servers=lines))
        run([program, "-c", "-f", str(config)])
        with (directory / "haproxy.log").open("wb") as out:
            popen = subprocess.Popen(
                [program, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        return cls(popen, port, directory)

    @property
    def url(self) -> str:
        """Where clients send requests."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What HAProxy printed (server state changes among it)."""
        return (self.directory / "haproxy.log").read_text(errors="replace")

    def wait_serving(self, servers: int, timeout: float = 30.0) -> None:
        """Poll until answers through HAProxy have come from ``servers`` distinct servers."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while len(seen) < servers:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"HAProxy exited with {self.popen.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get("/readyz")
                    if response.status_code == 200:
                        seen.add(response.headers.get("x-served-by", ""))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"HAProxy served from {sorted(seen)} only:\n{self.log()}")
                time.sleep(0.05)

    def close(self) -> None:
        """Stop HAProxy and remove its files."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


# ------------------------------------------------------------------------------ processes


def faketime_library() -> Path | None:
    """Debian's libfaketime (package `faketime`), which fakes CLOCK_REALTIME in one process."""
    for candidate in sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")):
        return candidate
    return None


def skewed_clock_env(offset: str) -> dict[str, str]:
    """The environment that makes one process's wall clock read ``offset`` (`+7m`) off the real one.

    libfaketime moves every clock of the process by the same offset. The monotonic clock, which
    timeouts and sleeps use, has no meaning of its own, so moving it changes nothing; leaving it
    alone (FAKETIME_DONT_FAKE_MONOTONIC) makes Debian's 0.9.10 fail Python's `time.sleep` with EINVAL.
    """
    library = faketime_library()
    if library is None:
        raise FileNotFoundError("libfaketime is needed: apt-get install faketime")
    return {"LD_PRELOAD": str(library), "FAKETIME": offset}


def log_events(proc: Proc, event: str) -> list[dict[str, Any]]:
    """The JSON log records of ``event`` a process has written so far."""
    found = []
    for line in proc.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def scrape(host: Host, port: int, name: str) -> float:
    """The value of an unlabelled counter or gauge from the Prometheus port of a process in ``host``."""
    text = httpx.get(f"http://{host.address}:{port}/metrics", timeout=3).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(f"{name} not in the metrics of {host.name}")


@contextlib.contextmanager
def healed(hosts: list[Host]) -> Iterator[None]:
    """Whatever a test does to these hosts' network, it is undone when the block ends."""
    try:
        yield
    finally:
        for host in hosts:
            host.heal()
