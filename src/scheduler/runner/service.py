"""A runner process: settings, logging, pool, HTTP client and signals; the cycle and its services wired.

`assemble` builds the parts of one runner — the claim loop (`loop.Runner`), its completer and the
services beside them — around one pool and one HTTP client; `run_parts` runs them all until a stop,
keeping the services up while the loop drains so calls still finishing keep their leases.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass

import structlog
from prometheus_client import start_http_server
from structlog.typing import FilteringBoundLogger

from scheduler import collector
from scheduler.config import ConfigError, Settings, load_settings
from scheduler.db.connections import ConnectionSource, Pool
from scheduler.logs import configure_logging
from scheduler.metrics import RunnerMetrics
from scheduler.runner.completer import Completer
from scheduler.runner.loop import Runner
from scheduler.runner.outbound import OutboundClient
from scheduler.runner.services.backlog import BacklogConfig, BacklogGauge
from scheduler.runner.services.heartbeat import Heartbeat, HeartbeatConfig
from scheduler.runner.services.listener import Listener
from scheduler.runner.services.notifier import Notifier, NotifierConfig
from scheduler.runner.services.partitions import PartitionConfig, PartitionKeeper
from scheduler.runner.services.periodic import PeriodicService, run_periodically
from scheduler.runner.services.rescuer import Rescuer, RescuerConfig
from scheduler.runner.signing import SigningSecrets
from scheduler.runner.supervise import keep_running

# The runner's connections: the claim loop and its helper, the completer, the services.
POOL_SIZE = 6

log = structlog.get_logger("scheduler.runner")


def http_client(settings: Settings) -> OutboundClient:
    """The runner's one HTTP client: outbound address rules, a connection per concurrent call at most.

    No proxies from the environment (a proxy would connect on our behalf, past the address rules),
    and no redirects unless an action asks (`run_http_action` then checks each hop).
    """
    return OutboundClient(
        allow_nets=settings.http_allow_nets,
        max_connections=settings.runner_concurrency,
        record_exchange=settings.http_record_exchange,
    )


@dataclass(frozen=True, slots=True)
class RunnerParts:
    """One runner's cycle, completer and services, wired to each other."""

    runner: Runner
    completer: Completer
    listener: Listener | None
    """None when there is no URL to LISTEN on (transaction pooling, no direct URL): the runner polls."""
    heartbeat: Heartbeat
    rescuer: Rescuer
    partitions: PartitionKeeper
    backlog: BacklogGauge
    notifier: Notifier
    """Delivers job.failing and job.recovered events, with an HTTP client and a bound of its own."""
    log: FilteringBoundLogger

    @property
    def periodic(self) -> list[PeriodicService]:
        """The services that run a round every interval."""
        return [self.heartbeat, self.rescuer, self.partitions, self.backlog, self.notifier]


def assemble(
    settings: Settings,
    pool: ConnectionSource,
    client: OutboundClient,
    *,
    database_url: str | None,
    metrics: RunnerMetrics | None = None,
) -> RunnerParts:
    """Build a runner's parts on ``pool`` and ``client`` (nothing runs until `run_parts`).

    The listener opens a connection of its own to ``database_url``, outside the pool. With no URL to
    listen on, nothing tells the runner of cancels: its heartbeat, which also finds runs that are no
    longer its own, then runs every poll interval, so a cancel still stops its call within about one.
    """
    metrics = metrics or RunnerMetrics(max_namespaces=settings.metrics_max_namespaces)
    name = settings.runner_id()
    bound = log.bind(runner=name)
    completer = Completer(pool, runner=name, lease_s=settings.lease_s, metrics=metrics, log=bound)
    signing = SigningSecrets(pool)
    runner = Runner(settings, pool, client, completer=completer, signing=signing, metrics=metrics)
    heartbeat_every = None if database_url else min(settings.poll_interval_s, settings.lease_s / 3)
    return RunnerParts(
        runner=runner,
        completer=completer,
        listener=None
        if database_url is None
        else Listener(
            database_url,
            on_wake=runner.wake,
            on_cancel=runner.cancel,
            on_secrets=signing.forget,
            log=bound,
        ),
        heartbeat=Heartbeat(
            HeartbeatConfig(lease_s=settings.lease_s, interval_s=heartbeat_every),
            pool,
            leases=runner.leases,
            lose=runner.lose,
            cancel=runner.cancel,
        ),
        rescuer=Rescuer(RescuerConfig(lease_s=settings.lease_s), pool, completer, metrics=metrics, log=bound),
        partitions=PartitionKeeper(
            PartitionConfig(retention_days=settings.run_retention_days), pool, log=bound
        ),
        backlog=BacklogGauge(BacklogConfig(), pool, metrics=metrics),
        notifier=Notifier(NotifierConfig(allow_nets=settings.http_allow_nets), pool, signing, log=bound),
        log=bound,
    )


async def run_parts(parts: RunnerParts, stop: asyncio.Event) -> None:
    """Run the cycle until ``stop`` is set and it has drained; the services run until then too."""
    metrics = parts.runner.metrics
    listening: list[asyncio.Task[None]] = []
    if parts.listener is None:
        parts.log.info(
            "runner_polling",
            reason="no LISTEN connection",
            poll_interval_s=parts.runner.settings.poll_interval_s,
        )
    else:
        listening.append(
            asyncio.create_task(
                keep_running(parts.listener.name, parts.listener.listen_once, log=parts.log, metrics=metrics),
                name="listen",
            )
        )
    services = [
        *listening,
        asyncio.create_task(
            keep_running("complete", parts.completer.write_waiting, log=parts.log, metrics=metrics),
            name="complete",
        ),
        *(
            asyncio.create_task(run_periodically(service, log=parts.log, metrics=metrics), name=service.name)
            for service in parts.periodic
        ),
    ]
    try:
        await parts.runner.run(stop)
    finally:
        for task in services:
            task.cancel()
        await asyncio.gather(*services, return_exceptions=True)
        await parts.notifier.aclose()
        if parts.listener is not None:
            await parts.listener.close()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    url = settings.database_url
    if url is None:
        raise ConfigError("SCHEDULER_DATABASE_URL: required by the runner")
    pool = Pool(
        url,
        application_name="scheduler-runner",
        max_size=POOL_SIZE,
        pooler=settings.database_pooler,
        max_lifetime_s=settings.db_max_lifetime_s,
    )
    metrics = RunnerMetrics(max_namespaces=settings.metrics_max_namespaces)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
        log.info("metrics_listening", port=settings.metrics_port, host=settings.host)
    try:
        async with http_client(settings) as client:
            parts = assemble(settings, pool, client, database_url=settings.listen_url(), metrics=metrics)
            await run_parts(parts, stop)
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
    collector.tune()

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
