"""The per-fire bookkeeping a claim does in bulk keeps the meaning of doing it one by one."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Histogram

from scheduler import ids
from scheduler.domain import misfire, overlap
from scheduler.domain.models import Misfire, MisfirePolicy, OverlapPolicy, RunStatus, RunTrigger
from scheduler.domain.schedule import Timing
from scheduler.ids import uuid7, uuid7_time
from scheduler.metrics import LATENESS_BUCKETS, observe_many
from scheduler.operations import fires


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


class TestObserveMany:
    """Observing a claim's values in one pass gives the samples of observing them one by one."""

    def test_observe_many_matches_observe_one_by_one(self) -> None:
        amounts = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 2.5, 299.9, 300.0, 301.0, 1e9, 0.0]
        one = Histogram("one", "one by one", buckets=LATENESS_BUCKETS, registry=CollectorRegistry())
        many = Histogram("one", "one by one", buckets=LATENESS_BUCKETS, registry=CollectorRegistry())
        for amount in amounts:
            one.observe(amount)
        observe_many(many, amounts)
        assert _samples(many) == _samples(one)

    def test_observe_many_of_nothing_changes_nothing(self) -> None:
        empty = Histogram("empty", "nothing", registry=CollectorRegistry())
        before = _samples(empty)
        observe_many(empty, [])
        assert _samples(empty) == before


class TestUuid7:
    """Run ids stay valid, distinct and time-ordered however they are made."""

    def test_ids_carry_their_millisecond_and_version(self) -> None:
        at = datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=UTC)
        made = uuid7(at)
        assert made.version == 7
        assert made.variant == uuid.RFC_4122
        assert uuid7_time(made) == at.replace(microsecond=999_000)

    def test_a_zone_other_than_utc_gives_the_same_instant(self) -> None:
        at = datetime(2026, 12, 3, 15, 0, 0, 1_000, tzinfo=ZoneInfo("Etc/UTC"))
        assert uuid7_time(uuid7(at)) == at

    def test_times_before_1970_floor_to_the_millisecond_below(self) -> None:
        at = datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)
        # -0.5 ms floors to -1 ms, which the 48-bit field holds as its two's complement.
        assert uuid7(at).int >> 80 == (-1) & 0xFFFF_FFFF_FFFF

    def test_ids_of_one_instant_are_all_distinct(self) -> None:
        at = datetime(2026, 12, 3, tzinfo=UTC)
        made = {uuid7(at) for _ in range(3 * ids._BATCH + 7)}
        assert len(made) == 3 * ids._BATCH + 7

    def test_a_forked_child_does_not_reuse_its_parents_ids(self) -> None:
        uuid7()  # the parent holds unused random bits now
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.write(write, uuid7(datetime(2026, 1, 1, tzinfo=UTC)).bytes)
            os._exit(0)
        os.waitpid(child, 0)
        theirs = uuid.UUID(bytes=os.read(read, 16))
        os.close(read)
        os.close(write)
        ours = uuid7(datetime(2026, 1, 1, tzinfo=UTC))
        assert theirs != ours


class TestDecisionsWithoutDatabase:
    """Jobs whose fires need no database step are decided as `decide_fires` would decide them."""

    def test_only_queue_and_replace_with_unfinished_runs_ask_the_database(self) -> None:
        asks = {
            (policy, active)
            for policy in OverlapPolicy
            for active in (0, 1, 3)
            if fires.needs_database(policy, active)
        }
        assert asks == {
            (OverlapPolicy.QUEUE, 1),
            (OverlapPolicy.QUEUE, 3),
            (OverlapPolicy.REPLACE, 1),
            (OverlapPolicy.REPLACE, 3),
        }

    def test_recorded_rows_are_what_each_decision_means(self) -> None:
        started = overlap.recorded_as(overlap.Decision.START, OverlapPolicy.SKIP, started=RunStatus.RUNNING)
        assert started == (RunStatus.RUNNING, False, None)
        skipped = overlap.recorded_as(overlap.Decision.SKIP, OverlapPolicy.QUEUE, started=RunStatus.RUNNING)
        assert skipped == (RunStatus.SKIPPED, False, overlap.SKIP_REASON.format(policy=OverlapPolicy.QUEUE))
        queued = overlap.recorded_as(overlap.Decision.QUEUE, OverlapPolicy.QUEUE, started=RunStatus.SUCCEEDED)
        assert queued == (RunStatus.PENDING, True, None)
        replaced = overlap.recorded_as(
            overlap.Decision.REPLACE, OverlapPolicy.REPLACE, started=RunStatus.SUCCEEDED
        )
        assert replaced == (RunStatus.SUCCEEDED, False, None)


class TestGraces:
    """Graces kept per grace_s plan each job by its own."""

    def test_a_slot_past_one_grace_and_inside_another_is_planned_by_each_own(self) -> None:
        timing = Timing("@every 1s", "UTC", datetime(2026, 1, 1, tzinfo=UTC))
        slot = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
        now = slot + timedelta(seconds=5, microseconds=1)
        tight = misfire.plan(timing, Misfire(policy=MisfirePolicy.SKIP, grace_s=5, window_s=60), slot, now)
        loose = misfire.plan(timing, Misfire(policy=MisfirePolicy.SKIP, grace_s=6, window_s=60), slot, now)
        assert slot not in [fire.slot for fire in tight.fires]
        assert (loose.fires[0].slot, loose.fires[0].trigger) == (slot, RunTrigger.SCHEDULE)
