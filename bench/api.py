"""API throughput: wrk against the job routes beside a bare `SELECT 1` route, then the brief's load.

    python -m bench.api [--jobs 10000] [--workers 1,2] [--duration 10] [--rate 100] [--rate-duration 30]

Seeds N jobs (due in a day, so no runner is needed) in a fresh database and serves `scheduler api`
with auth off for each worker count. wrk (`apt-get install wrk`) drives each scenario closed-loop
for a fixed time: GET /jobs/{id} on random seeded ids, the first page of GET /jobs?limit=50, a page
near the end (a deep keyset cursor), POST /jobs with a unique name per request, and a mix of 80 %
reads and 20 % creates. Beside them, the baseline: bench/baseline_app.py (one route running `SELECT
1` through the same pool) served by uvicorn the same way. Then an open-loop generator sends the
brief's 6,000 requests a minute at a fixed rate (GETs and some POSTs) and reports p50/p99/max.

Prints req/s, p50 and p99 per scenario with the ratio to the baseline, and writes bench/results/api.json.
wrk, the server and PostgreSQL share this machine's cores: figures are for one box, not a fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, seed_jobs
from bench.processes import api_server, baseline_server
from bench.summary import figure, print_targets
from scheduler.operations.pages import encode_cursor

DB = "scheduler_bench_api"
PAGE = 50
# Issue #25, target 3: GET /jobs/{id} against the bare route (1 and 2 workers), and creates.
BASELINE_RATIO_TARGET = 0.85
CREATE_JOBS_TARGET = 2_000
CREATE_TARGET_WORKERS = 2
FIXED_RATE_P99_TARGET_MS = 10.0
# The quota would refuse creates once the seeded and created jobs pass 100,000 in the one namespace.
BENCH_QUOTA = 100_000_000
JOB_BODY = '{"name": "%s", "schedule": "@daily", "action": {"type": "log", "payload": {"from": "bench"}}}'

# Shared by every wrk script: report the run as one JSON line wrk prints at the end.
LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Each wrk thread gets its own number (for unique names) and its own random sequence.
LUA_THREADS = r"""
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
"""

LUA_IDS = r"""
local ids = {}
init = function(args)
  tag = args[1]
  math.randomseed(os.time() * 100 + tid)
  for line in io.lines("{ids_path}") do ids[#ids + 1] = line end
end
"""

LUA_POST = r"""
local created = 0
local function create()
  created = created + 1
  local body = string.format('{body}', "wrk-" .. tag .. "-" .. tid .. "-" .. created)
  return wrk.format("POST", "/jobs", {["Content-Type"] = "application/json"}, body)
end
"""

SCRIPTS: dict[str, str] = {
    "get_job": LUA_THREADS
    + LUA_IDS
    + """
request = function() return wrk.format("GET", "/jobs/" .. ids[math.random(#ids)]) end
""",
    "list_first": """
request = function() return wrk.format("GET", "/jobs?limit={page}") end
""",
    "list_deep": """
request = function() return wrk.format("GET", "/jobs?limit={page}&cursor={cursor}") end
""",
    "create_job": LUA_THREADS
    + LUA_POST
    + """
init = function(args) tag = args[1] end
request = function() return create() end
""",
    "mixed_80_20": LUA_THREADS
    + LUA_IDS
    + LUA_POST
    + """
request = function()
  local pick = math.random()
  if pick < 0.7 then return wrk.format("GET", "/jobs/" .. ids[math.random(#ids)]) end
  if pick < 0.8 then return wrk.format("GET", "/jobs?limit={page}") end
  return create()
end
""",
    "baseline_select1": """
request = function() return wrk.format("GET", "/select1") end
""",
}

# The API's own scenarios, in the order they run after the baseline.
API_SCENARIOS = ("get_job", "list_first", "list_deep", "create_job", "mixed_80_20")

TITLES = {
    "baseline_select1": "baseline: SELECT 1 route",
    "get_job": "GET /jobs/{id}",
    "list_first": "GET /jobs?limit=50 (first page)",
    "list_deep": "GET /jobs?limit=50&cursor=<deep>",
    "create_job": "POST /jobs",
    "mixed_80_20": "mixed 80% read / 20% POST",
}


def write_scripts(folder: Path, ids: list[str], cursor: str) -> dict[str, Path]:
    """Write the lua script of every scenario; return their paths by scenario."""
    ids_path = folder / "ids.txt"
    ids_path.write_text("\n".join(ids) + "\n")
    body = JOB_BODY.replace('"', '\\"')
    found: dict[str, Path] = {}
    for name, text in SCRIPTS.items():
        filled = (
            text.replace("{ids_path}", str(ids_path))
            .replace("{body}", body.replace("'", "\\'"))
            .replace("{page}", str(PAGE))
            .replace("{cursor}", cursor)
        )
        path = folder / f"{name}.lua"
        path.write_text(filled + LUA_DONE)
        found[name] = path
    return found


def run_wrk(base: str, script: Path, seconds: float, threads: int, connections: int) -> dict[str, Any]:
    """Run wrk once with a script; return its figures (latencies in ms).

    The script gets a tag unique to this run, so the names it creates never collide with earlier runs'.
    """
    tag = f"{time.time_ns():x}"
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        base,
        "--",
        tag,
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    errors = sum(
        raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "raw": raw,
    }


def deep_cursor(url: str) -> str:
    """A cursor whose page is the last full page of the seeded jobs (names, as the API sorts)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as conn:
        names = [str(row[0]) for row in conn.execute(b"SELECT name FROM jobs ORDER BY name")]
    return encode_cursor(names[max(0, len(names) - PAGE - 1)])


def seeded_ids(url: str) -> list[str]:
    """The seeded ids in the API's page order."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as conn:
        return [str(row[0]) for row in conn.execute(b"SELECT id FROM jobs ORDER BY id")]


# ----------------------------------------------------------------------------- fixed-rate load


async def fixed_rate(base: str, ids: list[str], rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """Open loop: send requests at fixed instants whatever the answers; latency counts from the instant.

    Mix: 70 % GET /jobs/{id}, 10 % GET /jobs?limit=50, 5 % GET /jobs/{id}/runs, 15 % POST /jobs.
    """
    total = int(rate * seconds)
    rng = random.Random(5)
    kinds = rng.choices(
        ["get_job", "list_first", "list_runs", "create_job"], weights=[70, 10, 5, 15], k=total
    )
    latencies: dict[str, list[float]] = {kind: [] for kind in set(kinds)}
    failures: list[str] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=5.0) as client:

        async def one(index: int, kind: str, at: float) -> None:
            job_id = ids[rng.randrange(len(ids))]
            try:
                if kind == "get_job":
                    response = await client.get(f"/jobs/{job_id}")
                elif kind == "list_first":
                    response = await client.get("/jobs", params={"limit": PAGE})
                elif kind == "list_runs":
                    response = await client.get(f"/jobs/{job_id}/runs")
                else:
                    body = JOB_BODY % f"rate-{tag}-{index}"
                    response = await client.post(
                        "/jobs", content=body, headers={"content-type": "application/json"}
                    )
            except httpx.HTTPError as exc:
                failures.append(f"{kind}: {type(exc).__name__}")
                return
            latencies[kind].append((time.perf_counter() - at) * 1000)
            if response.status_code >= 400:
                failures.append(f"{kind}: HTTP {response.status_code}")

        # Warm the connection pool so the first requests do not pay for TCP handshakes.
        await asyncio.gather(*(client.get("/healthz") for _ in range(8)))
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for index, kind in enumerate(kinds):
            at = start + index / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, kind, at)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    every = sorted(ms for values in latencies.values() for ms in values)
    return {
        "rate_per_s": rate,
        "seconds": elapsed,
        "sent": total,
        "answered": len(every),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
        "max_ms": every[-1] if every else None,
        "by_kind": {
            kind: {
                "count": len(values),
                "p50_ms": percentile(sorted(values), 50),
                "p99_ms": percentile(sorted(values), 99),
            }
            for kind, values in sorted(latencies.items())
        },
    }


def percentile(ordered: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of already sorted values."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_fixed_rate(base: str, ids: list[str], rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """Run the open-loop generator on uvloop when it is there."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(fixed_rate(base, ids, rate, seconds, tag))
    return uvloop.run(fixed_rate(base, ids, rate, seconds, tag))


# -------------------------------------------------------------------------------------- main


def smoke_test(base: str, ids: list[str], deep: str) -> None:
    """Check once that every scenario's request succeeds: wrk only counts failures, it never says why."""
    checks = [
        ("GET", f"/jobs/{ids[0]}", None),
        ("GET", f"/jobs?limit={PAGE}", None),
        ("GET", f"/jobs?limit={PAGE}&cursor={deep}", None),
        ("POST", "/jobs", JOB_BODY % f"smoke-{time.time_ns():x}"),
    ]
    for method, path, body in checks:
        response = httpx.request(
            method, base + path, content=body, headers={"content-type": "application/json"}, timeout=10
        )
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")


def measure(
    args: argparse.Namespace, url: str, ids: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every wrk scenario for every worker count, and the fixed-rate run; baseline first each time."""
    tag = f"{int(time.time())}"
    deep = deep_cursor(url)
    results: list[dict[str, Any]] = []
    fixed: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        for workers in args.workers:
            scripts = write_scripts(Path(tmp), ids, deep)

            def scenario(
                name: str, base: str, workers: int = workers, scripts: dict[str, Path] = scripts
            ) -> None:
                run_wrk(base, scripts[name], args.warmup, args.threads, args.connections)
                found = run_wrk(base, scripts[name], args.duration, args.threads, args.connections)
                results.append({"workers": workers, "scenario": name, **found})
                print(
                    f"  {workers} worker(s) {TITLES[name]:<34} {found['rps']:>9,.0f} req/s"
                    f"  p50 {found['p50_ms']:.2f} ms  p99 {found['p99_ms']:.2f} ms  errors {found['errors']}",
                    flush=True,
                )

            with baseline_server(url, workers=workers) as base:
                scenario("baseline_select1", base)
            with api_server(url, workers=workers, namespace_job_quota=BENCH_QUOTA) as base:
                smoke_test(base, ids, deep)
                for name in args.scenarios:
                    scenario(name, base)
                if workers == args.rate_workers and args.rate_duration > 0:
                    print(
                        f"  {workers} worker(s) fixed rate {args.rate:.0f} req/s, {args.rate_duration:.0f} s"
                    )
                    fixed = run_fixed_rate(base, ids, args.rate, args.rate_duration, f"{tag}-w{workers}")
    return results, fixed


def targets(results: list[dict[str, Any]], workers_run: list[int]) -> list[dict[str, Any]]:
    """Issue #25's API figures with their verdicts, for the scenarios and worker counts that ran.

    GET /jobs/{id} must serve at least 0.85x the bare route's requests with 1 and 2 workers;
    POST /jobs at least 2,000 jobs/s in one namespace with 2 workers (wrk creates them all in the
    `default` namespace, auth being off).
    """
    found: list[dict[str, Any]] = []

    def result(workers: int, name: str) -> dict[str, Any] | None:
        return next((r for r in results if r["workers"] == workers and r["scenario"] == name), None)

    for workers in workers_run:
        get = result(workers, "get_job")
        if get is None:
            continue
        ratio = get["ratio_to_baseline"]
        found.append(figure(f"GET /jobs/{{id}} req/s, {workers} worker(s)", round(get["rps"]), "req/s"))
        found.append(
            figure(
                f"GET /jobs/{{id}} vs SELECT 1 baseline, {workers} worker(s)",
                round(ratio, 3) if ratio is not None else None,
                "x",
                target=f">= {BASELINE_RATIO_TARGET:.2f}x",
                met=ratio is not None and ratio >= BASELINE_RATIO_TARGET,
            )
        )
    for workers in workers_run:
        create = result(workers, "create_job")
        if create is None:
            continue
        rps = round(create["rps"])
        if workers == CREATE_TARGET_WORKERS:
            found.append(
                figure(
                    f"POST /jobs jobs/s, one namespace, {workers} workers",
                    rps,
                    "jobs/s",
                    target=f">= {CREATE_JOBS_TARGET:,} jobs/s, no errors",
                    met=rps >= CREATE_JOBS_TARGET and create["errors"] == 0,
                )
            )
        else:
            found.append(figure(f"POST /jobs jobs/s, one namespace, {workers} worker(s)", rps, "jobs/s"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs seeded before measuring")
    parser.add_argument("--workers", default="1,2", help="API worker counts, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each scenario")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="fixed-rate requests per second (brief: 6,000/min)"
    )
    parser.add_argument(
        "--rate-duration", type=float, default=30.0, help="seconds of fixed-rate load (0: skip)"
    )
    parser.add_argument(
        "--rate-workers", type=int, default=1, help="API workers the fixed-rate load runs against"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(API_SCENARIOS),
        help="API scenarios to run beside the baseline, comma-separated (a short look at one route)",
    )
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.scenarios = [name for name in args.scenarios.split(",") if name]
    if unknown := sorted(set(args.scenarios) - set(API_SCENARIOS)):
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(API_SCENARIOS)}")

    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: `apt-get install wrk` (Debian) or `brew install wrk`; skipping bench.api"
        )
        write_json("api", {"skipped": "wrk is not installed", "summary": []})
        return

    url = fresh_database(DB)
    try:
        seed_jobs(url, args.jobs, first=now() + timedelta(days=1))
        ids = seeded_ids(url)
        results, fixed = measure(args, url, ids)
    finally:
        drop_database(DB)

    baseline = {r["workers"]: r["rps"] for r in results if r["scenario"] == "baseline_select1"}
    for r in results:
        r["ratio_to_baseline"] = r["rps"] / baseline[r["workers"]] if baseline.get(r["workers"]) else None
    print_table(
        f"API throughput, {args.jobs:,} jobs, wrk -t{args.threads} -c{args.connections}, "
        f"{args.duration:.0f} s each",
        ["workers", "scenario", "req/s", "p50 ms", "p99 ms", "errors", "vs SELECT 1"],
        [
            (
                r["workers"],
                TITLES[r["scenario"]],
                r["rps"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
                f"{r['ratio_to_baseline']:.2f}x" if r["ratio_to_baseline"] is not None else "",
            )
            for r in results
        ],
    )

    summary = targets(results, args.workers)
    if fixed is not None:
        p99 = fixed["p99_ms"]
        met = p99 is not None and p99 < FIXED_RATE_P99_TARGET_MS and fixed["failures"] == 0
        summary.append(
            figure(
                f"{fixed['rate_per_s'] * 60:,.0f} req/min fixed rate, p99",
                round(p99, 2) if p99 is not None else None,
                "ms",
                target=f"< {FIXED_RATE_P99_TARGET_MS:.0f} ms, no failures",
                met=met,
            )
        )
        print_table(
            f"Fixed rate {fixed['rate_per_s']:.0f} req/s ({fixed['rate_per_s'] * 60:,.0f}/min) open loop, "
            f"{args.rate_workers} worker(s), {fixed['seconds']:.0f} s: latency from the scheduled instant",
            ["requests", "count", "p50 ms", "p99 ms"],
            [
                *[(kind, v["count"], v["p50_ms"], v["p99_ms"]) for kind, v in fixed["by_kind"].items()],
                ("all", fixed["answered"], fixed["p50_ms"], fixed["p99_ms"]),
            ],
        )
        print(f"max {fixed['max_ms']:.1f} ms; failures {fixed['failures']} {fixed['failure_kinds'] or ''}")

    print_targets(summary)
    path = write_json(
        "api",
        {
            "jobs": args.jobs,
            "duration_s": args.duration,
            "wrk": {"threads": args.threads, "connections": args.connections},
            "scenarios": [{k: v for k, v in r.items() if k != "raw"} for r in results],
            "fixed_rate": fixed,
            "summary": summary,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
