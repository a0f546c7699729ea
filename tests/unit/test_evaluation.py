"""visionops.evaluation.metrics: metrics against hand-computed values and scikit-learn, the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from visionops.evaluation.metrics import classification_metrics
from visionops.evaluation.plots import save_confusion_matrix


def test_classification_metrics_hand_computed() -> None:
    # a: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 0.8
    # b: TP 1, FP 0, FN 1 -> P 1,   R 1/2, F1 2/3
    # c: TP 1, FP 0, FN 0 -> F1 1
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "a", "b", "c"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    assert m["n"] == 5
    assert set(m["per_class"]) == {"a", "b", "c"}
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["f1-score"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["support"] == 1.0


def test_classification_metrics_matches_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(0)
    labels = ["0", "1", "2", "3"]
    y_true = rng.choice(labels, 60).tolist()
    y_pred = [t if rng.random() < 0.7 else rng.choice(labels) for t in y_true]
    m = classification_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro"))


def test_classes_never_predicted_or_absent_count_in_macro_f1() -> None:
    # "c" is in the class set but neither true nor predicted: F1 0 under zero_division=0.
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["f1-score"] == 0.0


def test_numeric_labels_are_compared_as_strings() -> None:
    m = classification_metrics([1, 2, 2], ["1", "2", "1"], ["1", "2"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_save_confusion_matrix_writes_png_and_returns_matrix(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    cm = save_confusion_matrix(
        ["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], ["a", "b", "c"], path, "test"
    )
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.width > 100 and img.height > 100


# -- top-k, calibration, figures, report --------------------------------------------------------

from visionops.core.contracts import ensemble_description  # noqa: E402
from visionops.evaluation.metrics import expected_calibration_error, top_k_accuracy  # noqa: E402
from visionops.evaluation.plots import save_misclassified_grid, save_reliability_plot  # noqa: E402
from visionops.evaluation.report import model_card, render_markdown  # noqa: E402


def test_top_k_accuracy_hand_computed() -> None:
    labels = ["a", "b", "c", "d"]
    probs = np.array(
        [
            [0.5, 0.3, 0.15, 0.05],  # true a: top-1
            [0.5, 0.3, 0.15, 0.05],  # true c: rank 3
            [0.1, 0.2, 0.3, 0.4],
        ]
    )  # true a: rank 4
    y = ["a", "c", "a"]
    assert top_k_accuracy(y, probs, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, probs, labels, 3) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, probs, labels, 4) == pytest.approx(1.0)
    assert top_k_accuracy(y, probs, labels, 10) == pytest.approx(1.0)  # k capped at the class count


def test_expected_calibration_error_hand_computed() -> None:
    # Bin (0.9, 1.0]: 2 images, confidence 0.95, 1 right -> |0.5 - 0.95| = 0.45, weight 2/4.
    # Bin (0.5, 0.6]: 2 images, confidence 0.55, both right -> |1 - 0.55| = 0.45, weight 2/4.
    ece, bins = expected_calibration_error(
        ["a", "a", "b", "b"], ["a", "b", "b", "b"], [0.95, 0.95, 0.55, 0.55]
    )
    assert ece == pytest.approx(0.45)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.95)


def test_perfectly_calibrated_predictions_have_zero_ece() -> None:
    # Confidence 1.0 (edge of the last bin) and always right.
    ece, bins = expected_calibration_error(["a", "b"], ["a", "b"], [1.0, 1.0])
    assert ece == pytest.approx(0.0)
    assert bins[-1]["count"] == 2


def test_reliability_and_misclassified_pngs(tmp_path: Path) -> None:
    _, bins = expected_calibration_error(["a", "b", "a"], ["a", "a", "a"], [0.9, 0.8, 0.3])
    save_reliability_plot(bins, 0.2, tmp_path / "rel.png")
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    n = save_misclassified_grid(
        images,
        ["a", "b", "a", "b", "a"],
        ["a", "a", "b", "b", "b"],
        [0.9, 0.8, 0.7, 0.6, 0.99],
        tmp_path / "wrong.png",
    )
    assert n == 3
    none = save_misclassified_grid(images, ["a"] * 5, ["a"] * 5, [0.9] * 5, tmp_path / "none.png")
    assert none == 0
    for name in ("rel.png", "wrong.png", "none.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_report_and_model_card_carry_the_numbers() -> None:
    metrics = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    metrics.update({"ece": 0.125, "top_3_accuracy": 1.0})
    text = render_markdown(
        {
            "metrics": metrics,
            "model_uri": "models:/m-1",
            "test_size": 2,
            "champion": {"version": "4", "accuracy": 0.9, "macro_f1": 0.8},
            "misclassified": 1,
        }
    )
    assert (
        "| accuracy | 0.5000 |" in text
        and "| ece | 0.1250 |" in text
        and "| top_3_accuracy | 1.0000 |" in text
    )
    assert "Champion v4 on the same test images" in text
    assert "| b | 0.000 | 0.000 | 0.000 | 1 |" in text
    card = model_card(
        name="m",
        version="2",
        cfg={"data": {"source": "digits", "image_size": 16, "channels": 1}},
        metrics={"accuracy": 0.97},
        decision={"passed": True, "reasons": ["accuracy ok"]},
        lineage={"run_key": "rk"},
        labels=["0", "1"],
        n_test=270,
    )
    for section in ("## Data", "## Metrics", "## Intended use", "## Limitations", "## Lineage"):
        assert section in card
    assert "- accuracy: 0.9700" in card and "- accuracy ok" in card and "`rk`" in card
    assert "ensemble" not in card
    ensemble = model_card(
        name="m",
        version="3",
        cfg={"data": {"source": "digits", "image_size": 16, "channels": 1}},
        metrics={"accuracy": 0.97},
        decision={"passed": True, "reasons": []},
        lineage={},
        labels=["0", "1"],
        n_test=270,
        ensemble=ensemble_description(4, 0.95),
    )
    assert (
        "A soft-voting ensemble of 4 members (stratified group 4-fold), out-of-fold accuracy 0.9500:"
        in ensemble
    )
    assert ensemble_description(1, 0.9) is None and ensemble_description(None, None) is None


def test_clean_subset_metrics_and_report() -> None:
    from visionops.evaluation.metrics import clean_metrics

    y_true = ["a", "a", "b", "b", "a"]
    y_pred = ["a", "b", "b", "b", "b"]
    clean = np.array([True, False, True, True, False])
    got = clean_metrics(y_true, y_pred, ["a", "b"], clean)
    assert got == {"clean_accuracy": 1.0, "clean_macro_f1": 1.0, "n_test_clean": 3}
    # A class with no clean test image is left out of the clean macro-F1 instead of counting as 0.
    only_b = clean_metrics(y_true, y_pred, ["a", "b"], np.array([False, False, True, True, False]))
    assert only_b == {"clean_accuracy": 1.0, "clean_macro_f1": 1.0, "n_test_clean": 2}
    empty = clean_metrics(y_true, y_pred, ["a", "b"], np.zeros(5, bool))
    assert empty["n_test_clean"] == 0 and np.isnan(empty["clean_accuracy"])

    metrics = {**classification_metrics(y_true, y_pred, ["a", "b"]), "ece": 0.1, **got}
    text = render_markdown(
        {
            "metrics": metrics,
            "model_uri": "runs:/x/model",
            "test_size": 5,
            "champion": {
                "version": "1",
                "accuracy": 0.6,
                "macro_f1": 0.5,
                "clean_accuracy": 0.9,
                "clean_macro_f1": 0.8,
            },
        }
    )
    assert (
        "Clean test subset (3 of 5 images without a near-copy in the training split): accuracy 1.0000"
        in text
    )
    assert "on the clean subset 0.9000 and 0.8000" in text


def test_a_model_that_answers_unknown_reports_accuracy_with_it_off() -> None:
    """``unknown_figures`` asks the served model again with ``unknown_threshold: -1``; the report and
    the model card show both figures, the gate's (served, unknown on) first."""
    import pandas as pd

    from visionops.evaluation.scoring import unknown_figures

    class Served:  # the two calls unknown_figures makes of a pyfunc model
        def __init__(self, unknown: dict | None) -> None:
            self.unknown, self.calls = unknown, []

        def unwrap_python_model(self) -> Served:
            return self

        def predict(self, images: np.ndarray, params: dict) -> pd.DataFrame:
            self.calls.append(params)
            return pd.DataFrame({"label": ["a", "b", "b"]})

    record = {
        "score": "distance",
        "threshold": 0.45,
        "strangers_estimate": {"strangers_unknown": 0.93},
    }
    model = Served(record)
    got = unknown_figures(model, np.zeros((3, 4, 4, 3)), ["a", "b", "a"], ["a", "unknown", "b"])
    assert model.calls == [{"unknown_threshold": -1.0}]
    assert got == {
        "accuracy_unknown_off": pytest.approx(2 / 3),
        "n_answered_unknown": 1,
        "threshold": 0.45,
        "score": "distance",
        "strangers_unknown_estimate": 0.93,
    }
    assert (
        unknown_figures(Served({"threshold": None}), np.zeros((1, 4, 4, 3)), ["a"], ["a"]) is None
    )
    metrics = classification_metrics(["a", "b", "a"], ["a", "unknown", "b"], ["a", "b"])
    text = render_markdown(
        {"metrics": {**metrics, "ece": 0.0}, "model_uri": "m", "test_size": 3, "unknown": got}
    )
    assert "accuracy 0.3333 as served, 0.6667 with `unknown` off" in text
    assert "test images of enrolled classes answered `unknown`: 1." in text
    assert "estimated at train time from the enrolled people" in text and "93.0%" in text
    card = model_card(
        name="faces",
        version="1",
        cfg={"data": {}},
        metrics={"accuracy": 0.3333},
        decision={"passed": False, "reasons": []},
        lineage={},
        labels=["a", "b"],
        n_test=3,
        accuracy_unknown_off=2 / 3,
    )
    assert "- accuracy with `unknown` off: 0.6667" in card
    assert "It answers `unknown` for images too far" in card
