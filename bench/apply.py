"""Jobs as code at scale: one POST /jobs/apply of N jobs, applied fresh, again unchanged, then changed.

    python -m bench.apply [--jobs 10000] [--repeat 3]

Serves `scheduler api` (one worker, auth off) on a fresh database and sends one set of N HTTP jobs
(every 5 minutes, labels `service=billing`) through `POST /jobs/apply` from an httpx client on the
same machine: first when none exists (N creates), then the same set (N unchanged, nothing written),
then with every job's description changed (N updates), then a dry run that prunes half of them.
Each step is repeated and the best time is kept. Prints the seconds per step and jobs per second,
and the target of issue #25 (a fresh apply, the create step, at >= 10,000 jobs/s) with its verdict,
and writes bench/results/apply.json. The body of a 10,000-job set is about 2.5 MB; the route's body
limit is 32 MiB.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, scalar
from bench.processes import api_server
from bench.summary import figure, print_targets

DB = "scheduler_bench_apply"
# Issue #25: the bulk apply of jobs-as-code creates at least this many jobs a second.
CREATE_TARGET_JOBS_PER_S = 10_000


def declared(count: int, description: str) -> list[dict[str, Any]]:
    """A service's set of jobs."""
    return [
        {
            "name": f"billing-{index:05d}",
            "description": description,
            "schedule": "*/5 * * * *",
            "timezone": "Europe/Berlin",
            "action": {
                "type": "http",
                "method": "POST",
                "url": "http://127.0.0.1:9/hook",
                "body": {"n": index},
            },
            "labels": {"service": "billing", "shard": str(index % 16)},
        }
        for index in range(count)
    ]


def timed_apply(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Send one apply; the seconds it took and its answer (a failure stops the bench)."""
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    response = client.post("/jobs/apply", content=payload, headers={"content-type": "application/json"})
    took = time.perf_counter() - started
    response.raise_for_status()
    return took, response.json()


def main() -> None:
    """Run the steps and print their table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"jobs": args.jobs, "steps": {}}
    selector = {"label": "service=billing"}
    steps = [
        ("create", "v1", False, False, "created"),
        ("unchanged", "v1", False, False, "unchanged"),
        ("update", "v2", False, False, "updated"),
        ("dry-run prune half", "v2", True, True, "deleted"),
    ]
    best: dict[str, float] = {}
    body_bytes = len(json.dumps({"jobs": declared(args.jobs, "v1"), "selector": selector}).encode())
    for _ in range(args.repeat):
        url = fresh_database(DB)
        try:
            with (
                api_server(url, namespace_job_quota=10_000_000) as base,
                httpx.Client(base_url=base, timeout=600) as client,
            ):
                for name, description, prune, dry_run, counted in steps:
                    jobs = declared(args.jobs, description)
                    if prune:
                        jobs = jobs[: args.jobs // 2]
                    body = {"jobs": jobs, "selector": selector, "prune": prune, "dry_run": dry_run}
                    took, answer = timed_apply(client, body)
                    expected = args.jobs // 2 if prune else args.jobs
                    if answer[counted] != expected:
                        raise SystemExit(f"{name}: expected {expected} {counted}, got {answer[counted]}")
                    best[name] = min(best.get(name, took), took)
                stored = scalar(url, "SELECT count(*) FROM jobs")
                if stored != args.jobs:
                    raise SystemExit(f"the dry run wrote: {stored} jobs stored, not {args.jobs}")
        finally:
            drop_database(DB)
    for name, *_ in steps:
        rows.append([name, f"{best[name]:.2f}", f"{args.jobs / best[name]:,.0f}"])
        results["steps"][name] = {
            "seconds": round(best[name], 3),
            "jobs_per_s": round(args.jobs / best[name]),
        }
    results["body_bytes"] = body_bytes
    print_table(
        f"POST /jobs/apply, {args.jobs:,} HTTP jobs, one API worker, best of {args.repeat}"
        f" ({body_bytes / 1e6:.1f} MB body)",
        ["step", "seconds", "jobs/s"],
        rows,
    )
    created_per_s = round(args.jobs / best["create"])
    summary = [
        figure(
            f"apply of {args.jobs:,} new jobs (create step), one API worker",
            created_per_s,
            "jobs/s",
            target=f">= {CREATE_TARGET_JOBS_PER_S:,} jobs/s",
            met=created_per_s >= CREATE_TARGET_JOBS_PER_S,
        ),
        *(
            figure(f"apply, {name} step", results["steps"][name]["jobs_per_s"], "jobs/s")
            for name, *_ in steps[1:]
        ),
    ]
    results["summary"] = summary
    print_targets(summary)
    write_json("apply", results)


if __name__ == "__main__":
    main()
