"""The HTTP API: Litestar routes over the store."""
