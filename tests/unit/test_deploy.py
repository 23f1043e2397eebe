"""Containerfile and compose.yaml, read as files (no container engine here), checked against the package."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from scheduler.cli.main import build_parser
from scheduler.config import Settings, load_settings
from tests.conftest import ROOT

# What the runner needs after its grace period to hand back unfinished runs and write outcomes
# (Runner._drain allows itself 10 s), before the engine may SIGKILL it.
DRAIN_WRITE_BACK_S = 10


@dataclass
class Instruction:
    """One Containerfile instruction with its continuation lines joined."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or RUN."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(item) for item in value]


@dataclass
class Stage:
    """A FROM and the instructions under it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage from {self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        pairs = (re.findall(r"(\w+)=(\S+)", instruction.args) for instruction in self.all("ENV"))
        return {key: value for found in pairs for key, value in found}


def parse_containerfile(text: str) -> list[Stage]:
    """Split a Containerfile into stages of instructions (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{keyword} before any FROM"
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def healthcheck_command(stage: Stage) -> list[str]:
    """The exec-form command of the stage's HEALTHCHECK."""
    options, sep, command = stage.last("HEALTHCHECK").args.partition("CMD ")
    assert sep, "HEALTHCHECK has no CMD"
    assert options.strip().startswith("--") or not options.strip()
    return Instruction("CMD", command).exec_form()


def seconds(duration: str) -> float:
    """A compose duration like `1m30s` in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts, f"not a duration: {duration}"
    return sum(float(n) / 1000 if unit == "ms" else float(n) * units[unit] for n, unit in parts)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_containerfile((ROOT / "Containerfile").read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def argv_of(service: dict[str, Any], final: Stage) -> list[str]:
    """What a compose service's container runs: its entrypoint and command, else the image's."""
    entrypoint = service.get("entrypoint", final.last("ENTRYPOINT").exec_form())
    command = service.get("command", final.last("CMD").exec_form())
    return [*entrypoint, *command]


class TestContainerfile:
    """One slim multi-stage image: built in one stage, run from another as a non-root user."""

    def test_it_has_a_build_stage_and_a_slim_final_stage(self, stages):
        assert len(stages) >= 2
        assert stages[0].name == "build"
        assert stages[-1].base.startswith("python:")
        assert stages[-1].base.endswith("-slim")

    def test_the_final_stage_takes_only_the_built_virtualenv_from_the_build_stage(self, final):
        copies = final.all("COPY") + final.all("ADD")
        assert copies, "the final stage copies nothing in"
        for copy in copies:
            assert copy.args.startswith("--from=build "), f"final stage copies from the context: {copy.args}"
        assert [copy.args.split()[1:] for copy in copies] == [["/opt/scheduler", "/opt/scheduler"]]

    def test_no_build_tools_or_installs_run_in_the_final_stage(self, final):
        installs = re.compile(r"\b(apt-get|apt|apk|dnf|yum|pip|gcc|cc|make|build-essential)\b")
        for run in final.all("RUN"):
            assert not installs.search(run.args), f"the final stage installs or builds: {run.args}"

    def test_the_container_runs_as_the_numeric_non_root_user_the_image_creates(self, final):
        user = final.last("USER").args
        uid, _, gid = user.partition(":")
        assert uid.isdigit(), f"USER {user}: Kubernetes' runAsNonRoot needs a numeric uid"
        assert int(uid) != 0
        assert not gid or int(gid) != 0
        created = " ".join(run.args for run in final.all("RUN"))
        assert f"useradd --system --uid {uid}" in created
        assert final.instructions.index(final.last("USER")) > final.instructions.index(final.last("COPY"))

    def test_the_health_check_probes_healthz_on_the_port_the_api_listens_on(self, final):
        command = healthcheck_command(final)
        assert command[:2] == ["python", "-c"]
        assert "/healthz" in command[2]
        assert "SCHEDULER_PORT" in command[2]
        assert final.env()["SCHEDULER_PORT"] == final.last("EXPOSE").args == "8000"
        assert final.env()["SCHEDULER_HOST"] == "0.0.0.0"  # noqa: S104 - a container must listen outside

    def test_the_build_stage_copies_what_the_package_build_reads(self, stages):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        needed = {"pyproject.toml", project["project"]["readme"], "LICENSE", "src"}
        needed |= set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"])
        copied = set()
        for copy in stages[0].all("COPY"):
            *sources, _ = copy.args.split()
            copied |= set(sources)
        assert needed <= copied
        for source in copied:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"

    def test_the_entrypoint_is_the_packages_console_script(self, final):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert final.last("ENTRYPOINT").exec_form() == ["scheduler"]
        assert project["project"]["scripts"]["scheduler"] == "scheduler.cli.main:main"


RUNNERS = ("runner-1", "runner-2")
SCHEDULER_SERVICES = ("migrate", "api", *RUNNERS)


class TestCompose:
    """compose.yaml: PostgreSQL 16, a one-shot migrate, the API on 8000 and two runners, in order."""

    def test_it_runs_postgres_migrate_api_and_runners(self, services):
        assert set(services) == {"postgres", *SCHEDULER_SERVICES}

    def test_postgres_16_has_a_health_check_and_keeps_its_data_in_a_named_volume(self, compose, services):
        postgres = services["postgres"]
        assert postgres["image"].split(":")[1].startswith("16")
        assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
        volume, _, target = postgres["volumes"][0].partition(":")
        assert target == "/var/lib/postgresql/data"
        assert volume in compose["volumes"], "the data volume is not a named volume"

    def test_the_database_url_points_at_the_postgres_service_and_its_credentials(self, services):
        env = services["postgres"]["environment"]
        for name in SCHEDULER_SERVICES:
            url = urlsplit(services[name]["environment"]["SCHEDULER_DATABASE_URL"])
            assert (url.hostname, url.port) == ("postgres", 5432), name
            assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]), name
            assert url.path == f"/{env['POSTGRES_DB']}", name

    def test_migrate_runs_once_after_postgres_is_healthy(self, services):
        migrate = services["migrate"]
        assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert migrate["restart"] == "no"
        assert migrate["command"] == ["migrate"]
        assert migrate["healthcheck"] == {"disable": True}

    @pytest.mark.parametrize("name", ["api", *RUNNERS])
    def test_api_and_runners_wait_for_a_healthy_database_and_a_finished_migration(self, services, name):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }

    def test_the_api_is_published_on_8000_and_health_checked_on_the_port_it_listens_on(self, services, final):
        api = services["api"]
        assert "8000:8000" in api["ports"]
        assert "healthcheck" not in api, "the API keeps the image's /healthz probe"
        args = build_parser().parse_args(argv_of(api, final)[1:])
        probed = api["environment"].get("SCHEDULER_PORT", final.env()["SCHEDULER_PORT"])
        assert args.port == int(probed)
        assert args.host == "0.0.0.0"  # noqa: S104 - published through the container's port

    def test_two_runners_with_nothing_that_would_clash_between_them(self, services):
        for name in RUNNERS:
            runner = services[name]
            assert "deploy" not in runner, f"{name}: one container per named runner"
            assert "container_name" not in runner
            assert "ports" not in runner
            port = runner["environment"]["SCHEDULER_METRICS_PORT"]
            probe = " ".join(runner["healthcheck"]["test"])
            assert f"127.0.0.1:{port}/metrics" in probe, (
                "a runner is probed on its metrics port, not the API's"
            )

    def test_each_runner_names_itself(self, services):
        names = [services[name]["environment"]["SCHEDULER_RUNNER_NAME"] for name in RUNNERS]
        assert names == list(RUNNERS)
        assert Settings(runner_name=names[0]).runner_id() == "runner-1"

    @pytest.mark.parametrize("name", RUNNERS)
    def test_runners_get_their_grace_period_and_the_write_back_before_a_kill(self, services, name):
        runner = services[name]
        grace = float(runner["environment"].get("SCHEDULER_SHUTDOWN_GRACE_S", Settings().shutdown_grace_s))
        assert seconds(runner["stop_grace_period"]) > grace + DRAIN_WRITE_BACK_S

    def test_every_scheduler_service_runs_the_image_built_from_the_containerfile(self, services):
        images = set()
        for name in SCHEDULER_SERVICES:
            service = services[name]
            assert service["build"]["dockerfile"] == "Containerfile", name
            assert (ROOT / service["build"]["context"] / "Containerfile").is_file()
            images.add(service["image"])
        assert len(images) == 1


class TestComposeNetworks:
    """The runners may call the `webhooks` network's receivers, and nothing else that is private."""

    def test_every_network_has_a_fixed_subnet(self, compose):
        for name, network in compose["networks"].items():
            subnets = [ipaddress.ip_network(item["subnet"]) for item in network["ipam"]["config"]]
            assert subnets, name
            assert all(subnet.is_private for subnet in subnets), name

    def test_the_runners_open_exactly_the_webhooks_subnet(self, compose, services):
        webhooks = [
            ipaddress.ip_network(c["subnet"]) for c in compose["networks"]["webhooks"]["ipam"]["config"]
        ]
        for name in RUNNERS:
            opened = load_settings(services[name]["environment"]).http_allow_nets
            assert list(opened) == webhooks, name
            assert set(services[name]["networks"]) == {"backend", "webhooks"}, name

    def test_the_database_and_the_api_are_not_on_the_opened_network(self, services):
        for name in ("postgres", "migrate", "api"):
            assert services[name]["networks"] == ["backend"], name

    def test_the_opened_network_holds_neither_the_backend_nor_the_metadata_address(self, compose):
        backend = [
            ipaddress.ip_network(c["subnet"]) for c in compose["networks"]["backend"]["ipam"]["config"]
        ]
        for name in RUNNERS:
            for net in load_settings(compose["services"][name]["environment"]).http_allow_nets:
                assert not any(net.overlaps(other) for other in backend)
                assert ipaddress.ip_address("169.254.169.254") not in net

    def test_the_allow_list_is_explained_where_it_is_set(self):
        text = (ROOT / "compose.yaml").read_text()
        comment = text[: text.index("SCHEDULER_HTTP_ALLOW_NETS:")].rsplit("\n\n", 1)[-1]
        assert "docs/outbound.md" in comment
        assert "webhooks" in comment


class TestCommands:
    """Every command the image and the compose services start exists in the package."""

    @pytest.mark.parametrize("name", SCHEDULER_SERVICES)
    def test_each_compose_service_runs_a_real_command(self, services, final, name):
        assert_runnable(argv_of(services[name], final))

    def test_the_images_default_command_is_real(self, final):
        argv = [*final.last("ENTRYPOINT").exec_form(), *final.last("CMD").exec_form()]
        assert argv == ["scheduler", "api"]
        assert_runnable(argv)

    def test_an_unknown_subcommand_is_not_taken_for_a_real_one(self):
        with pytest.raises(AssertionError, match="not a `scheduler` subcommand"):
            assert_runnable(["scheduler", "serve"])


def assert_runnable(argv: list[str]) -> None:
    """Fail unless ``argv`` is `scheduler <subcommand> …` or `python -m <module with a __main__>`."""
    if argv[0] == "scheduler":
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            raise AssertionError(f"{argv[1:]} is not a `scheduler` subcommand the parser accepts") from None
        assert args.command == argv[1], f"{argv[1]} is not a `scheduler` subcommand"
        assert callable(args.func)
        return
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"no module {module}"
        runnable = f"{module}.__main__" if spec.submodule_search_locations is not None else module
        assert importlib.util.find_spec(runnable) is not None, f"{module} cannot run with -m"
        importlib.import_module(runnable)
        return
    raise AssertionError(f"{argv} runs neither the `scheduler` script nor `python -m`")
