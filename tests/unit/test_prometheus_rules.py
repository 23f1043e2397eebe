"""The shipped monitoring: valid alerts whose promtool unit tests pass, a dashboard of valid PromQL.

`deploy/prometheus/alerts_test.yaml` holds the promtool unit tests; this file runs them and checks
that every alert has a test where it fires and one where it stays quiet. Without promtool (Debian's
`prometheus` package) those tests skip, unless SCHEDULER_REQUIRE_PROMTOOL=1 (CI), where they fail.
The metric names the queries use are checked against a live /metrics in
tests/acceptance/test_dashboard.py, with the readers of PromQL defined here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "scheduler.json"
INSTALL_HINT = "promtool not found: apt-get install prometheus (Debian's package ships promtool)"


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; a skip without it, a failure where CI requires it."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("SCHEDULER_REQUIRE_PROMTOOL") == "1":
            pytest.fail(INSTALL_HINT + "; SCHEDULER_REQUIRE_PROMTOOL=1 makes this a failure")
        pytest.skip(INSTALL_HINT)
    return found


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# ------------------------------------------------------------------------- reading PromQL

# Words of PromQL that look like metric names: operators, modifiers, grouping and literals.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
# A whole word (no backtracking into a shorter one), not a function's name, not a number's exponent.
_NAME = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![a-zA-Z0-9_:]|\s*\()")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels, keywords or numbers)."""
    text = _RANGE.sub("", _blank_strings(expr))
    text = _SELECTOR.sub(lambda m: m.group(1) or "", text)
    text = _GROUPING.sub("", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each selector with braces: its metric name and the label names it matches on."""
    text = _blank_strings(expr)
    return [
        (m.group(1) or "", {label for label, _ in _MATCHER.findall(m.group(2))})
        for m in _SELECTOR.finditer(text)
    ]


def grouping_labels(expr: str) -> set[str]:
    """The label names of the expression's by, without, on and ignoring clauses."""
    text = _blank_strings(expr)
    return {
        label.strip() for _, inside in _GROUPING.findall(text) for label in inside.split(",") if label.strip()
    }


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, those inside rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and the variables' queries."""
    queries = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: a query this test cannot read: {query}"
        queries.append(f"count by ({match.group(2)}) ({match.group(1)})")
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def as_prometheus_sees_it(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by what Grafana sends."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$namespace", ".*")


def alert_names() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def rule_cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    return [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]


class TestShippedAlerts:
    """alerts.yaml is valid, and promtool's unit tests of every alert pass."""

    def test_the_rules_are_valid(self, promtool):
        result = run(promtool, "check", "rules", str(RULES), cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout

    def test_the_unit_tests_pass(self, promtool):
        result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_a_broken_rule_fails_the_unit_tests(self, promtool, tmp_path):
        # The unit tests can fail: the failure-rate alert with a threshold no namespace reaches.
        text = RULES.read_text()
        assert ") > 0.25" in text
        (tmp_path / RULES.name).write_text(text.replace(") > 0.25", ") > 0.99"))
        (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
        result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
        assert result.returncode != 0
        assert "SchedulerNamespaceFailureRate" in result.stdout + result.stderr

    def test_every_alert_is_tested_firing_and_quiet(self):
        names = alert_names()
        assert len(names) == len(set(names)), "two alerts share a name"
        cases = rule_cases()
        firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
        quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
        assert set(names) - firing == set(), "alerts no test sees fire"
        assert set(names) - quiet == set(), "alerts no test sees stay quiet"
        assert {case["alertname"] for case in cases} <= set(names), "tests of alerts that do not exist"

    def test_alerts_carry_a_severity_and_a_summary(self):
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
                assert rule["annotations"]["summary"], rule["alert"]


class TestReadingPromql:
    """The readers the dashboard test relies on find metric names and labels, and nothing else."""

    def test_metric_names_leave_out_functions_labels_keywords_and_strings(self):
        expr = (
            'histogram_quantile(0.99, sum by (le, route) (rate(scheduler_x_bucket{status=~"5..|up"}[5m])))'
            " / on () group_left sum without (instance) (scheduler_y_total offset 1m) > bool 1e3"
            ' and absent(up{job="scheduler-api"} == 1) or vector(0)'
        )
        assert metric_names(expr) == {"scheduler_x_bucket", "scheduler_y_total", "up"}
        assert metric_names("max(scheduler_due_backlog)") == {"scheduler_due_backlog"}

    def test_selectors_and_grouping_labels(self):
        expr = 'sum by (namespace) (rate(scheduler_fires_total{namespace=~"$namespace", outcome!=""}[5m]))'
        assert selectors(expr) == [("scheduler_fires_total", {"namespace", "outcome"})]
        assert grouping_labels(expr) == {"namespace"}


class TestShippedDashboard:
    """The Grafana dashboard is well formed and each of its queries is valid PromQL."""

    def test_panels_have_unique_ids_a_datasource_variable_and_queries(self):
        found = panels()
        ids = [panel["id"] for panel in found]
        assert len(ids) == len(set(ids))
        graphs = [panel for panel in found if panel["type"] != "row"]
        assert len(graphs) >= 12
        for panel in graphs:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        names = {variable["name"] for variable in dashboard()["templating"]["list"]}
        assert {"datasource", "namespace"} <= names

    def test_every_query_is_valid_promql(self, promtool, tmp_path):
        # promtool parses the expressions of recording rules: one rule per dashboard query.
        rules = [
            {"record": f"dashboard:query_{i}", "expr": as_prometheus_sees_it(expr)}
            for i, expr in enumerate(dashboard_queries())
        ]
        path = tmp_path / "dashboard_rules.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = run(promtool, "check", "rules", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_a_query_promtool_cannot_parse_is_caught(self, promtool, tmp_path):
        path = tmp_path / "broken.yaml"
        rule = {"record": "dashboard:broken", "expr": "sum by (le (rate(scheduler_fires_total[1m]))"}
        path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
        assert run(promtool, "check", "rules", str(path), cwd=tmp_path).returncode != 0
