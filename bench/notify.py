"""Fire lateness while notifications to a slow receiver are delivered, against the same load without.

    python -m bench.notify [--jobs 1000] [--failing 50] [--events 2000] [--delay 2] [--window 30]

Both phases run, in one invocation, the same load on a fresh database: ``--jobs`` log jobs firing
`@every 1s` (anchors spread over the second) and ``--failing`` HTTP jobs firing `@every 1s` at a
port that refuses connections, with 2 runners. In the second phase the failing jobs have
`notify` (after 1) pointing at a receiver that answers each request after ``--delay`` seconds, and
``--events`` events already wait in the outbox for it, so the runners' notifiers are busy with the
slow receiver through the whole window. The lateness of the log jobs' runs in the window
(started_at - scheduled_for) is read from the run rows. Prints a table and writes
bench/results/notify.json.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from typing import Any

import psycopg
from tests import seed

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, runners
from bench.processes import free_port, slow_receiver

DB = "scheduler_bench_notify"
RUNNERS = 2
SPREAD = "%(base)s::timestamptz + make_interval(secs => (i - 1)::float8 / %(count)s)"

LATENESS = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY late),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY late),
       max(late)
FROM (SELECT extract(epoch FROM r.started_at - r.scheduled_for) * 1000 AS late
      FROM runs r JOIN jobs j ON j.id = r.job_id
      WHERE j.name LIKE 'steady-%%' AND r.scheduled_for >= %(start)s AND r.scheduled_for < %(end)s) AS l
"""
OUTBOX = """
SELECT count(*) FILTER (WHERE status = 'delivered'),
       count(*) FILTER (WHERE status = 'pending' AND attempts > 0 AND last_error IS NULL),
       count(*) FILTER (WHERE status = 'pending'),
       count(*)
FROM notifications
"""
SEED_EVENTS = """
INSERT INTO notifications (job_id, namespace, event, run_id, run_scheduled_for, failed_slots, url)
SELECT j.id, j.namespace, 'job.failing', gen_random_uuid(), now(), 1, %(url)s
FROM jobs j, generate_series(1, %(per_job)s)
WHERE j.name LIKE 'failing-%%'
"""


def measure(args: argparse.Namespace, *, notify: bool) -> dict[str, Any]:
    """One phase: the load, with or without notifications; lateness of the log jobs, in ms."""
    url = fresh_database(DB)
    base = now() + timedelta(seconds=3)
    refused = f"http://127.0.0.1:{free_port()}/down"
    with slow_receiver(args.delay) as receiver, psycopg.connect(url, autocommit=True) as conn:
        anchor = seed.Expr(SPREAD, {"base": base})
        seed.seed_jobs(
            conn,
            args.jobs,
            prefix="steady-",
            schedule="@every 1s",
            anchor_at=anchor,
            next_run_at=anchor,
            action={"type": "log", "payload": {}},
            misfire_grace_s=3600,
            overlap="allow",
        )
        seed.seed_jobs(
            conn,
            args.failing,
            prefix="failing-",
            schedule="@every 1s",
            anchor_at=anchor,
            next_run_at=anchor,
            action={"type": "http", "url": refused},
            retry_max_attempts=1,
            misfire_grace_s=3600,
            overlap="allow",
        )
        if notify:
            hook = f"{receiver}/hook?delay={args.delay}"
            conn.execute(
                b"UPDATE jobs SET notify = jsonb_build_object('url', %(url)s::text, 'after', 1)"
                b" WHERE name LIKE 'failing-%%'",
                {"url": hook},
            )
            per_job = max(1, args.events // max(1, args.failing))
            conn.execute(SEED_EVENTS.encode(), {"url": hook, "per_job": per_job})
        conn.execute(b"VACUUM ANALYZE jobs")
        with runners(url, RUNNERS):
            time.sleep(max(0.0, (base - now()).total_seconds()) + args.warmup)
            start = now()
            load_at_start = os.getloadavg()[0]
            busy_at_start = conn.execute(OUTBOX.encode()).fetchone()
            time.sleep(args.window)
            end = now()
            load_at_end = os.getloadavg()[0]
            busy_at_end = conn.execute(OUTBOX.encode()).fetchone()
            time.sleep(1.0)  # the last slots of the window get claimed
        fires, p50, p99, worst = conn.execute(LATENESS.encode(), {"start": start, "end": end}).fetchone() or (
            0,
            None,
            None,
            None,
        )
    delivered_start = busy_at_start[0] if busy_at_start else 0
    delivered_end, _, pending_end, total_end = busy_at_end or (0, 0, 0, 0)
    return {
        "notifications": notify,
        "log_jobs": args.jobs,
        "failing_jobs": args.failing,
        "receiver_delay_s": args.delay,
        "window_s": args.window,
        "fires": fires,
        "expected_fires": int(args.jobs * args.window),
        "p50_ms": float(p50 or 0),
        "p99_ms": float(p99 or 0),
        "max_ms": float(worst or 0),
        "events_total": total_end,
        "delivered_in_window": delivered_end - delivered_start,
        "pending_at_end": pending_end,
        # Other work on the machine shows here: figures taken under a high load compare poorly.
        "load_average_1m": [round(load_at_start, 2), round(load_at_end, 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--failing", type=int, default=50)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    results = []
    for notify in (False, True):
        result = measure(args, notify=notify)
        results.append(result)
        print(f"  notifications {'on' if notify else 'off'}: p99 {result['p99_ms']:.1f} ms", flush=True)
    drop_database(DB)
    print_table(
        f"Lateness of {args.jobs:,} @every 1s log jobs, {RUNNERS} runners, with and without notifications "
        f"to a receiver taking {args.delay:g} s per request",
        [
            "notifications",
            "fires seen",
            "expected",
            "p50 ms",
            "p99 ms",
            "max ms",
            "delivered in window",
            "pending at end",
        ],
        [
            (
                "on" if r["notifications"] else "off",
                r["fires"],
                r["expected_fires"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["delivered_in_window"],
                r["pending_at_end"],
            )
            for r in results
        ],
    )
    path = write_json("notify", {"results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
