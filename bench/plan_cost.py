"""What a claim's schedule work costs per job, by how late the job is, and what one fire-time costs.

    python -m bench.plan_cost [--jobs 500] [--repeat 5] [--label after]

A claim runs `misfire.plan` once per due job. Issue 11 asks that this cost not grow with the lag:
a claim of 500 jobs that are 1 s late (inside the grace, the normal path) and one of 500 jobs that
are 1 h late (missed slots, the catch-up path) should cost the same within 20 %. The jobs mix
every-second cron (5 and 6 fields, with and without DST zones) and `@every` schedules, each with
its own anchor, so shared caches help only as much as they do in a real claim. A second table
times `next_fire` alone, the hot path of every fire. Pure CPU, no database; the best of
``--repeat`` rounds is reported, because the machine is shared and noise only ever adds time.
Writes bench/results/plan_cost.json (or plan_cost_<label>.json).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from bench.common import print_table, write_json
from scheduler.domain import misfire
from scheduler.domain.models import Misfire, MisfirePolicy
from scheduler.domain.schedule import Timing, next_fire, prev_fire

NOW = datetime(2026, 3, 29, 12, 0, 0, tzinfo=UTC)
SCHEDULES = (
    ("* * * * * *", "UTC"),
    ("* * * * * *", "Europe/Berlin"),
    ("*/2 * * * * *", "America/New_York"),
    ("@every 1s", "UTC"),
    ("@every 7s", "UTC"),
    ("* * * * *", "Australia/Lord_Howe"),
    ("*/5 * * * *", "Europe/Berlin"),
    ("0 9 * * MON-FRI", "America/New_York"),
)
# Zones with and without DST, for jobs that share no compiled schedule.
ZONES = sorted(
    line.strip()
    for line in (resources.files("tzdata") / "zones").read_text(encoding="utf-8").splitlines()
    if line.strip() and line.strip() not in {"Factory", "localtime", "posixrules"}
)
LAGS = {"1 s": timedelta(seconds=1), "1 min": timedelta(minutes=1), "1 h": timedelta(hours=1)}


def jobs(
    count: int, lag: timedelta, *, now: datetime = NOW, shared: bool = True
) -> list[tuple[Timing, datetime]]:
    """Return (timing, due slot) pairs: each job's last slot at or before ``now`` - lag.

    Shared: the jobs cycle through SCHEDULES, as a fleet of similar jobs does. Not shared: each job
    fires every second in a zone of its own, so no job reuses another's work.
    """
    out: list[tuple[Timing, datetime]] = []
    for index in range(count):
        expression, zone = (
            SCHEDULES[index % len(SCHEDULES)] if shared else ("* * * * * *", ZONES[index % len(ZONES)])
        )
        anchor = now - timedelta(days=2, milliseconds=index * 997 % 1000)
        timing = Timing(expression, zone, anchor)
        target = now - lag
        if shared:
            # Step up to the slot from shortly before it (a daily schedule from four days before),
            # as the runner did when it set the job's next slot; this also runs on the code before
            # issue 11, which had no prev_fire.
            back = timedelta(days=4) if expression.startswith("0 9") else timedelta(minutes=6)
            slot = next_fire(timing, target - back)
            while slot is not None:
                following = next_fire(timing, slot)
                if following is None or following > target:
                    break
                slot = following
        else:
            # Found backwards, so no forward fire time is remembered: every plan starts cold.
            slot = prev_fire(timing, target)
        if slot is not None:
            out.append((timing, slot))
    return out


def time_plan(batch: list[tuple[Timing, datetime]], policy: MisfirePolicy, repeat: int) -> float:
    """Return the best per-job cost in µs of planning the whole batch."""
    rule = Misfire(policy=policy, grace_s=5, window_s=3600)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for timing, slot in batch:
            misfire.plan(timing, rule, slot, NOW)
        best = min(best, time.perf_counter() - started)
    return best / len(batch) * 1e6


def time_plan_unshared(count: int, lag: timedelta, policy: MisfirePolicy, repeat: int) -> float:
    """Like time_plan, for jobs that share nothing, each round a day later so no cache is warm."""
    rule = Misfire(policy=policy, grace_s=5, window_s=3600)
    best = float("inf")
    for round_ in range(repeat):
        now = NOW + timedelta(days=round_ + 1)
        batch = jobs(count, lag, now=now, shared=False)
        started = time.perf_counter()
        for timing, slot in batch:
            misfire.plan(timing, rule, slot, now)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def time_next_fire(repeat: int, count: int = 2000) -> dict[str, float]:
    """Return µs per `next_fire` call, walking forward fire after fire (the runner's pattern)."""
    results: dict[str, float] = {}
    for expression, zone in (
        *SCHEDULES,
        ("0 0 1 * MON#1", "Europe/Berlin"),
        ("30 2 * * *", "America/New_York"),
    ):
        timing = Timing(expression, zone, NOW)
        best = float("inf")
        for round_ in range(repeat):
            # A fresh start each round, far from the last, so the window caches start cold.
            moment = NOW + timedelta(days=400 * (round_ + 1), seconds=round_)
            started = time.perf_counter()
            for _ in range(count):
                found = next_fire(timing, moment)
                if found is None:
                    break
                moment = found
            best = min(best, time.perf_counter() - started)
        results[f"{expression} ({zone})"] = best / count * 1e6
    return results


def main() -> None:
    """Measure, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    batches = {name: jobs(args.jobs, lag) for name, lag in LAGS.items()}
    rows: list[list[Any]] = []
    plan_us: dict[str, dict[str, float]] = {}
    for policy in MisfirePolicy:
        costs = {name: time_plan(batch, policy, args.repeat) for name, batch in batches.items()}
        plan_us[policy.value] = costs
        rows.append([policy.value, *costs.values(), costs["1 h"] / costs["1 s"]])
    print_table(
        f"misfire.plan, µs per job (claims of {args.jobs} jobs; best of {args.repeat})",
        ["policy", *LAGS, "1 h / 1 s"],
        rows,
    )
    unshared_us: dict[str, dict[str, float]] = {}
    unshared_rows: list[list[Any]] = []
    for policy in MisfirePolicy:
        costs = {name: time_plan_unshared(args.jobs, lag, policy, args.repeat) for name, lag in LAGS.items()}
        unshared_us[policy.value] = costs
        unshared_rows.append([policy.value, *costs.values(), costs["1 h"] / costs["1 s"]])
    print_table(
        f"misfire.plan, µs per job, jobs sharing nothing (each its own zone; best of {args.repeat})",
        ["policy", *LAGS, "1 h / 1 s"],
        unshared_rows,
    )
    fire_us = time_next_fire(args.repeat)
    print_table("next_fire, µs per call (2,000 consecutive fires)", ["schedule", "µs"], list(fire_us.items()))
    name = f"plan_cost_{args.label}" if args.label else "plan_cost"
    path = write_json(
        name,
        {
            "jobs": args.jobs,
            "repeat": args.repeat,
            "plan_us_per_job": plan_us,
            "ratio_1h_over_1s": {policy: costs["1 h"] / costs["1 s"] for policy, costs in plan_us.items()},
            "unshared_plan_us_per_job": unshared_us,
            "unshared_ratio_1h_over_1s": {
                policy: costs["1 h"] / costs["1 s"] for policy, costs in unshared_us.items()
            },
            "next_fire_us": fire_us,
            "target": "1 h late within 20 % of 1 s late for skip and once",
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
