"""Evaluation: metrics of a served model on the held-out test split, and the champion on the same split.

Both models are scored through their served pyfunc (the same call an application makes). The
paired predictions are stored under the run (``<run>/evaluate/predictions.parquet``) so that the
gate, and anyone later, can compare them; XCom carries only the reference.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, f1_score, top_k_accuracy_score

from visionops import registry, tracking
from visionops.data.preprocess import load_labels, load_split, load_test_clean
from visionops.evaluation_plots import save_confusion_matrix, save_misclassified_grid, save_reliability_plot
from visionops.gate import PairedPredictions
from visionops.inference import (held_out_params, load_classifier, model_labels, model_tta, predict_probabilities,
                                 to_raw_images, tta_label)
from visionops.report import render_markdown
from visionops.runs import RunContext
from visionops.storage import StageOutput, fingerprint

__all__ = ["classification_metrics", "clean_metrics", "save_confusion_matrix", "expected_calibration_error", "top_k_accuracy",
           "evaluate_stage", "load_paired", "champion_metrics_for"]
PREDICTIONS_FILE = "predictions.parquet"


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


def top_k_accuracy(y_true: Sequence[str], probs: np.ndarray, labels: Sequence[str], k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable (columns of ``probs`` = ``labels``)."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[str(t)] for t in y_true])
    if k >= len(labels):
        return 1.0  # every class is in the top k (scikit-learn warns and says the same)
    return float(top_k_accuracy_score(y, probs, k=k, labels=np.arange(len(labels))))


def expected_calibration_error(y_true: Sequence[str], y_pred: Sequence[str], confidence: Sequence[float],
                               n_bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the bins (for the reliability plot).

    Written here because scikit-learn's calibration_curve is binary only; this is the usual
    multi-class top-label ECE: sum over bins of |accuracy - mean confidence| weighted by bin size.
    """
    correct = np.asarray(y_true, dtype=str) == np.asarray(y_pred, dtype=str)
    conf = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins so that confidence 1.0 lands in the last bin and 0 < p is never dropped.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else 0.0
        mean_conf = float(conf[mask].mean()) if count else 0.0
        ece += count / max(len(conf), 1) * abs(acc - mean_conf)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "accuracy": acc, "confidence": mean_conf})
    return float(ece), bins


def load_test_set(preprocessed: StageOutput) -> tuple[list[str], np.ndarray, list[str]]:
    """The label map, the raw test images (as an application passes them) and their true labels."""
    folder = preprocessed.local_path()
    labels = load_labels(folder)
    test = load_split(folder, "test")
    return labels, to_raw_images(np.asarray(test.x)), [labels[i] for i in test.y]


def clean_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                  clean: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 on the clean test subset (no near-copy in train); NaN when it is empty."""
    keep = np.flatnonzero(clean)
    if len(keep) == 0:
        return {"clean_accuracy": float("nan"), "clean_macro_f1": float("nan"), "n_test_clean": 0}
    true, pred = [y_true[i] for i in keep], [y_pred[i] for i in keep]
    # Macro-F1 over the classes the subset holds (or that were predicted on it): a class whose every
    # test image has a near-copy in training is absent here, and would otherwise count as F1 = 0.
    present = [lab for lab in labels if lab in set(true) | set(pred)]
    sub = classification_metrics(true, pred, present)
    return {"clean_accuracy": sub["accuracy"], "clean_macro_f1": sub["macro_f1"], "n_test_clean": len(keep)}


def champion_predictions(model_name: str, version: str, raw: np.ndarray) -> tuple[list[str], list[str]]:
    """A registered version's predicted labels on ``raw`` images, and its class set."""
    model = load_classifier(f"models:/{model_name}/{version}")
    return model.predict(raw, params=held_out_params(model) or None)["label"].astype(str).tolist(), model_labels(model)


def champion_metrics_for(preprocessed: StageOutput, model_name: str, version: str) -> dict[str, Any]:
    """A registered version's accuracy and macro-F1 (full and clean test subset) on a run's test split,
    with its predictions, labels and the clean mask (``PairedPredictions.clean``)."""
    labels, raw, y_true = load_test_set(preprocessed)
    clean = load_test_clean(preprocessed.local_path(), len(y_true))
    pred, champ_labels = champion_predictions(model_name, version, raw)
    shared = sorted(set(labels) | set(champ_labels))
    metrics = classification_metrics(y_true, pred, shared)
    return {"version": str(version), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            **clean_metrics(y_true, pred, shared, clean), "predictions": pred, "labels": champ_labels,
            "y_true": y_true, "clean": clean.tolist()}


def load_paired(ref: dict[str, Any]) -> PairedPredictions | None:
    """The paired predictions stored by ``evaluate_stage`` (None when there was no champion)."""
    out = StageOutput(ref["uri"], ref["fingerprint"], ref.get("meta", {}))
    frame = pd.read_parquet(out.local_path() / PREDICTIONS_FILE)
    meta = json.loads((out.local_path() / "labels.json").read_text())
    if meta.get("champion_labels") is None:
        return None
    clean = frame["clean"].astype(bool).tolist() if "clean" in frame.columns else None
    return PairedPredictions(frame["y_true"].tolist(), frame["candidate"].tolist(), frame["champion"].tolist(),
                             meta["candidate_labels"], meta["champion_labels"], clean)


def default_top_k(cfg_top_k: int | None, n_classes: int) -> int | None:
    return cfg_top_k if cfg_top_k is not None else (3 if n_classes > 3 else None)


def evaluate_stage(ctx: RunContext, preprocessed: StageOutput, trained: dict[str, Any]) -> dict[str, Any]:
    """Score the new model and the champion (if any) on this run's test split, through the served models."""
    cfg = ctx.config()
    tracking.configure()
    labels, raw, y_true = load_test_set(preprocessed)
    clean = load_test_clean(preprocessed.local_path(), len(y_true))
    name = cfg.registry.model_name
    with tracking.stage_run(ctx.parent_run_id, "evaluate") as run_id, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        candidate = load_classifier(trained["model_uri"])
        # The served model applies its own test-time augmentation: recorded, not re-applied here.
        tta = tta_label(model_tta(candidate))
        mlflow.log_param("tta", tta)
        mlflow.set_tag(f"{tracking.TAG_PREFIX}tta", tta)
        preds, probs = predict_probabilities(candidate, raw)
        y_pred = preds["label"].astype(str).tolist()
        confidence = preds["probability"].to_numpy(dtype=float)
        metrics = classification_metrics(y_true, y_pred, labels)
        k = default_top_k(cfg.gate.top_k, len(labels))
        if k is not None:
            metrics[f"top_{k}_accuracy"] = top_k_accuracy(y_true, probs, labels, k)
        metrics["ece"], bins = expected_calibration_error(y_true, y_pred, confidence)
        metrics.update(clean_metrics(y_true, y_pred, labels, clean))
        save_confusion_matrix(y_true, y_pred, labels, tmp_path / "confusion_matrix.png",
                              f"test split, n={len(y_true)}, accuracy {metrics['accuracy']:.3f}")
        save_reliability_plot(bins, metrics["ece"], tmp_path / "reliability.png")
        n_wrong = save_misclassified_grid(raw, y_true, y_pred, confidence, tmp_path / "misclassified.png")
        for png in ("confusion_matrix.png", "reliability.png", "misclassified.png"):
            mlflow.log_artifact(str(tmp_path / png), "evaluation")
        logged = {"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"], "test_ece": metrics["ece"],
                  "test_clean_accuracy": metrics["clean_accuracy"], "test_clean_macro_f1": metrics["clean_macro_f1"],
                  "n_test_clean": metrics["n_test_clean"]}
        if k is not None:
            logged[f"test_top_{k}_accuracy"] = metrics[f"top_{k}_accuracy"]
        mlflow.log_metrics(logged)
        champion, champ_pred, champ_labels = None, None, None
        current = registry.get_alias(name, registry.CHAMPION)
        if current is not None:
            champ_pred, champ_labels = champion_predictions(name, str(current.version), raw)
            cm = classification_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)))
            champion = {"version": str(current.version), "accuracy": cm["accuracy"], "macro_f1": cm["macro_f1"],
                        **clean_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)), clean)}
            mlflow.log_metrics({"champion_test_accuracy": champion["accuracy"],
                                "champion_test_macro_f1": champion["macro_f1"]})
            mlflow.set_tag(f"{tracking.TAG_PREFIX}champion_version", champion["version"])
        predictions = _store_predictions(ctx, preprocessed, trained["model_uri"], champion, y_true, y_pred,
                                         confidence, champ_pred, labels, champ_labels, clean)
        report = {"metrics": metrics, "calibration_bins": bins, "champion": champion,
                  "model_uri": trained["model_uri"], "test_size": len(y_true), "labels": labels,
                  "misclassified": n_wrong, "predictions": predictions["uri"], "tta": tta}
        tracking.log_json(report, "evaluation/report.json")
        mlflow.log_text(render_markdown(report), "evaluation/report.md")
    client = mlflow.tracking.MlflowClient()
    for key, value in logged.items():
        client.log_metric(ctx.parent_run_id, key, value)
    return {"metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "clean_accuracy", "clean_macro_f1",
                                                 "n_test_clean")},
            "champion": champion, "evaluate_run_id": run_id, "predictions": predictions,
            "test_data": {"uri": preprocessed.uri, "fingerprint": preprocessed.fingerprint}}


def _store_predictions(ctx: RunContext, preprocessed: StageOutput, model_uri: str, champion: dict | None,
                       y_true: list[str], y_pred: list[str], confidence: np.ndarray, champ_pred: list[str] | None,
                       labels: list[str], champ_labels: list[str] | None, clean: np.ndarray) -> dict[str, Any]:
    """Write the paired predictions under the run; returns the reference that goes into XCom."""
    store = ctx.store()
    fp = fingerprint("evaluate", preprocessed.fingerprint, model_uri, (champion or {}).get("version"))
    with store.writing("evaluate", fp) as pending:
        frame = pd.DataFrame({"y_true": y_true, "candidate": y_pred, "candidate_probability": confidence})
        frame["champion"] = champ_pred if champ_pred is not None else None
        frame["clean"] = np.asarray(clean, dtype=bool)  # no near-copy in train: gate.judge_on = clean
        frame.to_parquet(pending.path / PREDICTIONS_FILE, index=False)
        (pending.path / "labels.json").write_text(json.dumps(
            {"candidate_labels": labels, "champion_labels": champ_labels,
             "champion_version": (champion or {}).get("version")}))
        pending.meta = {"n": len(y_true), "champion_version": (champion or {}).get("version")}
    out = pending.output
    return {"uri": out.uri, "fingerprint": out.fingerprint, "meta": out.meta}
