"""A job's JSON as the API sends it: its fields in the contract's order.

The shapes themselves are compared without a database in tests/unit/test_shapes.py.
"""

from __future__ import annotations


class TestJobJson:
    """The JSON of a job lists its fields in the contract's order."""

    async def test_a_created_job_is_sent_with_its_fields_in_order(self, client):
        response = await client.post(
            "/jobs", json={"name": "ordered", "schedule": "@every 1h", "action": {"type": "log"}}
        )
        assert response.status_code == 201
        assert list(response.json()) == [
            "id",
            "namespace",
            "name",
            "description",
            "schedule",
            "timezone",
            "start_at",
            "end_at",
            "action",
            "timeout_s",
            "retry",
            "misfire",
            "overlap",
            "paused",
            "labels",
            "next_run_at",
            "schedules",
            "exclusions",
            "notify",
            "last_run",
            "created_at",
            "updated_at",
            "version",
            "consecutive_failures",
            "failed_slots",
        ]
