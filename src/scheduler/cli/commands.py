"""What each `scheduler jobs …` subcommand does, and running one: its output on stdout, its exit status."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID

from scheduler.cli.flags import apply_flags, needs_current_job, read_job_file
from scheduler.cli.render import render_fire_times, render_job, render_job_table, render_run, render_run_table
from scheduler.cli.transport import (
    ApiError,
    JobsApi,
    JsonObject,
    UsageError,
    run_against_api,
)
from scheduler.domain.names import format_label

if TYPE_CHECKING:
    from scheduler.config import Settings

# The API's largest page: finding a job by name reads as few pages as it can.
PAGE_MAX = 500

Handler = Callable[[JobsApi, argparse.Namespace], str]


def resolve_job(api: JobsApi, ref: str) -> str:
    """A job's id from an id or a name (names are unique in a namespace)."""
    try:
        return str(UUID(ref))
    except ValueError:
        pass
    params: dict[str, str | int] = {"name_prefix": ref, "limit": PAGE_MAX}
    while True:
        page = api.list_jobs(params).data
        for job in page["items"]:
            if job["name"] == ref:
                return str(job["id"])
        if not page.get("next_cursor"):
            raise ApiError(404, f"no job named {ref!r} in this namespace")
        params["cursor"] = page["next_cursor"]


def _job_params(args: argparse.Namespace) -> dict[str, str | int]:
    params: dict[str, str | int] = {}
    if args.limit is not None:
        params["limit"] = args.limit
    if args.name_prefix is not None:
        params["name_prefix"] = args.name_prefix
    if args.label is not None:
        key, value = args.label
        params["label"] = format_label(key, value)
    if args.paused is not None:
        params["paused"] = args.paused
    return params


def cmd_list(api: JobsApi, args: argparse.Namespace) -> str:
    """List jobs; with --all follow next_cursor to the last page."""
    params = _job_params(args)
    reply = api.list_jobs(params)
    if not args.all:
        if args.json:
            return reply.text
        table = render_job_table(reply.data["items"])
        if reply.data.get("next_cursor"):
            sys.stderr.write("more jobs follow; --all lists every page\n")
        return table
    items: list[JsonObject] = list(reply.data["items"])
    cursor = reply.data.get("next_cursor")
    while cursor:
        reply = api.list_jobs({**params, "cursor": cursor})
        items += reply.data["items"]
        cursor = reply.data.get("next_cursor")
    if args.json:
        # Every page in one document shaped like a page, so `jq '.items[]'` works with or without --all.
        return json.dumps({"items": items, "next_cursor": None})
    return render_job_table(items)


def cmd_get(api: JobsApi, args: argparse.Namespace) -> str:
    """Show one job."""
    reply = api.get_job(resolve_job(api, args.job))
    return reply.text if args.json else render_job(reply.data)


def cmd_create(api: JobsApi, args: argparse.Namespace) -> str:
    """Create a job from flags, a file, or a file with flags laid over it."""
    job = read_job_file(args.from_file) if args.from_file else {}
    apply_flags(args, job, None)
    missing = [
        flag
        for keys, flag in (
            (("name",), "--name"),
            (("schedule", "schedules"), "--schedule"),
            (("action",), "--http-url or --log-payload"),
        )
        if not any(key in job for key in keys)
    ]
    if missing:
        raise UsageError(f"a job needs {', '.join(missing)} (or --from-file with them)")
    reply = api.create_job(job)
    return reply.text if args.json else render_job(reply.data)


def cmd_update(api: JobsApi, args: argparse.Namespace) -> str:
    """Change the fields given; nested fields (action, retry, misfire, labels) keep what is not given."""
    job_id = resolve_job(api, args.job)
    patch = read_job_file(args.from_file) if args.from_file else {}
    version = args.if_match
    current = None
    if needs_current_job(args):
        current = api.get_job(job_id).data
        # The merge is based on what was just read: refuse the write if someone changed it since.
        if version is None:
            version = int(current["version"])
    apply_flags(args, patch, current)
    if not patch:
        raise UsageError("nothing to change: give at least one field flag or --from-file")
    reply = api.update_job(job_id, patch, version=version)
    return reply.text if args.json else render_job(reply.data)


def cmd_delete(api: JobsApi, args: argparse.Namespace) -> str:
    """Delete a job (its running runs are cancelled)."""
    job_id = resolve_job(api, args.job)
    api.delete_job(job_id)
    return "" if args.json else f"deleted job {job_id}"


def cmd_pause(api: JobsApi, args: argparse.Namespace) -> str:
    """Stop firing a job."""
    reply = api.post_job_action(resolve_job(api, args.job), "pause")
    return reply.text if args.json else render_job(reply.data)


def cmd_resume(api: JobsApi, args: argparse.Namespace) -> str:
    """Fire a paused job again from its next slot."""
    reply = api.post_job_action(resolve_job(api, args.job), "resume")
    return reply.text if args.json else render_job(reply.data)


def cmd_trigger(api: JobsApi, args: argparse.Namespace) -> str:
    """Fire a job now; show the manual run it made."""
    reply = api.post_job_action(resolve_job(api, args.job), "trigger")
    return reply.text if args.json else render_run(reply.data)


def cmd_runs(api: JobsApi, args: argparse.Namespace) -> str:
    """A job's run history, newest first."""
    params: dict[str, str | int] = {}
    if args.status is not None:
        params["status"] = args.status
    if args.limit is not None:
        params["limit"] = args.limit
    reply = api.list_runs(resolve_job(api, args.job), params)
    if args.json:
        return reply.text
    if reply.data.get("next_cursor"):
        sys.stderr.write("older runs follow; raise --limit (at most 500) or use the API's cursor\n")
    return render_run_table(reply.data["items"])


def cmd_preview(api: JobsApi, args: argparse.Namespace) -> str:
    """Upcoming fire times of a schedule, validated by the server, stored nowhere."""
    request: JsonObject = {"schedule": args.schedule, "timezone": args.timezone}
    if args.count is not None:
        request["count"] = args.count
    if args.after is not None:
        request["after"] = args.after
    reply = api.preview(request)
    return reply.text if args.json else render_fire_times(reply.data["next"], args.timezone)


def jobs_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `scheduler jobs` subcommand; print its output and return the exit status."""
    handler: Handler = args.jobs_handler
    return run_against_api(
        f"scheduler jobs {args.jobs_command}",
        args.url or settings.url,
        settings.api_key,
        lambda api: handler(api, args),
    )
