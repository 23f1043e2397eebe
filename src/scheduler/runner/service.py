"""Start a runner process: settings, logging, pool, HTTP client, signals; then the loop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog
from prometheus_client import start_http_server

from scheduler.config import ConfigError, Settings, load_settings
from scheduler.db.connections import RunnerPool
from scheduler.logs import configure_logging
from scheduler.metrics import RunnerMetrics
from scheduler.runner.loop import Runner
from scheduler.runner.outbound import OutboundClient

log = structlog.get_logger("scheduler.runner")


def http_client(settings: Settings) -> OutboundClient:
    """The runner's one HTTP client: outbound address rules, a connection per concurrent call at most.

    No proxies from the environment (a proxy would connect on our behalf, past the address rules),
    and no redirects unless an action asks (`run_http_action` then checks each hop).
    """
    return OutboundClient(allow_nets=settings.http_allow_nets, max_connections=settings.runner_concurrency)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    if settings.database_url is None:
        raise ConfigError("SCHEDULER_DATABASE_URL: required by the runner")
    pool = RunnerPool(settings.database_url, application_name="scheduler-runner", max_size=6)
    metrics = RunnerMetrics()
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
        log.info("metrics_listening", port=settings.metrics_port, host=settings.host)
    try:
        async with http_client(settings) as client:
            await Runner(settings, pool, client, metrics).run(stop)
    finally:
        await pool.close()


def main() -> None:
    """Entry point: SIGTERM or SIGINT drains gracefully; a second one exits at once."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"scheduler runner: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    configure_logging(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("runner_exit_now", signal=signal.Signals(signum).name)
                os._exit(1)
            log.info("runner_stopping", signal=signal.Signals(signum).name, grace_s=settings.shutdown_grace_s)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await serve(settings, stop)

    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
