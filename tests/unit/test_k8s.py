"""The Kubernetes manifests of deploy/k8s, validated offline and checked against the service itself.

Every document is validated against the Kubernetes JSON schemas that `kubernetes-validate` ships
(strict: an unknown field fails), for one fixed Kubernetes version, and the CloudNativePG `Cluster`
and `Pooler` against that operator's CRD schemas, vendored in tests/k8s_schemas/. Then what the
manifests say is compared with what the code does: the variables they set exist, the probe paths
answer, the ports and grace periods agree with the Containerfile and the runner's shutdown.

The kustomization is rendered with `kubectl kustomize` where it is installed; the base's files are
also read on their own, as listed by its kustomization.yaml, so the checks run without it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from litestar.testing import TestClient
from prometheus_client import start_http_server

from scheduler.api.app import create_app
from scheduler.cli.main import build_parser
from scheduler.config import Settings, load_settings
from scheduler.metrics import RunnerMetrics
from tests.conftest import ROOT, free_port

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
POSTGRES = K8S / "postgres"
EXAMPLE = K8S / "overlays" / "example"
SCHEMAS = ROOT / "tests" / "k8s_schemas"
# The oldest Kubernetes release the manifests are meant for; newer ones accept them too.
KUBERNETES_VERSION = "1.30.0"
CNPG_GROUP = "postgresql.cnpg.io/v1"
# What the runner needs after its grace period to hand back unfinished runs and write outcomes
# (Runner._drain allows itself 10 s), before the kubelet may SIGKILL it.
DRAIN_WRITE_BACK_S = 10
PREFIX = "SCHEDULER_"


# ------------------------------------------------------------------------------ loading


def load_kustomization(directory: Path) -> list[dict[str, Any]]:
    """The documents a kustomization's `resources` name, read as they are (no transformation)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            documents += load_kustomization(path)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` or `kustomize build`, whichever is installed; None when neither is."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(directory: Path) -> list[dict[str, Any]] | None:
    """The kustomization as Kubernetes would receive it; None without kubectl or kustomize."""
    command = kustomize_command()
    if command is None:
        return None
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return load_kustomization(BASE)


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    """The example overlay: rendered when a renderer is installed, else its files as they are."""
    return render(EXAMPLE) or load_kustomization(EXAMPLE)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in docs if key(doc) == (kind, name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each workload's pod spec, named `Kind/name`."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def container(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (only,) = one(docs, kind, name)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Every SCHEDULER_* value the ConfigMap and the Secret give the processes."""
    values = dict(one(docs, "ConfigMap", "scheduler-config")["data"])
    values.update(one(docs, "Secret", "scheduler-database")["stringData"])
    return values


def environment(docs: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, str]:
    """What a container's process finds in its environment (`valueFrom` shown as a placeholder)."""
    env = config_data(docs)
    for item in spec.get("env", []):
        env[item["name"]] = item.get("value", "from-the-pod")
    return env


def seconds_slept(spec: dict[str, Any]) -> float:
    """How long the container's preStop hook sleeps (0 without one)."""
    hook = spec.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    command = hook["exec"]["command"]
    assert command[0] == "sleep", f"a preStop hook the grace budget cannot count: {command}"
    return float(command[1])


# ---------------------------------------------------------------------------- Containerfile


@dataclasses.dataclass(frozen=True)
class Image:
    """What the final stage of the Containerfile sets that the manifests depend on."""

    entrypoint: list[str]
    cmd: list[str]
    exposed: set[int]
    user: int
    env: dict[str, str]


@pytest.fixture(scope="module")
def image() -> Image:
    text = re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text())
    final = [line.strip() for line in text.split("\nFROM ")[-1].splitlines()]
    values: dict[str, str] = {}
    env: dict[str, str] = {}
    exposed: set[int] = set()
    for line in final:
        keyword, _, rest = line.partition(" ")
        if keyword in {"ENTRYPOINT", "CMD", "USER"}:
            values[keyword] = rest.strip()
        elif keyword == "EXPOSE":
            exposed |= {int(port.split("/")[0]) for port in rest.split()}
        elif keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return Image(
        entrypoint=json.loads(values["ENTRYPOINT"]),
        cmd=json.loads(values["CMD"]),
        exposed=exposed,
        user=int(values["USER"].split(":")[0]),
        env=env,
    )


def argv(spec: dict[str, Any], image: Image) -> list[str]:
    """What the container runs: `command` replaces the ENTRYPOINT, `args` the CMD."""
    if "command" in spec:
        return [*spec["command"], *spec.get("args", [])]
    return [*image.entrypoint, *spec.get("args", image.cmd)]


def assert_runnable(command: list[str]) -> None:
    """Fail unless ``command`` is `scheduler <subcommand>` or `python -m <runnable module>`."""
    if command[0] == "scheduler":
        parsed = build_parser().parse_args(command[1:])
        assert parsed.command == command[1]
        return
    assert command[:2] == ["python", "-m"], command
    assert importlib.util.find_spec(f"{command[2]}.__main__") is not None, f"{command[2]} has no __main__"


# ------------------------------------------------------------------------------- layout


class TestLayout:
    def test_every_file_of_the_base_is_in_its_kustomization(self):
        listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
        files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == listed

    def test_the_renderer_sees_what_the_files_say(self, base):
        rendered = render(BASE)
        if rendered is None:
            pytest.skip("neither kubectl nor kustomize is installed; the files were read on their own")
        assert sorted(map(key, rendered)) == sorted(map(key, base))

    def test_the_example_puts_everything_in_one_namespace_with_one_image(self, everything):
        if kustomize_command() is None:
            pytest.skip("neither kubectl nor kustomize is installed to render the overlay")
        for doc in everything:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "scheduler", key(doc)
        images = {c["image"] for _, spec in pod_specs(everything) for c in spec["containers"]}
        assert len(images) == 1
        assert images.pop().startswith("registry.example.com/pg-scheduler:")

    def test_the_base_holds_what_a_deployment_needs(self, base):
        kinds = {key(doc) for doc in base}
        assert {
            ("Deployment", "scheduler-api"),
            ("Service", "scheduler-api"),
            ("HorizontalPodAutoscaler", "scheduler-api"),
            ("PodDisruptionBudget", "scheduler-api"),
            ("Deployment", "scheduler-runner"),
            ("Job", "scheduler-migrate"),
            ("ConfigMap", "scheduler-config"),
            ("Secret", "scheduler-database"),
        } <= kinds


# ------------------------------------------------------------------------------ schemas


def kubernetes_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = load_kustomization(EXAMPLE)
    return [(f"{d['kind']}/{d['metadata']['name']}", d) for d in docs if d["apiVersion"] != CNPG_GROUP]


def cnpg_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = load_kustomization(POSTGRES)
    return [(f"{d['kind']}/{d['metadata']['name']}", d) for d in docs if d["apiVersion"] == CNPG_GROUP]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not name where it names all it accepts (what a CRD prunes silently)."""
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        open_ended = schema.get("additionalProperties") or schema.get("x-kubernetes-preserve-unknown-fields")
        for name, item in value.items():
            if properties is not None and name in properties:
                found += unknown_fields(item, properties[name], f"{path}.{name}")
            elif isinstance(open_ended, dict):
                found += unknown_fields(item, open_ended, f"{path}.{name}")
            elif properties is not None and not open_ended:
                found.append(f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


class TestSchemas:
    @pytest.mark.parametrize(
        ("name", "doc"), kubernetes_documents(), ids=lambda v: v if isinstance(v, str) else ""
    )
    def test_each_document_is_valid_kubernetes(self, name, doc):
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True), name

    @pytest.mark.parametrize(("name", "doc"), cnpg_documents(), ids=lambda v: v if isinstance(v, str) else "")
    def test_each_cloudnativepg_resource_matches_the_operators_schema(self, name, doc):
        vendored = json.loads((SCHEMAS / f"cnpg-{doc['kind'].lower()}-v1.json").read_text())
        assert f"{vendored['group']}/{vendored['version']}" == doc["apiVersion"]
        schema = vendored["openAPIV3Schema"]
        jsonschema.validate(doc, schema)
        assert not unknown_fields(doc["spec"], schema["properties"]["spec"]), name

    def test_the_unknown_field_check_finds_a_typo(self):
        schema = {"properties": {"spec": {"properties": {"instances": {"type": "integer"}}}}}
        assert unknown_fields({"spec": {"instance": 3}}, schema) == [".spec.instance"]

    def test_both_cloudnativepg_kinds_are_there(self):
        assert sorted(name.split("/")[0] for name, _ in cnpg_documents()) == ["Cluster", "Pooler"]


# ----------------------------------------------------------------------------- settings


def named_variables(docs: list[dict[str, Any]]) -> set[str]:
    """Every SCHEDULER_* name the manifests set, in the ConfigMap, the Secret or a container."""
    names = set(config_data(docs))
    for _, spec in pod_specs(docs):
        for item in spec["containers"]:
            names |= {env["name"] for env in item.get("env", [])}
    return {name for name in names if name.startswith(PREFIX)}


class TestSettings:
    def test_every_variable_named_is_documented_and_read(self, base):
        documented = set(
            re.findall(r"SCHEDULER_[A-Z0-9_]+", (ROOT / "docs" / "configuration.md").read_text())
        )
        fields = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
        names = named_variables(base)
        assert names, "no SCHEDULER_* variable found"
        assert names - documented == set(), "not in docs/configuration.md"
        assert names - fields == set(), "not a setting of scheduler.config"

    def test_only_scheduler_variables_are_set(self, base):
        assert set(config_data(base)) == {n for n in config_data(base) if n.startswith(PREFIX)}

    @pytest.mark.parametrize(
        ("kind", "name"),
        [("Deployment", "scheduler-api"), ("Deployment", "scheduler-runner"), ("Job", "scheduler-migrate")],
    )
    def test_each_process_accepts_its_configuration(self, base, kind, name):
        env = environment(base, container(base, kind, name))
        settings = load_settings(env)  # a bad value raises ConfigError naming the variable
        assert settings.database_url

    def test_the_pooler_mode_matches_the_pooler(self, base):
        pooler = one(load_kustomization(POSTGRES), "Pooler", "scheduler-db-pooler-rw")
        assert config_data(base)["SCHEDULER_DATABASE_POOLER"] == pooler["spec"]["pgbouncer"]["poolMode"]


class TestDatabase:
    """The URLs in the Secret lead to the example CloudNativePG cluster's Services and owner."""

    def test_the_urls_name_the_pooler_the_primary_and_the_owner(self, base):
        postgres = load_kustomization(POSTGRES)
        cluster = one(postgres, "Cluster", "scheduler-db")
        pooler = one(postgres, "Pooler", "scheduler-db-pooler-rw")
        initdb = cluster["spec"]["bootstrap"]["initdb"]
        owner = one(postgres, "Secret", initdb["secret"]["name"])["stringData"]
        assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
        assert pooler["spec"]["type"] == "rw"
        urls = config_data(base)
        through_pooler = urlsplit(urls["SCHEDULER_DATABASE_URL"])
        direct = urlsplit(urls["SCHEDULER_LISTEN_DATABASE_URL"])
        # CloudNativePG names a Pooler's Service after the Pooler and the primary's `<cluster>-rw`.
        assert through_pooler.hostname == pooler["metadata"]["name"]
        assert direct.hostname == f"{cluster['metadata']['name']}-rw"
        for url in (through_pooler, direct):
            assert url.port == 5432
            assert url.path == f"/{initdb['database']}"
            assert (url.username, url.password) == (owner["username"], owner["password"])
        assert owner["username"] == initdb["owner"]


# ------------------------------------------------------------------------ probes and ports


def probes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec[p]["httpGet"] for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in spec]


def port_of(spec: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port as a number: a name resolves to the container port of that name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in spec["ports"] if p["name"] == port]
    return int(number)


class TestProbes:
    def test_api_probes_answer_without_a_key_and_readiness_asks_the_database(self, base):
        api = container(base, "Deployment", "scheduler-api")
        paths = {probe["path"] for probe in probes(api)}
        assert paths == {"/healthz", "/readyz"}
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = environment(base, api)
        # The manifests' own settings (keys required), on a database that does not answer.
        env["SCHEDULER_DATABASE_URL"] = f"postgresql://scheduler@127.0.0.1:{free_port()}/scheduler"
        env.pop("SCHEDULER_API_WORKERS")
        settings = load_settings(env)
        assert settings.auth == "required"
        with TestClient(app=create_app(settings)) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text  # not 401: the probe needs no key
            assert client.get("/jobs").status_code == 401  # while the rest does

    def test_the_runner_liveness_probe_is_its_metrics_endpoint(self, base):
        runner = container(base, "Deployment", "scheduler-runner")
        (probe,) = probes(runner)
        assert port_of(runner, probe["port"]) == int(config_data(base)["SCHEDULER_METRICS_PORT"])
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=RunnerMetrics().registry)
        try:
            response = httpx.get(f"http://127.0.0.1:{port}{probe['path']}", timeout=5)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        assert response.status_code == 200
        assert "scheduler_runs_in_flight" in response.text

    def test_the_api_port_agrees_with_the_image_and_the_defaults(self, base, image):
        api = container(base, "Deployment", "scheduler-api")
        (port,) = api["ports"]
        assert port["containerPort"] in image.exposed
        assert port["containerPort"] == int(image.env["SCHEDULER_PORT"]) == Settings().port
        assert "SCHEDULER_PORT" not in config_data(base)  # nothing moves it away from the image's
        for probe in probes(api):
            assert port_of(api, probe["port"]) == port["containerPort"]
        service = one(base, "Service", "scheduler-api")
        (exposed,) = service["spec"]["ports"]
        assert port_of(api, exposed["targetPort"]) == port["containerPort"]

    def test_the_runner_metrics_service_targets_its_metrics_port(self, base):
        runner = container(base, "Deployment", "scheduler-runner")
        service = one(base, "Service", "scheduler-runner-metrics")
        (exposed,) = service["spec"]["ports"]
        assert port_of(runner, exposed["targetPort"]) == int(config_data(base)["SCHEDULER_METRICS_PORT"])

    def test_processes_listen_on_every_address_of_the_pod(self, base):
        for name in ("scheduler-api", "scheduler-runner"):
            assert environment(base, container(base, "Deployment", name))["SCHEDULER_HOST"] == "0.0.0.0"  # noqa: S104


# ------------------------------------------------------------------------ grace and commands


class TestShutdown:
    def test_the_runner_may_drain_before_the_kubelet_kills_it(self, base):
        deployment = one(base, "Deployment", "scheduler-runner")
        pod = deployment["spec"]["template"]["spec"]
        runner = container(base, "Deployment", "scheduler-runner")
        grace = float(config_data(base)["SCHEDULER_SHUTDOWN_GRACE_S"])
        budget = seconds_slept(runner) + grace + DRAIN_WRITE_BACK_S
        assert pod["terminationGracePeriodSeconds"] > budget
        assert pod["terminationGracePeriodSeconds"] > grace

    def test_the_api_pause_fits_in_its_grace_period(self, base):
        pod = one(base, "Deployment", "scheduler-api")["spec"]["template"]["spec"]
        api = container(base, "Deployment", "scheduler-api")
        assert 0 < seconds_slept(api) < pod["terminationGracePeriodSeconds"]

    def test_rollouts_never_take_the_last_replica(self, base):
        for name in ("scheduler-api", "scheduler-runner"):
            strategy = one(base, "Deployment", name)["spec"]["strategy"]["rollingUpdate"]
            assert strategy["maxUnavailable"] == 0


class TestCommands:
    @pytest.mark.parametrize(
        ("kind", "name", "expected"),
        [
            ("Job", "scheduler-migrate", ["scheduler", "migrate"]),
            ("Deployment", "scheduler-api", ["scheduler", "api"]),
            ("Deployment", "scheduler-runner", ["python", "-m", "scheduler.runner"]),
        ],
    )
    def test_each_container_runs_a_real_command(self, base, image, kind, name, expected):
        command = argv(container(base, kind, name), image)
        assert command == expected
        assert_runnable(command)

    def test_the_migrate_job_runs_once_and_is_not_restarted_in_place(self, base):
        job = one(base, "Job", "scheduler-migrate")["spec"]
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        assert job["backoffLimit"] >= 1


# ------------------------------------------------------------------------------ security


class TestSecurity:
    def test_every_pod_runs_as_the_images_non_root_user(self, base, image):
        specs = dict(pod_specs(base))
        assert len(specs) == 3
        for name, spec in specs.items():
            context = spec["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == image.user != 0, name
            assert context["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec["automountServiceAccountToken"] is False, name

    def test_every_container_is_locked_down_and_sized(self, base):
        for name, spec in pod_specs(base):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for item in spec["containers"]:
                context = item["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert context["readOnlyRootFilesystem"] is True, name
                assert {"cpu", "memory"} <= set(item["resources"]["requests"]), name
                assert "memory" in item["resources"]["limits"], name
                # Python's tempfile (the API's multiprocess metrics) needs a writable /tmp.
                mounts = {m["mountPath"]: m["name"] for m in item.get("volumeMounts", [])}
                if name != "Job/scheduler-migrate":
                    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - a mount path, not a file we open, name


# -------------------------------------------------------------------------------- wiring


class TestWiring:
    def test_selectors_match_their_pods(self, base):
        pods = {
            doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"]
            for doc in base
            if doc["kind"] == "Deployment"
        }
        for doc in base:
            if doc["kind"] == "Deployment":
                selector = doc["spec"]["selector"]["matchLabels"]
                assert selector.items() <= pods[doc["metadata"]["name"]].items()
            elif doc["kind"] in {"Service", "PodDisruptionBudget"}:
                selector = doc["spec"]["selector"]
                selector = selector.get("matchLabels", selector)
                matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
                assert len(matched) == 1, key(doc)

    def test_the_autoscaler_scales_the_api(self, base):
        target = one(base, "HorizontalPodAutoscaler", "scheduler-api")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", "scheduler-api")

    def test_every_reference_names_a_resource_of_the_base(self, base):
        names = set(map(key, base))
        for name, spec in pod_specs(base):
            assert ("ServiceAccount", spec["serviceAccountName"]) in names, name
            for item in spec["containers"]:
                for source in item.get("envFrom", []):
                    if "configMapRef" in source:
                        assert ("ConfigMap", source["configMapRef"]["name"]) in names, name
                    if "secretRef" in source:
                        assert ("Secret", source["secretRef"]["name"]) in names, name
