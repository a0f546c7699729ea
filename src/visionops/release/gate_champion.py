"""The gate's comparison with the champion (see ``release.gate``): the margin rule on two metric
values, and the comparison on paired predictions of both models on the same test images, with the
class-change policy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from visionops.core.config import GateConfig
from visionops.evaluation.paired import PairedPredictions, class_change, paired_statistics

COMPARED_METRICS = ("accuracy", "macro_f1")
# Metrics are ratios of counts: a drop of exactly the allowed margin must not fail on float noise.
EPS = 1e-9


def margin_rule(
    metric: str, cand: float, champ: float, version: str, cfg: GateConfig, reasons: list[str]
) -> tuple[bool, dict[str, float]]:
    delta = cand - champ
    points = 100 * delta
    entry = {"candidate": cand, "champion": champ, "delta": delta}
    if not math.isfinite(delta) or delta < -cfg.max_regression - EPS:
        reasons.append(
            f"{metric} {cand:.4f} is {-points:.2f} points below champion v{version} ({champ:.4f}); "
            f"allowed drop is {100 * cfg.max_regression:.2f} points"
        )
        return False, entry
    reasons.append(
        f"{metric} {cand:.4f} vs champion v{version} {champ:.4f} ({points:+.2f} points, allowed drop "
        f"{100 * cfg.max_regression:.2f})"
    )
    return True, entry


def _class_change_reason(
    change: dict[str, list[str]], version: str, dropped: dict[str, str]
) -> str:
    """The classes added and removed against the champion; a removed class that this run's data had
    but left out (too few usable images) is said to be dropped, with why."""
    gone = [c for c in change["removed"] if c in dropped]
    removed = [c for c in change["removed"] if c not in dropped]
    text = (
        f"class set changed against champion v{version}: added {change['added'] or 'none'}, "
        f"removed {removed or 'none'}"
    )
    if gone:
        text += f", dropped from this run's data {gone} ({'; '.join(dropped[c] for c in gone)})"
    return text


def paired_comparison(
    paired: PairedPredictions,
    version: str,
    cfg: GateConfig,
    reasons: list[str],
    comparison: dict[str, Any],
    dropped: dict[str, str] | None = None,
) -> bool:
    """Compare on paired predictions; returns whether the comparison passed."""
    change = class_change(paired.candidate_labels, paired.champion_labels)
    y, cand, champ = (
        np.asarray(v, dtype=str) for v in (paired.y_true, paired.candidate, paired.champion)
    )
    labels = list(paired.candidate_labels)
    if change:
        comparison["class_change"] = change
        reasons.append(_class_change_reason(change, version, dropped or {}))
        comparison["on_class_change"] = cfg.on_class_change
        if cfg.on_class_change == "reject":
            reasons.append(
                "gate.on_class_change is 'reject': a model with a different class set is not "
                "promoted automatically (promote it with `visionops registry promote --force`)"
            )
            return False
        if cfg.on_class_change == "skip_comparison":
            reasons.append(
                "comparison with the champion skipped (gate.on_class_change = skip_comparison): "
                "only the absolute thresholds apply"
            )
            return True
        labels = [
            label for label in paired.candidate_labels if label in set(paired.champion_labels)
        ]
        keep = np.isin(y, labels)
        y, cand, champ = y[keep], cand[keep], champ[keep]
        reasons.append(f"compared on the {len(y)} test images of the {len(labels)} shared classes")
    if len(y) == 0:
        reasons.append(f"no test images of classes shared with champion v{version}: cannot compare")
        return False
    stats = paired_statistics(y, cand, champ, alpha=cfg.alpha, n_bootstrap=cfg.bootstrap_samples)
    comparison["paired"] = stats
    scores = {
        "accuracy": (float(np.mean(cand == y)), float(np.mean(champ == y))),
        "macro_f1": tuple(
            float(f1_score(y, p, labels=labels, average="macro", zero_division=0))
            for p in (cand, champ)
        ),
    }
    ok = True
    level = f"{100 * stats['ci_level']:.0f}%"
    reasons.append(
        f"on the same {stats['n']} test images: candidate alone right on {stats['candidate_only_correct']}, "
        f"champion alone right on {stats['champion_only_correct']}, accuracy difference "
        f"{100 * stats['accuracy_delta']:+.2f} points ({level} CI [{100 * stats['ci_low']:+.2f}, "
        f"{100 * stats['ci_high']:+.2f}], McNemar exact p = {stats['mcnemar_p_two_sided']:.4g})"
    )
    for metric in COMPARED_METRICS:
        metric_ok, comparison[metric] = margin_rule(metric, *scores[metric], version, cfg, reasons)
        if metric == "accuracy" and cfg.policy == "superiority":
            continue  # judged by significance below, not by the margin
        if metric == "accuracy" and cfg.non_inferiority_on == "ci_lower":
            if stats["ci_low"] < -cfg.max_regression - EPS:
                metric_ok = False
                reasons.append(
                    f"accuracy not shown non-inferior: CI lower bound {100 * stats['ci_low']:+.2f} "
                    f"points < -{100 * cfg.max_regression:.2f} (gate.non_inferiority_on = ci_lower)"
                )
        ok = ok and metric_ok
    if cfg.policy == "superiority":
        p = stats["mcnemar_p_candidate_better"]
        if stats["accuracy_delta"] > 0 and p < cfg.alpha:
            reasons.append(
                f"accuracy improvement is significant: one-sided McNemar p = {p:.4g} < alpha {cfg.alpha}"
            )
        else:
            ok = False
            reasons.append(
                f"gate.policy is superiority and the improvement is not significant: one-sided McNemar "
                f"p = {p:.4g} >= alpha {cfg.alpha} (or no improvement); the champion stays"
            )
    return ok
