"""Fire lateness under steady load: started_at - scheduled_for at 100, 1,000 and 5,000 fires/s.

    python -m bench.lateness [--rates 100,1000,5000] [--runners 1,2] [--window 20]

For each rate R it seeds R jobs firing `@every 1s`, their anchors spread evenly over the second so the
load is steady rather than one burst per second, starts K runners, and after a warm-up reads the
lateness of every run whose slot fell in the measurement window from the run rows themselves.
Prints a table and writes bench/results/lateness.json.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

import psycopg
from tests import seed

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, runners
from bench.summary import figure

DB = "scheduler_bench_lateness"
TARGETS_MS = {100: 20.0, 5000: 100.0}

# The n-th job (n = i - 1, from 0) is anchored n/count of a second after the base: each job fires
# once a second, and their fires are spread evenly across it.
SPREAD = "%(base)s::timestamptz + make_interval(secs => (i - 1)::float8 / %(count)s)"

LATENESS = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY late),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY late),
       max(late)
FROM (SELECT extract(epoch FROM started_at - scheduled_for) * 1000 AS late
      FROM runs WHERE scheduled_for >= %(start)s AND scheduled_for < %(end)s) AS l
"""


def measure(rate: int, count: int, window_s: float, warmup_s: float) -> dict[str, Any]:
    """Seed ``rate`` jobs, run ``count`` runners, return lateness statistics in milliseconds."""
    url = fresh_database(DB)
    base = now() + timedelta(seconds=3)
    with psycopg.connect(url, autocommit=True) as conn:
        anchor = seed.Expr(SPREAD, {"base": base})
        seed.seed_jobs(
            conn,
            rate,
            prefix="steady-",
            schedule="@every 1s",
            anchor_at=anchor,
            next_run_at=anchor,
            action={"type": "log", "payload": {}},
            misfire_grace_s=3600,
            overlap="allow",
        )
        conn.execute(b"VACUUM ANALYZE jobs")
    with runners(url, count):
        time.sleep(max(0.0, (base - now()).total_seconds()) + warmup_s)
        start = now()
        time.sleep(window_s)
        end = now()
        time.sleep(1.0)  # the last slots of the window get claimed
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(LATENESS.encode(), {"start": start, "end": end}).fetchone()
    fires, p50, p99, worst = row if row is not None else (0, None, None, None)
    expected = int(rate * window_s)
    return {
        "rate": rate,
        "runners": count,
        "fires": fires,
        "expected_fires": expected,
        "p50_ms": float(p50 or 0),
        "p99_ms": float(p99 or 0),
        "max_ms": float(worst or 0),
    }


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Headline figures: the worst p99 at each rate the brief sets a target for."""
    found = []
    for rate, target in TARGETS_MS.items():
        p99s = [r["p99_ms"] for r in results if r["rate"] == rate]
        if p99s:
            worst = max(p99s)
            found.append(
                figure(
                    f"p99 lateness at {rate:,} fires/s (worst of the runner counts)",
                    round(worst, 1),
                    "ms",
                    target=f"< {target:g} ms",
                    met=worst < target,
                )
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,1000,5000")
    parser.add_argument("--runners", default="1,2")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    results = []
    for rate in (int(r) for r in args.rates.split(",")):
        for count in (int(k) for k in args.runners.split(",")):
            result = measure(rate, count, args.window, args.warmup)
            target = TARGETS_MS.get(rate)
            result["target_p99_ms"] = target
            result["met"] = None if target is None else result["p99_ms"] < target
            results.append(result)
            print(f"  {rate}/s, {count} runner(s): p99 {result['p99_ms']:.1f} ms", flush=True)
    drop_database(DB)
    print_table(
        "Fire lateness (started_at - scheduled_for), @every 1s jobs spread over the second",
        ["fires/s", "runners", "fires seen", "expected", "p50 ms", "p99 ms", "max ms", "p99 target"],
        [
            (
                r["rate"],
                r["runners"],
                r["fires"],
                r["expected_fires"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                "-"
                if r["target_p99_ms"] is None
                else f"< {r['target_p99_ms']:g} ms: {'met' if r['met'] else 'MISSED'}",
            )
            for r in results
        ],
    )
    path = write_json(
        "lateness", {"window_s": args.window, "results": results, "summary": summarize(results)}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
