"""Persistence: connections, the named queries of sql/, the typed store over them, migrations."""
