"""The garbage collector's settings for the service's long-lived processes: runners and API workers."""

from __future__ import annotations

import gc

# CPython's default is (700, 10, 10). A young collection runs when the tracked objects allocated
# minus those freed reach the first figure. Each second's burst of calls (or of requests) keeps tens
# of thousands of objects alive for a few milliseconds: at 700 they survive into the older
# generations, and the full collections that follow walk every call in flight (a third of a busy
# runner's CPU in bench.http_fires profiles). At 100,000 a collection runs when that many objects
# accumulated (tens of MB at most), and almost never under a steady load, which refcounting frees
# as it ends.
GC_THRESHOLDS = (100_000, 20, 10)


def tune() -> None:
    """Set `GC_THRESHOLDS` and exempt what startup built from every later collection.

    The modules, classes and settings loaded so far live as long as the process: frozen, no
    collection walks them again. Call it once the process has finished starting.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
