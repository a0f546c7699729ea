"""visionops.evaluation: metrics against hand-computed values and scikit-learn, the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from visionops.evaluation import classification_metrics, save_confusion_matrix


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
    cm = save_confusion_matrix(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], ["a", "b", "c"],
                               path, "test")
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.width > 100 and img.height > 100
