"""The embedded PostgreSQL (the `pgserver` wheel) used when no SCHEDULER_DATABASE_URL is given."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any


class EmbeddedUnavailableError(RuntimeError):
    """The pgserver wheel is not installed."""


def start(data_dir: Path, *, keep_running: bool = False) -> tuple[str, Any]:
    """Start (or join) a PostgreSQL server whose data lives in ``data_dir``; return (url, handle).

    The server stops when the last process holding a handle exits, unless ``keep_running``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # noqa: PLC0415 - optional dependency, only needed here
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "SCHEDULER_DATABASE_URL is not set and the embedded server is not installed: "
            "pip install 'pg-scheduler[embedded]' or point SCHEDULER_DATABASE_URL at PostgreSQL"
        ) from exc
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode=None if keep_running else "stop"
        )
    return str(server.get_uri()), server


def stop(server: Any) -> None:
    """Stop the server now (instead of at interpreter exit)."""
    server.cleanup()
