"""Tracking helpers that need no store. (The run layout on a real store: tests/integration/test_tracking_runs.py.)"""

from __future__ import annotations

from visionops.core import tracking


def test_flatten_nested_config():
    assert tracking.flatten("", {"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": 3,
    }
