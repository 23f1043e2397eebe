"""HTTP client throughput: the runner's outbound client against plain clients, on one local nginx.

    python -m bench.http_clients [--requests 2000] [--concurrency 10,100]

Starts nginx (its own config in a temp dir, a free loopback port, answering 204) and fires the same
POSTs through each client at each concurrency (each cell the best of --repeat interleaved runs):
plain httpx, plain aiohttp, the runner's guarded aiohttp session, and the runner's whole call
(`run_http_action`: signing, headers, output capture). Plain httpx stands for the runner's client
before aiohttp (httpx over a guarded transport, which measured within a few % of plain httpx).
Prints req/s, latency p50/p99 and the client's CPU per call, and writes bench/results/http_clients.json
(its summary: CPU per call of plain aiohttp and of the runner's whole call at the highest
concurrency, the floor under bench.http_fires' runner CPU per fire). Install nginx with
`apt-get install nginx-light` when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import aiohttp
import httpx

from bench.common import print_table, write_json
from bench.processes import nginx
from bench.summary import figure
from scheduler.domain.models import HttpAction
from scheduler.runner.actions import Attempt, OutboundClient, run_http_action

BODY = b'{"probe": true}'
HEADERS = {"content-type": "application/json"}
WARMUP = 200


async def drive(fire: Callable[[], Awaitable[None]], total: int, concurrency: int) -> dict[str, Any]:
    """Run ``total`` calls of ``fire``, ``concurrency`` at a time; return req/s and latency percentiles."""
    latencies: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await fire()
            latencies.append(time.perf_counter() - started)

    began, cpu_began = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": total,
        "concurrency": concurrency,
        "req_per_s": total / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        # The client's own CPU per call: what a loaded machine disturbs least.
        "cpu_us_per_req": cpu / total * 1e6,
    }


@contextlib.asynccontextmanager
async def httpx_plain(url: str, concurrency: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def fire() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            assert response.status_code == 204  # noqa: S101 - a wrong answer would make the figure meaningless

        yield fire


def _poster(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[None]]:
    """One POST through ``session``, its body read, expecting nginx's 204."""

    async def fire() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            assert response.status == 204  # noqa: S101

    return fire


@contextlib.asynccontextmanager
async def aiohttp_plain(url: str, concurrency: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield _poster(session, url)


@contextlib.asynccontextmanager
async def aiohttp_guarded(url: str, concurrency: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The runner's session: address checks on every connection, no env proxy, no cookies."""
    client = OutboundClient(allow_nets=[ipaddress.ip_network("127.0.0.0/8")], max_connections=concurrency)
    async with client:
        yield _poster(client.session, url)


@contextlib.asynccontextmanager
async def runner_call(url: str, concurrency: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The runner's whole call: signed, traced, timed out, output captured as text."""
    client = OutboundClient(allow_nets=[ipaddress.ip_network("127.0.0.0/8")], max_connections=concurrency)
    action = HttpAction(url=url, method="POST", body={"probe": True})
    secrets = ["whsec_" + "QUJD" * 11]
    attempt = Attempt(
        run_id=uuid4(),
        job_id=uuid4(),
        namespace="bench",
        job_name="bench",
        scheduled_for=datetime.now(UTC),
        attempt=1,
        timeout_s=30,
    )
    async with client:

        async def fire() -> None:
            result = await run_http_action(client, action, attempt, secrets)
            assert result.http_status == 204, result.error  # noqa: S101

        yield fire


CLIENTS: dict[
    str, Callable[[str, int], contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[None]]]]
] = {
    "httpx.AsyncClient": httpx_plain,
    "aiohttp.ClientSession": aiohttp_plain,
    "guarded aiohttp session (runner)": aiohttp_guarded,
    "run_http_action (runner, whole call)": runner_call,
}


async def measure(
    url: str, total: int, levels: list[int], only: list[str], repeat: int
) -> list[dict[str, Any]]:
    """Each client at each concurrency, ``repeat`` times interleaved; the best run of each is kept.

    The best of several interleaved runs, because other work on the machine only ever slows a run.
    """
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(repeat):
        for name, make in CLIENTS.items():
            if only and not any(part in name for part in only):
                continue
            for concurrency in levels:
                async with make(url + "/bench", concurrency) as fire:
                    await drive(fire, WARMUP, concurrency)
                    # httpx collapses at high concurrency; keep its run short enough to finish.
                    slow = name.startswith("httpx") and concurrency > 10
                    row = {
                        "client": name,
                        **await drive(fire, min(total, 1000) if slow else total, concurrency),
                    }
                kept = best.get((name, concurrency))
                if kept is None or row["req_per_s"] > kept["req_per_s"]:
                    best[(name, concurrency)] = row
    return list(best.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="10,100")
    parser.add_argument("--only", default="", help="comma-separated parts of client names to run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per cell; the best is kept")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    only = [part for part in args.only.split(",") if part]
    with nginx() as url:
        try:
            import uvloop  # noqa: PLC0415 - the runner's loop when installed

            rows = uvloop.run(measure(url, args.requests, levels, only, args.repeat))
        except ImportError:
            rows = asyncio.run(measure(url, args.requests, levels, only, args.repeat))
    print_table(
        f"HTTP clients: POSTs to nginx answering 204 ({args.requests} per cell)",
        ["client", "concurrency", "req/s", "p50 ms", "p99 ms", "CPU µs/req"],
        [
            [r["client"], r["concurrency"], r["req_per_s"], r["p50_ms"], r["p99_ms"], r["cpu_us_per_req"]]
            for r in rows
        ],
    )
    top = max(levels)
    summary = [
        figure(f"CPU per call, {r['client']}, {top} concurrent", round(r["cpu_us_per_req"]), "µs")
        for r in rows
        if r["concurrency"] == top and not r["client"].startswith("httpx")
    ]
    path = write_json(
        "http_clients", {"requests": args.requests, "repeat": args.repeat, "rows": rows, "summary": summary}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
