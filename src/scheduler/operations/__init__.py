"""The operations on jobs and runs, written once for every way in: the API, the console, the CLI, the runner.

Each operation runs in the caller's transaction on the caller's connection, takes the time it acts
at as ``now`` (it never reads a clock), and raises the errors of `operations.errors`, which each
caller translates for its own audience: the API into RFC 9457 problems, the console into pages.
"""
