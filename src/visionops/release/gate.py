"""The promotion gate: a plain function that returns a decision with reasons a person can act on.

Absolute thresholds first, then the champion, scored on this run's test split. With the paired
predictions of both models on the same images, the comparison carries evidence: McNemar's exact
test on the discordant pairs and a paired bootstrap confidence interval of the accuracy difference.

Policies (``gate.policy``), the same for both comparisons with another model (the champion in
service and the best simple baseline, ``release.gate_compare``):

* ``non_inferiority`` (default): the candidate may be worse than the other model by at most
  ``gate.max_regression`` in accuracy and macro-F1. ``gate.non_inferiority_on`` says what is
  judged for accuracy: the observed difference (``delta``, default) or the lower bound of the
  (1 - alpha) bootstrap interval (``ci_lower``, stricter: on a few hundred test images the
  interval is several points wide, so it only passes clearly better models).
* ``superiority``: accuracy must improve significantly (one-sided McNemar exact p < ``gate.alpha``)
  and macro-F1 must not drop by more than the margin.

``gate.judge_on``: ``full`` judges the whole test split; ``clean`` judges its clean subset (test
images without a near-copy in the training split, see ``data.grouping``) for the thresholds and both
comparisons (paired predictions restricted to the clean rows). The reasons say which.

The simple baselines (``visionops.evaluation.baselines``, fitted at evaluation on the same splits):
the best of them on the judged test images is compared with the model exactly as the champion is,
the evidence in the reasons; ``gate.compare_with_baselines: false`` turns it off.

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
from visionops.evaluation.paired import BaselinePredictions, PairedPredictions
from visionops.release.gate_champion import paired_comparison
from visionops.release.gate_classes import class_rule, slice_rule
from visionops.release.gate_compare import (
    COMPARED_METRICS,
    EPS,
    Reference,
    compare_paired,
    margin_rule,
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
    """The model against the best simple baseline on the judged test images, by the same rules and
    with the same evidence as against the champion (``record`` gets both); whether it passed."""
    if not cfg.compare_with_baselines:
        reasons.append(
            "no comparison with the simple baselines (gate.compare_with_baselines is false)"
        )
        return True
    if baselines is None or not baselines.baselines:
        reasons.append(
            "no simple baseline was fitted in this evaluation (see its report): "
            "nothing to compare the model with"
        )
        return True
    if subset == "clean" and baselines.clean is not None:
        baselines = baselines.clean_subset()
    y = np.asarray(baselines.y_true, dtype=str)
    if len(y) == 0:
        reasons.append("no test images to compare with the baselines on")
        return False
    scores = {
        name: float(np.mean(np.asarray(labels, dtype=str) == y))
        for name, labels in baselines.baselines.items()
    }
    best = max(scores, key=lambda name: scores[name])
    record |= {
        "best": best,
        "baseline_accuracy": scores,
        "max_regression": cfg.max_regression,
        "policy": cfg.policy,
    }
    passed = compare_paired(
        y,
        np.asarray(baselines.candidate, dtype=str),
        np.asarray(baselines.baselines[best], dtype=str),
        # Baselines know the model's classes: macro-F1 over the classes with test images.
        sorted(set(y)),
        Reference(f"best simple baseline {best}", "baseline"),
        cfg,
        reasons,
        record,
    )
    record["gain_points"] = 100 * record["paired"]["accuracy_delta"]
    return passed


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


def _per_class(
    paired: PairedPredictions | None,
    baselines: BaselinePredictions | None,
    subset: str,
    champion: dict[str, Any] | None,
    cfg: GateConfig,
    reasons: list[str],
    record: dict[str, Any],
) -> bool:
    """``release.gate_classes.class_rule`` on the judged test images: against the champion with the
    paired predictions, else (no champion, or its comparison skipped) the floor alone on the
    model's own answers (stored beside the baselines')."""
    if paired is not None and cfg.on_class_change != "skip_comparison":
        shared = sorted(set(paired.candidate_labels) & set(paired.champion_labels))
        against = f"champion v{champion['version']}" if champion else "the champion"
        ok = class_rule(
            paired.y_true, paired.candidate, paired.champion, shared, cfg, against, reasons, record
        )
        known = set(shared)
        on_shared = paired.rows([i for i, y in enumerate(paired.y_true) if y in known])
        return slice_rule(
            on_shared.y_true, on_shared.candidate, on_shared.champion, on_shared.slices, cfg,
            against, reasons, record,
        ) and ok  # fmt: skip
    answers = paired or baselines
    if answers is None:
        if cfg.min_class_recall is not None:
            reasons.append("no per-class rule: this evaluation stored no predictions")
        return True
    if isinstance(answers, BaselinePredictions) and subset == "clean" and answers.clean:
        answers = answers.clean_subset()
    ok = class_rule(answers.y_true, answers.candidate, None, None, cfg, "", reasons, record)
    return (
        slice_rule(
            answers.y_true, answers.candidate, None, answers.slices, cfg, "", reasons, record
        )
        and ok
    )


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
    predictions on that split) turns on the comparison with the best of them. With ``gate.judge_on =
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
                    metric,
                    candidate[metric],
                    champion[metric],
                    Reference(f"champion v{version}", "champion"),
                    cfg,
                    reasons,
                )
                ok = ok and metric_ok
    classes: dict[str, Any] = {}
    ok = _per_class(paired, baselines, subset, champion, cfg, reasons, classes) and ok
    metrics = {k: float(candidate[k]) for k in COMPARED_METRICS}
    return GateDecision(
        passed=ok,
        reasons=reasons,
        metrics=metrics,
        comparison=comparison,
        baseline=against_baseline,
        judged_on=subset,
        classes=classes.get("classes", []),
        slices=classes.get("slices", {}),
    )
