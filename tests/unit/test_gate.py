"""visionops.release.gate: absolute thresholds, no-regression against the champion, reasons a person can act on."""

from __future__ import annotations

import json
import math

import pytest

from visionops.core.config import GateConfig
from visionops.core.contracts import GateDecision
from visionops.release.gate import decide

CFG = GateConfig(min_accuracy=0.90, min_macro_f1=0.85, max_regression=0.005)


def test_passes_above_thresholds_without_champion() -> None:
    decision = decide({"accuracy": 0.95, "macro_f1": 0.94, "n": 100}, None, CFG)
    assert decision.passed is True
    assert decision.reasons == [
        "accuracy 0.9500 >= required 0.9000",
        "macro_f1 0.9400 >= required 0.8500",
        "no simple baseline was fitted in this evaluation (see its report): "
        "nothing to compare the model with",
        "no champion in service: nothing to compare against",
    ]
    assert decision.metrics == {"accuracy": 0.95, "macro_f1": 0.94}
    assert decision.comparison == {} and decision.baseline == {} and decision.judged_on == "full"
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
        "accuracy 0.9500 is 2.00 points below champion v3 (0.9700), allowed drop is 0.50 points"
    ]
    # macro_f1 dropped 0.2 points: within the margin, reported but not failing.
    assert any(
        r.startswith("macro_f1 0.9580 vs champion v3 0.9600 (-0.20 points")
        for r in decision.reasons
    )
    assert decision.comparison["champion_version"] == "3"
    assert decision.comparison["max_regression"] == 0.005
    assert decision.comparison["accuracy"]["delta"] == pytest.approx(-0.02)
    assert decision.comparison["accuracy"]["champion"] == 0.97


def test_within_margin_against_champion_passes() -> None:
    champion = {"version": "7", "accuracy": 0.95, "macro_f1": 0.95}
    decision = decide({"accuracy": 0.947, "macro_f1": 0.96}, champion, CFG)
    assert decision.passed is True
    assert (
        "accuracy 0.9470 vs champion v7 0.9500 (-0.30 points, allowed drop 0.50)"
        in decision.reasons
    )
    assert (
        "macro_f1 0.9600 vs champion v7 0.9500 (+1.00 points, allowed drop 0.50)"
        in decision.reasons
    )


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
    assert set(data) == {
        *("passed", "reasons", "metrics", "comparison", "baseline", "judged_on"),
        *("classes", "slices"),
    }
    restored = GateDecision.from_dict(data)
    assert restored == decision
    assert restored.summary() == decision.summary()


# -- paired comparison: significance, margin policies, changed class set -------------------------

from visionops.evaluation.paired import PairedPredictions, class_change, paired_statistics  # noqa: E402

LOW = GateConfig(min_accuracy=0.0, min_macro_f1=0.0, max_regression=0.005)


def _paired(
    n_both: int,
    n_cand_only: int,
    n_champ_only: int,
    n_neither: int,
    labels: tuple[str, ...] = ("a", "b"),
) -> PairedPredictions:
    """Two-class predictions with a chosen count of each (candidate right?, champion right?) pair."""
    y, cand, champ = [], [], []
    for count, c_ok, h_ok in (
        (n_both, 1, 1),
        (n_cand_only, 1, 0),
        (n_champ_only, 0, 1),
        (n_neither, 0, 0),
    ):
        for i in range(count):
            truth = labels[i % 2]
            wrong = labels[(i + 1) % 2]
            y.append(truth)
            cand.append(truth if c_ok else wrong)
            champ.append(truth if h_ok else wrong)
    return PairedPredictions(y, cand, champ, list(labels), list(labels))


def _metrics(p: PairedPredictions) -> dict[str, float]:
    from sklearn.metrics import f1_score

    acc = sum(a == b for a, b in zip(p.y_true, p.candidate)) / len(p.y_true)
    return {"accuracy": acc, "macro_f1": f1_score(p.y_true, p.candidate, average="macro")}


def test_mcnemar_exact_p_value_matches_binomial_by_hand() -> None:
    # 10 discordant pairs, 9 for the candidate: two-sided p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22/1024.
    p = _paired(100, 9, 1, 0)
    stats = paired_statistics(p.y_true, p.candidate, p.champion, alpha=0.05, n_bootstrap=500)
    assert (stats["candidate_only_correct"], stats["champion_only_correct"]) == (9, 1)
    assert stats["mcnemar_p_two_sided"] == pytest.approx(22 / 1024)
    assert stats["mcnemar_p_candidate_better"] == pytest.approx(11 / 1024)
    assert stats["accuracy_delta"] == pytest.approx(8 / 110)
    assert stats["ci_low"] < 8 / 110 < stats["ci_high"]
    assert stats["ci_low"] > 0  # 9 against 1 is clear even on 110 images


def test_identical_models_give_p_one_and_a_zero_width_interval() -> None:
    p = _paired(50, 0, 0, 5)
    stats = paired_statistics(p.y_true, p.candidate, p.champion, alpha=0.05, n_bootstrap=200)
    assert stats["mcnemar_p_two_sided"] == 1.0
    assert stats["ci_low"] == stats["ci_high"] == 0.0


def test_superiority_passes_a_significant_improvement_with_p_in_reasons() -> None:
    p = _paired(100, 12, 1, 2)
    cfg = LOW.model_copy(update={"policy": "superiority"})
    decision = decide(_metrics(p), {"version": "3", "accuracy": 0.0, "macro_f1": 0.0}, cfg, p)
    assert decision.passed, decision.reasons
    assert any(
        r.startswith("accuracy improvement over champion v3 is significant: one-sided McNemar p = ")
        for r in decision.reasons
    )
    assert decision.comparison["paired"]["mcnemar_p_candidate_better"] < 0.05
    assert decision.comparison["policy"] == "superiority"


def test_superiority_rejects_an_improvement_that_is_noise() -> None:
    # +1 image out of 200: better, but p is far from significant.
    p = _paired(190, 3, 2, 5)
    cfg = LOW.model_copy(update={"policy": "superiority"})
    decision = decide(_metrics(p), {"version": "3", "accuracy": 0.0, "macro_f1": 0.0}, cfg, p)
    assert decision.passed is False
    assert any("improvement over champion v3 is not significant" in r for r in decision.reasons)


def test_non_inferiority_on_delta_passes_equal_models_but_ci_lower_does_not() -> None:
    p = _paired(180, 5, 5, 10)  # same accuracy, 10 discordant images
    champion = {"version": "2", "accuracy": 0.0, "macro_f1": 0.0}
    by_delta = decide(_metrics(p), champion, LOW, p)
    assert by_delta.passed, by_delta.reasons
    assert any("95% CI [" in r and "McNemar exact p = 1" in r for r in by_delta.reasons)
    strict = decide(
        _metrics(p), champion, LOW.model_copy(update={"non_inferiority_on": "ci_lower"}), p
    )
    assert strict.passed is False
    assert any(
        r.startswith("accuracy not shown non-inferior to champion v2: CI lower bound")
        for r in strict.reasons
    )


def test_non_inferiority_rejects_a_paired_drop_beyond_the_margin() -> None:
    p = _paired(180, 1, 9, 10)  # candidate loses 8 images of 200 = 4 points
    decision = decide(_metrics(p), {"version": "5", "accuracy": 0.0, "macro_f1": 0.0}, LOW, p)
    assert decision.passed is False
    assert any(
        r.startswith("accuracy 0.9050 is 4.00 points below champion v5 (0.9450)")
        for r in decision.reasons
    )


def test_class_change_is_reported_and_compare_on_shared_uses_shared_images() -> None:
    y = ["a", "b", "c", "a", "b", "c"] * 10
    cand = list(y)  # candidate knows a, b, c and is perfect
    champ = [t if t != "b" else "a" for t in y]  # champion knows a, b, d and misses every b
    p = PairedPredictions(y, cand, champ, ["a", "b", "c"], ["a", "b", "d"])
    assert class_change(p.candidate_labels, p.champion_labels) == {"added": ["c"], "removed": ["d"]}
    decision = decide(
        {"accuracy": 1.0, "macro_f1": 1.0},
        {"version": "1", "accuracy": 0.5, "macro_f1": 0.4},
        LOW,
        p,
    )
    assert decision.passed, decision.reasons
    assert "class set changed against champion v1: added ['c'], removed ['d']" in decision.reasons
    assert "compared on the 40 test images of the 2 shared classes" in decision.reasons
    assert decision.comparison["paired"]["n"] == 40
    assert decision.comparison["accuracy"]["champion"] == pytest.approx(0.5)


def test_a_class_dropped_from_this_runs_data_is_said_so_with_why() -> None:
    y = ["a", "b"] * 20
    p = PairedPredictions(y, list(y), list(y), ["a", "b"], ["a", "b", "s2"])
    why = "s2: 5 usable of 10 photos (3 no face found, 2 face too small); needs validate.min_images_per_class=6"
    decision = decide(
        {"accuracy": 1.0, "macro_f1": 1.0},
        {"version": "3", "accuracy": 1.0, "macro_f1": 1.0},
        LOW,
        p,
        dropped={"s2": why},
    )
    assert (
        f"class set changed against champion v3: added none, removed none, dropped from this run's "
        f"data ['s2'] ({why.replace('; ', ', ')})"
    ) in decision.reasons
    assert not any("; " in r for r in decision.reasons)  # the tag's separator: read back whole
    assert decision.passed  # compare_on_shared (default): judged on the classes both know


def test_class_change_policy_reject_and_skip() -> None:
    y = ["a", "b"] * 10
    p = PairedPredictions(y, list(y), list(y), ["a", "b", "c"], ["a", "b"])
    champion = {"version": "1", "accuracy": 1.0, "macro_f1": 1.0}
    rejected = decide(
        {"accuracy": 1.0, "macro_f1": 1.0},
        champion,
        LOW.model_copy(update={"on_class_change": "reject"}),
        p,
    )
    assert rejected.passed is False
    assert any(r.startswith("gate.on_class_change is 'reject'") for r in rejected.reasons)
    skipped = decide(
        {"accuracy": 1.0, "macro_f1": 1.0},
        champion,
        LOW.model_copy(update={"on_class_change": "skip_comparison"}),
        p,
    )
    assert skipped.passed is True
    assert any("comparison with the champion skipped" in r for r in skipped.reasons)
    assert "paired" not in skipped.comparison


def test_absolute_threshold_still_applies_with_paired_evidence() -> None:
    p = _paired(50, 20, 0, 30)  # much better than the champion, but only 70% accurate
    decision = decide(_metrics(p), {"version": "1", "accuracy": 0.0, "macro_f1": 0.0}, CFG, p)
    assert decision.passed is False
    assert "accuracy 0.7000 < required 0.9000" in decision.reasons


def test_paired_decision_round_trips_through_json() -> None:
    p = _paired(90, 4, 2, 4)
    decision = decide(_metrics(p), {"version": "1", "accuracy": 0.0, "macro_f1": 0.0}, LOW, p)
    assert GateDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gate.policy", "best"),
        ("gate.on_class_change", "ignore"),
        ("gate.alpha", 0.0),
        ("gate.non_inferiority_on", "mean"),
        ("registry.smoke_test_images", -1),
    ],
)
def test_gate_and_registry_keys_are_validated_naming_the_key(key: str, value: object) -> None:
    from visionops.core.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config({}, {key: value})
    assert build_config({}, {"gate.policy": "superiority"}).gate.policy == "superiority"


# -- gate.judge_on: the clean test subset (no near-copy in training) ----------------------------------


def test_judge_on_clean_uses_the_clean_figures_and_says_so() -> None:
    metrics = {
        "accuracy": 0.97,
        "macro_f1": 0.97,
        "clean_accuracy": 0.88,
        "clean_macro_f1": 0.87,
        "n_test_clean": 120,
    }
    full = decide(metrics, None, CFG)
    assert full.passed and full.judged_on == "full"
    assert any(
        r.startswith("judged on the full test split") and "0.8800" in r for r in full.reasons
    )

    clean = decide(metrics, None, CFG.model_copy(update={"judge_on": "clean"}))
    assert not clean.passed and clean.judged_on == "clean"
    assert clean.reasons[0].startswith("judged on the clean test subset: 120 test images")
    assert "accuracy 0.8800 < required 0.9000" in clean.reasons
    assert clean.metrics == {"accuracy": 0.88, "macro_f1": 0.87}
    # Without clean figures (an older evaluation) the full split is judged, and the reasons say so.
    old = decide(
        {"accuracy": 0.97, "macro_f1": 0.97}, None, CFG.model_copy(update={"judge_on": "clean"})
    )
    assert old.passed and old.judged_on == "full" and "no clean-subset figures" in old.reasons[0]


def test_judge_on_clean_restricts_the_paired_comparison_to_clean_rows() -> None:
    # 40 clean images where both are right; 20 leaky images the candidate gets wrong and the champion right.
    p = _paired(40, 0, 20, 0)
    p = PairedPredictions(
        p.y_true,
        p.candidate,
        p.champion,
        p.candidate_labels,
        p.champion_labels,
        [True] * 40 + [False] * 20,
    )
    champion = {
        "version": "2",
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "clean_accuracy": 1.0,
        "clean_macro_f1": 1.0,
    }
    metrics = {**_metrics(p), "clean_accuracy": 1.0, "clean_macro_f1": 1.0, "n_test_clean": 40}
    assert not decide(
        metrics, champion, LOW, p
    ).passed  # on all 60 images the candidate is far behind
    clean = decide(metrics, champion, LOW.model_copy(update={"judge_on": "clean"}), p)
    assert clean.passed, clean.reasons
    assert clean.comparison["paired"]["n"] == 40 and clean.judged_on == "clean"
    assert GateDecision.from_dict(clean.to_dict()) == clean
    assert all("; " not in r for r in clean.reasons)


# -- against the simple baselines: the champion's policy, margin and evidence --------------------------

from visionops.evaluation.paired import BaselinePredictions  # noqa: E402


def _with_baselines(model_right: int, lr_right: int, svm_right: int, n: int = 100):
    """Labels on ``n`` test images: each model right on its first ``*_right`` images."""
    y = [str(i % 5) for i in range(n)]
    wrong = lambda t: str((int(t) + 1) % 5)  # noqa: E731
    answer = lambda k: [t if i < k else wrong(t) for i, t in enumerate(y)]  # noqa: E731
    return BaselinePredictions(
        y,
        answer(model_right),
        {"logistic_regression": answer(lr_right), "pca_svm": answer(svm_right)},
        [i % 2 == 0 for i in range(n)],
    )


def _accuracy(baselines: BaselinePredictions) -> dict[str, float]:
    acc = sum(a == b for a, b in zip(baselines.y_true, baselines.candidate)) / len(baselines.y_true)
    return {"accuracy": acc, "macro_f1": acc}


def test_a_model_below_the_best_baseline_beyond_the_margin_is_rejected_with_paired_evidence() -> (
    None
):
    baselines = _with_baselines(model_right=90, lr_right=85, svm_right=93)
    decision = decide(_accuracy(baselines), None, LOW, baselines=baselines)
    assert decision.passed is False
    assert (
        "accuracy 0.9000 is 3.00 points below best simple baseline pca_svm (0.9300), allowed drop "
        "is 0.50 points" in decision.reasons
    )
    evidence = next(r for r in decision.reasons if r.startswith("on the same 100 test images"))
    assert "candidate alone right on 0, best simple baseline pca_svm alone right on 3" in evidence
    assert (
        "accuracy difference -3.00 points (95% CI [" in evidence
        and "McNemar exact p = " in evidence
    )
    assert (
        decision.baseline["best"] == "pca_svm" and decision.baseline["policy"] == "non_inferiority"
    )
    assert decision.baseline["baseline_accuracy"] == {"logistic_regression": 0.85, "pca_svm": 0.93}
    assert decision.baseline["accuracy"]["baseline"] == pytest.approx(0.93)
    assert decision.baseline["gain_points"] == pytest.approx(-3.0)
    assert decision.baseline["paired"]["champion_only_correct"] == 3
    assert GateDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


def test_one_image_behind_the_best_baseline_passes_non_inferiority_but_not_stricter_policies() -> (
    None
):
    # make run's case: 255 of 257 against PCA + SVM's 256, the one discordant image the baseline's.
    baselines = _with_baselines(model_right=255, lr_right=250, svm_right=256, n=257)
    decision = decide(_accuracy(baselines), None, LOW, baselines=baselines)
    assert decision.passed, decision.reasons
    assert (
        "accuracy 0.9922 vs best simple baseline pca_svm 0.9961 (-0.39 points, allowed drop 0.50)"
        in decision.reasons
    )
    assert any(
        "candidate alone right on 0, best simple baseline pca_svm alone right on 1" in r
        and "McNemar exact p = 1" in r
        for r in decision.reasons
    )
    superiority = LOW.model_copy(update={"policy": "superiority"})
    strict = decide(_accuracy(baselines), None, superiority, baselines=baselines)
    assert strict.passed is False
    assert any(
        "improvement over best simple baseline pca_svm is not significant" in r
        for r in strict.reasons
    )
    ci_lower = LOW.model_copy(update={"non_inferiority_on": "ci_lower"})
    unproven = decide(_accuracy(baselines), None, ci_lower, baselines=baselines)
    assert unproven.passed is False
    assert any(
        r.startswith("accuracy not shown non-inferior to best simple baseline pca_svm")
        for r in unproven.reasons
    )


def test_a_significant_gain_over_the_best_baseline_passes_superiority() -> None:
    baselines = _with_baselines(model_right=100, lr_right=85, svm_right=90)
    cfg = LOW.model_copy(update={"policy": "superiority"})
    decision = decide(_accuracy(baselines), None, cfg, baselines=baselines)
    assert decision.passed, decision.reasons
    assert any(
        r.startswith("accuracy improvement over best simple baseline pca_svm is significant")
        for r in decision.reasons
    )
    assert decision.baseline["paired"]["mcnemar_p_candidate_better"] == pytest.approx(1 / 1024)


@pytest.mark.parametrize(
    ("update", "passes"),
    [
        ({}, False),  # one image behind in 100 is 1 point, beyond the 0.5-point margin
        ({"max_regression": 0.02}, True),
        ({"max_regression": 0.02, "non_inferiority_on": "ci_lower"}, False),
        ({"max_regression": 0.02, "policy": "superiority"}, False),
    ],
)
def test_the_baseline_and_the_champion_are_judged_by_one_policy(update: dict, passes: bool) -> None:
    # The same labels as the champion's or as the best baseline's: the same verdict and reasons.
    baselines = _with_baselines(model_right=94, lr_right=80, svm_right=95)
    paired = PairedPredictions(
        baselines.y_true,
        baselines.candidate,
        baselines.baselines["pca_svm"],
        list("01234"),
        list("01234"),
    )
    # The per-class rule judges the champion only (a baseline is no model in service): off here.
    cfg = LOW.model_copy(update={**update, "max_class_regression": None})
    metrics = _accuracy(baselines)
    champion = {"version": "3", "accuracy": 0.0, "macro_f1": 0.0}
    as_champion = decide(metrics, champion, cfg, paired)
    as_baseline = decide(metrics, None, cfg, baselines=baselines)
    assert as_champion.passed is as_baseline.passed is passes
    assert as_champion.reasons[3:] == [
        r.replace("best simple baseline pca_svm", "champion v3") for r in as_baseline.reasons[2:-1]
    ]
    assert as_champion.comparison["paired"] == as_baseline.baseline["paired"]


def test_compare_with_baselines_false_turns_the_comparison_off() -> None:
    baselines = _with_baselines(model_right=50, lr_right=85, svm_right=93)
    off = LOW.model_copy(update={"compare_with_baselines": False})
    decision = decide({"accuracy": 0.5, "macro_f1": 0.5}, None, off, baselines=baselines)
    assert decision.passed is True and decision.baseline == {}
    assert (
        "no comparison with the simple baselines (gate.compare_with_baselines is false)"
        in decision.reasons
    )


def test_the_baseline_check_uses_the_clean_rows_under_judge_on_clean() -> None:
    # On the even (clean) rows the model is right on 45 of 50, the SVM on all 50 of them
    # (a model that wins on the full split can lose on the clean subset).
    y = [str(i % 5) for i in range(100)]
    model = [t if i % 2 == 0 and i < 90 or i % 2 == 1 else "x" for i, t in enumerate(y)]
    svm = [t if i % 2 == 0 else "x" for i, t in enumerate(y)]
    baselines = BaselinePredictions(y, model, {"pca_svm": svm}, [i % 2 == 0 for i in range(100)])
    candidate = {
        "accuracy": 0.95,
        "macro_f1": 0.95,
        "clean_accuracy": 0.9,
        "clean_macro_f1": 0.9,
        "n_test_clean": 50,
    }
    full = decide(candidate, None, LOW, baselines=baselines)
    assert full.passed is True and full.baseline["gain_points"] == pytest.approx(45.0)
    clean_cfg = LOW.model_copy(update={"judge_on": "clean"})
    clean = decide(candidate, None, clean_cfg, baselines=baselines)
    assert clean.passed is False
    assert clean.baseline["paired"]["n"] == 50
    assert clean.baseline["gain_points"] == pytest.approx(-10.0)
    assert any(
        r.startswith("accuracy 0.9000 is 10.00 points below best simple baseline pca_svm")
        for r in clean.reasons
    )
