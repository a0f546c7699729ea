"""visionops.gate: absolute thresholds, no-regression against the champion, reasons a person can act on."""

from __future__ import annotations

import json
import math

import pytest

from visionops.config import GateConfig
from visionops.gate import GateDecision, decide

CFG = GateConfig(min_accuracy=0.90, min_macro_f1=0.85, max_regression=0.005)


def test_passes_above_thresholds_without_champion() -> None:
    decision = decide({"accuracy": 0.95, "macro_f1": 0.94, "n": 100}, None, CFG)
    assert decision.passed is True
    assert decision.reasons == [
        "accuracy 0.9500 >= required 0.9000",
        "macro_f1 0.9400 >= required 0.8500",
        "no champion in service: nothing to compare against",
    ]
    assert decision.metrics == {"accuracy": 0.95, "macro_f1": 0.94}
    assert decision.comparison == {}
    assert decision.summary().startswith("gate PASSED: accuracy 0.9500 >= required 0.9000; ")


def test_exactly_at_threshold_passes() -> None:
    assert decide({"accuracy": 0.90, "macro_f1": 0.85}, None, CFG).passed is True


def test_fails_below_min_accuracy_with_reason() -> None:
    decision = decide({"accuracy": 0.87, "macro_f1": 0.95}, None, CFG)
    assert decision.passed is False
    assert "accuracy 0.8700 < required 0.9000" in decision.reasons
    assert "macro_f1 0.9500 >= required 0.8500" in decision.reasons
    assert decision.summary().startswith("gate REJECTED: accuracy 0.8700 < required 0.9000")


def test_fails_below_min_macro_f1() -> None:
    decision = decide({"accuracy": 0.99, "macro_f1": 0.80}, None, CFG)
    assert decision.passed is False
    assert "macro_f1 0.8000 < required 0.8500" in decision.reasons


def test_regression_beyond_margin_against_champion_fails() -> None:
    champion = {"version": "3", "accuracy": 0.97, "macro_f1": 0.96}
    decision = decide({"accuracy": 0.95, "macro_f1": 0.958}, champion, CFG)
    assert decision.passed is False
    regression = [r for r in decision.reasons if "below champion" in r]
    assert regression == [
        "accuracy 0.9500 is 2.00 points below champion v3 (0.9700); allowed drop is 0.50 points"
    ]
    # macro_f1 dropped 0.2 points: within the margin, reported but not failing.
    assert any(r.startswith("macro_f1 0.9580 vs champion v3 0.9600 (-0.20 points") for r in decision.reasons)
    assert decision.comparison["champion_version"] == "3"
    assert decision.comparison["max_regression"] == 0.005
    assert decision.comparison["accuracy"]["delta"] == pytest.approx(-0.02)
    assert decision.comparison["accuracy"]["champion"] == 0.97


def test_within_margin_against_champion_passes() -> None:
    champion = {"version": "7", "accuracy": 0.95, "macro_f1": 0.95}
    decision = decide({"accuracy": 0.947, "macro_f1": 0.96}, champion, CFG)
    assert decision.passed is True
    assert "accuracy 0.9470 vs champion v7 0.9500 (-0.30 points, allowed drop 0.50)" in decision.reasons
    assert "macro_f1 0.9600 vs champion v7 0.9500 (+1.00 points, allowed drop 0.50)" in decision.reasons


def test_better_than_champion_but_below_absolute_threshold_fails() -> None:
    champion = {"version": "1", "accuracy": 0.80, "macro_f1": 0.80}
    decision = decide({"accuracy": 0.85, "macro_f1": 0.90}, champion, CFG)
    assert decision.passed is False
    assert "accuracy 0.8500 < required 0.9000" in decision.reasons


def test_drop_of_exactly_the_allowed_margin_passes() -> None:
    champion = {"version": "2", "accuracy": 191 / 200, "macro_f1": 0.95}
    decision = decide({"accuracy": 190 / 200, "macro_f1": 0.95}, champion, CFG)
    assert decision.passed is True, decision.reasons


def test_nan_metric_fails_the_gate() -> None:
    decision = decide({"accuracy": math.nan, "macro_f1": math.nan}, None, CFG)
    assert decision.passed is False


def test_to_dict_from_dict_round_trip_through_json() -> None:
    champion = {"version": "4", "accuracy": 0.96, "macro_f1": 0.95}
    decision = decide({"accuracy": 0.955, "macro_f1": 0.951}, champion, CFG)
    data = json.loads(json.dumps(decision.to_dict()))
    assert set(data) == {"passed", "reasons", "metrics", "comparison"}
    restored = GateDecision.from_dict(data)
    assert restored == decision
    assert restored.summary() == decision.summary()
