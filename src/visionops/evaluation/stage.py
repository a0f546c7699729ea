"""The evaluate stage: the candidate and the champion in service on the held-out test split.

Both models are scored through their served pyfunc (the same call an application makes). The
paired predictions are stored under the run (``<run>/evaluate/predictions.parquet``) so that the
gate, and anyone later, can compare them; XCom carries only the reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

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
    top_k_accuracy,
)
from visionops.evaluation.paired import store_predictions
from visionops.evaluation.plots import (
    save_confusion_matrix,
    save_misclassified_grid,
    save_reliability_plot,
)
from visionops.evaluation.report import render_markdown
from visionops.evaluation.scoring import load_test_split, score_version, unknown_figures
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
    labels, raw, y_true, clean = split.labels, split.images, split.y_true, split.clean
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
        preds, probs = predict_probabilities(candidate, raw)
        y_pred = preds["label"].astype(str).tolist()
        confidence = preds["probability"].to_numpy(dtype=float)
        metrics = classification_metrics(y_true, y_pred, labels)
        k = default_top_k(cfg.gate.top_k, len(labels))
        if k is not None:
            metrics[f"top_{k}_accuracy"] = top_k_accuracy(y_true, probs, labels, k)
        metrics["ece"], bins = expected_calibration_error(y_true, y_pred, confidence)
        metrics.update(clean_metrics(y_true, y_pred, labels, clean))
        unknown = unknown_figures(candidate, raw, y_true, y_pred)
        if unknown is not None:
            metrics["accuracy_unknown_off"] = unknown["accuracy_unknown_off"]
        save_confusion_matrix(
            y_true,
            y_pred,
            labels,
            tmp_path / "confusion_matrix.png",
            f"test split, n={len(y_true)}, accuracy {metrics['accuracy']:.3f}",
        )
        save_reliability_plot(bins, metrics["ece"], tmp_path / "reliability.png")
        n_wrong = save_misclassified_grid(
            raw, y_true, y_pred, confidence, tmp_path / "misclassified.png"
        )
        for png in ("confusion_matrix.png", "reliability.png", "misclassified.png"):
            mlflow.log_artifact(str(tmp_path / png), "evaluation")
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
        mlflow.log_metrics(logged)
        champion = None
        if champion_version is not None:
            champion = score_version(name, champion_version, split)
            mlflow.log_metrics(
                {
                    "champion_test_accuracy": champion.score.accuracy,
                    "champion_test_macro_f1": champion.score.macro_f1,
                }
            )
            mlflow.set_tag(f"{T}champion_version", champion.score.version)
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
            confidence,
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
        }
        tracking.log_json(report, "evaluation/report.json")
        report_md = render_markdown(report)
        mlflow.log_text(report_md, "evaluation/report.md")
        client = mlflow.tracking.MlflowClient()
        # What a person looks at first goes on the parent run too, not only two levels down.
        for png in HEADLINE_FIGURES:
            client.log_artifact(ctx.parent_run_id, str(tmp_path / png), "evaluation")
        client.log_text(ctx.parent_run_id, report_md, "evaluation/report.md")
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
        # every fitted baseline's accuracy on the parent too: the run summary shows the model
        # against each of them
        **{f"baseline_{b.name}_test_accuracy": b.accuracy for b in baselines if not b.skipped},
    }
    mlflow.log_metrics(headline)
    return headline
