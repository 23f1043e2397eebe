"""`scheduler apply` and `scheduler runs`: a service's declared jobs applied from files, and runs across jobs.

A declared set is one or more YAML or JSON files (a directory: every `*.yaml`, `*.yml` and `*.json`
in it, in name order). A file holds one job, a list of jobs, or `{"jobs": [...]}`; each job is the
body of `POST /jobs`. The plan prints like a deploy tool's: `+` created, `~` updated with the
fields that change, `-` deleted, and `=` unchanged with `--verbose`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scheduler.cli.render import render_run_table
from scheduler.cli.transport import JobsApi, JsonObject, UsageError, run_against_api
from scheduler.config import Settings

_SUFFIXES = (".yaml", ".yml", ".json")
_MARKS = {"created": "+", "updated": "~", "deleted": "-", "unchanged": "="}


def _load(path: Path) -> list[JsonObject]:
    import yaml  # noqa: PLC0415 - only `scheduler apply` reads YAML

    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if isinstance(data, dict) and "jobs" in data:
        data = data["jobs"]
    jobs = data if isinstance(data, list) else [data]
    if not all(isinstance(job, dict) for job in jobs):
        raise UsageError(f'{path}: expected a job (an object), a list of jobs, or {{"jobs": [...]}}')
    return jobs


def read_declared(target: str) -> list[JsonObject]:
    """Every job declared in a file, or in the YAML and JSON files of a directory (in name order)."""
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise UsageError(f"{path}: no .yaml, .yml or .json files")
    elif path.is_file():
        files = [path]
    else:
        raise UsageError(f"{path}: no such file or directory")
    return [job for file in files for job in _load(file)]


def render_plan(plan: JsonObject, *, verbose: bool) -> str:
    """The plan, a line per job that changes (all with ``verbose``), then the counts."""
    lines = []
    for item in plan["items"]:
        if item["change"] == "unchanged" and not verbose:
            continue
        fields = f" ({', '.join(item['fields'])})" if item["fields"] else ""
        lines.append(f"  {_MARKS[item['change']]} {item['name']}{fields}")
    verb = "would be" if plan["dry_run"] else "were"
    lines.append(
        f"{plan['created']} created, {plan['updated']} updated, {plan['deleted']} deleted, "
        f"{plan['unchanged']} unchanged ({verb} applied{'; nothing was written' if plan['dry_run'] else ''})"
    )
    return "\n".join(lines)


def apply_command(args: argparse.Namespace, settings: Settings) -> int:
    """`scheduler apply -f PATH`: 0 applied, 1 refused (invalid), 2 usage, 3 unreachable, 4 conflict."""

    def work(api: JobsApi) -> str:
        body: JsonObject = {"jobs": read_declared(args.file), "prune": args.prune, "dry_run": args.dry_run}
        if args.selector is not None:
            body["selector"] = {"label": args.selector}
        elif args.prune:
            raise UsageError("--prune needs --selector KEY=VALUE: the label that marks this set's jobs")
        reply = api.call("POST", "/jobs/apply", body=body)
        return reply.text if args.json else render_plan(reply.data, verbose=args.verbose)

    return run_against_api("scheduler apply", args.url or settings.url, settings.api_key, work)


def runs_command(args: argparse.Namespace, settings: Settings) -> int:
    """`scheduler runs list`: the namespace's runs across jobs, with GET /runs's filters."""

    def work(api: JobsApi) -> str:
        params: dict[str, str | int] = {
            name: value
            for name, value in (
                ("status", args.status),
                ("trigger", args.trigger),
                ("job_name", args.job),
                ("label", args.label),
                ("since", args.since),
                ("until", args.until),
                ("limit", args.limit),
            )
            if value is not None
        }
        reply = api.call("GET", "/runs", params=params)
        if args.json:
            return reply.text
        if reply.data.get("next_cursor"):
            sys.stderr.write("older runs follow; raise --limit (at most 500) or narrow --since\n")
        return render_run_table(reply.data["items"], with_job=True)

    return run_against_api("scheduler runs list", args.url or settings.url, settings.api_key, work)


def add_declared_parsers(sub: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add `apply` and `runs list` to the `scheduler` command; return their parsers to wire."""
    apply = sub.add_parser(
        "apply",
        help="make the namespace's jobs match YAML/JSON files (POST /jobs/apply)",
        description="Apply a declared set of jobs. Exit: 0 applied, 1 refused by validation, "
        "2 bad usage, 3 unreachable, 4 conflict.",
    )
    apply.add_argument(
        "-f", "--file", required=True, metavar="FILE_OR_DIR", help="a YAML/JSON file or a directory"
    )
    apply.add_argument("--selector", metavar="KEY=VALUE", help="the label that marks this set's jobs")
    apply.add_argument("--prune", action="store_true", help="delete the selector's jobs the files leave out")
    apply.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    apply.add_argument("--verbose", action="store_true", help="list unchanged jobs too")
    apply.add_argument("--json", action="store_true", help="print the API's answer")
    apply.add_argument("--url", help="the API (default SCHEDULER_URL)")
    runs = sub.add_parser("runs", help="runs across the namespace's jobs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = runs_sub.add_parser("list", help="the newest runs, filtered as GET /runs filters")
    listing.add_argument("--status", help="a status or a comma list, e.g. failed,timed_out")
    listing.add_argument("--trigger", help="schedule, manual, retry or catchup")
    listing.add_argument("--job", metavar="NAME", help="the runs of the job of this name")
    listing.add_argument("--label", metavar="KEY=VALUE", help="the runs of jobs carrying this label")
    listing.add_argument("--since", metavar="TIME", help="RFC 3339 time with an offset (inclusive)")
    listing.add_argument("--until", metavar="TIME", help="RFC 3339 time with an offset (exclusive)")
    listing.add_argument("--limit", type=int, help="1-500 (default 50)")
    listing.add_argument("--json", action="store_true", help="print the API's answer")
    listing.add_argument("--url", help="the API (default SCHEDULER_URL)")
    return apply, listing
