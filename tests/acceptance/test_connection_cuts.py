"""Runners under repeated connection cuts: a lost connection costs the statement that met it (SPEC 4).

Real runner processes and real PostgreSQL; the cuts are `pg_terminate_backend` on every runner
session, the way an operator, a failover or a proxy restart cuts them.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.slow

JOBS = 100
CUTS = 5
CUT_EVERY_S = 3.0
CUT = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE application_name LIKE 'scheduler-runner%%' AND datname = current_database()"
)


class TestRepeatedConnectionCuts:
    """Five cuts 3 s apart under 100 every-second jobs and two runners."""

    async def test_firing_resumes_within_two_seconds_of_each_cut_and_no_slot_is_missed(
        self, client, procs, sql
    ):
        start_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        ids = []
        for index in range(JOBS):
            response = await client.post(
                "/jobs",
                json={
                    "name": f"cut-{index}",
                    "schedule": "@every 1s",
                    "start_at": start_at.isoformat(),
                    "overlap": "allow",
                    "action": {"type": "log", "payload": {}},
                },
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        runners = [procs.runner(), procs.runner()]

        def fired_since(moment: datetime) -> int:
            return sql("SELECT count(*) FROM runs WHERE started_at > %s", (moment,))[0][0]

        await eventually(lambda: fired_since(start_at) >= 2 * JOBS, what="both runners firing")
        cuts: list[datetime] = []
        for _ in range(CUTS):
            killed = sql(CUT)
            cuts.append(sql("SELECT clock_timestamp()")[0][0])
            assert killed, "no runner session to cut"
            # Pacing, not waiting: each cut leaves more than the 2 s the recovery checks below look at.
            await asyncio.sleep(CUT_EVERY_S)
        end = sql("SELECT clock_timestamp()")[0][0]

        started = [
            row[0]
            for row in sql(
                "SELECT started_at FROM runs WHERE started_at BETWEEN %s AND %s ORDER BY started_at",
                (cuts[0] - timedelta(seconds=1), end),
            )
        ]
        for cut in cuts:
            assert any(cut < moment <= cut + timedelta(seconds=2) for moment in started), (
                f"nothing fired within 2 s of the cut at {cut}"
            )
        gaps = [b - a for a, b in itertools.pairwise(started)]
        assert max(gaps) <= timedelta(seconds=2), f"firing stopped for {max(gaps)}"

        # Claimed within the grace (5 s) despite the cuts: every slot fired on its own schedule.
        window = [cuts[0] + timedelta(seconds=1 + i) for i in range(int((end - cuts[0]).total_seconds()) - 1)]
        slots = {slot.replace(microsecond=0) for slot in window}
        expected = {(job_id, slot) for job_id in ids for slot in slots}

        def recorded() -> set[tuple[str, datetime]]:
            rows = sql(
                "SELECT job_id, scheduled_for FROM runs WHERE scheduled_for BETWEEN %s AND %s"
                " AND trigger = 'schedule'",
                (min(slots), max(slots)),
            )
            return {(str(job), slot) for job, slot in rows}

        await eventually(lambda: expected <= recorded(), timeout=15, what="every slot fired on schedule")
        assert sql("SELECT count(*) FROM runs WHERE trigger = 'catchup'")[0][0] == 0
        assert all(runner.popen.poll() is None for runner in runners)
