"""The standard benchmark set, in order, then one summary of every program's headline figures.

    python -m bench.run_all [--only api,peers] [--skip scale] [--no-readme] [--quick] [--profile]

Runs each program as `python -m bench.<name>` with its default arguments, streaming its tables; a
program that fails does not stop the others. The HTTP programs come first (http_fires ~9 min,
http_peers ~16 min, recovery ~8 min on a 2-core machine), then the rest (~35 min, pgbouncer and
fire_throughput the longest): about 70 minutes in all, estimated from each program's levels (the
total is printed at the end); --quick passes --quick to the programs that take it (short windows:
a smoke run, not figures to publish), --profile passes --profile to http_fires. Then prints the
time each took and in all (also written to bench/results/run_all.json), a table built from the
"summary" of every bench/results/*.json (every figure with a target has a verdict: met, MISSED, or
NO VERDICT when a program set a target without judging it), issue 25's targets one by one (or "not
measured"), and, unless --no-readme, rewrites the README's results table between its
`<!-- bench-table -->` markers, naming the machine (CPU, cores, RAM, PostgreSQL) and the dates.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, print_table, write_json
from bench.summary import figures_of, judged, load, show

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROGRAMS = [
    "http_fires",
    "http_peers",
    "recovery",
    "claim_cost",
    "claim_cpu",
    "fire_throughput",
    "lateness",
    "api",
    "apply",
    "peers",
    "scale",
    "memory",
    "ui",
    "http_clients",
    "pgbouncer",
    "failover",  # needs root and Debian's patroni, etcd-server and haproxy
]
BEGIN, END = "<!-- bench-table -->", "<!-- /bench-table -->"

# Issue 25's targets: (program, words its figure's metric holds, the target as the issue says it).
# Words are matched case-insensitively; the figure with a target is preferred.
ISSUE_TARGETS: list[tuple[str, tuple[str, ...], str]] = [
    ("http_fires", ("kept on schedule", "2 runners"), "2 runners keep >= 10,000 every-second HTTP jobs"),
    ("http_peers", ("ours /", "MemoryJobStore"), ">= 2.5x APScheduler's in-memory variant"),
    ("http_peers", ("ours /", "SQLAlchemyJobStore"), ">= 10x APScheduler's PostgreSQL store"),
    ("http_fires", ("runner cpu per http fire",), "runner CPU per HTTP fire <= 110 µs"),
    ("http_peers", ("share of the bare client",), "the bare client ceiling and our share of it (reported)"),
    ("http_fires", ("4,000 due at one instant", "2 runners"), "p99 <= 250 ms, 4,000 due at once, 2 runners"),
    ("http_fires", ("1,000 due at one instant", "1 runner"), "p99 <= 40 ms, 1,000 due at once, 1 runner"),
    ("api", ("GET /jobs/{id}", "SELECT 1", "2 worker"), "GET /jobs/{id} >= 0.85x the bare route"),
    ("api", ("POST /jobs",), "POST /jobs >= 2,000 jobs/s, one namespace, 2 workers"),
    ("apply", (), "bulk apply >= 10,000 jobs/s"),
    ("fire_throughput", ("fires/s with 2 runners",), ">= 22,000 log fires/s, 2 runners, 1,000,000 jobs"),
    ("fire_throughput", ("ceiling",), ">= 0.8 of the ceiling measured beside them"),
]


def takes_quick(name: str) -> bool:
    """Whether a program has a --quick flag (read from its source, so a new one is picked up)."""
    path = ROOT / "bench" / f"{name}.py"
    return path.exists() and '"--quick"' in path.read_text()


def run(name: str, *, quick: bool = False, profile: bool = False) -> dict[str, Any]:
    """Run one program (with --quick when asked and it has it); return how it went."""
    if not (ROOT / "bench" / f"{name}.py").exists():
        print(f"\n=== bench.{name}: not written yet, skipped", flush=True)
        return {"name": name, "status": "missing", "seconds": 0.0}
    extra = ["--quick"] if quick and takes_quick(name) else []
    if profile and name == "http_fires":
        extra.append("--profile")
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
                judged(item),
            )
            for item in figures
        )
    return rows


def issue_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """Issue 25's targets, each with the figure that answers it, or "not measured"."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, words, wanted in ISSUE_TARGETS:
        figures = figures_of(results.get(name, {}).get("summary", []))
        matching = [f for f in figures if all(w.lower() in str(f.get("metric", "")).lower() for w in words)]
        matching.sort(key=lambda f: "target" not in f)
        if not matching:
            rows.append((wanted, name, "not measured", "", "missing" if "(reported)" in wanted else "MISSED"))
            continue
        found = matching[0]
        value = show(found.get("value"), str(found.get("unit", "")))
        rows.append(
            (wanted, name, f"{found.get('metric', '')}: {value}", str(found.get("target", "")), judged(found))
        )
    return rows


def markdown(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """The README's results table, with where and when the figures were measured."""
    rows = summary_rows(results, names)
    lines = ["| program | figure | value | target | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    machines = {
        (describe(r["machine"]), r.get("when", ""))
        for name, r in results.items()
        if name in names and "machine" in r
    }
    if machines:
        where = sorted({m for m, _ in machines})
        when = sorted(w for _, w in machines if w)
        span = f"{when[0]} to {when[-1]}" if when and when[0] != when[-1] else (when[0] if when else "")
        lines += ["", f"Measured on {' and on '.join(where)}; {span}."]
    return "\n".join(lines)


def describe(found: dict[str, Any]) -> str:
    """A machine as a JSON names it: CPU model, cores, RAM, PostgreSQL and Python versions."""
    parts = [f"{found['cpu']}, " if found.get("cpu") else ""]
    parts.append(f"{found.get('cpus', '?')} cores")
    if found.get("ram_gb"):
        parts.append(f", {found['ram_gb']:g} GB RAM")
    if found.get("postgresql"):
        parts.append(f", PostgreSQL {str(found['postgresql']).split(' ')[0]}")
    parts.append(f", Python {found.get('python', '?')}")
    return "".join(parts)


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
        "--quick", action="store_true", help="pass --quick to the programs that take it (a smoke run)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="pass --profile to http_fires (py-spy on one runner)"
    )
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    unknown = (set(only) | skip) - set(PROGRAMS)
    if unknown:
        parser.error(f"unknown program(s): {', '.join(sorted(unknown))}; the set is {', '.join(PROGRAMS)}")
    chosen = [n for n in PROGRAMS if (not only or n in only) and n not in skip]

    started = time.monotonic()
    runs = [] if args.summary_only else [run(n, quick=args.quick, profile=args.profile) for n in chosen]
    total = time.monotonic() - started

    if runs:
        print_table(
            f"bench programs{' (--quick)' if args.quick else ''}: {total / 60:.1f} min in all",
            ["program", "status", "seconds"],
            [*((r["name"], r["status"], round(r["seconds"])) for r in runs), ("total", "", round(total))],
        )
        write_json("run_all", {"quick": args.quick, "programs": runs, "total_s": round(total, 1)})
    results = load(RESULTS)
    print_table(
        "Headline figures (bench/results/*.json)",
        ["program", "figure", "value", "target", "verdict"],
        summary_rows(results, PROGRAMS),
    )
    print_table(
        "Issue 25's targets", ["target", "program", "figure", "its target", "verdict"], issue_rows(results)
    )
    print(f"\nThis machine: {describe(machine())}")
    if not args.no_readme:
        if rewrite_readme(markdown(results, PROGRAMS)):
            print(f"\nupdated the results table in {README.name}")
        else:
            print(f"\n{README.name} has no {BEGIN} ... {END} markers; its table was left alone")
    if any(r["status"].startswith("failed") for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
