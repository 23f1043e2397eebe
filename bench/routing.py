"""Routing: what finding a namespace's cell costs a request, from a directory in PostgreSQL and from a cache.

    python -m bench.routing [--namespaces 10000,100000,1000000] [--cells 100] [--requests 2000000]
                            [--rate 30000] [--ttl 10] [--lookups 20000]

A model of the routing step docs/scaling.md designs: namespaces live in cells (a PostgreSQL and its
runners each), a small directory maps each namespace to its cell, and every API process keeps the
entries it used for a TTL, as it keeps API keys today. It measures, in this order:

1. the directory: a table of N namespaces -> cell in a database of its own on the bench server,
   looked up by primary key over one connection (a prepared statement), p50 and p99 per lookup;
2. the cache: an in-process dict of (cell, expiry) entries, the cost of one hit in ns;
3. hit rates: a stream of requests at the given rate, spread over the namespaces by a Zipf law
   (s = 1.1: a few busy namespaces and a long tail, as tenants are), replayed in simulated time
   against one router's cache with the TTL, giving the share of requests that reach the directory,
   the directory's queries per second from that router, and the mean routing cost per request
   (hits at the cache's cost, misses at the directory's p50);
4. a full copy: the time to load the whole directory into one router's memory, and its size,
   for routers that hold all of it and follow its changes instead of caching per namespace;
5. placement: jobs per cell when namespaces of Zipf-distributed sizes (capped at the per-namespace
   quota) are placed on the least-loaded cell, as a directory would on creation.

Prints tables and writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import random
import statistics
import sys
import time
from typing import Any

import psycopg

from bench.common import print_table, write_json
from bench.database import url_for
from bench.summary import figure

DB = "scheduler_bench_routing"
ZIPF_S = 1.1
QUOTA = 100_000  # jobs per namespace (SCHEDULER_NAMESPACE_JOB_QUOTA's default)
MEAN_JOBS = 100  # mean jobs per namespace for the placement model (10,000 users, ~1,000 services)


def zipf_cumulative(count: int, s: float = ZIPF_S) -> list[float]:
    """Cumulative weights of ranks 1..count under a Zipf law, for bisect sampling."""
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, count + 1)))


def zipf_sample(rng: random.Random, cumulative: list[float], size: int) -> list[int]:
    """``size`` ranks (0-based) drawn from ``cumulative``."""
    total = cumulative[-1]
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(size)]


def make_directory(namespaces: int, cells: int) -> str:
    """A database holding only the directory table, filled with ``namespaces`` rows; return its URL."""
    with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'.encode())
        admin.execute(f'CREATE DATABASE "{DB}"'.encode())
    url = url_for(DB)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE namespace_cells (namespace text PRIMARY KEY, cell integer NOT NULL)")
        conn.execute(
            b"INSERT INTO namespace_cells"
            b" SELECT 'ns-' || i, i %% %(cells)s FROM generate_series(0, %(n)s - 1) i",
            {"cells": cells, "n": namespaces},
        )
        conn.execute(b"VACUUM ANALYZE namespace_cells")
    return url


def measure_directory(url: str, namespaces: int, lookups: int, rng: random.Random) -> dict[str, float]:
    """Per-lookup latency of the directory by primary key, over one connection."""
    names = [f"ns-{rng.randrange(namespaces)}" for _ in range(lookups)]
    took: list[float] = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        statement = b"SELECT cell FROM namespace_cells WHERE namespace = %s"
        for name in names[:200]:  # warm the statement and the pages
            conn.execute(statement, (name,)).fetchone()
        for name in names:
            started = time.perf_counter()
            row = conn.execute(statement, (name,)).fetchone()
            took.append(time.perf_counter() - started)
            if row is None:
                raise LookupError(f"{name} is not in the directory")
    took.sort()
    return {
        "p50_us": statistics.median(took) * 1e6,
        "p99_us": took[int(len(took) * 0.99)] * 1e6,
        "mean_us": statistics.fmean(took) * 1e6,
    }


def measure_cache_hit(namespaces: int, rng: random.Random, rounds: int = 1_000_000) -> float:
    """Nanoseconds per cache hit: a dict lookup of (cell, expiry) and a check of the expiry."""
    cache = {f"ns-{i}": (i % 100, time.monotonic() + 3600) for i in range(namespaces)}
    keys = [f"ns-{rng.randrange(namespaces)}" for _ in range(1000)]
    clock = time.monotonic
    started = time.perf_counter()
    hits = 0
    for i in range(rounds):
        cell, expires = cache[keys[i % 1000]]
        if expires > clock():
            hits += cell >= 0
    elapsed = time.perf_counter() - started
    if hits != rounds:
        raise RuntimeError("an entry expired while its hit was timed")
    return elapsed / rounds * 1e9


def measure_full_copy(url: str) -> dict[str, float]:
    """Load the whole directory into a dict, as a router holding a full copy does at start."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        copy = {
            str(name): int(cell)
            for name, cell in conn.execute(b"SELECT namespace, cell FROM namespace_cells")
        }
    took = time.perf_counter() - started
    size = sys.getsizeof(copy) + sum(sys.getsizeof(name) for name in copy)
    return {"full_load_s": took, "full_copy_mb": size / 1e6}


def simulate_hits(
    namespaces: int, requests: int, rate: float, ttl: float, rng: random.Random
) -> dict[str, float]:
    """Replay a Zipf request stream at ``rate`` req/s against one router's TTL cache, in simulated time."""
    cumulative = zipf_cumulative(namespaces)
    ranks = zipf_sample(rng, cumulative, requests)
    expires: dict[int, float] = {}
    misses = 0
    for index, rank in enumerate(ranks):
        at = index / rate
        if expires.get(rank, -1.0) <= at:
            misses += 1
            expires[rank] = at + ttl
    duration = requests / rate
    return {
        "miss_share": misses / requests,
        "directory_qps": misses / duration,
        "distinct_namespaces": len(expires),
    }


def place(namespaces: int, cells: int, rng: random.Random) -> dict[str, float]:
    """Jobs per cell when namespaces of Zipf sizes are put, in arrival order, on the least-loaded cell."""
    cumulative = zipf_cumulative(namespaces)
    weights = [cumulative[0]] + [b - a for a, b in itertools.pairwise(cumulative)]
    scale = MEAN_JOBS * namespaces / cumulative[-1]
    sizes = [min(QUOTA, max(1, round(w * scale))) for w in weights]
    rng.shuffle(sizes)
    heap = [(0, cell) for cell in range(cells)]
    for size in sizes:
        load, cell = heapq.heappop(heap)
        heapq.heappush(heap, (load + size, cell))
    loads = sorted(load for load, _ in heap)
    return {
        "jobs": float(sum(sizes)),
        "largest_namespace": float(max(sizes)),
        "cell_min": float(loads[0]),
        "cell_max": float(loads[-1]),
        "max_over_mean": loads[-1] / statistics.fmean(loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--namespaces", default="10000,100000,1000000", help="directory sizes, comma-separated"
    )
    parser.add_argument("--cells", type=int, default=100, help="cells the namespaces are spread over")
    parser.add_argument("--requests", type=int, default=2_000_000, help="requests replayed per hit-rate run")
    parser.add_argument("--rate", type=float, default=30_000, help="requests per second one router receives")
    parser.add_argument("--ttl", type=float, default=10.0, help="seconds a router keeps a directory entry")
    parser.add_argument("--lookups", type=int, default=20_000, help="directory lookups timed per size")
    args = parser.parse_args()
    rng = random.Random(23)
    sizes = [int(n) for n in args.namespaces.split(",")]

    rows: list[dict[str, Any]] = []
    for namespaces in sizes:
        url = make_directory(namespaces, args.cells)
        directory = measure_directory(url, namespaces, args.lookups, rng)
        hit_ns = measure_cache_hit(namespaces, rng)
        hits = simulate_hits(namespaces, args.requests, args.rate, args.ttl, rng)
        full = measure_full_copy(url)
        placement = place(namespaces, args.cells, rng)
        mean_us = hits["miss_share"] * directory["p50_us"] + (1 - hits["miss_share"]) * hit_ns / 1000
        rows.append(
            {
                "namespaces": namespaces,
                **directory,
                "cache_hit_ns": hit_ns,
                **hits,
                "mean_routing_us": mean_us,
                **full,
            }
            | {f"placement_{key}": value for key, value in placement.items()}
        )
    with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'.encode())

    print_table(
        f"routing: directory lookups and one router's cache"
        f" (TTL {args.ttl:g} s, {args.rate:,.0f} req/s, Zipf {ZIPF_S})",
        [
            "namespaces",
            "dir p50 µs",
            "dir p99 µs",
            "hit ns",
            "miss %",
            "dir q/s",
            "mean µs/req",
            "full copy s",
            "MB",
        ],
        [
            [
                r["namespaces"],
                r["p50_us"],
                r["p99_us"],
                r["cache_hit_ns"],
                r["miss_share"] * 100,
                r["directory_qps"],
                r["mean_routing_us"],
                r["full_load_s"],
                r["full_copy_mb"],
            ]
            for r in rows
        ],
    )
    print_table(
        f"placement: Zipf-sized namespaces (mean {MEAN_JOBS} jobs, quota {QUOTA:,})"
        f" on the least-loaded of {args.cells} cells",
        ["namespaces", "jobs", "largest namespace", "cell min", "cell max", "max / mean"],
        [
            [
                r["namespaces"],
                int(r["placement_jobs"]),
                int(r["placement_largest_namespace"]),
                int(r["placement_cell_min"]),
                int(r["placement_cell_max"]),
                r["placement_max_over_mean"],
            ]
            for r in rows
        ],
    )
    largest = rows[-1]
    write_json(
        "routing",
        {
            "args": vars(args),
            "results": rows,
            "summary": [
                figure(
                    f"directory lookup p50, {largest['namespaces']:,} namespaces",
                    round(largest["p50_us"], 1),
                    "µs",
                ),
                figure(
                    f"routing cost per request, {largest['namespaces']:,} namespaces, TTL {args.ttl:g} s",
                    round(largest["mean_routing_us"], 2),
                    "µs",
                ),
                figure(
                    f"directory queries per router at {args.rate:,.0f} req/s",
                    round(largest["directory_qps"]),
                    "/s",
                ),
            ],
        },
    )


if __name__ == "__main__":
    main()
