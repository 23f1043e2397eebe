"""The test suite; `make test` runs it against a real PostgreSQL."""
