"""`scheduler apply` and `scheduler runs list` against a live API, on the README's example directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Procs, start_api

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "billing"


def scheduler(url: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `python -m scheduler ...` against the API at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env["SCHEDULER_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def api(procs: Procs) -> str:
    """A live API with auth off."""
    return start_api(procs)


def stored(api: str) -> dict[str, int]:
    """Every job's name and version, read without the client."""
    items = httpx.get(f"{api}/jobs?limit=500", timeout=10).json()["items"]
    return {job["name"]: job["version"] for job in items}


class TestApply:
    """The plan, the writes, and nothing written the second time."""

    def test_the_example_directory_applies_then_holds(self, api):
        args = ("apply", "-f", str(EXAMPLE), "--selector", "service=billing", "--prune")
        dry = scheduler(api, *args, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "  + billing-nightly-export" in dry.stdout
        assert (
            "3 created, 0 updated, 0 deleted, 0 unchanged (would be applied; nothing was written)"
            in dry.stdout
        )
        assert stored(api) == {}
        done = scheduler(api, *args)
        assert done.returncode == 0, done.stderr
        assert "3 created" in done.stdout
        versions = stored(api)
        assert set(versions) == {
            "billing-nightly-export",
            "billing-hourly-reconcile",
            "billing-weekday-reminders",
        }
        again = scheduler(api, *args, "--verbose")
        assert again.returncode == 0
        assert "0 created, 0 updated, 0 deleted, 3 unchanged" in again.stdout
        assert "  = billing-hourly-reconcile" in again.stdout
        assert stored(api) == versions  # nothing was written

    def test_a_changed_and_a_removed_job_show_in_the_plan(self, api, tmp_path):
        scheduler(api, "apply", "-f", str(EXAMPLE), "--selector", "service=billing")
        jobs = [
            {
                "name": "billing-nightly-export",
                "schedule": "0 3 * * *",
                "timezone": "Europe/Berlin",
                "description": "Export yesterday's invoices",
                "action": {"type": "log", "payload": {"task": "export"}},
                "labels": {"service": "billing", "team": "billing"},
            }
        ]
        (tmp_path / "jobs.json").write_text(json.dumps(jobs))
        result = scheduler(api, "apply", "-f", str(tmp_path), "--selector", "service=billing", "--prune")
        assert result.returncode == 0, result.stderr
        assert "  ~ billing-nightly-export (schedule)" in result.stdout
        assert "  - billing-hourly-reconcile" in result.stdout
        assert set(stored(api)) == {"billing-nightly-export"}

    def test_exit_codes_tell_refusal_usage_and_unreachable_apart(self, api, tmp_path):
        (tmp_path / "bad.yaml").write_text(
            "- name: broken\n  schedule: '61 * * * *'\n  action: {type: log}\n"
        )
        refused = scheduler(api, "apply", "-f", str(tmp_path))
        assert refused.returncode == 1
        assert "jobs.0.schedule" in refused.stderr
        prune_blind = scheduler(api, "apply", "-f", str(EXAMPLE), "--prune")
        assert prune_blind.returncode == 2
        assert "--selector" in prune_blind.stderr
        (tmp_path / "bad.yaml").write_text("- name: [unclosed\n")
        assert scheduler(api, "apply", "-f", str(tmp_path)).returncode == 2
        assert scheduler("http://127.0.0.1:9", "apply", "-f", str(EXAMPLE)).returncode == 3

    def test_a_taken_name_is_a_conflict_exit(self, api):
        made = httpx.post(
            f"{api}/jobs", json={"name": "x", "schedule": "@daily", "action": {"type": "log"}}, timeout=10
        )
        assert made.status_code == 201
        env_args = ("jobs", "create", "--name", "x", "--schedule", "@daily", "--log-payload", "{}")
        assert scheduler(api, *env_args).returncode == 4


class TestRunsList:
    """Runs across jobs, with GET /runs's filters and each run's job name."""

    def test_runs_of_a_job_by_name(self, api):
        scheduler(api, "apply", "-f", str(EXAMPLE), "--selector", "service=billing")
        trigger = scheduler(api, "jobs", "trigger", "billing-hourly-reconcile")
        assert trigger.returncode == 0, trigger.stderr
        listed = scheduler(api, "runs", "list", "--job", "billing-hourly-reconcile", "--json")
        assert listed.returncode == 0, listed.stderr
        items = json.loads(listed.stdout)["items"]
        assert [(run["job_name"], run["trigger"]) for run in items] == [
            ("billing-hourly-reconcile", "manual")
        ]
        table = scheduler(api, "runs", "list", "--status", "pending,running,succeeded")
        assert table.returncode == 0
        assert table.stdout.splitlines()[0].split()[0] == "JOB"
        bad = scheduler(api, "runs", "list", "--status", "finished")
        assert bad.returncode == 1
        assert "status" in bad.stderr
