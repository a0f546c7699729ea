"""The promotion gate: a plain function that returns a decision with reasons a person can act on."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from visionops.config import GateConfig

COMPARED_METRICS = ("accuracy", "macro_f1")
# Metrics are ratios of counts: a drop of exactly the allowed margin must not fail on float noise.
_EPS = 1e-9


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    comparison: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        return cls(**data)

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "REJECTED"
        return f"gate {verdict}: " + "; ".join(self.reasons)


def decide(candidate: dict[str, float], champion: dict[str, Any] | None, cfg: GateConfig) -> GateDecision:
    """Apply the absolute thresholds, then the no-regression rule against the champion (same test split).

    ``champion`` is None when no model is in service; otherwise it holds the champion's metrics on
    this run's test split and its ``version``.
    """
    reasons: list[str] = []
    ok = True
    for metric, required in (("accuracy", cfg.min_accuracy), ("macro_f1", cfg.min_macro_f1)):
        value = candidate[metric]
        if not math.isfinite(value):
            ok = False
            reasons.append(f"{metric} is {value}: the evaluation produced no usable value")
        elif value < required - _EPS:
            ok = False
            reasons.append(f"{metric} {value:.4f} < required {required:.4f}")
        else:
            reasons.append(f"{metric} {value:.4f} >= required {required:.4f}")
    comparison: dict[str, Any] = {}
    if champion is None:
        reasons.append("no champion in service: nothing to compare against")
    else:
        comparison = {"champion_version": champion["version"], "max_regression": cfg.max_regression}
        for metric in COMPARED_METRICS:
            delta = candidate[metric] - champion[metric]
            comparison[metric] = {"candidate": candidate[metric], "champion": champion[metric], "delta": delta}
            points = 100 * delta
            if not math.isfinite(delta) or delta < -cfg.max_regression - _EPS:
                ok = False
                reasons.append(f"{metric} {candidate[metric]:.4f} is {-points:.2f} points below champion "
                               f"v{champion['version']} ({champion[metric]:.4f}); allowed drop is "
                               f"{100 * cfg.max_regression:.2f} points")
            else:
                reasons.append(f"{metric} {candidate[metric]:.4f} vs champion v{champion['version']} "
                               f"{champion[metric]:.4f} ({points:+.2f} points, allowed drop "
                               f"{100 * cfg.max_regression:.2f})")
    metrics = {k: float(candidate[k]) for k in COMPARED_METRICS}
    return GateDecision(passed=ok, reasons=reasons, metrics=metrics, comparison=comparison)
