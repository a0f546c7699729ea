"""visionops.core.progress: a line every few seconds of a long loop, and one at its end."""

from __future__ import annotations

import logging

import pytest

from visionops.core.progress import Progress


def test_a_line_at_most_every_interval_with_count_share_rate_and_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    progress = Progress("decode", 1000, every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="visionops.progress"):
        for _ in range(10):
            now[0] += 4.0  # 100 images every 4 s: a line at 12 s, 24 s and 36 s, none at the end
            progress.update(100)
        progress.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "decode: 300/1,000 images (30%), 25/s, about 28 s left",
        "decode: 600/1,000 images (60%), 25/s, about 16 s left",
        "decode: 900/1,000 images (90%), 25/s, about 4 s left",
        "decode: 1,000 images in 40.0 s (25/s)",
    ]


def test_a_short_loop_that_another_line_reports_stays_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    quiet = Progress("epoch 1/3", 64, every_s=10, clock=lambda: now[0], always=False)
    with caplog.at_level(logging.INFO, logger="visionops.progress"):
        now[0] += 2.0
        quiet.update(64)
        quiet.done()
    assert caplog.records == []
