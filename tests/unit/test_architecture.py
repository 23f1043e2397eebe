"""Imports point one way, and the README's architecture tree names exactly the modules there are.

Every module under src/scheduler is parsed with `ast`, never imported, so a module that would fail
to import (or that imports lazily, inside a function) is checked all the same. Each import of ours
is resolved to the module it names and judged by the layer of the importing module:

    top-level modules (config, logs, metrics, ids)  <-  domain  <-  db  <-  operations
    <-  web (the HTTP plumbing the API and the console share)  <-  api, ui, runner, cli

A layer imports only layers to its left, and the four outer packages none of one another, except
for the few imports listed in EXCEPTIONS, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = next(parent for parent in Path(__file__).resolve().parents if (parent / "pyproject.toml").is_file())
SOURCE = ROOT / "src"
PACKAGE = SOURCE / "scheduler"
README = ROOT / "README.md"

TOP = "top-level"  # the layer of scheduler/*.py: settings, logging, metrics, ids
PACKAGES = ("domain", "db", "operations", "web", "api", "ui", "runner", "cli")
# What each layer may import besides itself. `domain` and `db` may use one top-level module only:
# `scheduler.ids` is pure (it makes ids from the clock and randomness it is given or reads).
ALLOWED: dict[str, frozenset[str]] = {
    TOP: frozenset(),
    "domain": frozenset({"scheduler.ids"}),
    "db": frozenset({"domain", "scheduler.ids"}),
    "operations": frozenset({"domain", "db", TOP}),
    "web": frozenset({"domain", "db", "operations", TOP}),
    "api": frozenset({"domain", "db", "operations", "web", TOP}),
    "ui": frozenset({"domain", "db", "operations", "web", TOP}),
    "runner": frozenset({"domain", "db", "operations", TOP}),
    "cli": frozenset({"domain", "db", "operations", TOP}),
}
# (importing module, imported module or package, why it may).
EXCEPTIONS = (
    ("scheduler.__main__", "scheduler.cli.main", "`python -m scheduler` is the command line"),
    ("scheduler.api.app", "scheduler.ui", "the API mounts the web console at /ui"),
    ("scheduler.cli.main", "scheduler.runner.service", "`scheduler runner` runs a runner in this process"),
)
# The runner's cycle (claim, execute, complete) and what it is built from; `service.py` wires the
# periodic services in `runner/services/` beside it, and they may lean on the cycle, not it on them.
RUNNER_CORE = ("loop", "completer", "signing", "supervise", "actions", "outbound")


def module_name(path: Path) -> str:
    """`src/scheduler/db/store/jobs.py` -> `scheduler.db.store.jobs`; a package is its __init__."""
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer a module of ours belongs to: its package under scheduler, or the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else TOP


def modules() -> dict[str, Path]:
    """Every module under src/scheduler, by name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import of ours in a module, wherever it stands (lazy ones included).

    `from scheduler.db import store` names `scheduler.db.store`; `from scheduler import ids` names
    `scheduler.ids`; relative imports are resolved against the module's package.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.extend((node.lineno, f"{origin}.{alias.name}") for alias in node.names)
    ours = {(line, _known(name)) for line, name in found if name.split(".")[0] == "scheduler"}
    return sorted(ours)


def _known(name: str) -> str:
    """The longest prefix of ``name`` that is a module of ours: `from m import f` names m.f, not a module."""
    known = MODULES
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


MODULES = modules()


def excepted(source: str, target: str) -> bool:
    """Whether an import is one of the listed exceptions."""
    return any(
        source == importer and (target == imported or target.startswith(imported + "."))
        for importer, imported, _ in EXCEPTIONS
    )


def violations() -> list[str]:
    """Each import that runs the wrong way, as `module (line): imports target`."""
    found: list[str] = []
    for source, path in MODULES.items():
        own = layer_of(source)
        for line, target in imports_of(source, path):
            other = layer_of(target)
            if other == own or excepted(source, target):
                continue
            if other in ALLOWED[own] or target in ALLOWED[own]:
                continue
            found.append(f"{source} (line {line}, {own} layer): imports {target} ({other} layer)")
    return found


class TestImportDirection:
    """Each layer imports only the layers beneath it; the exceptions are listed with their reasons."""

    def test_every_package_is_found(self):
        # A vacuous pass (a moved src/ tree, say) would check nothing.
        assert {layer_of(name) for name in MODULES} >= {TOP, "domain", "db", "api", "ui", "runner", "cli"}

    def test_the_checker_sees_from_imports_of_modules_and_of_names(self):
        names = dict(imports_of("scheduler.runner.loop", MODULES["scheduler.runner.loop"])).values()
        assert "scheduler.db.store" in names
        assert "scheduler.runner.completer" in names

    def test_no_import_runs_the_wrong_way(self):
        found = violations()
        assert not found, "imports against the layering (README, ## Architecture):\n" + "\n".join(found)

    @pytest.mark.parametrize(("importer", "imported", "reason"), EXCEPTIONS)
    def test_every_exception_is_still_needed(self, importer, imported, reason):
        """An exception no import uses any more is taken off the list, so the list stays short."""
        assert importer in MODULES, f"{importer} no longer exists ({reason})"
        targets = [target for _, target in imports_of(importer, MODULES[importer])]
        assert any(target == imported or target.startswith(imported + ".") for target in targets), (
            f"{importer} no longer imports {imported}: drop the exception ({reason})"
        )

    def test_the_runner_cycle_does_not_depend_on_its_services(self):
        found = [
            f"scheduler.runner.{name} (line {line}): imports {target}"
            for name in RUNNER_CORE
            if f"scheduler.runner.{name}" in MODULES
            for line, target in imports_of(f"scheduler.runner.{name}", MODULES[f"scheduler.runner.{name}"])
            if target.startswith("scheduler.runner.services")
        ]
        assert not found, "\n".join(found)


# ------------------------------------------------------------------------------- the README tree

PACKAGE_LINE = re.compile(r"^  (\S+/)\s")
MODULE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


def readme_tree(text: str) -> dict[str, set[str]]:
    """The README's architecture tree: each package (`""` for the top level) and the modules it lists."""
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    tree: dict[str, set[str]] = {}
    current: str | None = None
    for line in block.splitlines():
        heading = PACKAGE_LINE.match(line)
        if heading:
            current = heading.group(1).removesuffix("/").removeprefix(".")
            tree[current] = set()
        elif current is not None and line.split() and all(MODULE_WORD.match(word) for word in line.split()):
            tree[current].update(line.split())
    return tree


def source_tree() -> dict[str, set[str]]:
    """Each directory of src/scheduler holding modules, and its modules.

    `__init__.py` and `__main__.py` are left out, as the README leaves them out: every package has
    the first, and the second is named by the command that runs it.
    """
    tree: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            package = path.parent.relative_to(PACKAGE).as_posix().removeprefix(".")
            tree.setdefault(package, set()).add(path.name)
    return tree


class TestReadmeTree:
    """The README's tree of packages and modules is the source tree, so it cannot drift from it."""

    def test_the_tree_is_read(self):
        tree = readme_tree(README.read_text(encoding="utf-8"))
        assert "domain" in tree
        assert "schedule.py" in tree["domain"]

    def test_the_tree_names_every_package_and_module_there_is_and_no_other(self):
        listed, actual = readme_tree(README.read_text(encoding="utf-8")), source_tree()
        problems = [
            f"{package or './'}: missing from the README: "
            + " ".join(sorted(actual[package] - listed.get(package, set())))
            for package in sorted(actual)
            if actual[package] - listed.get(package, set())
        ] + [
            f"{package or './'}: in the README but not in src/scheduler: "
            + " ".join(sorted(listed[package] - actual.get(package, set())) or ["(the whole package)"])
            for package in sorted(listed)
            if package not in actual or listed[package] - actual[package]
        ]
        assert not problems, "README.md, ## Architecture, is out of date:\n" + "\n".join(problems)
