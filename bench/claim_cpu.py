"""What a runner's own CPU costs per log fire: claim rows read, planned, recorded, counted and logged.

    python -m bench.claim_cpu [--jobs 20000] [--claims 60] [--repeat 3]

Seeds ``--jobs`` `log` jobs of the fire-throughput mix (second-level cron and `@every` in several
zones) an hour behind with a day of grace, so every claim finds a full batch due and each job fires
one on-time slot per claim. Then runs in-process `Runner.claim_due_once()` ``--claims`` times and
reports this process's CPU time (``time.process_time``) per claim and per fire: decoding the claim's
rows, the misfire and overlap plan, encoding the record arrays, the metrics and the log event, plus
the driver's share of the statements. The database's own work runs in its server processes and is
not counted, so the figure holds on a shared machine where wall-clock times do not; the best of
``--repeat`` rounds is reported (noise only adds time). Writes bench/results/claim_cpu.json.

To compare with another checkout, run it with ``PYTHONPATH=<that checkout>/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import Any

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, seed_jobs
from bench.summary import figure
from scheduler.config import load_settings
from scheduler.db.connections import Pool
from scheduler.logs import configure_logging
from scheduler.runner.service import assemble, http_client

DB = "bench_claim_cpu"
WARMUP_CLAIMS = 5


async def measure(url: str, claims: int, repeat: int) -> dict[str, Any]:
    """Run the claims; return the best round's CPU and wall time per claim and per fire."""
    settings = load_settings(
        {"SCHEDULER_DATABASE_URL": url, "SCHEDULER_AUTH": "off", "SCHEDULER_LOG_LEVEL": "warning"}
    )
    configure_logging(settings)
    pool = Pool(url, application_name="bench-claim-cpu", max_size=1)
    rounds: list[tuple[float, float, int]] = []
    try:
        async with http_client(settings) as client:
            runner = assemble(settings, pool, client, database_url=url).runner
            for _ in range(WARMUP_CLAIMS):  # caches filled, statements prepared
                await runner.claim_due_once()
            for _ in range(repeat):
                fires = 0
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(claims):
                    counts = await runner.claim_due_once()
                    fires += sum(counts.fired_in.values())
                rounds.append((time.process_time() - cpu, time.perf_counter() - wall, fires))
    finally:
        await pool.close()
    cpu_s, wall_s, fires = min(rounds)
    if fires < claims * settings.claim_batch:
        raise SystemExit(f"only {fires} fires in {claims} claims: are the jobs all due?")
    return {
        "claims": claims,
        "fires": fires,
        "claim_batch": settings.claim_batch,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "cpu_us_per_fire": cpu_s * 1e6 / fires,
        "wall_us_per_fire": wall_s * 1e6 / fires,
        "cpu_ms_per_claim": cpu_s * 1e3 / claims,
    }


def main() -> None:
    """Seed, measure, print the table and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="log jobs seeded, all due")
    parser.add_argument("--claims", type=int, default=60, help="claims per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    args = parser.parse_args()
    url = fresh_database(DB)
    try:
        seed_jobs(url, args.jobs, first=now() - timedelta(hours=1))
        try:
            import uvloop  # noqa: PLC0415 - the runner's event loop when it is there
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            result = asyncio.run(measure(url, args.claims, args.repeat))
        else:
            result = uvloop.run(measure(url, args.claims, args.repeat))
    finally:
        drop_database(DB)
    print_table(
        f"Runner CPU per log fire, {args.claims} claims of {result['claim_batch']} jobs,"
        f" best of {args.repeat}",
        ["fires", "CPU s", "wall s", "CPU µs per fire", "wall µs per fire", "CPU ms per claim"],
        [
            [
                result["fires"],
                result["cpu_s"],
                result["wall_s"],
                result["cpu_us_per_fire"],
                result["wall_us_per_fire"],
                result["cpu_ms_per_claim"],
            ]
        ],
    )
    summary = [figure("runner CPU per claimed log fire", round(result["cpu_us_per_fire"], 1), "µs")]
    write_json("claim_cpu", {"jobs": args.jobs, "repeat": args.repeat, **result, "summary": summary})


if __name__ == "__main__":
    main()
