"""The `scheduler jobs` command line: its subcommands, their flags and help, each wired to its handler."""

from __future__ import annotations

import argparse

from scheduler.cli.commands import (
    Handler,
    cmd_create,
    cmd_delete,
    cmd_get,
    cmd_list,
    cmd_pause,
    cmd_preview,
    cmd_resume,
    cmd_runs,
    cmd_trigger,
    cmd_update,
)
from scheduler.cli.flags import NOT_GIVEN, json_object, json_value, key_value, label
from scheduler.domain.models import MisfirePolicy, OverlapPolicy, RunStatus


def _add_job_field_flags(parser: argparse.ArgumentParser) -> None:
    """The flags create and update share; every one is optional so update can send only what changed."""
    parser.add_argument(
        "--from-file", metavar="PATH", help="a job as JSON (`-` for stdin); flags override it"
    )
    parser.add_argument("--name", help="unique in the namespace: 1-128 of A-Z a-z 0-9 . _ -")
    parser.add_argument("--description")
    parser.add_argument(
        "--schedule",
        action="append",
        help="cron, @daily, '@every 1h30m' or '@at 2026-12-01T09:00:00Z'; repeat it for several "
        "entries (the job fires at the union of their times)",
    )
    parser.add_argument("--timezone", help="IANA zone name (default UTC)")
    parser.add_argument(
        "--exclude-date",
        metavar="YYYY-MM-DD",
        action="append",
        help="a local date on which the job does not fire (repeatable)",
    )
    parser.add_argument(
        "--exclude-calendar",
        metavar="CRON",
        action="append",
        help="5-field cron: no fire in a minute it matches, e.g. '* * * * SAT,SUN' (repeatable)",
    )
    action = parser.add_argument_group("action (HTTP call or log line)")
    kinds = action.add_mutually_exclusive_group()
    kinds.add_argument("--http-url", metavar="URL", help="call this URL")
    kinds.add_argument("--log-payload", metavar="JSON", type=json_object, help="log this JSON object")
    action.add_argument("--http-method", metavar="METHOD", help="GET, POST (default), PUT, PATCH, DELETE …")
    action.add_argument(
        "--header", metavar="K=V", type=key_value, action="append", help="request header (repeatable)"
    )
    action.add_argument(
        "--body",
        metavar="JSON",
        type=json_value,
        default=NOT_GIVEN,
        help="request body, as JSON (null clears it)",
    )
    parser.add_argument("--timeout-s", type=int, metavar="S", help="per attempt, 1..3600 (default 30)")
    parser.add_argument("--max-attempts", type=int, metavar="N", help="attempts per slot, 1..20 (default 3)")
    parser.add_argument("--overlap", choices=[p.value for p in OverlapPolicy], help="default skip")
    parser.add_argument("--misfire", choices=[p.value for p in MisfirePolicy], help="default once")
    parser.add_argument(
        "--label", metavar="K=V", type=label, action="append", help="label as key=value (repeatable)"
    )
    parser.add_argument(
        "--paused", action=argparse.BooleanOptionalAction, default=None, help="created or set paused"
    )
    notify = parser.add_argument_group("notifications (signed job.failing and job.recovered events)")
    notify.add_argument("--notify-url", metavar="URL", help="POST the job's events to this URL")
    notify.add_argument(
        "--notify-after", type=int, metavar="N", help="failed slots in a row before job.failing (default 3)"
    )
    notify.add_argument(
        "--notify-pause-after", type=int, metavar="N", help="pause the job after N failed slots in a row"
    )
    notify.add_argument("--no-notify", action="store_true", help="no events and no pausing (notify: null)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    parser.add_argument(
        "--url", help="the API's base URL (default SCHEDULER_URL, else http://127.0.0.1:8000)"
    )


def add_jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `jobs` and its subcommands to the `scheduler` command line; return the `jobs` parser."""
    jobs = sub.add_parser(
        "jobs",
        help="manage jobs through the HTTP API (SCHEDULER_URL, SCHEDULER_API_KEY)",
        description="Manage jobs through a running API at SCHEDULER_URL, sending SCHEDULER_API_KEY as a "
        "bearer key. JOB is a job id or its name.",
        epilog="exit status: 0 done, 1 the API refused (its problem detail is printed), "
        "2 bad usage, 3 the API could not be reached, 4 a conflict (409 or 412)",
    )
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        _add_common(parser)
        parser.set_defaults(jobs_handler=handler)
        return parser

    listing = command("list", cmd_list, "list jobs, in name order")
    listing.add_argument("--name-prefix", metavar="P")
    listing.add_argument("--label", metavar="K=V", type=label, help="only jobs with this label, key=value")
    listing.add_argument("--paused", choices=["true", "false"])
    listing.add_argument("--limit", type=int, metavar="N", help="jobs per page, 1..500 (default 50)")
    listing.add_argument("--all", action="store_true", help="follow next_cursor through every page")

    command("get", cmd_get, "show one job").add_argument("job", metavar="JOB")

    create = command("create", cmd_create, "create a job from flags or --from-file")
    _add_job_field_flags(create)

    update = command("update", cmd_update, "change some fields of a job")
    update.add_argument("job", metavar="JOB")
    _add_job_field_flags(update)
    update.add_argument(
        "--if-match", type=int, metavar="VERSION", help="refuse the change unless the job is at this version"
    )

    command("delete", cmd_delete, "delete a job (cancels its running runs)").add_argument(
        "job", metavar="JOB"
    )
    command("pause", cmd_pause, "stop firing a job").add_argument("job", metavar="JOB")
    command("resume", cmd_resume, "fire a paused job again from its next slot").add_argument(
        "job", metavar="JOB"
    )
    command("trigger", cmd_trigger, "fire a job now as a manual run").add_argument("job", metavar="JOB")

    runs = command("runs", cmd_runs, "a job's run history, newest first")
    runs.add_argument("job", metavar="JOB")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--limit", type=int, metavar="N", help="runs to show, 1..500 (default 50)")

    preview = command("preview", cmd_preview, "the next fire times of a schedule, without storing it")
    preview.add_argument("--schedule", required=True)
    preview.add_argument("--timezone", default="UTC")
    preview.add_argument("--count", type=int, metavar="N", help="1..100 (default 10)")
    preview.add_argument("--after", metavar="TIME", help="RFC 3339 instant to start from (default now)")
    return jobs
