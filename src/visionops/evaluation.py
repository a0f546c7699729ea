"""Evaluation: metrics of a served model on the held-out test split, and the champion on the same split."""

from __future__ import annotations

from collections.abc import Sequence
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from visionops import registry, tracking
from visionops.data.preprocess import load_labels, load_split
from visionops.inference import load_classifier, to_raw_images
from visionops.runs import RunContext
from visionops.storage import StageOutput


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and the per-class report, over the class set ``labels``."""
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    labels = list(labels)
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {label: {k: float(v) for k, v in report[label].items()} for label in labels},
    }


def save_confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], path: Path,
                          title: str) -> np.ndarray:
    """Draw the confusion matrix to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = confusion_matrix(np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str), labels=list(labels))
    side = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay(cm, display_labels=list(labels)).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return cm


def score_model(model_uri: str, raw_images: np.ndarray) -> list[str]:
    """Predicted labels of a served model on raw images (the same call an application makes)."""
    return load_classifier(model_uri).predict(raw_images)["label"].astype(str).tolist()


def _test_set(preprocessed: StageOutput) -> tuple[list[str], np.ndarray, list[str]]:
    folder = preprocessed.local_path()
    labels = load_labels(folder)
    test = load_split(folder, "test")
    return labels, to_raw_images(np.asarray(test.x)), [labels[i] for i in test.y]


def champion_metrics_for(preprocessed: StageOutput, model_name: str, version: str) -> dict[str, Any]:
    """A registered version's accuracy and macro-F1 on a run's test split."""
    labels, raw, y_true = _test_set(preprocessed)
    metrics = classification_metrics(y_true, score_model(f"models:/{model_name}/{version}", raw), labels)
    return {"version": str(version), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def evaluate_stage(ctx: RunContext, preprocessed: StageOutput, trained: dict[str, Any]) -> dict[str, Any]:
    """Score the new model and the champion (if any) on this run's test split, through the served models."""
    cfg = ctx.config()
    tracking.configure()
    labels, raw, y_true = _test_set(preprocessed)
    with tracking.stage_run(ctx.parent_run_id, "evaluate") as run_id, tempfile.TemporaryDirectory() as tmp:
        y_pred = score_model(trained["model_uri"], raw)
        metrics = classification_metrics(y_true, y_pred, labels)
        save_confusion_matrix(y_true, y_pred, labels, Path(tmp) / "confusion_matrix.png",
                              f"test split, n={len(y_true)}, accuracy {metrics['accuracy']:.3f}")
        mlflow.log_artifact(str(Path(tmp) / "confusion_matrix.png"))
        mlflow.log_metrics({"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]})
        champion = None
        current = registry.get_alias(cfg.registry.model_name, registry.CHAMPION)
        if current is not None:
            champion = champion_metrics_for(preprocessed, cfg.registry.model_name, str(current.version))
            mlflow.log_metrics({"champion_test_accuracy": champion["accuracy"],
                                "champion_test_macro_f1": champion["macro_f1"]})
            mlflow.set_tag(f"{tracking.TAG_PREFIX}champion_version", champion["version"])
        report = {"metrics": metrics, "champion": champion, "model_uri": trained["model_uri"],
                  "test_size": len(y_true), "labels": labels}
        tracking.log_json(report, "evaluation/report.json")
    client = mlflow.tracking.MlflowClient()
    client.log_metric(ctx.parent_run_id, "test_accuracy", metrics["accuracy"])
    client.log_metric(ctx.parent_run_id, "test_macro_f1", metrics["macro_f1"])
    return {"metrics": {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
            "champion": champion, "evaluate_run_id": run_id,
            "test_data": {"uri": preprocessed.uri, "fingerprint": preprocessed.fingerprint}}
