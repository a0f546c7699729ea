"""Scoring a model on a run's test split, the one way it is done: through its served pyfunc (the
call an application makes), so that what is scored is what is served.

Used by the evaluate stage (the champion beside the candidate), the re-check under the promotion
lock, ``visionops registry promote``, approval, and the smoke test's expected answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionops.core.contracts import ChampionScore
from visionops.core.storage import StageOutput
from visionops.data.preprocess import load_labels, load_slices, load_split, load_test_clean
from visionops.evaluation.metrics import classification_metrics, clean_metrics
from visionops.serving.model import held_out_params, load_classifier, model_labels, to_raw_images
from visionops.serving.unknown import UNKNOWN, unknown_record


@dataclass(frozen=True)
class TestSplit:
    """A run's test split as an application would pass it, with what scoring it needs."""

    __test__ = False  # not a pytest test class

    labels: list[str]  # the run's label map
    images: np.ndarray  # raw uint8 images
    y_true: list[str]
    clean: np.ndarray  # per image: no near-copy in the training split
    slices: dict[str, np.ndarray] = field(default_factory=dict)  # slice -> value per image

    def head(self, n: int) -> TestSplit:
        return TestSplit(
            self.labels,
            self.images[:n],
            self.y_true[:n],
            self.clean[:n],
            {k: v[:n] for k, v in self.slices.items()},
        )


@dataclass(frozen=True)
class VersionScore:
    """A registered version's answers on a test split and its figures (over both class sets)."""

    predictions: list[str]
    labels: list[str]  # the version's own class set
    score: ChampionScore


def load_test_split(preprocessed: StageOutput) -> TestSplit:
    """The test split of a preprocess output (the label map, raw images, true labels, the clean mask)."""
    folder = preprocessed.local_path()
    labels = load_labels(folder)
    test = load_split(folder, "test")
    y_true = [labels[i] for i in test.y]
    return TestSplit(
        labels,
        to_raw_images(np.asarray(test.x)),
        y_true,
        load_test_clean(folder, len(y_true)),
        load_slices(folder, "test", len(y_true)),
    )


def predict_labels(model_uri: str, images: np.ndarray) -> tuple[list[str], list[str]]:
    """A served model's labels for held-out ``images`` (a face model takes them as chips), and its class set."""
    model = load_classifier(model_uri)
    out = model.predict(images, params=held_out_params(model) or None)
    return out["label"].astype(str).tolist(), model_labels(model)


def unknown_figures(
    model: Any, images: np.ndarray, y_true: list[str], y_pred: list[str]
) -> dict[str, Any] | None:
    """For a served model that answers ``unknown``: the test images it answered ``unknown`` (all of
    them known people: a test split holds no strangers), its accuracy with ``unknown`` turned off
    (the same call with ``unknown_threshold: -1``), and its threshold with the strangers' share the
    train stage estimated from the enrolled people. None for a model without a threshold."""
    record = unknown_record(model)
    if record is None:
        return None
    off = model.predict(images, params={**held_out_params(model), "unknown_threshold": -1.0})
    labels = off["label"].astype(str).tolist()
    estimate = record.get("strangers_estimate") or {}
    return {
        "accuracy_unknown_off": float(np.mean(np.asarray(labels) == np.asarray(y_true))),
        "n_answered_unknown": int(sum(p == UNKNOWN for p in y_pred)),
        "threshold": float(record["threshold"]),
        "score": record.get("score", "probability"),
        "strangers_unknown_estimate": estimate.get("strangers_unknown"),
    }


def score_version(model_name: str, version: str, split: TestSplit) -> VersionScore:
    """Score ``models:/<name>/<version>`` on ``split``: accuracy and macro-F1 over the union of the
    split's and the version's class sets, on the whole split and on its clean subset."""
    predictions, labels = predict_labels(f"models:/{model_name}/{version}", split.images)
    over = sorted(set(split.labels) | set(labels))
    full = classification_metrics(split.y_true, predictions, over)
    score = ChampionScore(
        version=str(version),
        accuracy=full["accuracy"],
        macro_f1=full["macro_f1"],
        **clean_metrics(split.y_true, predictions, over, split.clean),
    )
    return VersionScore(predictions, labels, score)
