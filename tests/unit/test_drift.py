"""Drift detection of the model in service: input statistics, the checks and their family-wise
false-alarm control, the JSON result, the stored reference and the HTML report.

Realism from scikit-learn's digits and a logistic regression standing in for the served model;
each check alone on synthetic data where only its quantity changes. Fixed seeds throughout.
(On a served small_cnn, with rotations and other data sets: bench/drift_alarms.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from visionops.monitoring.drift import (
    CONFIDENCE,
    EMBEDDING,
    OTHER,
    PREDICTED_CLASS,
    DriftResult,
    Observations,
    detect_drift,
    holm,
    pooled_table,
)
from visionops.monitoring.report import REPORT_FILE, drift_report_html, write_drift_report
from visionops.monitoring.statistics import PIXEL_STATISTICS, STATISTICS, image_statistics

# -- digits and a stand-in model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict:
    """Digits as uint8 (N, 8, 8); a classifier fitted on 900, reference = 400 test images, and a
    held-out pool of the other 497 for batches."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    y = d.target.astype(str)
    order = np.random.default_rng(0).permutation(len(y))
    train, test, pool = order[:900], order[900:1300], order[1300:]
    clf = LogisticRegression(max_iter=2000).fit(x[train].reshape(-1, 64) / 255.0, y[train])

    def observe(images: np.ndarray, true: np.ndarray | None) -> Observations:
        proba = clf.predict_proba(images.reshape(len(images), -1) / 255.0)
        preds = pd.DataFrame({"label": clf.classes_[proba.argmax(1)], "probability": proba.max(1)})
        return Observations.from_predictions(images, preds, true=true)

    return {
        "x": x,
        "y": y,
        "pool": pool,
        "observe": observe,
        "reference": observe(x[test], y[test]),
    }


def _batch(digits: dict, seed: int, shift=lambda a: a, n: int = 200) -> Observations:  # noqa: ANN001
    idx = np.random.default_rng(seed).choice(digits["pool"], n, replace=False)
    return digits["observe"](shift(digits["x"][idx]), digits["y"][idx])


def _blur(x: np.ndarray) -> np.ndarray:
    return np.rint(ndimage.gaussian_filter(x.astype(float), (0, 1.0, 1.0))).astype(np.uint8)


# -- synthetic observations where one thing changes ---------------------------------------------


def _synthetic(
    n: int,
    seed: int,
    *,
    class_p: np.ndarray | None = None,
    conf_a: float = 8.0,
    stat_shift: float = 0.0,
    emb_shift: float = 0.0,
    embeddings: bool = False,
) -> Observations:
    rng = np.random.default_rng(seed)
    p = np.full(10, 0.1) if class_p is None else class_p
    stats = pd.DataFrame(
        {
            "brightness": rng.normal(0.3 + stat_shift, 0.05, n),
            "contrast": rng.normal(0.4, 0.05, n),
            "height": np.full(n, 8.0),  # constant and equal on both sides: nothing to test
        }
    )
    emb = rng.normal(size=(n, 16)) if embeddings else None
    if emb is not None:
        emb[:, 0] += emb_shift
    return Observations(
        statistics=stats,
        predicted=rng.choice(10, n, p=p),
        confidence=rng.beta(conf_a, 1.0, n),
        embeddings=emb,
    )


def _fired(result: DriftResult) -> set[str]:
    return {c.name for c in result.drifted_checks}


# -- input statistics ------------------------------------------------------------------------------


def test_statistics_of_grey_colour_and_mixed_sizes() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (4, 10, 12), dtype=np.uint8)
    frame = image_statistics(grey)
    assert list(frame.columns) == list(STATISTICS) and len(frame) == 4
    assert frame["height"].eq(10).all() and frame["width"].eq(12).all()
    np.testing.assert_allclose(frame["brightness"], grey.reshape(4, -1).mean(1) / 255, rtol=1e-6)
    np.testing.assert_allclose(frame["contrast"], grey.reshape(4, -1).std(1) / 255, rtol=1e-5)
    assert frame["saturation"].eq(0).all()
    # Inverting mirrors brightness and swaps dark and bright pixels.
    inv = image_statistics(255 - grey)
    np.testing.assert_allclose(inv["brightness"], 1 - frame["brightness"], atol=1e-6)
    np.testing.assert_allclose(inv["dark_fraction"], frame["bright_fraction"])
    # Blur lowers sharpness and contrast.
    blurred = image_statistics(_blur(grey))
    assert (blurred["sharpness"] < frame["sharpness"]).all()
    assert (blurred["contrast"] < frame["contrast"]).all()

    # A list of any sizes, colour (RGBA too) among grey; the rows keep the order given.
    red = np.zeros((5, 7, 3), np.uint8)
    red[..., 0] = 200
    rgba = np.concatenate([red, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    mixed = image_statistics([grey[0], red, grey[1], rgba])
    assert mixed["height"].tolist() == [10, 5, 10, 5]
    assert mixed.loc[1, "saturation"] == pytest.approx(1.0) and mixed.loc[0, "saturation"] == 0
    assert mixed.loc[1, "brightness"] == pytest.approx(0.299 * 200 / 255, rel=1e-4)
    assert mixed.loc[1, "contrast"] == pytest.approx(0.0, abs=1e-6)
    pd.testing.assert_frame_equal(
        mixed.loc[[1]].reset_index(drop=True), mixed.loc[[3]].reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(mixed.loc[[0, 2]].reset_index(drop=True), frame.loc[[0, 1]])
    assert (image_statistics([grey[0]] * 3)["entropy"] > 0).all()


def test_model_form_resizes_like_the_model_and_drops_sizes(digits: dict) -> None:
    from visionops.data.images import to_model_array

    x = digits["x"][:5]
    form = image_statistics(x, image_size=16)
    assert list(form.columns) == list(PIXEL_STATISTICS)
    resized = np.stack([to_model_array(img, 16, 1)[0] for img in x])
    pd.testing.assert_frame_equal(form, image_statistics(resized)[list(PIXEL_STATISTICS)])
    # A batch already at the model's size is taken as it is.
    pd.testing.assert_frame_equal(image_statistics(resized, image_size=16), form)


# -- false alarms and detections on digits ---------------------------------------------------------


def test_batches_like_the_reference_rarely_alarm(digits: dict) -> None:
    results = [detect_drift(digits["reference"], _batch(digits, seed)) for seed in range(20)]
    assert sum(r.drifted for r in results) <= 2  # family-wise alpha 0.01: ~0.2 expected
    assert all(
        len(r.checks) == 9 for r in results
    )  # 7 statistics (height, width, saturation constant)
    assert all(r.skipped == ["input:saturation", "input:height", "input:width"] for r in results)


def test_inverted_and_blurred_batches_alarm(digits: dict) -> None:
    for seed in range(5):
        inverted = detect_drift(digits["reference"], _batch(digits, seed, lambda a: 255 - a))
        assert inverted.drifted
        assert {"input:brightness", PREDICTED_CLASS, CONFIDENCE} <= _fired(inverted)
        assert inverted.accuracy["current"] < 0.2 < 0.9 < inverted.accuracy["reference"]
        blurred = detect_drift(digits["reference"], _batch(digits, seed, _blur))
        assert blurred.drifted and {"input:sharpness", "input:contrast"} <= _fired(blurred)


def test_from_predictions_leaves_out_what_the_model_did_not_answer() -> None:
    images = [np.zeros((4, 4), np.uint8), np.full((6, 6), 200, np.uint8), np.ones((4, 4), np.uint8)]
    preds = pd.DataFrame({"label": ["a", None, "b"], "probability": [0.9, np.nan, 0.6]})
    obs = Observations.from_predictions(images, preds, true=["a", "b", "a"])
    assert len(obs) == 2 and obs.predicted.tolist() == ["a", "b"]
    assert obs.statistics["height"].tolist() == [4, 4] and obs.accuracy == 0.5
    assert obs.meta["n_unanswered"] == 1
    with pytest.raises(ValueError, match="one entry per image"):
        Observations(pd.DataFrame({"b": [0.1]}), np.array(["a", "b"]), np.array([0.5, 0.5]))


# -- each check on its own -------------------------------------------------------------------------


def test_same_synthetic_distribution_rarely_alarms() -> None:
    reference = _synthetic(500, 0, embeddings=True)
    results = [
        detect_drift(reference, _synthetic(200, s, embeddings=True), seed=s) for s in range(1, 21)
    ]
    assert sum(r.drifted for r in results) <= 2
    assert {c.name for c in results[0].checks} == {
        "input:brightness",
        "input:contrast",
        PREDICTED_CLASS,
        CONFIDENCE,
        EMBEDDING,
    }
    assert results[0].skipped == ["input:height"]


def test_class_shift_alone_fires_only_the_class_check() -> None:
    skew = np.full(10, 0.7 / 9)
    skew[3] = 0.3
    result = detect_drift(_synthetic(500, 0), _synthetic(200, 1, class_p=skew))
    assert result.drifted and _fired(result) == {PREDICTED_CLASS}
    check = next(c for c in result.checks if c.name == PREDICTED_CLASS)
    assert check.detail["largest_change"]["label"] == "3"
    assert result.class_distribution["current"]["3"] > 0.2


def test_confidence_drop_alone_fires_only_the_confidence_check() -> None:
    reference = _synthetic(500, 0)
    result = detect_drift(reference, _synthetic(200, 1, conf_a=3.0))
    assert result.drifted and _fired(result) == {CONFIDENCE}
    assert result.confidence["current"] < result.confidence["reference"]
    # One-sided: a more confident batch is no alarm.
    assert not detect_drift(reference, _synthetic(200, 1, conf_a=30.0)).drifted


def test_input_shift_alone_fires_only_that_statistic() -> None:
    result = detect_drift(_synthetic(500, 0), _synthetic(200, 1, stat_shift=0.05))
    assert _fired(result) == {"input:brightness"}


def test_embedding_shift_fires_the_embedding_check() -> None:
    reference = _synthetic(500, 0, embeddings=True)
    result = detect_drift(reference, _synthetic(200, 1, embeddings=True, emb_shift=0.6))
    assert _fired(result) == {EMBEDDING}
    check = next(c for c in result.checks if c.name == EMBEDDING)
    # Enough permutations for the p-value to pass the strictest Holm bar (alpha / checks).
    assert 1 / (1 + check.detail["permutations"]) <= result.alpha / len(result.checks) / 2
    assert check.p_value < 0.001
    # Without embeddings on one side, there is no embedding check.
    plain = detect_drift(reference, _synthetic(200, 1))
    assert EMBEDDING not in {c.name for c in plain.checks}


def test_rare_classes_are_pooled_and_a_new_answer_is_a_shift() -> None:
    rare = [c for c in "cdefghij" for _ in range(4)]  # 8 classes, 4 each: too few alone
    ref = np.array(["a"] * 300 + ["b"] * 150 + rare[:-1])
    cur = np.array(["a"] * 60 + ["b"] * 30 + ["c", "d", "e", "f", "g", "h", "i", "j", "k", "k"])
    names, table = pooled_table(ref, cur, min_expected=5.0)
    assert names == ["a", "b", OTHER] and table.sum() == len(ref) + len(cur)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert expected.min() >= 5.0
    # A pooled bin still too small takes in the smallest kept class.
    names, table = pooled_table(ref[:455], np.array(["a"] * 60 + ["b"] * 35 + ["c"] * 5))
    assert names == ["a", OTHER] and table[:, 1].tolist() == [155, 40]
    # "unknown" answered 40 times where the reference never did.
    shifted = np.array(["a"] * 40 + ["b"] * 20 + ["unknown"] * 40)
    names, _ = pooled_table(ref, shifted)
    assert "unknown" in names
    obs = _synthetic(len(ref), 0)
    obs_ref = Observations(obs.statistics, ref, obs.confidence)
    cur_obs = _synthetic(100, 1)
    result = detect_drift(obs_ref, Observations(cur_obs.statistics, shifted, cur_obs.confidence))
    assert PREDICTED_CLASS in _fired(result)


def test_holm_adjustment() -> None:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="alpha"):
        detect_drift(_synthetic(50, 0), _synthetic(50, 1), alpha=0)


# -- the result, the stored reference, the report -----------------------------------------------


def test_result_round_trips_through_json_and_has_a_compact_extra(digits: dict) -> None:
    result = detect_drift(digits["reference"], _batch(digits, 0, lambda a: 255 - a))
    text = result.to_json()
    back = DriftResult.from_dict(json.loads(text))
    assert back.to_dict() == result.to_dict() and back.drifted
    extra = result.to_extra()
    assert json.loads(json.dumps(extra, allow_nan=False)) == extra
    assert extra["drifted"] is True and extra["n_current"] == 200
    assert set(extra["drifted_checks"]) == _fired(result)
    entry = extra["drifted_checks"]["input:brightness"]
    assert entry["test"] == "ks" and entry["p"] <= 0.01 and entry["current_mean"] > 0.5
    assert set(extra["accuracy"]) == {"reference", "current"}
    assert len(json.dumps(extra)) < 2000
    # Held-out digits unchanged, like the reference's (another sample of the same distribution):
    # nothing fires (the smallest adjusted p is 1.0 for this seed), and the compact extra says so.
    quiet = detect_drift(digits["reference"], _batch(digits, 1))
    assert not quiet.drifted and _fired(quiet) == set()
    assert quiet.to_extra()["drifted"] is False and quiet.to_extra()["drifted_checks"] == {}


def test_observations_save_and_load(tmp_path: Path) -> None:
    obs = _synthetic(30, 0, embeddings=True)
    obs.true = obs.predicted.copy()
    obs.meta = {"model": "digits", "version": "3"}
    obs.save(tmp_path / "ref")
    back = Observations.load(tmp_path / "ref")
    pd.testing.assert_frame_equal(back.statistics, obs.statistics)
    np.testing.assert_array_equal(back.predicted, obs.predicted)
    np.testing.assert_allclose(back.confidence, obs.confidence)
    np.testing.assert_array_equal(back.true, obs.true)
    np.testing.assert_allclose(back.embeddings, obs.embeddings)
    assert back.meta == {"model": "digits", "version": "3"}
    meta = json.loads((tmp_path / "ref" / "observations.json").read_text())
    assert meta["accuracy"] == 1.0 and meta["has_embeddings"]
    # Without true labels and embeddings.
    bare = Observations(obs.statistics, obs.predicted, obs.confidence)
    loaded = Observations.load(bare.save(tmp_path / "bare"))
    assert loaded.true is None and loaded.embeddings is None and loaded.accuracy is None


def test_report_is_self_contained_with_verdict_and_accuracies(digits: dict, tmp_path: Path) -> None:
    reference = digits["reference"]
    batch = _batch(digits, 0, _blur)
    result = detect_drift(reference, batch)
    page = drift_report_html(result, reference, batch, model="digits v3", batch="blurred")
    assert "Drift found" in page and "input:sharpness" in page and "digits v3" in page
    assert f"{reference.accuracy:.3f}" in page and f"{batch.accuracy:.3f}" in page
    assert not re.search(r"https?://", page)
    assert page.count("data:image/png;base64,") == 3  # statistics, classes, confidence

    labelled = _batch(digits, 3)
    unlabelled = Observations(labelled.statistics, labelled.predicted, labelled.confidence)
    quiet = detect_drift(reference, unlabelled)
    assert not quiet.drifted
    path = write_drift_report(tmp_path, quiet, reference, unlabelled)
    text = path.read_text()
    assert path.name == REPORT_FILE and "No drift" in text and "no true labels" in text
    assert not re.search(r"https?://", text)


def test_report_shows_embeddings_when_both_sides_have_them() -> None:
    reference = _synthetic(100, 0, embeddings=True)
    batch = _synthetic(50, 1, embeddings=True, emb_shift=1.0)
    result = detect_drift(reference, batch)
    page = drift_report_html(result, reference, batch)
    assert "Embeddings" in page and page.count("data:image/png;base64,") == 4
    assert "embedding" in page and not re.search(r"https?://", page)
