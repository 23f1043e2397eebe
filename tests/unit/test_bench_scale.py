"""bench.scale's plan check passes each hot query exactly the parameters the query reads.

The bench is not run by `make test`; a query that gains or renames a parameter would otherwise
break it unseen until the next `make bench` (it once failed on `status` renamed `statuses`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

from bench.scale import plan_cases

from scheduler.db.queries import q

_PLACEHOLDER = re.compile(rb"%\((\w+)\)[sb]")


def test_every_plan_case_names_exactly_the_parameters_of_its_query() -> None:
    slot = datetime(2026, 12, 4, tzinfo=UTC)
    run = (UUID(int=1), slot, 1)
    cases = plan_cases(busy=UUID(int=2), deep_after="job-9", deep_run=run, middle_run=run)
    assert {name for name, *_ in cases} == {"job_claim_due", "job_list", "run_list_for_job", "run_get"}
    for name, title, _index, params in cases:
        wanted = {found.decode() for found in _PLACEHOLDER.findall(q(name))}
        assert set(params) == wanted, f"{name} ({title})"
