"""The Containerfile's health check and the package's commands, run as processes.

The files themselves are read and checked without running anything in tests/unit/test_deploy.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, Procs, free_port, start_api
from tests.unit.test_deploy import Stage, healthcheck_command, parse_containerfile


@pytest.fixture(scope="module")
def final() -> Stage:
    """The Containerfile's final stage."""
    return parse_containerfile((ROOT / "Containerfile").read_text())[-1]


class TestContainerfile:
    """One slim multi-stage image: built in one stage, run from another as a non-root user."""

    def test_the_health_check_passes_against_a_live_api_and_fails_without_one(self, final, procs: Procs):
        _, _, code = healthcheck_command(final)
        url = start_api(procs)
        port = urlsplit(url).port
        live = subprocess.run(
            [sys.executable, "-c", code],
            env={**procs.env(), "SCHEDULER_PORT": str(port)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert live.returncode == 0, live.stderr
        dead = subprocess.run(
            [sys.executable, "-c", code],
            env={**procs.env(), "SCHEDULER_PORT": str(free_port())},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert dead.returncode != 0


class TestCommands:
    """Every command the image and the compose services start exists in the package."""

    def test_the_runner_module_starts_its_main_when_run_with_python_m(self):
        # A bad setting stops it before it needs a database: proof that `-m` reaches main().
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.runner"],
            env={"SCHEDULER_LEASE_S": "soon", "PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "SCHEDULER_LEASE_S" in result.stderr

    def test_the_console_script_is_installed_and_runs_migrate(self):
        script = Path(sys.executable).with_name("scheduler")
        assert script.is_file(), "the `scheduler` console script is not installed beside this Python"
        result = subprocess.run(
            [str(script), "migrate"],
            env={"PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "SCHEDULER_DATABASE_URL is not set" in result.stderr
