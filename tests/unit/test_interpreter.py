"""visionops.core.interpreter: the garbage collector's thresholds of the pipeline's processes."""

from __future__ import annotations

import gc
import logging

import pytest

from visionops.core.interpreter import ENV, THRESHOLD, gc_threshold_from, tune_gc


@pytest.fixture()
def python_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's own
    yield
    gc.set_threshold(*before)


def test_the_default_raises_every_generation(python_thresholds) -> None:
    assert tune_gc({}) == THRESHOLD == gc.get_threshold()
    assert all(t > d for t, d in zip(THRESHOLD, (700, 10, 10), strict=True))


def test_default_leaves_python_own_and_three_integers_are_taken(python_thresholds) -> None:
    assert tune_gc({ENV: "default"}) == (700, 10, 10)
    assert tune_gc({ENV: " 5000, 15,12 "}) == (5000, 15, 12)


def test_a_threshold_already_higher_is_kept(python_thresholds) -> None:
    gc.set_threshold(50_000, 5, 100)
    assert tune_gc({}) == (50_000, 20, 100)


@pytest.mark.parametrize("value", ["fast", "1,2", "1,2,3,4", "0,10,10", "-1,10,10", "1.5,2,3"])
def test_a_malformed_value_is_named_and_changes_nothing(python_thresholds, value, caplog) -> None:
    with pytest.raises(ValueError, match=rf"{ENV}={value!r}: expected 'default' or three"):
        gc_threshold_from({ENV: value})
    with caplog.at_level(logging.WARNING, logger="visionops"):
        assert tune_gc({ENV: value}) == (700, 10, 10)
    assert f"{ENV}={value!r}" in caplog.text
