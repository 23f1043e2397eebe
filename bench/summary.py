"""Headline figures: how a bench program states them in its JSON, and how run_all reads them back.

A program's JSON carries ``"summary"``: a list of figures (or one), each a dict with ``metric`` (what
was measured, in words), ``value``, ``unit``, and, when the brief sets one, ``target`` (in words) and
``met`` (true or false). A dict without ``metric`` is read as ``{name: value, ..., "target", "met"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS, print_table


def figure(
    metric: str, value: Any, unit: str = "", *, target: str | None = None, met: bool | None = None
) -> dict[str, Any]:
    """One headline figure; ``target`` and ``met`` only where the brief sets a target."""
    found: dict[str, Any] = {"metric": metric, "value": value, "unit": unit}
    if target is not None:
        found["target"] = target
        found["met"] = met
    return found


def verdict(met: bool | None) -> str:  # noqa: FBT001 - the one argument is the outcome itself
    """How a target's outcome reads in a table."""
    if met is None:
        return ""
    return "met" if met else "MISSED"


def judged(item: dict[str, Any]) -> str:
    """A figure's verdict; a target left unjudged says so rather than looking like no target."""
    if item.get("target") and item.get("met") is None:
        return "NO VERDICT"
    return verdict(item.get("met"))


def print_targets(summary: list[dict[str, Any]], *, every_figure: bool = False) -> None:
    """Print the figures that have a target, with their verdicts (``every_figure``: all of them)."""
    print_table(
        "Headline figures and targets" if every_figure else "Targets",
        ["figure", "value", "target", "verdict"],
        [
            (f["metric"], show(f["value"], str(f.get("unit", ""))), f.get("target", ""), judged(f))
            for f in summary
            if every_figure or "target" in f
        ],
    )


def figures_of(summary: Any) -> list[dict[str, Any]]:
    """Normalise a program's ``summary`` into a list of figure dicts."""
    items = summary if isinstance(summary, list) else [summary]
    found: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "metric" in item:
            found.append(item)
            continue
        target, met = item.get("target"), item.get("met")
        for key, value in item.items():
            if key not in {"target", "met"}:
                found.append(figure(key, value, target=target, met=met))
    return found


def load(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every bench/results/*.json by bench name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return found


def show(value: Any, unit: str = "") -> str:
    """A figure's value for a table: numbers with thousands separators and sensible precision."""
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit not in {"", "x"} else f"{text}{unit}"
