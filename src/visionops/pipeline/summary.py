"""The run summary: what a person wants to know after a pipeline run, read back from MLflow; the finish task."""

from __future__ import annotations

import json
import logging
from typing import Any

from mlflow.tracking import MlflowClient

from visionops.core import tracking
from visionops.core.constants import CHAMPION
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import (
    ApprovalAnswer,
    Registered,
    RunSummary,
    ensemble_description,
)
from visionops.core.tracking import split_reasons
from visionops.pipeline.run_note import NOTE_TAG, airflow_run_url, run_note
from visionops.release import registry
from visionops.release.approval import record_answer

log = logging.getLogger("visionops")


def build_summary(parent_run_id: str) -> RunSummary:
    """Collect the run's outcome from its MLflow parent run (the source of truth)."""
    client = MlflowClient()
    run = client.get_run(parent_run_id)
    tags, metrics = run.data.tags, run.data.metrics
    experiment = client.get_experiment(run.info.experiment_id)
    model_name = tags.get(f"{T}model_name", "")
    version = tags.get(f"{T}model_version")
    champion = registry.get_alias(model_name, CHAMPION) if model_name else None
    aliases: list[str] = []
    if version and model_name:
        aliases = sorted(client.get_model_version(model_name, version).aliases or [])
    return RunSummary.model_validate(
        {
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
            "test_clean_accuracy": metrics.get(
                "test_clean_accuracy"
            ),  # test images without a near-copy in train
            "test_clean_macro_f1": metrics.get("test_clean_macro_f1"),
            "n_test_clean": metrics.get("n_test_clean"),
            "trigger": tags.get(f"{T}trigger"),
            "trigger_detail": _json_tag(tags.get(f"{T}trigger_detail")),
            "unchanged_since": tags.get(f"{T}unchanged_since"),
            "changes": tags.get(f"{T}changes"),
            "best_baseline": tags.get(f"{T}best_baseline"),
            "best_baseline_accuracy": metrics.get("best_baseline_test_accuracy"),
            "gain_over_baseline_points": metrics.get("gain_over_best_baseline_points"),
            "baselines": {
                key.removeprefix("baseline_").removesuffix("_test_accuracy"): value
                for key, value in metrics.items()
                if key.startswith("baseline_") and key.endswith("_test_accuracy")
            },
            "data_fingerprint": tags.get(f"{T}data_fingerprint"),
            "validation_warnings": [
                w for w in tags.get(f"{T}validation_warnings", "").split("\n") if w
            ],
            "data_quality": tags.get(f"{T}data_quality"),
            "data_quality_table": _json_tag(tags.get(f"{T}data_quality_table")) or [],
            "dropped_classes": _json_tag(tags.get(f"{T}dropped_classes")),
            "gate": tags.get(f"{T}gate"),
            "gate_reasons": split_reasons(tags.get(f"{T}gate_reasons", "")),
            "model_name": model_name,
            "model_version": version,
            "model_aliases": aliases,
            "champion_version": str(champion.version) if champion is not None else None,
            "replaced_version": tags.get(f"{T}replaced_version"),
            "approval": tags.get(f"{T}approval"),  # only when gate.require_approval asked a person
            # train.folds > 1: the train stage tags the parent with the members, logs the OOF accuracy
            "ensemble_members": _int_tag(tags.get(f"{T}ensemble_members")),
            "oof_accuracy": metrics.get("oof_accuracy"),
            "tuning": tags.get(f"{T}tuning"),  # set by the tune stage's reduce step
        }
    )


def _int_tag(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _json_tag(text: str | None) -> Any:
    """A JSON tag (clipped to what a tag holds: then kept as text)."""
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"text": text}


LOCAL_UIS = "`make ui`, then Airflow http://127.0.0.1:8080 and MLflow http://127.0.0.1:5000"


def format_summary(summary: RunSummary, tracking_uri: str, uis: str = LOCAL_UIS) -> str:
    """The text the CLI prints at the end of a run; ``uis`` says where a person looks further."""
    s = summary
    lines = ["", "=" * 72, f"visionops pipeline run: {s.status}"]
    lines.append(f"  MLflow experiment : {s.experiment} (id {s.experiment_id})")
    lines.append(f"  parent run        : {s.parent_run_id}")
    if s.trigger:
        detail = ", ".join(f"{k} {v}" for k, v in s.trigger_detail.items() if k != "config")
        lines.append(f"  started by        : {s.trigger}{f' ({detail})' if detail else ''}")
    if s.unchanged_since:
        lines.append(
            f"  NOTHING CHANGED   : since champion v{s.unchanged_since} (same data fingerprint, "
            "config hash and code): no training, no new version; --force trains anyway"
        )
    elif s.changes:
        lines.append(f"  since champion    : {s.changes}")
    if s.failed_stage:
        lines.append(f"  FAILED at stage   : {s.failed_stage}")
        lines.append(f"  error             : {s.error}")
    ensemble = ensemble_description(s.ensemble_members, s.oof_accuracy)
    if ensemble:
        lines.append(f"  model             : {ensemble}")
    elif s.test_accuracy is not None:  # a model was trained and evaluated: say it is one network
        lines.append("  model             : one network (train.folds = 1)")
    if s.tuning:
        lines.append(f"  tuning            : {s.tuning}")
    if s.test_accuracy is not None:
        lines.append(f"  test accuracy     : {s.test_accuracy:.4f}")
        lines.append(f"  test macro-F1     : {s.test_macro_f1:.4f}")
    if s.n_test_clean is not None and s.test_clean_accuracy is not None:
        lines.append(
            f"  clean test subset : accuracy {s.test_clean_accuracy:.4f}, macro-F1 "
            f"{s.test_clean_macro_f1:.4f} on {int(s.n_test_clean)} images "
            "without a near-copy in training"
        )
    if s.best_baseline and s.best_baseline_accuracy is not None:
        lines.append(
            f"  best baseline     : {s.best_baseline} {s.best_baseline_accuracy:.4f} "
            f"(model {s.gain_over_baseline_points:+.2f} points; paired evidence under gate)"
        )
        for name, accuracy in sorted(s.baselines.items()):
            if name != s.best_baseline and s.test_accuracy is not None:
                gain = 100 * (s.test_accuracy - accuracy)
                lines.append(
                    f"  other baseline    : {name} {accuracy:.4f} (model {gain:+.2f} points)"
                )
    if s.data_quality:
        lines.append(f"  data quality      : {s.data_quality}")
    for why in s.dropped_classes.values():
        lines.append(f"  class dropped     : {why}")
    for warning in s.validation_warnings:
        lines.append(f"  data warning      : {warning}")
    if s.gate:
        lines.append(f"  gate              : {s.gate.upper()}")
        lines += [f"    - {reason}" for reason in s.gate_reasons]
    if s.approval:
        lines.append(f"  approval          : {s.approval}")
    if s.model_version:
        aliases = ", ".join(s.model_aliases) or "no alias"
        lines.append(f"  registered model  : {s.model_name} version {s.model_version} ({aliases})")
    if s.champion_version:
        lines.append(
            f"  champion          : models:/{s.model_name}@champion -> version {s.champion_version}"
        )
    if s.replaced_version:
        lines.append(
            f"  replaced champion : version {s.replaced_version} (alias previous_champion; "
            f"`visionops registry rollback {s.model_name}` restores it)"
        )
    lines.append(f"  tracking store    : {tracking_uri}")
    lines.append(f"  UIs               : {uis}")
    lines.append("=" * 72)
    return "\n".join(lines)


def finish_run(
    ctx: RunContext, registered: Registered | None, approval: ApprovalAnswer | None
) -> RunSummary:
    """Record a person's answer (when one was asked), close the parent run, store and log the summary
    (``summary.json``, and as the parent run's description)."""
    if approval is not None and registered is not None:
        record_answer(ctx.parent_run_id, registered.model_name, registered.version, approval)
    tracking.end_parent_run(ctx.parent_run_id, "FINISHED")
    summary = build_summary(ctx.parent_run_id)
    tracking.log_json(summary.to_dict(), "summary.json", run_id=ctx.parent_run_id)
    note = run_note(summary, airflow_run_url(ctx.dag_id, ctx.airflow_run_id))
    MlflowClient().set_tag(ctx.parent_run_id, NOTE_TAG, note)  # the run's description in MLflow
    log.info("summary:\n%s", json.dumps(summary.to_dict(), indent=2))
    return summary
