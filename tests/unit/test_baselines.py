"""visionops.evaluation.baselines: the simple models every evaluation fits beside the model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from visionops.core.config import BaselineConfig, PipelineConfig, build_config
from visionops.core.errors import InputError
from visionops.evaluation.baselines import (
    LOGISTIC_C,
    PCA_VARIANCE,
    SVM_C,
    features_of,
    fit_baselines,
    stratified_subsample,
)
from visionops.evaluation.metrics import classification_metrics
from visionops.evaluation.report import model_card, render_markdown


def _digits() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    tr, va, te = order[:900], order[900:1200], order[1200:1500]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


def test_both_baselines_fit_on_train_choose_on_val_and_label_the_test_images() -> None:
    train, val, (x_test, y_test) = _digits()
    labels = [f"digit{i}" for i in range(10)]
    fits = fit_baselines(train, val, x_test, labels, BaselineConfig())
    assert [f.name for f in fits] == ["logistic_regression", "pca_svm"]
    truth = np.array([labels[i] for i in y_test])
    for fit in fits:
        assert fit.skipped is None and len(fit.predictions) == len(y_test)
        assert set(fit.predictions) <= set(labels)  # class names, not indices
        # Real baselines, not straw men: both are strong on digits.
        assert np.mean(np.array(fit.predictions) == truth) > 0.93
        assert 0.9 < fit.val_accuracy <= 1.0 and fit.features == 64 and fit.note == ""
    assert fits[0].params["C"] in LOGISTIC_C
    assert fits[1].params["C"] in SVM_C and fits[1].params["pca_variance"] in PCA_VARIANCE


def test_beside_a_k_fold_ensemble_the_chosen_setting_is_fitted_again_on_train_and_val() -> None:
    # The ensemble's members learn from train + val: so must the baselines it is compared with.
    from visionops.evaluation.baselines import _logistic

    train, val, (x_test, _) = _digits()
    labels = [str(i) for i in range(10)]
    cfg = BaselineConfig(models=["logistic_regression"])
    (plain,) = fit_baselines(train, val, x_test, labels, cfg)
    (refit,) = fit_baselines(train, val, x_test, labels, cfg, refit_on_val=True)
    # The same setting, chosen on val the same way; the note says what it learned from.
    assert refit.params == plain.params and refit.val_accuracy == plain.val_accuracy
    assert plain.note == "" and refit.note == "fitted on train + val"
    x_all = np.concatenate([train[0], val[0]]).reshape(1200, -1) / 255.0
    y_all = np.concatenate([train[1], val[1]])
    by_hand = _logistic(refit.params["C"]).fit(x_all, y_all).predict(x_test.reshape(300, -1) / 255)
    assert refit.predictions == [labels[i] for i in by_hand]
    assert refit.predictions != plain.predictions


def test_a_split_over_the_size_bound_is_cut_to_a_stratified_subsample_and_the_note_says_so() -> (
    None
):
    train, val, (x_test, y_test) = _digits()
    labels = [str(i) for i in range(10)]
    cfg = BaselineConfig(models=["logistic_regression"], max_train_images=500)
    (fit,) = fit_baselines(train, val, x_test, labels, cfg)
    assert fit.skipped is None and len(fit.predictions) == len(y_test)
    assert fit.note == (
        "fitted on a stratified subsample of 500 of 900 training images "
        "(baseline.max_train_images 500)"
    )
    # The same as fitting by hand on the subsample's rows: the bound is applied, not just reported.
    rows = stratified_subsample(train[1], 500)
    (by_hand,) = fit_baselines(
        (train[0][rows], train[1][rows]), val, x_test, labels, BaselineConfig(models=[fit.name])
    )
    assert fit.predictions == by_hand.predictions and fit.params == by_hand.params
    smaller = BaselineConfig(models=["logistic_regression"], max_train_images=200)
    (small_val,) = fit_baselines(train, val, x_test, labels, smaller)
    assert "setting chosen on 200 of 300 validation images" in small_val.note
    assert fit_baselines(train, val, x_test, [], BaselineConfig(models=[])) == []


def test_the_stratified_subsample_keeps_every_class_in_proportion_and_is_reproducible() -> None:
    y = np.array([0] * 1000 + [1] * 300 + [2] * 7 + [3])
    rows = stratified_subsample(y, 131)
    assert len(rows) == 131 and len(set(rows.tolist())) == 131
    assert np.all(np.diff(rows) > 0)  # sorted: read in order from a memory-mapped split
    assert np.bincount(y[rows]).tolist() == [100, 29, 1, 1]  # a class of one image is kept
    assert np.array_equal(rows, stratified_subsample(y, 131))
    assert np.array_equal(stratified_subsample(y, 5000), np.arange(len(y)))


def test_one_pca_cut_short_gives_every_setting_the_model_fitted_from_scratch() -> None:
    """The SVM settings share one PCA (fitted at the largest kept variance, each setting using its
    first components): each answers the test images as its own pipeline fitted from scratch does."""
    from visionops.evaluation.baselines import _candidates, _pca_svm_candidates

    train, _, (x_test, _) = _digits()
    x, _ = features_of(train[0], 4096)
    xt, _ = features_of(x_test, 4096)
    shared = _pca_svm_candidates(x, train[1])
    scratch = _candidates("pca_svm")
    assert [p for p, _ in shared] == [p for p, _ in scratch]
    kept = set()
    for (_, model), (_, build) in zip(shared, scratch, strict=True):
        alone = build().fit(x, train[1])
        kept.add(alone.named_steps["pca"].n_components_)
        assert np.array_equal(model.predict(xt), alone.predict(xt))
    assert len(kept) == 2  # the two variance fractions keep different numbers of components


def test_shrinking_by_chunks_gives_the_features_of_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import visionops.evaluation.baselines as baselines

    x = np.random.default_rng(0).integers(0, 256, (5, 3, 80, 80), dtype=np.uint8)
    whole, note = features_of(x, 1024)
    monkeypatch.setattr(baselines, "SHRINK_CHUNK", 2)
    chunked, same_note = features_of(x, 1024)
    assert note == same_note and chunked.shape == whole.shape == (5, 3 * 18 * 18)
    assert np.allclose(chunked, whole, atol=1e-6)


def test_large_images_are_shrunk_by_area_to_the_feature_bound_and_say_so() -> None:
    x = np.full((2, 3, 150, 150), 200, np.uint8)
    x[1, :, :75] = 0  # the top half black: its area average stays exact after shrinking
    feats, note = features_of(x, 4096)
    assert feats.shape == (2, 3 * 36 * 36) and feats.dtype == np.float32
    assert note == "images shrunk from 150x150 to 36x36 (baseline.max_features 4096)"
    assert feats[0].min() == pytest.approx(200 / 255)
    assert feats[1].mean() == pytest.approx(100 / 255, abs=0.01)
    small, none = features_of(x[:, :, :8, :8], 4096)
    assert small.shape == (2, 192) and none == ""


def test_no_validation_images_takes_the_middle_setting() -> None:
    train, _, (x_test, _) = _digits()
    empty = (np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0, np.int64))
    (fit,) = fit_baselines(
        train,
        empty,
        x_test,
        [str(i) for i in range(10)],
        BaselineConfig(models=["logistic_regression"]),
    )
    assert fit.params == {"C": LOGISTIC_C[1]} and fit.val_accuracy is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("baseline.models", ["knn"]),
        ("baseline.max_features", 3),
        ("gate.compare_with_baselines", "sometimes"),
    ],
)
def test_baseline_settings_are_validated_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(InputError, match=key.split(".")[-1]):
        build_config(PipelineConfig().to_dict(), {key: value}, source="test")


def test_the_baseline_comparison_is_on_by_default_and_can_be_turned_off() -> None:
    assert PipelineConfig().gate.compare_with_baselines is True
    cfg = build_config(
        PipelineConfig().to_dict(), {"gate.compare_with_baselines": False}, source="t"
    )
    assert cfg.gate.compare_with_baselines is False


BASELINES = [
    {
        "name": "logistic_regression",
        "accuracy": 0.9,
        "macro_f1": 0.89,
        "params": {"C": 0.1},
        "note": "",
        "paired": {
            "n": 100,
            "candidate_only_correct": 7,
            "champion_only_correct": 2,
            "accuracy_delta": 0.05,
            "mcnemar_p_two_sided": 0.1797,
            "ci_level": 0.95,
            "ci_low": 0.0,
            "ci_high": 0.1,
        },
    },
    {"name": "pca_svm", "skipped": "fewer than 2 classes in the training split"},
]


def test_the_report_and_the_model_card_show_the_model_beside_the_baselines() -> None:
    metrics = classification_metrics(["a", "b"], ["a", "b"], ["a", "b"])
    metrics["ece"] = 0.0
    text = render_markdown(
        {"metrics": metrics, "model_uri": "m", "test_size": 2, "baselines": BASELINES}
    )
    assert "## Against simple baselines" in text
    row = (
        "| logistic regression on standardised pixels (C 0.1) | 0.9000 | 0.8900 | +5.00 | 7 | 2 "
        "| 0.1797 | 95% [+0.00, +10.00] |"
    )
    assert row in text
    assert "| PCA + RBF SVM | skipped: fewer than 2 classes in the training split |" in text
    card = model_card(
        name="m",
        version="1",
        cfg={},
        metrics={"accuracy": 0.95},
        decision={"passed": True, "reasons": []},
        lineage={},
        labels=["a", "b"],
        n_test=100,
        baselines=BASELINES,
    )
    assert "## Against simple baselines" in card and row in card
    assert "## Against simple baselines" not in render_markdown(
        {"metrics": metrics, "model_uri": "m", "test_size": 2, "baselines": []}
    )


@pytest.mark.parametrize("max_features", [10_000, 48])  # kept whole, and shrunk
def test_features_of_rows_of_a_memory_mapped_split_equal_those_of_the_rows_in_memory(
    tmp_path, max_features: int
) -> None:
    """The baselines read their subsample chunk by chunk from the split's file (more rows than one
    chunk here): the same features as from the rows copied into memory first."""
    x = np.random.default_rng(3).integers(0, 256, (700, 3, 12, 12), dtype=np.uint8)
    np.save(tmp_path / "train_x.npy", x)
    mapped = np.load(tmp_path / "train_x.npy", mmap_mode="r")
    rows = np.sort(np.random.default_rng(4).choice(700, 600, replace=False))
    expected, note = features_of(x[rows], max_features)
    got, got_note = features_of(mapped, max_features, rows)
    assert got.dtype == np.float32 and got_note == note
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        features_of(mapped, max_features)[0], features_of(x, max_features)[0]
    )
