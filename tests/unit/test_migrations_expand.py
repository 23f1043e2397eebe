"""Migrations after the previous release only expand the schema, so its processes keep working beside ours.

A rolling upgrade migrates first and then replaces the API and the runners one at a time: for a
while the previous release's code runs against the new schema. That holds only if every migration
since that release adds (tables, columns with defaults or nullable, indexes, enum values, functions)
and changes nothing the old code reads or writes. Removing, renaming or tightening belongs to a
later release, once no process of the older one is left: such a migration says so in a comment
line `-- contract: <why the previous release no longer needs what it changes>`.

The previous release is the commit in tests/upgrade_from.txt; its migration files are read with
`git show`. Without that commit (a shallow clone, an unpacked sdist) these tests skip, and fail
when CI=true, where a full clone is expected.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UPGRADE_FROM = ROOT / "tests" / "upgrade_from.txt"
MIGRATIONS = ROOT / "sql" / "migrations"
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
CONTRACT_MARK = re.compile(r"^--[ \t]*contract:[ \t]*(\S.*)$", re.MULTILINE)


# ------------------------------------------------------------------------ the previous release


def previous_release() -> str:
    """The commit named in tests/upgrade_from.txt (the first line that is not a comment)."""
    for line in UPGRADE_FROM.read_text().splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            return text
    raise AssertionError(f"{UPGRADE_FROM} names no commit")


def require_release(commit: str) -> None:
    """Skip (or fail, when CI=true) unless this checkout holds ``commit``."""
    try:
        found = subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        present = found.returncode == 0
    except FileNotFoundError:
        present = False
    if present:
        return
    message = (
        f"the previous release {commit} (tests/upgrade_from.txt) is not in this checkout: "
        "fetch the full history (git fetch --unshallow) to run the upgrade checks"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true makes this a failure")
    pytest.skip(message)


def git(*args: str) -> str:
    """Run a read-only git command in the checkout; return its output."""
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True, text=True).stdout


def released_migrations(commit: str) -> dict[str, str]:
    """The migration files of ``commit``: file name -> text."""
    names = git("ls-tree", "--name-only", f"{commit}:sql/migrations").split()
    return {name: git("show", f"{commit}:sql/migrations/{name}") for name in names if _FILE.match(name)}


# ----------------------------------------------------------------------------- the checker

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"(?:{_IDENT}\.)?({_IDENT})"


def statements(text: str) -> list[str]:
    """The statements of a migration, with comments gone and literals and bodies blanked.

    Strings and dollar-quoted bodies are replaced by `''`, so that a `DROP TABLE` inside a function
    body (the retention function builds one) or a quoted word is not read as a statement of the file.
    """
    out: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            current.append(" ")
        elif char == "'":
            end = i + 1
            while True:
                end = text.find("'", end)
                if end < 0 or not text.startswith("''", end):
                    break
                end += 2
            i = len(text) if end < 0 else end + 1
            current.append("''")
        elif char == "$" and (match := _DOLLAR.match(text, i)):
            end = text.find(match.group(0), match.end())
            i = len(text) if end < 0 else end + len(match.group(0))
            current.append("''")
        elif char == ";":
            out.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    out.append("".join(current))
    return [" ".join(statement.split()) for statement in out if statement.strip()]


def _name(raw: str) -> str:
    return raw[1:-1] if raw.startswith('"') else raw.lower()


def _top_level_parts(text: str) -> list[str]:
    """Split an ALTER TABLE's actions at the commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


_CREATED = re.compile(
    rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+)?(?:UNIQUE\s+)?"
    rf"(TABLE|INDEX|TYPE|FUNCTION|PROCEDURE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TRIGGER|DOMAIN)\s+"
    rf"(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}",
    re.IGNORECASE,
)
_UNIQUE_INDEX = re.compile(rf"^CREATE\s+UNIQUE\s+INDEX\s+.*?\s+ON\s+(?:ONLY\s+)?{_QUALIFIED}", re.IGNORECASE)
_DROP = re.compile(
    rf"^DROP\s+(TABLE|INDEX|TYPE|FUNCTION|PROCEDURE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TRIGGER|DOMAIN)\s+"
    rf"(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?{_QUALIFIED}",
    re.IGNORECASE,
)
_ALTER_TABLE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}\s+(.*)$", re.IGNORECASE
)
_ALTER_TYPE = re.compile(rf"^ALTER\s+TYPE\s+{_QUALIFIED}\s+(.*)$", re.IGNORECASE)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{_QUALIFIED}", re.IGNORECASE)
_RENAME = re.compile(r"^ALTER\s+\w+(?:\s+\w+)?\s+.*\bRENAME\b", re.IGNORECASE)

# What one action of an ALTER TABLE on a table the previous release has does to it; the first
# pattern that matches the action decides. Anything else it may do (add a nullable column, or one
# with a default; set a default; storage parameters) leaves the old code's statements working.
_ACTION_RULES = [
    (
        r"^ADD\s+(?:CONSTRAINT|CHECK|UNIQUE|PRIMARY\s+KEY|FOREIGN\s+KEY|EXCLUDE)\b",
        "adds a constraint to {table}: it may refuse rows the previous release writes",
    ),
    (
        r"^ADD\b(?!.*\b(?:DEFAULT|GENERATED)\b).*\bNOT\s+NULL\b",
        "adds a NOT NULL column without a default to {table}: the previous release's inserts fail",
    ),
    (r"^DROP\s+CONSTRAINT\b", "drops a constraint of {table} that the previous release may rely on"),
    (r"^DROP\b", "drops a column of {table} that the previous release reads or writes"),
    (r"^RENAME\b", "renames in {table}: the previous release uses the old name"),
    (r"^ALTER\b.*\bTYPE\b", "changes a column type of {table} under the previous release"),
    (
        r"^ALTER\b.*\bSET\s+NOT\s+NULL\b",
        "makes a column of {table} NOT NULL: the previous release may write NULL",
    ),
    (
        r"^ALTER\b.*\bDROP\s+DEFAULT\b",
        "drops a column default of {table}: the previous release's inserts need it",
    ),
]


@dataclass
class Schema:
    """What the migrations after the release created: anything else existed before, for all we know."""

    new_objects: set[str]

    def is_new(self, raw: str) -> bool:
        return _name(raw) in self.new_objects


def _on_create(statement: str, schema: Schema) -> list[str] | None:
    if not (created := _CREATED.match(statement)):
        return None
    found: list[str] = []
    if (unique := _UNIQUE_INDEX.match(statement)) and not schema.is_new(unique.group(1)):
        found.append(
            f"a unique index on {_name(unique.group(1))}: it may refuse rows the previous release writes"
        )
    schema.new_objects.add(_name(created.group(2)))
    return found


def _on_drop(statement: str, schema: Schema) -> list[str] | None:
    if not (dropped := _DROP.match(statement)):
        return None
    if schema.is_new(dropped.group(2)):
        return []
    return [f"drops {dropped.group(1).lower()} {_name(dropped.group(2))}, which the previous release may use"]


def _on_alter_table(statement: str, schema: Schema) -> list[str] | None:
    if not (altered := _ALTER_TABLE.match(statement)):
        return None
    if schema.is_new(altered.group(1)):
        return []
    table = _name(altered.group(1))
    found: list[str] = []
    for action in _top_level_parts(altered.group(2)):
        for pattern, reason in _ACTION_RULES:
            if re.search(pattern, action, re.IGNORECASE):
                found.append(reason.format(table=table))
                break
    return found


def _on_alter_type(statement: str, schema: Schema) -> list[str] | None:
    if not (altered := _ALTER_TYPE.match(statement)):
        return None
    if schema.is_new(altered.group(1)):
        return []
    name = _name(altered.group(1))
    if altered.group(2).upper().startswith("ADD VALUE"):
        return [
            (
                f"adds a value to enum {name}: the previous release reads it into a closed enum "
                "and fails on a row that holds the new value"
            )
        ]
    return [f"alters type {name} under the previous release"]


def _on_truncate(statement: str, schema: Schema) -> list[str] | None:
    if not (truncated := _TRUNCATE.match(statement)):
        return None
    return [] if schema.is_new(truncated.group(1)) else [f"empties {_name(truncated.group(1))}"]


def _on_rename(statement: str, _: Schema) -> list[str] | None:
    return ["renames an object the previous release may use"] if _RENAME.match(statement) else None


_HANDLERS = (_on_create, _on_drop, _on_alter_table, _on_alter_type, _on_truncate, _on_rename)


def violations(statement: str, schema: Schema) -> list[str]:
    """Why ``statement`` would break processes of the previous release; records what it creates."""
    for handler in _HANDLERS:
        found = handler(statement, schema)
        if found is not None:
            return found
    return []


def migration_violations(text: str, schema: Schema) -> list[str]:
    """Every reason a migration's statements break the previous release, each with its statement."""
    found: list[str] = []
    for statement in statements(text):
        found.extend(f"{reason} ({statement[:120]})" for reason in violations(statement, schema))
    return found


# ---------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def release() -> dict[str, str]:
    commit = previous_release()
    require_release(commit)
    return released_migrations(commit)


class TestMigrationsSinceTheRelease:
    """Each migration after the previous release is additive unless it says it is a contract step."""

    def test_the_released_migrations_are_shipped_unchanged(self, release):
        assert release, "the previous release has no migrations"
        for name, text in release.items():
            shipped = MIGRATIONS / name
            assert shipped.is_file(), f"{name} was in the previous release and is gone: a version is forever"
            assert shipped.read_text() == text, f"{name} was edited after its release: write a new migration"

    def test_new_migrations_come_after_the_released_ones(self, release):
        last = max(int(name[:4]) for name in release)
        new = [path.name for path in MIGRATIONS.glob("*.sql") if path.name not in release]
        assert all(int(name[:4]) > last for name in new), f"{new} must be numbered above {last:04d}"

    def test_every_new_migration_only_expands(self, release):
        schema = Schema(new_objects=set())
        broken: dict[str, list[str]] = {}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in release:
                continue
            text = path.read_text()
            found = migration_violations(text, schema)
            if found and not CONTRACT_MARK.search(text):
                broken[path.name] = found
        assert not broken, (
            "these migrations would break the previous release's processes during a rolling upgrade "
            "(ship the change in a later release, or mark the file `-- contract: <reason>` when the "
            f"previous release no longer uses what it changes): {broken}"
        )


class TestTheChecker:
    """The checker catches what breaks old code and lets additive changes through."""

    @pytest.mark.parametrize(
        "migration",
        [
            "ALTER TABLE jobs DROP COLUMN pause_note;",
            "ALTER TABLE jobs DROP pause_note;",
            "ALTER TABLE jobs RENAME COLUMN pause_note TO note;",
            "ALTER TABLE jobs RENAME TO tasks;",
            "ALTER TABLE jobs ALTER COLUMN description TYPE varchar(100);",
            "ALTER TABLE jobs ALTER COLUMN pause_note SET NOT NULL;",
            "ALTER TABLE jobs ALTER description DROP DEFAULT;",
            "ALTER TABLE jobs ADD COLUMN owner text NOT NULL;",
            "ALTER TABLE jobs ADD COLUMN a int DEFAULT 0, ADD COLUMN owner text NOT NULL;",
            "ALTER TABLE ONLY jobs ADD CONSTRAINT jobs_owner_check CHECK (length(name) < 10);",
            "ALTER TABLE jobs ADD CHECK (length(name) < 10);",
            "ALTER TABLE runs DROP CONSTRAINT runs_slot_key;",
            "DROP TABLE idempotency_keys;",
            "DROP INDEX IF EXISTS jobs_due_idx;",
            "DROP FUNCTION run_status_unfinished(run_status);",
            "ALTER TYPE run_status ADD VALUE 'paused';",
            "ALTER TYPE run_status RENAME VALUE 'lost' TO 'vanished';",
            "CREATE UNIQUE INDEX jobs_label_key ON jobs (namespace, (labels->>'id'));",
            "TRUNCATE idempotency_keys;",
            "ALTER INDEX jobs_due_idx RENAME TO jobs_next_idx;",
            '-- a comment\nALTER TABLE "jobs" DROP COLUMN "pause_note";',
        ],
    )
    def test_breaking_statements_are_found(self, migration):
        assert migration_violations(migration, Schema(new_objects=set()))

    @pytest.mark.parametrize(
        "migration",
        [
            (
                "ALTER TABLE jobs ADD COLUMN schedules jsonb NOT NULL DEFAULT '[]'::jsonb\n"
                "    CHECK (jsonb_typeof(schedules) = 'array' AND jsonb_array_length(schedules) <= 20);"
            ),
            "ALTER TABLE jobs ADD COLUMN exclusions jsonb CHECK (exclusions IS NULL);",
            "ALTER TABLE jobs ADD COLUMN n integer GENERATED ALWAYS AS (timeout_s * 2) STORED NOT NULL;",
            (
                "CREATE TABLE notes (id uuid PRIMARY KEY, body text NOT NULL);\n"
                "ALTER TABLE notes ADD CONSTRAINT notes_body CHECK (body <> '');\n"
                "ALTER TABLE notes DROP COLUMN body;\nDROP TABLE notes;"
            ),
            "CREATE INDEX jobs_failing_idx ON jobs (namespace) WHERE consecutive_failures > 0;",
            "CREATE TYPE notice_kind AS ENUM ('failing');\nALTER TYPE notice_kind ADD VALUE 'recovered';",
            (
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
                "BEGIN EXECUTE 'DROP TABLE jobs'; ALTER TABLE jobs DROP COLUMN x; RETURN 1; END $$;"
            ),
            "UPDATE jobs SET description = 'it''s; DROP TABLE jobs' WHERE false;",
            "ALTER TABLE jobs ALTER COLUMN description SET DEFAULT 'x';",
            "/* DROP TABLE jobs; */ ALTER TABLE jobs SET (fillfactor = 70);",
        ],
    )
    def test_additive_statements_pass(self, migration):
        assert migration_violations(migration, Schema(new_objects=set())) == []

    def test_a_contract_step_is_recognised_by_its_mark(self):
        text = "-- contract: 0009 moved the notes to notes_v2; the previous release reads only those\n"
        assert CONTRACT_MARK.search(text + "ALTER TABLE jobs DROP COLUMN pause_note;")
        assert not CONTRACT_MARK.search("-- contract:\nALTER TABLE jobs DROP COLUMN pause_note;")

    def test_the_released_migrations_pass_one_after_another(self, release):
        # Every release so far only added: read in order from an empty schema, the released files
        # raise nothing (no false alarm on their function bodies, backfills and locks), and the
        # tables they made are known as theirs.
        schema = Schema(new_objects=set())
        found = {name: migration_violations(release[name], schema) for name in sorted(release)}
        assert found == {name: [] for name in sorted(release)}
        assert {"jobs", "runs", "namespaces", "api_keys"} <= schema.new_objects
