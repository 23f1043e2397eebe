"""A body becomes text any database column takes, whatever bytes a target sent.

The hostile targets themselves, on real sockets: tests/integration/test_hostile_targets.py.
"""

from __future__ import annotations

from scheduler.runner.actions import OUTPUT_LIMIT, output_text


class TestOutputText:
    """A body becomes text any database column takes: UTF-8, invalid bytes replaced, NUL dropped."""

    def test_valid_utf8_is_kept_as_is(self):
        assert output_text("héllo ✓".encode()) == "héllo ✓"

    def test_invalid_bytes_become_replacement_characters(self):
        assert output_text(b"a\xffb\xc3") == "a\ufffdb\ufffd"

    def test_nul_is_dropped(self):
        assert output_text(b"a\x00b\x00") == "ab"

    def test_a_character_cut_by_the_cap_is_dropped_not_replaced(self):
        raw = ("x" * (OUTPUT_LIMIT - 1) + "é").encode()[:OUTPUT_LIMIT]
        assert output_text(raw, truncated=True) == "x" * (OUTPUT_LIMIT - 1)
        assert output_text(raw, truncated=False) == "x" * (OUTPUT_LIMIT - 1) + "\ufffd"
