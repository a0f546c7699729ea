"""The one comparison the gate makes between the candidate and another model on the same test
images, used for the champion in service and for the best simple baseline alike (see
``release.gate``): the paired evidence (McNemar's exact test on the images only one of the two gets
right, a paired bootstrap CI of the accuracy difference) and ``gate.policy`` applied to it, with
``gate.max_regression``, ``gate.non_inferiority_on`` and ``gate.alpha``.

No reason contains "; ": the run's tag joins the reasons with it and splits them back on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from visionops.core.config import GateConfig
from visionops.evaluation.paired import paired_statistics

COMPARED_METRICS = ("accuracy", "macro_f1")
# Metrics are ratios of counts: a drop of exactly the allowed margin must not fail on float noise.
EPS = 1e-9


@dataclass(frozen=True)
class Reference:
    """The model the candidate is compared with."""

    name: str  # how the reasons call it: "champion v3", "best simple baseline pca_svm"
    role: str  # the key of its figure in the recorded comparison: "champion", "baseline"


def margin_rule(
    metric: str,
    cand: float,
    ref: float,
    reference: Reference,
    cfg: GateConfig,
    reasons: list[str],
) -> tuple[bool, dict[str, float]]:
    """``metric`` of the candidate at most ``gate.max_regression`` below the reference's."""
    delta = cand - ref
    points = 100 * delta
    allowed = 100 * cfg.max_regression
    entry = {"candidate": cand, reference.role: ref, "delta": delta}
    if not math.isfinite(delta) or delta < -cfg.max_regression - EPS:
        reasons.append(
            f"{metric} {cand:.4f} is {-points:.2f} points below {reference.name} ({ref:.4f}), "
            f"allowed drop is {allowed:.2f} points"
        )
        return False, entry
    reasons.append(
        f"{metric} {cand:.4f} vs {reference.name} {ref:.4f} ({points:+.2f} points, allowed drop "
        f"{allowed:.2f})"
    )
    return True, entry


def _evidence(stats: dict[str, Any], reference: Reference) -> str:
    level = f"{100 * stats['ci_level']:.0f}%"
    return (
        f"on the same {stats['n']} test images: candidate alone right on "
        f"{stats['candidate_only_correct']}, {reference.name} alone right on "
        f"{stats['champion_only_correct']}, accuracy difference "
        f"{100 * stats['accuracy_delta']:+.2f} points ({level} CI [{100 * stats['ci_low']:+.2f}, "
        f"{100 * stats['ci_high']:+.2f}], McNemar exact p = {stats['mcnemar_p_two_sided']:.4g})"
    )


def _significant_gain(
    stats: dict[str, Any], reference: Reference, cfg: GateConfig, reasons: list[str]
) -> bool:
    """``gate.policy = superiority``: accuracy better with one-sided McNemar p < ``gate.alpha``."""
    p = stats["mcnemar_p_candidate_better"]
    if stats["accuracy_delta"] > 0 and p < cfg.alpha:
        reasons.append(
            f"accuracy improvement over {reference.name} is significant: one-sided McNemar "
            f"p = {p:.4g} < alpha {cfg.alpha}"
        )
        return True
    reasons.append(
        f"gate.policy is superiority and the improvement over {reference.name} is not "
        f"significant: one-sided McNemar p = {p:.4g} >= alpha {cfg.alpha} (or no improvement)"
    )
    return False


def compare_paired(
    y: np.ndarray,
    candidate: np.ndarray,
    other: np.ndarray,
    labels: list[str],
    reference: Reference,
    cfg: GateConfig,
    reasons: list[str],
    record: dict[str, Any],
) -> bool:
    """The candidate against ``reference`` on paired labels (true, candidate's, reference's) of the
    same test images, under ``gate.policy``; the evidence goes into ``reasons`` and ``record``
    (``paired``, ``accuracy``, ``macro_f1``). Returns whether the candidate passed.

    ``labels`` are the classes macro-F1 averages over."""
    stats = paired_statistics(
        y, candidate, other, alpha=cfg.alpha, n_bootstrap=cfg.bootstrap_samples
    )
    record["paired"] = stats
    reasons.append(_evidence(stats, reference))
    scores = {
        "accuracy": (float(np.mean(candidate == y)), float(np.mean(other == y))),
        "macro_f1": tuple(
            float(f1_score(y, p, labels=labels, average="macro", zero_division=0))
            for p in (candidate, other)
        ),
    }
    ok = True
    for metric in COMPARED_METRICS:
        metric_ok, record[metric] = margin_rule(metric, *scores[metric], reference, cfg, reasons)
        if metric == "accuracy" and cfg.policy == "superiority":
            continue  # judged by significance below, not by the margin
        if metric == "accuracy" and cfg.non_inferiority_on == "ci_lower":
            if stats["ci_low"] < -cfg.max_regression - EPS:
                metric_ok = False
                reasons.append(
                    f"accuracy not shown non-inferior to {reference.name}: CI lower bound "
                    f"{100 * stats['ci_low']:+.2f} points < -{100 * cfg.max_regression:.2f} "
                    "(gate.non_inferiority_on = ci_lower)"
                )
        ok = ok and metric_ok
    if cfg.policy == "superiority":
        ok = _significant_gain(stats, reference, cfg, reasons) and ok
    return ok
