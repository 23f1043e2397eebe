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

from scheduler.cli.devserver import banner, example_curl
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


def marked_block(marker: str) -> str:
    """The one sh block between `<!-- marker -->` and `<!-- /marker -->` in the README."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(rf"<!-- {marker} -->\s*```sh\n(.*?)```\s*<!-- /{marker} -->", text, re.DOTALL)
    assert len(found) == 1, f"expected one {marker} block, found {len(found)}"
    return str(found[0])


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
        assert "ID=$(curl -s -X PUT http://127.0.0.1:8000/jobs/by-name/" in blocks[0]
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
        assert "bash .ci/smoke-make-run" in (ROOT / ".ci" / "run").read_text()

    def test_ci_runs_every_block_twice_in_bash_and_in_zsh(self):
        script = (ROOT / ".ci" / "readme-cli").read_text()
        for shell in ("bash", "zsh"):
            assert f"run_in {shell} 1\n" in script
            assert f"run_in {shell} 2\n" in script
        assert "forget_readme_jobs" not in script, "the blocks must run again on what they left"
        assert "generated-client" in script


class TestRunTwice:
    """The README's commands can be run again as written: make run keeps its data across restarts."""

    def test_jobs_are_declared_by_name_not_posted(self):
        for block in [marked_block("create-job"), *readme_blocks()]:
            assert not re.search(r"-X POST \S*/jobs['\"]?\s", block), (
                f"POST /jobs answers 409 the second time:\n{block}"
            )

    def test_a_block_that_creates_with_the_cli_deletes_what_it_created(self):
        for block in readme_blocks():
            for name in re.findall(r"scheduler jobs create --name (\S+)", block):
                assert f"scheduler jobs delete {name}" in block, f"{name} would exist on the second run"

    def test_a_conditional_write_uses_the_version_just_read(self):
        curl_session = readme_blocks()[0]
        assert 'If-Match: \\"$VERSION\\"' in curl_session
        assert re.search(r"^VERSION=\$\(curl", curl_session, re.MULTILINE)

    def test_the_cli_tour_uses_no_stale_version(self):
        # `--if-match 1` holds on every run only because the tour creates the job afresh each time.
        tour = readme_blocks()[1]
        assert tour.index("jobs create --name nightly-export") < tour.index("--if-match 1")
        assert tour.rstrip().splitlines()[-1].startswith(".venv/bin/scheduler jobs delete nightly-export")


class TestFirstJob:
    """The first job is calm, the banner and the README show the same one, and HTTP jobs reach a receiver."""

    def test_the_first_job_fires_at_most_every_10_seconds(self):
        schedule = re.search(r'"schedule": "@every (\d+)([smhd])"', marked_block("create-job"))
        assert schedule is not None
        seconds = int(schedule[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[schedule[2]]
        assert seconds >= 10

    def test_the_banner_prints_the_readmes_first_job(self):
        assert marked_block("create-job").strip() == example_curl("127.0.0.1", 8000, auth=False)

    def test_the_http_jobs_call_the_example_receiver_the_readme_starts(self):
        text = (ROOT / "README.md").read_text()
        assert "python3 docs/examples/receiver.py" in text
        receiver = (ROOT / "docs" / "examples" / "receiver.py").read_text()
        assert "else 9000" in receiver
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)/hooks/", "\n".join(readme_blocks()))
        assert urls
        assert set(urls) == {"9000"}


class TestBanner:
    """`make run`'s banner names the console, the docs, the database, and how to sign in with auth on."""

    def test_with_auth_off_it_names_the_console_and_needs_no_sign_in(self):
        lines = banner(
            "127.0.0.1", 8000, "postgresql://postgres@/postgres?host=/x", embedded=True, auth=False
        )
        text = "\n".join(lines)
        assert (
            "  console:    http://127.0.0.1:8000/ui  (auth off: the 'default' namespace, no sign-in)" in lines
        )
        assert "  API docs:   http://127.0.0.1:8000/docs" in lines
        assert "  database:   postgresql://postgres@/postgres?host=/x" in lines
        assert example_curl("127.0.0.1", 8000, auth=False) in text
        assert "Bearer" not in text

    def test_with_auth_on_it_says_how_to_get_a_key_and_sends_it(self):
        lines = banner("192.0.2.1", 81, "postgresql://app:hunter2@db/scheduler", embedded=False, auth=True)
        text = "\n".join(lines)
        assert "console:    http://192.0.2.1:81/ui  (SCHEDULER_AUTH=required: sign in with an API key" in text
        assert "keys create --namespace default" in text
        assert 'curl -s -X PUT http://192.0.2.1:81/jobs/by-name/hello -H "Authorization: Bearer $KEY"' in text
        assert "hunter2" not in text


class TestGeneratedClient:
    """The generated-client block installs the generator it uses, pinned as the test extra pins it."""

    def test_it_installs_the_pinned_generator_before_using_it(self):
        block = marked_block("generated-client")
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        pin = next(
            item
            for item in project["optional-dependencies"]["test"]
            if item.startswith("openapi-python-client")
        )
        install = f".venv/bin/python -m pip install --quiet '{pin}'"
        assert block.startswith(install), block
        assert block.index(install) < block.index("openapi-python-client generate")


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
