"""The `scheduler` command: migrate, serve the API, run a runner, manage keys, or run it all locally."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from scheduler import __version__
from scheduler.cli.commands import jobs_command
from scheduler.cli.declared import add_declared_parsers, apply_command, runs_command
from scheduler.cli.parser import add_jobs_parser
from scheduler.config import ConfigError, Settings, load_settings

# How long an idle keep-alive connection stays open (uvicorn's default is 5 s). A server that closes
# an idle connection first races the client's or proxy's next request on it: that request is reset
# (httpx.ReadError, a load balancer's 502). Clients and proxies drop idle connections sooner (httpx
# 5 s, nginx upstream 60 s, AWS ALB 60 s by default), so they never reuse one the API is closing.
KEEP_ALIVE_S = 75


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"scheduler: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


def _database_url(settings: Settings, *, embedded: bool = False) -> str:
    """SCHEDULER_DATABASE_URL; with ``embedded``, else the one `make run` in this directory uses."""
    if settings.database_url is not None:
        return settings.database_url
    if embedded:
        from scheduler.cli.devserver import URL_FILE, embedded_url  # noqa: PLC0415

        url = embedded_url()
        if url is not None:
            note = f"SCHEDULER_DATABASE_URL is not set; using the database of `make run` ({URL_FILE})"
            print(f"scheduler: {note}", file=sys.stderr)  # noqa: T201
            return url
    note = "SCHEDULER_DATABASE_URL is not set (and no `make run` runs in this directory)"
    print(f"scheduler: {note}", file=sys.stderr)  # noqa: T201
    sys.exit(2)


def cmd_migrate(_: argparse.Namespace) -> int:
    """Apply pending migrations."""
    from scheduler.db.migrate import migrate  # noqa: PLC0415
    from scheduler.logs import configure_logging  # noqa: PLC0415 - keep `scheduler --help` fast

    settings = _settings()
    configure_logging(settings)
    applied = migrate(_database_url(settings), pooler=settings.database_pooler)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else "; up to date"))  # noqa: T201
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the HTTP API with uvicorn."""
    import uvicorn  # noqa: PLC0415

    from scheduler.logs import configure_logging  # noqa: PLC0415

    settings = _settings()
    _database_url(settings)
    configure_logging(settings)
    workers = args.workers or settings.api_workers
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its samples here and /metrics sums them, whichever worker answers.
        folder = tempfile.mkdtemp(prefix="scheduler-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    uvicorn.run(
        "scheduler.api.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0


def cmd_runner(_: argparse.Namespace) -> int:
    """Run one runner in this process."""
    from scheduler.runner.service import main  # noqa: PLC0415

    main()
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Run everything locally (what `make run` does)."""
    from scheduler.cli.devserver import run_dev  # noqa: PLC0415

    return run_dev(host=args.host, port=args.port)


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    from scheduler.cli.keys import keys_command  # noqa: PLC0415

    return asyncio.run(keys_command(args, _database_url(_settings(), embedded=True)))


def cmd_jobs(args: argparse.Namespace) -> int:
    """Manage jobs through a running API (SCHEDULER_URL, SCHEDULER_API_KEY)."""
    return jobs_command(args, _settings())


def cmd_apply(args: argparse.Namespace) -> int:
    """`scheduler apply`: make the namespace's jobs match declared files."""
    return apply_command(args, _settings())


def cmd_runs(args: argparse.Namespace) -> int:
    """`scheduler runs list`: runs across the namespace's jobs."""
    return runs_command(args, _settings())


def cmd_secrets(args: argparse.Namespace) -> int:
    """Show or rotate a namespace's webhook signing secrets."""
    from scheduler.cli.webhook_secrets import secrets_command  # noqa: PLC0415

    return asyncio.run(secrets_command(args, _database_url(_settings(), embedded=True)))


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="scheduler", description="Job scheduler on PostgreSQL row locks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", help="listen address (SCHEDULER_HOST)")
    api.add_argument("--port", type=int, help="listen port (SCHEDULER_PORT)")
    api.add_argument("--workers", type=int, help="uvicorn worker processes (SCHEDULER_API_WORKERS)")
    api.set_defaults(func=cmd_api)

    sub.add_parser("runner", help="run one runner (same as python -m scheduler.runner)").set_defaults(
        func=cmd_runner
    )

    dev = sub.add_parser("dev", help="embedded database + migrate + API + one runner, for local use")
    dev.add_argument("--host", help="listen address (SCHEDULER_HOST, default 127.0.0.1)")
    dev.add_argument("--port", type=int, help="listen port (SCHEDULER_PORT, default 8000)")
    dev.set_defaults(func=cmd_dev)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a namespace (printed once)")
    create.add_argument("--namespace", required=True)
    create.add_argument("--description", default="")
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--namespace")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    keys.set_defaults(func=cmd_keys)

    secrets = sub.add_parser("secrets", help="show or rotate a namespace's webhook signing secrets")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    show = secrets_sub.add_parser("show", help="print the secrets receivers accept, the current one first")
    show.add_argument("--namespace", required=True)
    rotate = secrets_sub.add_parser(
        "rotate", help="make a new current secret; the previous one stays valid for the grace period"
    )
    rotate.add_argument("--namespace", required=True)
    rotate.add_argument(
        "--grace-s", type=int, help="seconds the previous secret stays valid and signing (default 86400)"
    )
    secrets.set_defaults(func=cmd_secrets)

    add_jobs_parser(sub).set_defaults(func=cmd_jobs)
    apply, runs_list = add_declared_parsers(sub)
    apply.set_defaults(func=cmd_apply)
    runs_list.set_defaults(func=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `scheduler` console script."""
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
