"""The README and docs/ stand alone: links resolve inside the repository, and what they say runs.

The README's session blocks themselves run against a real `make run` in `.ci/readme-cli` (called by
`.ci/smoke-make-run`); here are the parts that run nothing: links, the blocks' shape, the packaging.
The admin commands finding `make run`'s database and `scheduler dev` honouring SCHEDULER_HOST/PORT
run as processes in tests/acceptance/test_readme.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+\s+(.*)$", re.MULTILINE)


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a Markdown page's headings."""
    found = set()
    for heading in _HEADING.findall(text):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def relative_links(page: Path) -> list[str]:
    return [
        link
        for link in _LINK.findall(page.read_text())
        if not urlsplit(link).scheme and not link.startswith("mailto:")
    ]


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- readme-run -->\s*```sh\n(.*?)```\s*<!-- /readme-run -->", text, re.DOTALL)


class TestLinks:
    """Every relative link in README.md and docs/*.md names a file (and heading) in the repository."""

    @pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
    def test_every_relative_link_resolves(self, page):
        for link in relative_links(page):
            path, _, fragment = link.partition("#")
            target = (page.parent / unquote(path)).resolve() if path else page
            assert target.exists(), f"{page.name}: {link} points at nothing"
            assert ROOT in target.parents or target == ROOT, f"{page.name}: {link} leaves the repository"
            if fragment and target.suffix == ".md":
                assert fragment in anchors(target.read_text()), f"{page.name}: no heading for #{fragment}"

    def test_the_readme_links_each_doc(self):
        links = {link.partition("#")[0] for link in relative_links(ROOT / "README.md")}
        for doc in DOCS:
            assert f"docs/{doc.name}" in links, f"README.md does not link docs/{doc.name}"

    def test_no_page_points_at_the_internal_spec(self):
        for page in PAGES:
            assert "SPEC.md" not in page.read_text(), page.name
            assert "../shared" not in page.read_text(), page.name

    def test_the_docs_cover_what_users_need_of_the_contract(self):
        names = {doc.name for doc in DOCS}
        assert {
            "api.md",
            "schedules.md",
            "run-states.md",
            "guarantees.md",
            "configuration.md",
            "outbound.md",
            "limits.md",
            "operations.md",
        } <= names


class TestReadmeBlocks:
    """The blocks .ci/readme-cli runs are there, set what they use, and quote for zsh as well as bash."""

    def test_the_session_blocks_are_marked(self):
        blocks = readme_blocks()
        assert len(blocks) >= 4
        assert "ID=$(curl" in blocks[0]
        assert ".venv/bin/scheduler jobs create" in blocks[1]
        assert ".venv/bin/scheduler apply -f docs/examples/billing" in blocks[2]
        assert ".venv/bin/scheduler keys create" in blocks[3]

    def test_every_variable_a_block_uses_is_set_before(self):
        script = "\n".join(readme_blocks())
        for name in set(re.findall(r"\$\{?([A-Z][A-Z_]*)", script)):
            assert re.search(rf"^\s*{name}=", script, re.MULTILINE), f"${name} is used but never set"

    def test_urls_with_a_query_are_quoted(self):
        for block in readme_blocks():
            for word in re.findall(r"(?<![\"'])\bhttp://\S*\?\S*", block):
                pytest.fail(f"unquoted URL with '?' (zsh globs it): {word}")

    def test_the_cli_examples_use_the_virtualenvs_script(self):
        for block in readme_blocks()[1:]:
            for line in block.splitlines():
                if re.match(r"\s*(\w+=\$\()?scheduler ", line):
                    pytest.fail(f"calls `scheduler` without .venv/bin/: {line}")

    def test_the_cli_block_creates_names_the_curl_session_does_not(self):
        blocks = readme_blocks()
        curl_names = set(re.findall(r'"name": "([^"]+)"', blocks[0]))
        cli_names = set(re.findall(r"--name (\S+)", blocks[1]))
        assert cli_names
        assert not curl_names & cli_names

    def test_the_scripts_exist_and_are_wired(self):
        readme_cli = ROOT / ".ci" / "readme-cli"
        assert readme_cli.stat().st_mode & 0o111, ".ci/readme-cli is not executable"
        assert "bash .ci/readme-cli" in (ROOT / ".ci" / "smoke-make-run").read_text()


class TestPackaging:
    """The licence the package declares is in the repository, and the changelog has a release."""

    def test_the_license_file_is_the_mit_licence_pyproject_declares(self):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert project["license"] == "MIT"
        text = (ROOT / "LICENSE").read_text()
        assert text.startswith("MIT License")
        assert "WITHOUT WARRANTY OF ANY KIND" in text

    def test_the_changelog_has_unreleased_work_and_the_current_release(self):
        text = (ROOT / "CHANGELOG.md").read_text()
        sections = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
        assert sections[0] == ("Unreleased", "")
        released = [version for version, date in sections[1:] if date]
        assert released, "no released version"
        assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in released), released

    def test_a_released_version_lists_no_fixes_of_itself(self):
        text = (ROOT / "CHANGELOG.md").read_text()
        releases = re.split(r"^## ", text, flags=re.MULTILINE)
        first = [section for section in releases if re.match(r"\[[\d.]+\] - ", section)][-1]
        assert "### Fixed" not in first, "the first release cannot fix anything released before it"

    def test_tools_that_can_turn_make_test_red_are_pinned_exactly(self):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        test_extra = project["optional-dependencies"]["test"]
        pins = {re.split(r"[=<>!~\[ ;]", item, maxsplit=1)[0].lower(): item for item in test_extra}
        tools = (
            "ruff",
            "mypy",
            "schemathesis",
            "hypothesis",
            "openapi-python-client",
            "openapi-spec-validator",
        )
        for tool in tools:
            assert "==" in pins[tool], f"{tool} is not pinned exactly: {pins[tool]}"
