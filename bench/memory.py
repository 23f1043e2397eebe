"""Memory: one runner with 1,000 HTTP calls in flight, against the 150 MB RSS target.

    python -m bench.memory [--calls 1000] [--hold 20] [--target-mb 150]

Starts a local HTTP server that holds every request `--hold` seconds before answering, one runner
with SCHEDULER_RUNNER_CONCURRENCY equal to the number of calls, reads its idle RSS, then seeds that
many jobs whose http action calls the server, all due now (one slot each). Once the runs table shows
them all `running` (and the server holds them), it samples the runner's VmRSS from /proc for a couple
of seconds and reports the largest sample and the peak (VmHWM). Prints a table and writes
bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import print_table, write_json
from bench.database import drop_database, fresh_database, now, runners, scalar, seed_jobs, wait_until
from bench.summary import figure, verdict

DB = "scheduler_bench_memory"


class SlowServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers each request `hold_s` seconds after reading it."""

    def __init__(self, hold_s: float) -> None:
        """Prepare; nothing listens until start()."""
        self.hold_s = hold_s
        self.in_flight = 0
        self.answered = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="slow-server", daemon=True)

    def start(self) -> None:
        """Listen on a free port in a thread of its own."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow server did not start")

    def stop(self) -> None:
        """Stop listening and drop the held connections."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            self.in_flight += 1
            try:
                await asyncio.sleep(self.hold_s)
            finally:
                self.in_flight -= 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (10^6 bytes), from /proc/<pid>/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(value.split()[0]) * 1024 / 1e6
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario; return the RSS figures."""
    url = fresh_database(DB)
    server = SlowServer(args.hold)
    server.start()
    try:
        with runners(url, 1, runner_concurrency=args.calls, shutdown_grace_s=1) as procs:
            pid = procs[0].pid
            time.sleep(args.settle)
            if procs[0].poll() is not None:
                raise RuntimeError(f"the runner exited with {procs[0].returncode}")
            idle = rss_mb(pid)
            action = json.dumps(
                {"type": "http", "method": "POST", "url": f"http://127.0.0.1:{server.port}/hook"}
            )
            # One slot per job (the next is a year away) and no overlap: exactly `calls` runs.
            due = now() - timedelta(seconds=1)
            seed_jobs(
                url, args.calls, first=due, action=action, overlap="skip", schedules=[("@yearly", "UTC")]
            )
            seeded_at = time.monotonic()
            want = int(args.calls * 0.98)

            def running() -> int:
                return int(scalar(url, "SELECT count(*) FROM runs WHERE status = 'running'"))

            reached = wait_until(
                lambda: running() >= want and server.in_flight >= want, timeout=args.hold - 2
            )
            ramp_s = time.monotonic() - seeded_at
            samples = []
            deadline = time.monotonic() + min(2.0, max(0.0, args.hold - ramp_s - 1))
            while True:
                samples.append(rss_mb(pid)["VmRSS"])
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            loaded = rss_mb(pid)
            in_flight = server.in_flight
            running_rows = running()
    finally:
        server.stop()
        drop_database(DB)
    return {
        "calls": args.calls,
        "hold_s": args.hold,
        "reached_target_in_flight": reached,
        "ramp_s": ramp_s,
        "runs_running": running_rows,
        "server_in_flight": in_flight,
        "idle_rss_mb": idle["VmRSS"],
        "loaded_rss_mb": max(samples),
        "peak_rss_mb": loaded["VmHWM"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=1_000, help="HTTP calls in flight (and runner concurrency)"
    )
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the server holds each call")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds the idle runner gets before the load"
    )
    parser.add_argument("--target-mb", type=float, default=150.0, help="the RSS target")
    args = parser.parse_args()

    found = measure(args)
    met = found["reached_target_in_flight"] and found["peak_rss_mb"] < args.target_mb
    print_table(
        f"One runner, {args.calls:,} HTTP calls held {args.hold:.0f} s by a local server",
        [
            "in flight (server)",
            "runs running",
            "ramp s",
            "idle RSS MB",
            "loaded RSS MB",
            "peak RSS MB",
            "target",
        ],
        [
            (
                found["server_in_flight"],
                found["runs_running"],
                found["ramp_s"],
                found["idle_rss_mb"],
                found["loaded_rss_mb"],
                found["peak_rss_mb"],
                f"< {args.target_mb:.0f} MB: {verdict(met)}",
            )
        ],
    )
    if not found["reached_target_in_flight"]:
        print(
            f"\nonly {found['server_in_flight']} calls were in flight: the figure is not for {args.calls:,}"
        )
    summary = [
        figure(
            f"runner peak RSS, {args.calls:,} calls in flight",
            round(found["peak_rss_mb"], 1),
            "MB",
            target=f"< {args.target_mb:.0f} MB",
            met=met,
        ),
        figure("runner idle RSS", round(found["idle_rss_mb"], 1), "MB"),
    ]
    path = write_json("memory", {**found, "target_mb": args.target_mb, "summary": summary})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
