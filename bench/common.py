"""What every bench program shares: a results folder, table printing and JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns padded to fit."""
    cells = [[str(h) for h in headers], *[[_fmt(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def refine(
    measure: Callable[[int], dict[str, Any]], levels: list[dict[str, Any]], steps: int
) -> list[dict[str, Any]]:
    """Bisect between the highest level kept up and the lowest above it that was not.

    ``levels`` are results with ``jobs`` and ``kept_up``; returns the new results, ``steps`` at most.
    """
    found: list[dict[str, Any]] = []
    for _ in range(steps):
        every = levels + found
        low = max((r["jobs"] for r in every if r["kept_up"]), default=0)
        high = min((r["jobs"] for r in every if not r["kept_up"] and r["jobs"] > low), default=0)
        if not low or not high:
            break
        grain = 50 if low >= 500 else 5
        middle = round((low + high) / 2 / grain) * grain
        if middle in {low, high}:
            break
        found.append(measure(middle))
    return found


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every `with` block stops the processes it started.

    Every child is sent SIGTERM first: one started a moment before its `with` block took hold of
    it (a runner being spawned) would otherwise outlive the bench.
    """
    import signal  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import psutil  # noqa: PLC0415 - a bench extra

    def _exit(signum: int, _frame: object) -> None:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                child.terminate()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _cpus() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0


@functools.cache
def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, RAM, Python and PostgreSQL versions.

    Read once per program, so the README can name the machine of every JSON it is written from.
    """
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cpus": _cpus(),
        "ram_gb": _ram_gb(),
        "python": platform.python_version(),
        "postgresql": _postgres_version(),
        "platform": platform.platform(),
    }


def _proc_field(path: str, name: str) -> str:
    """The value of the first ``name: value`` line of a /proc file; empty when absent."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return ""


def _ram_gb() -> float | None:
    total = _proc_field("/proc/meminfo", "MemTotal")  # "24683664 kB"
    kib = total.split()[0] if total else ""
    return round(int(kib) / 1024**2, 1) if kib.isdigit() else None


def _postgres_version() -> str:
    """The bench server's version (its `server_version`), or why it could not be read."""
    import psycopg  # noqa: PLC0415

    from bench.database import url_for  # noqa: PLC0415 - bench.database imports this module's users

    try:
        with psycopg.connect(url_for("postgres"), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(b"SHOW server_version").fetchone()
    except psycopg.Error as error:
        return f"unknown ({type(error).__name__})"
    return str(row[0]) if row else "unknown"
