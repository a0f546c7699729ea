"""The run summary: what a person wants to know after a pipeline run, read back from MLflow."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from visionops import registry
from visionops.tracking import TAG_PREFIX as T


def build_summary(parent_run_id: str) -> dict[str, Any]:
    """Collect the run's outcome from its MLflow parent run (the source of truth)."""
    client = MlflowClient()
    run = client.get_run(parent_run_id)
    tags, metrics = run.data.tags, run.data.metrics
    experiment = client.get_experiment(run.info.experiment_id)
    model_name = tags.get(f"{T}model_name", "")
    version = tags.get(f"{T}model_version")
    champion = registry.get_alias(model_name, registry.CHAMPION) if model_name else None
    aliases: list[str] = []
    if version and model_name:
        aliases = sorted(client.get_model_version(model_name, version).aliases or [])
    return {
        "status": run.info.status,
        "failed_stage": tags.get(f"{T}failed_stage"),
        "error": tags.get(f"{T}error"),
        "experiment": experiment.name,
        "experiment_id": run.info.experiment_id,
        "parent_run_id": parent_run_id,
        "run_key": tags.get(f"{T}run_key"),
        "airflow_run_id": tags.get(f"{T}airflow_run_id"),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_macro_f1": metrics.get("test_macro_f1"),
        "test_clean_accuracy": metrics.get("test_clean_accuracy"),  # test images without a near-copy in train
        "test_clean_macro_f1": metrics.get("test_clean_macro_f1"),
        "n_test_clean": metrics.get("n_test_clean"),
        "data_fingerprint": tags.get(f"{T}data_fingerprint"),
        "validation_warnings": [w for w in tags.get(f"{T}validation_warnings", "").split("\n") if w],
        "gate": tags.get(f"{T}gate"),
        "gate_reasons": [r for r in tags.get(f"{T}gate_reasons", "").split("; ") if r],
        "model_name": model_name,
        "model_version": version,
        "model_aliases": aliases,
        "champion_version": str(champion.version) if champion is not None else None,
        "replaced_version": tags.get(f"{T}replaced_version"),
        "approval": tags.get(f"{T}approval"),  # only when gate.require_approval asked a person
    }


def format_summary(summary: dict[str, Any], tracking_uri: str) -> str:
    """The text the CLI prints at the end of a run."""
    lines = ["", "=" * 72, f"visionops pipeline run: {summary.get('status')}"]
    lines.append(f"  MLflow experiment : {summary['experiment']} (id {summary['experiment_id']})")
    lines.append(f"  parent run        : {summary['parent_run_id']}")
    if summary.get("failed_stage"):
        lines.append(f"  FAILED at stage   : {summary['failed_stage']}")
        lines.append(f"  error             : {summary.get('error')}")
    if summary.get("test_accuracy") is not None:
        lines.append(f"  test accuracy     : {summary['test_accuracy']:.4f}")
        lines.append(f"  test macro-F1     : {summary['test_macro_f1']:.4f}")
    if summary.get("n_test_clean") is not None and summary.get("test_clean_accuracy") is not None:
        lines.append(f"  clean test subset : accuracy {summary['test_clean_accuracy']:.4f}, macro-F1 "
                     f"{summary['test_clean_macro_f1']:.4f} on {int(summary['n_test_clean'])} images "
                     "without a near-copy in training")
    for warning in summary.get("validation_warnings") or []:
        lines.append(f"  data warning      : {warning}")
    if summary.get("gate"):
        lines.append(f"  gate              : {summary['gate'].upper()}")
        lines += [f"    - {reason}" for reason in summary["gate_reasons"]]
    if summary.get("approval"):
        lines.append(f"  approval          : {summary['approval']}")
    if summary.get("model_version"):
        aliases = ", ".join(summary["model_aliases"]) or "no alias"
        lines.append(f"  registered model  : {summary['model_name']} version {summary['model_version']} ({aliases})")
    if summary.get("champion_version"):
        lines.append(f"  champion          : models:/{summary['model_name']}@champion -> version "
                     f"{summary['champion_version']}")
    if summary.get("replaced_version"):
        lines.append(f"  replaced champion : version {summary['replaced_version']} (alias previous_champion; "
                     f"`visionops registry rollback {summary['model_name']}` restores it)")
    lines.append(f"  tracking store    : {tracking_uri}")
    lines.append("  UIs               : `make ui`, then Airflow http://127.0.0.1:8080 and MLflow "
                 "http://127.0.0.1:5000")
    lines.append("=" * 72)
    return "\n".join(lines)
