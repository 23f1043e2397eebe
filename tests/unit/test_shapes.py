"""The job's and the run's shapes agree end to end: each wire shape is the stored one minus what stays inside.

JobOut and RunOut are spelled out field by field on purpose (they are the API's promise); these
tests keep them from drifting from the rows they are projected from.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

import msgspec

from scheduler.api.schemas import JobOut, RunOut
from scheduler.db import store
from scheduler.domain.models import Job, JobValues, Run

JOB_ONLY_INSIDE = {"anchor_at", "active_runs", "pause_note"}
RUN_ONLY_INSIDE = {"available_at", "created_at"}
RUN_READ_APART = {"request", "response_headers"}  # one run's, from store.run_exchange_get
SHOWN_AS_THEIR_OWN = {"schedules", "exclusions"}


def fields_of(cls: type[msgspec.Struct], leaving_out: set[str] | None = None) -> list[tuple[str, Any]]:
    return [(f.name, f.type) for f in msgspec.structs.fields(cls) if f.name not in (leaving_out or set())]


class TestWireShapesFollowTheRows:
    """Same names, same types, same order, minus the fields the API does not show."""

    def test_job_out_is_the_job_without_its_internal_fields(self):
        # The schedule entries and exclusions are shown in shapes of their own (every entry with
        # its id, the anchor left inside); the rest is the job's fields as they are.
        shown = [(name, kind) for name, kind in fields_of(JobOut) if name not in SHOWN_AS_THEIR_OWN]
        assert shown == fields_of(Job, JOB_ONLY_INSIDE | SHOWN_AS_THEIR_OWN)
        in_order = [name for name, _ in fields_of(JobOut)]
        assert in_order == [name for name, _ in fields_of(Job, JOB_ONLY_INSIDE)]

    def test_run_out_is_the_run_without_its_internal_fields_and_with_its_jobs_name(self):
        shown = fields_of(RunOut, RUN_READ_APART)
        assert shown[2][0] == "job_name"
        assert shown[:2] + shown[3:] == fields_of(Run, RUN_ONLY_INSIDE)

    def test_what_one_run_sent_is_shown_as_the_store_reads_it(self):
        shown = dict(fields_of(RunOut))
        for field in msgspec.structs.fields(store.RunExchange):
            stored = get_args(field.type)[0] if get_origin(field.type) is Annotated else field.type
            assert set(get_args(shown[field.name])) == {*get_args(stored), msgspec.UnsetType}

    def test_the_internal_fields_are_fields_of_the_rows(self):
        assert set(Job.__struct_fields__) >= JOB_ONLY_INSIDE
        assert set(Run.__struct_fields__) >= RUN_ONLY_INSIDE

    def test_a_job_is_its_values_followed_by_what_the_database_keeps(self):
        values = fields_of(JobValues)
        assert fields_of(Job)[: len(values)] == values
