"""A job scheduler service on PostgreSQL row locks."""

__version__ = "0.1.0"
