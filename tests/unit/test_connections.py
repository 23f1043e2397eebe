"""The connection strings the service builds: a writable primary, keepalives, nothing PgBouncer refuses.

Connecting to real servers: tests/integration/test_connections.py.
"""

from __future__ import annotations

from typing import Any

import psycopg

from scheduler.db.connections import conninfo_for


def _params(conninfo: str) -> dict[str, Any]:
    return psycopg.conninfo.conninfo_to_dict(conninfo)


class TestConnectionStrings:
    """What the service adds to the URL it is given, and what it never sends."""

    def test_a_url_without_session_attributes_asks_for_a_writable_primary(self):
        params = _params(conninfo_for("postgresql://db1:5432,db2:5432/app", "scheduler-api"))
        assert params["target_session_attrs"] == "read-write"
        assert params["host"] == "db1,db2"
        assert params["application_name"] == "scheduler-api"

    def test_what_the_url_sets_itself_is_left_alone(self):
        url = "postgresql://db/app?target_session_attrs=any&keepalives_idle=60&connect_timeout=7"
        params = _params(conninfo_for(url, "scheduler-api", connect_timeout=2))
        assert params["target_session_attrs"] == "any"
        assert params["keepalives_idle"] == "60"
        assert params["connect_timeout"] == "7"

    def test_no_startup_options_are_sent_since_pgbouncer_refuses_them(self):
        params = _params(conninfo_for("postgresql://db/app", "scheduler-runner"))
        assert "options" not in params

    def test_a_silent_server_is_noticed_by_keepalives_and_a_send_timeout(self):
        params = _params(conninfo_for("postgresql://db/app", "scheduler-runner"))
        assert params["keepalives"] == "1"
        assert int(params["tcp_user_timeout"]) > 0
