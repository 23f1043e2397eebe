"""The standard benchmark set, in order, then one summary of every program's headline figures.

    python -m bench.run_all [--only api,peers] [--skip scale] [--no-readme] [--quick]

Runs each program as `python -m bench.<name>` with its default arguments, streaming its tables; a
program that fails does not stop the others. The HTTP programs come first (http_fires ~8 min,
http_peers ~8 min, recovery ~6 min on a 2-core machine), then the rest (~15 min); --quick passes
--quick to the programs that have it (short windows: a smoke run, not figures to publish).
Then prints a table built from the "summary" of every bench/results/*.json and, unless
--no-readme, rewrites the README's results table between its `<!-- bench-table -->` markers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, print_table
from bench.summary import figures_of, load, show, verdict

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROGRAMS = [
    "http_fires",
    "http_peers",
    "recovery",
    "claim_cost",
    "fire_throughput",
    "lateness",
    "api",
    "peers",
    "scale",
    "memory",
    "pgbouncer",
    "failover",  # needs root and Debian's patroni, etcd-server and haproxy
]
# Programs that take --quick (short windows and fewer levels).
QUICK = {"http_fires", "http_peers", "recovery", "pgbouncer"}
BEGIN, END = "<!-- bench-table -->", "<!-- /bench-table -->"


def run(name: str, *, quick: bool = False) -> dict[str, Any]:
    """Run one program (with --quick when asked and it has it); return how it went."""
    if not (ROOT / "bench" / f"{name}.py").exists():
        print(f"\n=== bench.{name}: not written yet, skipped", flush=True)
        return {"name": name, "status": "missing", "seconds": 0.0}
    extra = ["--quick"] if quick and name in QUICK else []
    print(f"\n=== python -m bench.{name} {' '.join(extra)}".rstrip(), flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
    print(f"=== bench.{name}: {status} in {seconds:.0f} s", flush=True)
    return {"name": name, "status": status, "seconds": seconds}


def summary_rows(
    results: dict[str, dict[str, Any]], names: list[str]
) -> list[tuple[str, str, str, str, str]]:
    """One row per headline figure: program, figure, value, target, verdict."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name in names:
        found = results.get(name)
        if found is None:
            rows.append((name, "no results yet", "", "", ""))
            continue
        figures = figures_of(found.get("summary", []))
        if not figures:
            rows.append((name, found.get("skipped", "no summary in its JSON"), "", "", ""))
        rows.extend(
            (
                name,
                str(item.get("metric", "")),
                show(item.get("value"), str(item.get("unit", ""))),
                str(item.get("target", "")),
                verdict(item.get("met")),
            )
            for item in figures
        )
    return rows


def markdown(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """The README's results table, with where and when the figures were measured."""
    rows = summary_rows(results, names)
    lines = ["| program | figure | value | target | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    machines = {
        (f"{r['machine']['cpus']} cores, Python {r['machine']['python']}", r.get("when", ""))
        for name, r in results.items()
        if name in names and "machine" in r
    }
    if machines:
        where = sorted({m for m, _ in machines})
        when = sorted(w for _, w in machines if w)
        span = f"{when[0]} to {when[-1]}" if when and when[0] != when[-1] else (when[0] if when else "")
        lines += ["", f"Measured on {', '.join(where)}; {span}."]
    return "\n".join(lines)


def rewrite_readme(table: str) -> bool:
    """Replace what sits between the README's bench-table markers; False when they are absent."""
    if not README.exists():
        return False
    text = README.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    README.write_text(text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:])
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated programs to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated programs not to run")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md's results table alone")
    parser.add_argument(
        "--summary-only", action="store_true", help="run nothing; summarise the existing JSON"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"pass --quick to {', '.join(sorted(QUICK))} (smoke run)"
    )
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    unknown = (set(only) | skip) - set(PROGRAMS)
    if unknown:
        parser.error(f"unknown program(s): {', '.join(sorted(unknown))}; the set is {', '.join(PROGRAMS)}")
    chosen = [n for n in PROGRAMS if (not only or n in only) and n not in skip]

    started = time.monotonic()
    runs = [] if args.summary_only else [run(name, quick=args.quick) for name in chosen]
    total = time.monotonic() - started

    if runs:
        print_table(
            f"bench programs, {total / 60:.1f} min in all",
            ["program", "status", "seconds"],
            [(r["name"], r["status"], r["seconds"]) for r in runs],
        )
    results = load(RESULTS)
    print_table(
        "Headline figures (bench/results/*.json)",
        ["program", "figure", "value", "target", "verdict"],
        summary_rows(results, PROGRAMS),
    )
    if not args.no_readme:
        if rewrite_readme(markdown(results, PROGRAMS)):
            print(f"\nupdated the results table in {README.name}")
        else:
            print(f"\n{README.name} has no {BEGIN} ... {END} markers; its table was left alone")
    if any(r["status"].startswith("failed") for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
