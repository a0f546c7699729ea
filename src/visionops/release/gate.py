"""The promotion gate: a plain function that returns a decision with reasons a person can act on.

Absolute thresholds first, then the champion, scored on this run's test split. With the paired
predictions of both models on the same images, the comparison carries evidence: McNemar's exact
test on the discordant pairs and a paired bootstrap confidence interval of the accuracy difference.

Policies (``gate.policy``):

* ``non_inferiority`` (default): the candidate may be worse than the champion by at most
  ``gate.max_regression`` in accuracy and macro-F1. ``gate.non_inferiority_on`` says what is
  judged for accuracy: the observed difference (``delta``, default) or the lower bound of the
  (1 - alpha) bootstrap interval (``ci_lower``, stricter: on a few hundred test images the
  interval is several points wide, so it only passes clearly better models).
* ``superiority``: accuracy must improve significantly (one-sided McNemar exact p < ``gate.alpha``)
  and macro-F1 must not drop by more than the margin.

``gate.judge_on``: ``full`` judges the whole test split; ``clean`` judges its clean subset (test
images without a near-copy in the training split, see ``data.grouping``) for the thresholds and the
champion comparison (paired predictions restricted to the clean rows). The reasons say which.

Against the simple baselines (``gate.min_gain_over_baseline``, points of accuracy): the model
must beat the best baseline fitted at evaluation (``visionops.evaluation.baselines``) by that
margin on the judged test images, with the paired evidence in the reason; ``null`` turns it off.

When the class set changed (``gate.on_class_change``): ``compare_on_shared`` compares both models
on the test images whose true class both know; ``reject`` rejects; ``skip_comparison`` applies
only the absolute thresholds. The reasons always name the added and removed classes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from visionops.core.config import GateConfig
from visionops.core.contracts import GateDecision
from visionops.evaluation.paired import (
    BaselinePredictions,
    PairedPredictions,
    class_change,
    paired_statistics,
)

COMPARED_METRICS = ("accuracy", "macro_f1")
# Metrics are ratios of counts: a drop of exactly the allowed margin must not fail on float noise.
_EPS = 1e-9


def _thresholds(candidate: dict[str, float], cfg: GateConfig) -> tuple[bool, list[str]]:
    ok, reasons = True, []
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
    return ok, reasons


def _margin_rule(
    metric: str, cand: float, champ: float, version: str, cfg: GateConfig, reasons: list[str]
) -> tuple[bool, dict[str, float]]:
    delta = cand - champ
    points = 100 * delta
    entry = {"candidate": cand, "champion": champ, "delta": delta}
    if not math.isfinite(delta) or delta < -cfg.max_regression - _EPS:
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


def _paired_comparison(
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
        metric_ok, comparison[metric] = _margin_rule(metric, *scores[metric], version, cfg, reasons)
        if metric == "accuracy" and cfg.policy == "superiority":
            continue  # judged by significance below, not by the margin
        if metric == "accuracy" and cfg.non_inferiority_on == "ci_lower":
            if stats["ci_low"] < -cfg.max_regression - _EPS:
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


def _baseline_rule(
    baselines: BaselinePredictions | None,
    subset: str,
    cfg: GateConfig,
    reasons: list[str],
    record: dict[str, Any],
) -> bool:
    """The model against the best simple baseline on the judged test images (the evidence goes into
    ``record``); whether it passed."""
    margin = cfg.min_gain_over_baseline
    if margin is None:
        reasons.append(
            "no check against the simple baselines (gate.min_gain_over_baseline is null)"
        )
        return True
    if baselines is None or not baselines.baselines:
        reasons.append(
            "no simple baseline was fitted in this evaluation (see its report): "
            "gate.min_gain_over_baseline not applied"
        )
        return True
    if subset == "clean" and baselines.clean is not None:
        baselines = baselines.clean_subset()
    y = np.asarray(baselines.y_true, dtype=str)
    if len(y) == 0:
        reasons.append("no test images to compare with the baselines on")
        return False
    model_acc = float(np.mean(np.asarray(baselines.candidate, dtype=str) == y))
    scores = {
        name: float(np.mean(np.asarray(labels, dtype=str) == y))
        for name, labels in baselines.baselines.items()
    }
    best = max(scores, key=lambda name: scores[name])
    stats = paired_statistics(
        y,
        baselines.candidate,
        baselines.baselines[best],
        alpha=cfg.alpha,
        n_bootstrap=cfg.bootstrap_samples,
    )
    gain = 100 * (model_acc - scores[best])
    record |= {
        "best": best,
        "accuracy": scores,
        "model_accuracy": model_acc,
        "gain_points": gain,
        "min_gain_points": margin,
        "paired": stats,
    }
    evidence = (
        f"on the same {stats['n']} test images the model alone is right on "
        f"{stats['candidate_only_correct']}, the baseline alone on {stats['champion_only_correct']} "
        f"({100 * stats['ci_level']:.0f}% CI [{100 * stats['ci_low']:+.2f}, "
        f"{100 * stats['ci_high']:+.2f}] points, McNemar exact p = {stats['mcnemar_p_two_sided']:.4g})"
    )
    if gain < margin - 100 * _EPS:
        reasons.append(
            f"accuracy {model_acc:.4f} gains {gain:+.2f} points over the best simple baseline, "
            f"{best} ({scores[best]:.4f}): gate.min_gain_over_baseline requires {margin:+.2f}, "
            f"{evidence}"
        )
        return False
    reasons.append(
        f"accuracy {model_acc:.4f} vs best simple baseline {best} {scores[best]:.4f} "
        f"({gain:+.2f} points, required {margin:+.2f}), {evidence}"
    )
    return True


def _judged_subset(
    candidate: dict[str, float],
    champion: dict[str, Any] | None,
    cfg: GateConfig,
    paired: PairedPredictions | None,
    reasons: list[str],
) -> tuple[dict[str, float], dict[str, Any] | None, PairedPredictions | None, str]:
    """The figures the gate judges: the full test split, or its clean subset (``gate.judge_on``)."""
    if cfg.judge_on == "full":
        if "clean_accuracy" in candidate and math.isfinite(candidate["clean_accuracy"]):
            # No "; " inside a reason: the run's tag joins the reasons with it.
            reasons.append(
                f"judged on the full test split (gate.judge_on = full), the clean subset of "
                f"{int(candidate.get('n_test_clean', 0))} images has accuracy "
                f"{candidate['clean_accuracy']:.4f} and macro_f1 {candidate['clean_macro_f1']:.4f}"
            )
        return candidate, champion, paired, "full"
    if "clean_accuracy" not in candidate:
        reasons.append(
            "gate.judge_on is clean but this evaluation recorded no clean-subset figures: "
            "judged on the full test split"
        )
        return candidate, champion, paired, "full"
    reasons.append(
        f"judged on the clean test subset: {int(candidate.get('n_test_clean', 0))} test images "
        "without a near-copy in the training split (gate.judge_on = clean)"
    )
    cand = {
        **candidate,
        "accuracy": candidate["clean_accuracy"],
        "macro_f1": candidate["clean_macro_f1"],
    }
    champ = champion
    if champion is not None and "clean_accuracy" in champion:
        champ = {
            **champion,
            "accuracy": champion["clean_accuracy"],
            "macro_f1": champion["clean_macro_f1"],
        }
    if paired is not None:
        if paired.clean is None:
            reasons.append(
                "the paired predictions carry no clean flags: the champion comparison uses the "
                "full test split"
            )
        else:
            paired = paired.clean_subset()
    return cand, champ, paired, "clean"


def decide(
    candidate: dict[str, float],
    champion: dict[str, Any] | None,
    cfg: GateConfig,
    paired: PairedPredictions | None = None,
    baselines: BaselinePredictions | None = None,
    dropped: dict[str, str] | None = None,
) -> GateDecision:
    """Apply the absolute thresholds, then compare with the champion on the same test split.

    ``champion`` is None when no model is in service; otherwise it holds the champion's metrics on
    this run's test split and its ``version``. ``paired`` (both models' predictions on that split)
    turns on the statistical comparison and the class-change policy; without it only the margin
    rule on the two metric values applies. ``baselines`` (the model's and the simple baselines'
    predictions on that split) turns on ``gate.min_gain_over_baseline``. With ``gate.judge_on =
    clean`` the ``clean_accuracy`` and ``clean_macro_f1`` figures (and the clean rows of ``paired``
    and ``baselines``) are judged instead. ``dropped`` (class -> why) names the classes this run's
    data had but left out (too few usable images): the class-change reason says so.
    """
    reasons: list[str] = []
    candidate, champion, paired, subset = _judged_subset(candidate, champion, cfg, paired, reasons)
    ok, threshold_reasons = _thresholds(candidate, cfg)
    reasons += threshold_reasons
    comparison: dict[str, Any] = {}
    against_baseline: dict[str, Any] = {}
    ok = _baseline_rule(baselines, subset, cfg, reasons, against_baseline) and ok
    if champion is None:
        reasons.append("no champion in service: nothing to compare against")
    else:
        version = str(champion["version"])
        comparison = {
            "champion_version": version,
            "max_regression": cfg.max_regression,
            "policy": cfg.policy,
        }
        if paired is not None:
            ok = _paired_comparison(paired, version, cfg, reasons, comparison, dropped) and ok
        else:
            for metric in COMPARED_METRICS:
                metric_ok, comparison[metric] = _margin_rule(
                    metric, candidate[metric], champion[metric], version, cfg, reasons
                )
                ok = ok and metric_ok
    metrics = {k: float(candidate[k]) for k in COMPARED_METRICS}
    return GateDecision(
        passed=ok,
        reasons=reasons,
        metrics=metrics,
        comparison=comparison,
        baseline=against_baseline,
        judged_on=subset,
    )
