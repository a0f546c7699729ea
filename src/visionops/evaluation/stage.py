"""The evaluate stage: the candidate and the champion in service on the held-out test split.

Both models are scored through their served pyfunc (the same call an application makes). The
paired predictions are stored under the run (``<run>/evaluate/predictions.parquet``) so that the
gate, and anyone later, can compare them; XCom carries only the reference.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mlflow
from visionops.core import tracking
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import BaselineScore, Evaluated, TestScores, Trained
from visionops.core.storage import StageOutput
from visionops.evaluation.baselines import best_baseline, evaluate_baselines
from visionops.evaluation.metrics import (
    classification_metrics,
    clean_metrics,
    default_top_k,
    expected_calibration_error,
    slice_figures,
    top_k_accuracy,
)
from visionops.evaluation.paired import store_predictions
from visionops.evaluation.plots import (
    save_confusion_matrix,
    save_misclassified_grid,
    save_reliability_plot,
)
from visionops.evaluation.report import render_markdown
from visionops.evaluation.scoring import (
    TestSplit,
    VersionScore,
    load_test_split,
    score_version,
    unknown_figures,
)
from visionops.serving.model import load_classifier, model_tta, predict_probabilities, tta_label

# The evaluate run's figures that the parent run carries as well (with evaluation/report.md).
HEADLINE_FIGURES = ("confusion_matrix.png", "misclassified.png")


def evaluate_stage(
    ctx: RunContext, preprocessed: StageOutput, trained: Trained, champion_version: str | None
) -> Evaluated:
    """Score the new model and the champion in service (``champion_version``, None when there is none)
    on this run's test split, through the served models; store the paired predictions under the run."""
    cfg = ctx.config()
    tracking.configure()
    split = load_test_split(preprocessed)
    labels, y_true, clean = split.labels, split.y_true, split.clean
    name = cfg.registry.model_name
    with (
        tracking.stage_run(ctx.parent_run_id, "evaluate") as run_id,
        tempfile.TemporaryDirectory() as tmp,
    ):
        tmp_path = Path(tmp)
        candidate = load_classifier(trained.model_uri)
        # The served model applies its own test-time augmentation: recorded, not re-applied here.
        tta = tta_label(model_tta(candidate))
        mlflow.log_param("tta", tta)
        mlflow.set_tag(f"{T}tta", tta)
        scored = _score_candidate(candidate, split, cfg.gate.top_k)
        metrics, bins, unknown = scored.metrics, scored.bins, scored.unknown
        y_pred = scored.y_pred
        n_wrong = _log_figures(tmp_path, split, scored)
        logged = _headline_metrics(metrics, scored.k, unknown)
        mlflow.log_metrics(logged)
        champion = _score_champion(name, champion_version, split)
        baselines, baseline_labels = evaluate_baselines(
            preprocessed,
            labels,
            y_true,
            clean,
            y_pred,
            cfg.baseline,
            cfg.gate,
            # A K-fold ensemble learned from train + val: so do the baselines it is judged against.
            refit_on_val=cfg.train.folds > 1,
        )
        logged |= _log_baselines(baselines, metrics["accuracy"])
        predictions = store_predictions(
            ctx.store(),
            preprocessed,
            trained.model_uri,
            split,
            y_pred,
            scored.confidence,
            champion,
            baseline_labels,
        )
        report = {
            "metrics": metrics,
            "calibration_bins": bins,
            "champion": champion.score.model_dump() if champion else None,
            "baselines": [b.model_dump() for b in baselines],
            "model_uri": trained.model_uri,
            "test_size": len(y_true),
            "labels": labels,
            "misclassified": n_wrong,
            "predictions": predictions.uri,
            "tta": tta,
            "unknown": unknown,
            "slices": slice_figures(
                y_true, y_pred, champion.predictions if champion else None, split.slices
            ),
        }
        _log_report(ctx.parent_run_id, report, tmp_path)
    client = mlflow.tracking.MlflowClient()
    for key, value in logged.items():
        client.log_metric(ctx.parent_run_id, key, value)
    best = best_baseline(baselines)
    if best is not None:
        client.set_tag(ctx.parent_run_id, f"{T}best_baseline", best.name)
    return Evaluated(
        metrics=TestScores(**{k: metrics[k] for k in TestScores.model_fields if k in metrics}),
        champion=champion.score if champion else None,
        baselines=baselines,
        evaluate_run_id=run_id,
        predictions=predictions,
        test_data=preprocessed,
    )


def _score_champion(name: str, version: str | None, split: TestSplit) -> VersionScore | None:
    """The champion in service scored on the same test split (None when there is none), its
    headline figures on the active run."""
    if version is None:
        return None
    champion = score_version(name, version, split)
    mlflow.log_metrics(
        {
            "champion_test_accuracy": champion.score.accuracy,
            "champion_test_macro_f1": champion.score.macro_f1,
        }
    )
    mlflow.set_tag(f"{T}champion_version", champion.score.version)
    return champion


def _log_report(parent_run_id: str, report: dict[str, Any], figures: Path) -> None:
    """The report (JSON and Markdown) on the active run; what a person looks at first (the report,
    the headline figures) on the parent run too, not only two levels down."""
    tracking.log_json(report, "evaluation/report.json")
    report_md = render_markdown(report)
    mlflow.log_text(report_md, "evaluation/report.md")
    client = mlflow.tracking.MlflowClient()
    for png in HEADLINE_FIGURES:
        client.log_artifact(parent_run_id, str(figures / png), "evaluation")
    client.log_text(parent_run_id, report_md, "evaluation/report.md")


@dataclass
class _Scored:
    """The candidate's answers on the test split and the figures computed from them."""

    y_pred: list[str]
    confidence: np.ndarray
    metrics: dict[str, Any]
    bins: list[dict[str, Any]]
    k: int | None  # the top-k reported, if any
    unknown: dict[str, Any] | None  # accuracy with unknown off, for a model that answers unknown


def _score_candidate(candidate: Any, split: TestSplit, top_k: int | None) -> _Scored:
    raw, y_true, labels = split.images, split.y_true, split.labels
    preds, probs = predict_probabilities(candidate, raw)
    y_pred = preds["label"].astype(str).tolist()
    confidence = preds["probability"].to_numpy(dtype=float)
    metrics = classification_metrics(y_true, y_pred, labels)
    k = default_top_k(top_k, len(labels))
    if k is not None:
        metrics[f"top_{k}_accuracy"] = top_k_accuracy(y_true, probs, labels, k)
    metrics["ece"], bins = expected_calibration_error(y_true, y_pred, confidence)
    metrics.update(clean_metrics(y_true, y_pred, labels, split.clean))
    unknown = unknown_figures(candidate, raw, y_true, y_pred)
    if unknown is not None:
        metrics["accuracy_unknown_off"] = unknown["accuracy_unknown_off"]
    return _Scored(y_pred, confidence, metrics, bins, k, unknown)


def _log_figures(folder: Path, split: TestSplit, scored: _Scored) -> int:
    """The confusion matrix, reliability plot and misclassified grid, logged on the active run;
    returns the number of misclassified images."""
    y_true, metrics = split.y_true, scored.metrics
    save_confusion_matrix(
        y_true,
        scored.y_pred,
        split.labels,
        folder / "confusion_matrix.png",
        f"test split, n={len(y_true)}, accuracy {metrics['accuracy']:.3f}",
    )
    save_reliability_plot(scored.bins, metrics["ece"], folder / "reliability.png")
    n_wrong = save_misclassified_grid(
        split.images, y_true, scored.y_pred, scored.confidence, folder / "misclassified.png"
    )
    for png in ("confusion_matrix.png", "reliability.png", "misclassified.png"):
        mlflow.log_artifact(str(folder / png), "evaluation")
    return n_wrong


def _headline_metrics(
    metrics: dict[str, Any], k: int | None, unknown: dict[str, Any] | None
) -> dict[str, float]:
    """The test figures logged on the evaluate run and, later, the parent run."""
    logged = {
        "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro_f1"],
        "test_ece": metrics["ece"],
        "test_clean_accuracy": metrics["clean_accuracy"],
        "test_clean_macro_f1": metrics["clean_macro_f1"],
        "n_test_clean": metrics["n_test_clean"],
    }
    if k is not None:
        logged[f"test_top_{k}_accuracy"] = metrics[f"top_{k}_accuracy"]
    if unknown is not None:
        logged["test_accuracy_unknown_off"] = unknown["accuracy_unknown_off"]
    return logged


def _log_baselines(baselines: list[BaselineScore], model_accuracy: float) -> dict[str, float]:
    """Each baseline's figures on the evaluate run (its setting as a param, a skip as a tag); returns
    the headline figures that also go to the parent run."""
    for b in baselines:
        if b.skipped:
            mlflow.set_tag(f"{T}baseline_{b.name}_skipped", tracking.clip(b.skipped))
            continue
        mlflow.log_metrics(
            {
                f"baseline_{b.name}_test_accuracy": b.accuracy,
                f"baseline_{b.name}_test_macro_f1": b.macro_f1,
                f"baseline_{b.name}_mcnemar_p": b.paired["mcnemar_p_two_sided"],
                f"baseline_{b.name}_fit_seconds": b.fit_seconds,
            }
        )
        mlflow.log_param(f"baseline_{b.name}", tracking.clip(str(b.params)))
    best = best_baseline(baselines)
    if best is None:
        return {}
    mlflow.set_tag(f"{T}best_baseline", best.name)
    headline = {
        "best_baseline_test_accuracy": best.accuracy,
        "gain_over_best_baseline_points": 100 * (model_accuracy - best.accuracy),
    }
    mlflow.log_metrics(headline)
    # Every fitted baseline's accuracy goes to the parent too (logged above on this run): the run
    # summary shows the model against each of them.
    return headline | {
        f"baseline_{b.name}_test_accuracy": b.accuracy for b in baselines if not b.skipped
    }
