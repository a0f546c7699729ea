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

from visionops.core.config import GateConfig
from visionops.core.contracts import GateDecision
from visionops.evaluation.paired import BaselinePredictions, PairedPredictions, paired_statistics
from visionops.release.gate_champion import (
    COMPARED_METRICS,
    EPS,
    margin_rule,
    paired_comparison,
)


def _thresholds(candidate: dict[str, float], cfg: GateConfig) -> tuple[bool, list[str]]:
    ok, reasons = True, []
    for metric, required in (("accuracy", cfg.min_accuracy), ("macro_f1", cfg.min_macro_f1)):
        value = candidate[metric]
        if not math.isfinite(value):
            ok = False
            reasons.append(f"{metric} is {value}: the evaluation produced no usable value")
        elif value < required - EPS:
            ok = False
            reasons.append(f"{metric} {value:.4f} < required {required:.4f}")
        else:
            reasons.append(f"{metric} {value:.4f} >= required {required:.4f}")
    return ok, reasons


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
    if gain < margin - 100 * EPS:
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
            ok = paired_comparison(paired, version, cfg, reasons, comparison, dropped) and ok
        else:
            for metric in COMPARED_METRICS:
                metric_ok, comparison[metric] = margin_rule(
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
