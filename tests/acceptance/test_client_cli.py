"""`scheduler jobs …` run as a process against a live `scheduler api` process on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Procs, free_port, start_api, wait_for


@dataclass
class Cli:
    """Runs `python -m scheduler jobs …` with SCHEDULER_URL (and SCHEDULER_API_KEY) set."""

    url: str
    api_key: str | None = None

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Only what the test sets: a SCHEDULER_* variable of the shell must not steer the client.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env["SCHEDULER_URL"] = self.url
        if self.api_key is not None:
            env["SCHEDULER_API_KEY"] = self.api_key
        return subprocess.run(
            [sys.executable, "-m", "scheduler", "jobs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> str:
        """Run a command that must succeed; return its stdout."""
        result = self(*args)
        assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        """Run a command with --json that must succeed; return the decoded output."""
        return json.loads(self.ok(*args, "--json"))

    def server_jobs(self) -> list[dict[str, Any]]:
        """What the server holds, read without the client."""
        items: list[dict[str, Any]] = httpx.get(f"{self.url}/jobs?limit=500", timeout=10).json()["items"]
        return items


@pytest.fixture
def cli(procs: Procs) -> Cli:
    """The client pointed at a live API with auth off."""
    return Cli(start_api(procs))


def make_log_job(cli: Cli, name: str, *extra: str) -> dict[str, Any]:
    job: dict[str, Any] = cli.json(
        "create", "--name", name, "--schedule", "@every 1h", "--log-payload", '{"n": 1}', *extra
    )
    return job


class TestCreate:
    """`create` sends the job described by flags or a file; the server stores exactly that."""

    def test_flags_describe_every_field_of_an_http_job(self, cli):
        job = cli.json(
            "create",
            "--name", "weekly-report",
            "--description", "the weekly report",
            "--schedule", "0 9 * * MON",
            "--timezone", "Europe/Berlin",
            "--http-url", "https://billing.example/hooks/report",
            "--http-method", "put",
            "--header", "X-Team=billing",
            "--header", "X-Kind=weekly",
            "--body", '{"kind": "weekly"}',
            "--timeout-s", "45",
            "--max-attempts", "5",
            "--overlap", "queue",
            "--misfire", "all",
            "--label", "team=billing",
            "--paused",
        )  # fmt: skip
        stored = cli.server_jobs()
        assert [j["id"] for j in stored] == [job["id"]]
        assert stored[0] == job
        assert job["name"] == "weekly-report"
        assert job["description"] == "the weekly report"
        assert (job["schedule"], job["timezone"]) == ("0 9 * * MON", "Europe/Berlin")
        assert job["action"]["url"] == "https://billing.example/hooks/report"
        assert job["action"]["method"] == "PUT"
        assert job["action"]["headers"] == {"X-Team": "billing", "X-Kind": "weekly"}
        assert job["action"]["body"] == {"kind": "weekly"}
        assert job["timeout_s"] == 45
        assert job["retry"]["max_attempts"] == 5
        assert job["overlap"] == "queue"
        assert job["misfire"]["policy"] == "all"
        assert job["labels"] == {"team": "billing"}
        assert job["paused"] is True
        assert job["next_run_at"] is None

    def test_a_file_is_the_job_and_flags_override_it(self, cli, tmp_path):
        path = tmp_path / "job.json"
        path.write_text(
            json.dumps(
                {
                    "name": "from-file",
                    "schedule": "@daily",
                    "action": {"type": "log", "payload": {"a": 1}},
                    "retry": {"max_attempts": 2, "min_backoff_s": 7, "max_backoff_s": 70},
                }
            )
        )
        job = cli.json("create", "--from-file", str(path), "--name", "renamed", "--max-attempts", "4")
        assert job["name"] == "renamed"
        assert job["schedule"] == "@daily"
        assert job["action"] == {"type": "log", "payload": {"a": 1}}
        assert job["retry"] == {"max_attempts": 4, "min_backoff_s": 7.0, "max_backoff_s": 70.0}

    def test_a_label_reads_the_same_written_key_value_or_key_colon_value(self, cli):
        equals = make_log_job(cli, "equals", "--label", "team=billing", "--label", "url=https://e.test/a=b")
        colon = make_log_job(cli, "colon", "--label", "team:billing", "--label", "url:https://e.test/a=b")
        assert equals["labels"] == colon["labels"] == {"team": "billing", "url": "https://e.test/a=b"}
        (shown,) = [line for line in cli.ok("get", "colon").splitlines() if line.startswith("labels:")]
        # In the order the server keeps them (jsonb's), each written key=value.
        assert set(shown.split(maxsplit=1)[1].split(", ")) == {"team=billing", "url=https://e.test/a=b"}

    def test_several_schedules_and_exclusions_make_one_job(self, cli):
        job = cli.json(
            "create",
            "--name",
            "office",
            "--log-payload",
            "{}",
            "--schedule",
            "0 9 * * MON-FRI",
            "--schedule",
            "0 12 * * SAT",
            "--timezone",
            "Europe/Berlin",
            "--exclude-date",
            "2030-12-25",
            "--exclude-calendar",
            "* * 1 1 *",
        )
        (stored,) = cli.server_jobs()
        assert [entry["schedule"] for entry in stored["schedules"]] == ["0 9 * * MON-FRI", "0 12 * * SAT"]
        assert {entry["timezone"] for entry in stored["schedules"]} == {"Europe/Berlin"}
        assert stored["exclusions"] == {
            "dates": ["2030-12-25"],
            "calendars": ["* * 1 1 *"],
            "timezone": "Europe/Berlin",
        }
        shown = cli.ok("get", job["id"]).splitlines()
        at = next(index for index, line in enumerate(shown) if line.startswith("schedule:"))
        assert shown[at].split(maxsplit=1)[1] == "0 9 * * MON-FRI  (Europe/Berlin)"
        assert shown[at + 1].strip() == "0 12 * * SAT  (Europe/Berlin)"
        assert any(line.startswith("excluded:") and "2030-12-25" in line for line in shown)

    def test_without_json_it_prints_a_readable_summary(self, cli):
        out = cli.ok("create", "--name", "hello", "--schedule", "@every 5s", "--log-payload", '{"m": "hi"}')
        (stored,) = cli.server_jobs()
        fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
        assert fields["id"].strip() == stored["id"]
        assert fields["name"].strip() == "hello"
        assert fields["schedule"].strip() == "@every 5s  (UTC)"
        assert fields["state"].strip() == "active"
        assert fields["action"].strip() == 'log {"m":"hi"}'


class TestRead:
    """`list` and `get` show what the server holds: tables by default, the server's JSON with --json."""

    def test_list_prints_one_row_per_job_under_a_header(self, cli):
        first = make_log_job(cli, "alpha")
        second = make_log_job(cli, "beta", "--paused")
        lines = cli.ok("list").splitlines()
        assert lines[0].split() == [
            "ID",
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "STATE",
            "NEXT",
            "RUN",
            "LAST",
            "RUN",
        ]
        rows = [line.split() for line in lines[1:]]
        assert [row[:2] for row in rows] == [[first["id"], "alpha"], [second["id"], "beta"]]
        assert "active" in rows[0]
        assert "paused" in rows[1]

    def test_list_json_is_the_servers_page_unmodified(self, cli):
        make_log_job(cli, "alpha")
        out = cli.ok("list", "--json", "--limit", "10")
        assert out.rstrip("\n") == httpx.get(f"{cli.url}/jobs?limit=10", timeout=10).text

    def test_list_all_follows_next_cursor_through_every_page(self, cli):
        names = ["a1", "a2", "a3"]
        for name in names:
            make_log_job(cli, name)
        one_page = cli.json("list", "--limit", "1")
        assert len(one_page["items"]) == 1
        assert one_page["next_cursor"]
        every_page = cli.json("list", "--limit", "1", "--all")
        assert [job["name"] for job in every_page["items"]] == names
        assert every_page["next_cursor"] is None
        table = cli.ok("list", "--limit", "1", "--all")
        assert len(table.splitlines()) == 1 + len(names)

    def test_list_filters_by_name_prefix_label_and_paused(self, cli):
        make_log_job(cli, "billing-a", "--label", "team=billing")
        make_log_job(cli, "billing-b", "--label", "team=billing", "--paused")
        make_log_job(cli, "search-a", "--label", "team=search")

        def names(*args: str) -> list[str]:
            return [job["name"] for job in cli.json("list", *args)["items"]]

        assert names("--name-prefix", "billing-") == ["billing-a", "billing-b"]
        assert names("--label", "team:search") == ["search-a"]
        assert names("--label", "team=search") == ["search-a"]
        assert names("--label", "team = search") == ["search-a"]
        assert names("--paused", "true") == ["billing-b"]
        assert names("--paused", "false", "--label", "team:billing") == ["billing-a"]

    def test_get_finds_a_job_by_id_or_by_name(self, cli):
        make_log_job(cli, "other")
        job = make_log_job(cli, "wanted")
        assert cli.json("get", job["id"]) == job
        assert cli.json("get", "wanted") == job
        out = cli.ok("get", "wanted")
        assert job["id"] in out
        assert "version:" in out


class TestChange:
    """`update`, `pause`, `resume` and `delete` change the job the server holds, and only as asked."""

    def test_update_changes_the_fields_given_and_nothing_else(self, cli):
        job = make_log_job(cli, "tick", "--label", "team=a")
        updated = cli.json("update", job["id"], "--schedule", "@every 5m", "--description", "slower")
        assert updated["schedule"] == "@every 5m"
        assert updated["description"] == "slower"
        assert updated["version"] == job["version"] + 1
        for unchanged in ("name", "timezone", "action", "retry", "misfire", "overlap", "labels", "paused"):
            assert updated[unchanged] == job[unchanged], unchanged

    def test_update_merges_into_nested_fields_instead_of_resetting_them(self, cli, tmp_path):
        path = tmp_path / "job.json"
        path.write_text(
            json.dumps(
                {
                    "name": "hook",
                    "schedule": "@hourly",
                    "action": {
                        "type": "http",
                        "url": "https://example.test/a",
                        "headers": {"X-A": "1"},
                        "body": {"k": 1},
                    },
                    "retry": {"max_attempts": 3, "min_backoff_s": 2, "max_backoff_s": 20},
                    "misfire": {"policy": "all", "grace_s": 30, "window_s": 600},
                    "labels": {"team": "a"},
                }
            )
        )
        job = cli.json("create", "--from-file", str(path))
        updated = cli.json(
            "update",
            "hook",
            "--header",
            "X-B=2",
            "--max-attempts",
            "6",
            "--misfire",
            "skip",
            "--label",
            "tier=1",
        )
        assert updated["action"]["headers"] == {"X-A": "1", "X-B": "2"}
        assert updated["action"]["url"] == job["action"]["url"]
        assert updated["action"]["body"] == {"k": 1}
        assert updated["retry"] == {"max_attempts": 6, "min_backoff_s": 2.0, "max_backoff_s": 20.0}
        assert updated["misfire"] == {"policy": "skip", "grace_s": 30, "window_s": 600}
        assert updated["labels"] == {"team": "a", "tier": "1"}

    def test_update_with_the_current_version_in_if_match_is_applied(self, cli):
        job = make_log_job(cli, "tick")
        updated = cli.json("update", "tick", "--if-match", str(job["version"]), "--timeout-s", "9")
        assert updated["timeout_s"] == 9

    def test_update_with_a_stale_if_match_is_refused_and_changes_nothing(self, cli):
        job = make_log_job(cli, "tick")
        cli.ok("update", "tick", "--timeout-s", "9")
        result = cli("update", "tick", "--if-match", str(job["version"]), "--timeout-s", "99")
        assert result.returncode == 4  # a conflict
        assert "412" in result.stderr
        assert "changed" in result.stderr
        (stored,) = cli.server_jobs()
        assert stored["timeout_s"] == 9

    def test_update_without_changes_is_a_usage_error(self, cli):
        make_log_job(cli, "tick")
        result = cli("update", "tick")
        assert result.returncode == 2
        assert "nothing to change" in result.stderr

    def test_pause_clears_next_run_and_resume_sets_it_again(self, cli):
        job = make_log_job(cli, "tick")
        paused = cli.json("pause", "tick")
        assert (paused["paused"], paused["next_run_at"]) == (True, None)
        assert cli.server_jobs()[0]["paused"] is True
        resumed = cli.ok("resume", job["id"])
        assert "state:        active" in resumed
        stored = cli.server_jobs()[0]
        assert stored["paused"] is False
        # Resumed from the next slot after now: for an hourly job made seconds ago, still its first.
        assert datetime.fromisoformat(stored["next_run_at"]) == datetime.fromisoformat(job["next_run_at"])

    def test_delete_removes_the_job(self, cli):
        keep = make_log_job(cli, "keep")
        gone = make_log_job(cli, "gone")
        assert cli.ok("delete", "gone").strip() == f"deleted job {gone['id']}"
        assert [job["id"] for job in cli.server_jobs()] == [keep["id"]]
        result = cli("get", gone["id"])
        assert result.returncode == 1
        assert "not found" in result.stderr


class TestRuns:
    """`trigger` makes a manual run; `runs` shows the job's history, which a runner fills in."""

    def test_a_triggered_run_is_listed_and_a_runner_completes_it(self, cli, procs):
        job = make_log_job(cli, "tick", "--paused")
        run = cli.json("trigger", "tick")
        assert (run["job_id"], run["trigger"], run["attempt"]) == (job["id"], "manual", 1)
        listed = cli.json("runs", "tick")["items"]
        assert [item["id"] for item in listed] == [run["id"]]

        procs.runner()
        wait_for(
            lambda: cli.json("runs", job["id"], "--status", "succeeded")["items"],
            timeout=60,
            what="the manual run to succeed",
        )
        lines = cli.ok("runs", "tick").splitlines()
        assert lines[0].split()[:2] == ["ID", "SCHEDULED"]
        assert lines[1].split()[:5] == [run["id"], run["scheduled_for"], "manual", "1", "succeeded"]

    def test_runs_filters_by_status_and_limits_the_count(self, cli):
        make_log_job(cli, "tick", "--paused", "--overlap", "allow")
        for _ in range(3):
            cli.ok("trigger", "tick")
        assert len(cli.json("runs", "tick", "--limit", "2")["items"]) == 2
        assert len(cli.json("runs", "tick", "--status", "pending")["items"]) == 3
        assert cli.json("runs", "tick", "--status", "failed")["items"] == []


class TestPreview:
    """`preview` asks the server for a schedule's fire times and stores nothing."""

    def test_preview_lists_fire_times_across_a_dst_gap(self, cli):
        args = ["--schedule", "30 2 * * *", "--timezone", "America/New_York"]
        args += ["--after", "2024-03-09T12:00:00Z", "--count", "2"]
        assert cli.json("preview", *args) == {
            "next": ["2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"],
            "fires": [
                {"at": "2024-03-10T07:00:00Z", "entries": [0]},
                {"at": "2024-03-11T06:30:00Z", "entries": [0]},
            ],
            "excluded": [],
        }
        lines = cli.ok("preview", *args).splitlines()
        assert lines[1].split() == ["2024-03-10T07:00:00Z", "Sun", "2024-03-10", "03:00:00", "EDT"]
        assert lines[2].split() == ["2024-03-11T06:30:00Z", "Mon", "2024-03-11", "02:30:00", "EDT"]
        assert cli.server_jobs() == []

    def test_preview_of_a_bad_schedule_names_the_field(self, cli):
        result = cli("preview", "--schedule", "61 * * * *")
        assert result.returncode == 1
        assert "schedule:" in result.stderr


class TestErrors:
    """Failures exit non-zero and say why on stderr: the server's detail and each field it named."""

    def test_a_schedule_that_never_fires_is_refused_naming_the_field(self, cli):
        result = cli("create", "--name", "never", "--schedule", "0 0 30 2 *", "--log-payload", "{}")
        assert result.returncode == 1
        assert result.stdout == ""
        assert "(HTTP 422)" in result.stderr
        assert "\n  schedule: " in result.stderr
        assert "never fires" in result.stderr
        assert cli.server_jobs() == []

    def test_a_name_taken_in_the_namespace_is_a_conflict(self, cli):
        make_log_job(cli, "taken")
        result = cli("create", "--name", "taken", "--schedule", "@daily", "--log-payload", "{}")
        assert result.returncode == 4  # a conflict, told apart from a refused value (1)
        assert "(HTTP 409)" in result.stderr
        assert "\n  name: already exists" in result.stderr

    def test_an_unknown_job_id_is_not_found(self, cli):
        missing = "01a204ce-0000-7000-8000-000000000000"
        result = cli("get", missing)
        assert result.returncode == 1
        assert f"job {missing} not found" in result.stderr
        assert "(HTTP 404)" in result.stderr

    def test_an_unknown_job_name_is_not_found(self, cli):
        make_log_job(cli, "known")
        result = cli("trigger", "unknown")
        assert result.returncode == 1
        assert "no job named 'unknown'" in result.stderr

    def test_an_unreachable_api_is_reported_with_its_url(self):
        url = f"http://127.0.0.1:{free_port()}"
        result = Cli(url)("list")
        assert result.returncode == 3
        assert f"could not reach the scheduler API at {url}" in result.stderr
        assert "SCHEDULER_URL" in result.stderr

    def test_a_url_that_is_not_http_is_a_usage_error(self):
        result = Cli("127.0.0.1:8000")("list")
        assert result.returncode == 2
        assert "SCHEDULER_URL must be an http:// or https:// URL" in result.stderr

    def test_a_job_without_name_schedule_or_action_is_a_usage_error_and_nothing_is_sent(self, cli):
        result = cli("create", "--name", "half")
        assert result.returncode == 2
        assert "--schedule" in result.stderr
        assert "--http-url or --log-payload" in result.stderr
        assert cli.server_jobs() == []

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (["--header", "no-equals-sign"], "argument --header: expected KEY=VALUE"),
            (["--body", "{not json"], "argument --body: not valid JSON"),
            (["--log-payload", "[1]"], "argument --log-payload: expected a JSON object"),
            (["--overlap", "sometimes"], "argument --overlap: invalid choice"),
            (["--label", "team"], "argument --label: 'team' has no '=': write a label as key=value"),
            (["--label", "=billing"], "argument --label: '': label keys are 1-63 of"),
            (["--label", "my team=billing"], "argument --label: 'my team': label keys are 1-63 of"),
        ],
    )
    def test_malformed_flags_are_usage_errors(self, flags, message):
        url = f"http://127.0.0.1:{free_port()}"
        result = Cli(url)(
            "create", "--name", "x", "--schedule", "@daily", "--http-url", "https://e.test", *flags
        )
        assert result.returncode == 2
        assert message in result.stderr

    def test_an_unreadable_file_is_a_usage_error(self, tmp_path: Path):
        url = f"http://127.0.0.1:{free_port()}"
        result = Cli(url)("create", "--from-file", str(tmp_path / "missing.json"))
        assert result.returncode == 2
        assert "--from-file: cannot read" in result.stderr


class TestAuth:
    """With SCHEDULER_AUTH=required the client sends SCHEDULER_API_KEY and explains a refusal."""

    @pytest.fixture
    def secured(self, procs: Procs) -> tuple[str, str]:
        made = subprocess.run(
            [sys.executable, "-m", "scheduler", "keys", "create", "--namespace", "t"],
            env=procs.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return start_api(procs, auth="required"), made.stdout.strip()

    def test_the_key_in_the_environment_is_used(self, secured):
        url, key = secured
        job = Cli(url, key).json("create", "--name", "mine", "--schedule", "@daily", "--log-payload", "{}")
        assert job["namespace"] == "t"
        assert [item["id"] for item in Cli(url, key).json("list")["items"]] == [job["id"]]

    def test_a_wrong_key_gets_a_clear_401(self, secured):
        url, key = secured
        result = Cli(url, key[:-4] + "xxxx")("list")
        assert result.returncode == 1
        assert "(HTTP 401)" in result.stderr
        assert "invalid API key" in result.stderr
        assert "SCHEDULER_API_KEY was refused" in result.stderr

    def test_no_key_gets_a_401_saying_the_key_is_not_set(self, secured):
        url, _ = secured
        result = Cli(url)("list")
        assert result.returncode == 1
        assert "(HTTP 401)" in result.stderr
        assert "SCHEDULER_API_KEY is not set" in result.stderr
