"""The register stage: every gated model becomes a version with its lineage, the gate decision and a
model card; the pipeline's parent run links it."""

from __future__ import annotations

import json
import logging
from typing import Any

import mlflow
from visionops.core import tracking
from visionops.core.constants import CHALLENGER
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import (
    Evaluated,
    GateDecision,
    Registered,
    Trained,
    ensemble_description,
)
from visionops.data.preprocess import load_labels
from visionops.evaluation.report import model_card
from visionops.evaluation.scoring import load_test_split
from visionops.release import registry

log = logging.getLogger("visionops")
LINEAGE_KEYS = (
    "data_fingerprint",
    "config_hash",
    "code_version",
    "code_fingerprint",
    "dag_id",
    "airflow_run_id",
    "run_key",
    "parent_run_id",
    "train_run_id",
)


def register_stage(
    ctx: RunContext, trained: Trained, evaluated: Evaluated, decision: GateDecision
) -> Registered:
    """Register the model as a new version with its lineage and the gate decision on it.

    Rejected models are registered too (without an alias), so that the reason stays on the version;
    only a version that passed gets ``challenger``.
    """
    cfg = ctx.config()
    tracking.configure()
    parent_tags = mlflow.tracking.MlflowClient().get_run(ctx.parent_run_id).data.tags
    tags = {
        f"{T}accuracy": f"{decision.metrics['accuracy']:.4f}",
        f"{T}macro_f1": f"{decision.metrics['macro_f1']:.4f}",
        f"{T}gate": "passed" if decision.passed else "rejected",
        f"{T}gate_reasons": tracking.reasons_text(decision.reasons),
        f"{T}data_fingerprint": parent_tags.get(f"{T}data_fingerprint", ""),
        f"{T}config_hash": ctx.config_hash,
        f"{T}code_version": parent_tags.get(f"{T}code_version", ""),
        f"{T}code_fingerprint": parent_tags.get(f"{T}code_fingerprint", ""),
        f"{T}dag_id": ctx.dag_id,
        f"{T}airflow_run_id": ctx.airflow_run_id,
        f"{T}run_key": ctx.run_key,
        f"{T}parent_run_id": ctx.parent_run_id,
        f"{T}train_run_id": trained.train_run_id,
        f"{T}model": cfg.model.name,
        f"{T}config_file": parent_tags.get(f"{T}config_file", ""),
        f"{T}data_quality": parent_tags.get(f"{T}data_quality", ""),
    }
    if trained.ensemble_members > 1:  # train.folds: the version serves a soft-voting ensemble
        tags[f"{T}ensemble_members"] = str(trained.ensemble_members)
    dropped = _json(parent_tags.get(f"{T}dropped_classes"), {})
    if dropped:  # the classes this version does not know, though the data had them
        tags[f"{T}dropped_classes"] = ", ".join(dropped)
    if decision.baseline:
        tags[f"{T}best_baseline"] = decision.baseline["best"]
        tags[f"{T}gain_over_baseline"] = f"{decision.baseline['gain_points']:+.2f}"
    if decision.comparison:
        tags[f"{T}compared_with_version"] = decision.comparison["champion_version"]
        paired = decision.comparison.get("paired")
        if paired:
            tags[f"{T}gate_evidence"] = {
                k: paired[k] for k in ("mcnemar_p_two_sided", "ci_low", "ci_high", "n")
            }
    # Where this version was tested: `visionops registry promote` re-runs the gate on the same split.
    if evaluated.predictions:  # what the monitor compares served batches with
        tags[f"{T}reference_uri"] = _store_reference(ctx, trained, evaluated)
    tags[f"{T}test_data_uri"] = evaluated.test_data.uri
    tags[f"{T}test_data_fingerprint"] = evaluated.test_data.fingerprint
    if evaluated.predictions:
        tags[f"{T}predictions_uri"] = evaluated.predictions.uri
    description = (
        f"{cfg.model.name} on {cfg.data.source} data; test accuracy "
        f"{decision.metrics['accuracy']:.4f}, macro-F1 {decision.metrics['macro_f1']:.4f}. "
        f"{decision.summary()}"
    )
    with tracking.stage_run(ctx.parent_run_id, "register"):
        version = _existing_version(
            cfg.registry.model_name, ctx.run_key
        ) or registry.register_version(
            cfg.registry.model_name, trained.model_uri, trained.train_run_id, tags, description
        )
        card = model_card(
            name=cfg.registry.model_name,
            version=version,
            cfg=cfg.to_dict(),
            metrics=decision.metrics,
            decision=decision.to_dict(),
            lineage={
                k.removeprefix(T): str(v)
                for k, v in tags.items()
                if k.removeprefix(T) in LINEAGE_KEYS
            },
            labels=load_labels(evaluated.test_data.local_path()),
            n_test=evaluated.predictions.meta.get("n") if evaluated.predictions else None,
            baselines=[b.model_dump() for b in evaluated.baselines],
            quality=_json(parent_tags.get(f"{T}data_quality_table"), []),
            dropped=_json(parent_tags.get(f"{T}dropped_classes"), {}),
            ensemble=ensemble_description(trained.ensemble_members, trained.oof_accuracy),
            accuracy_unknown_off=evaluated.metrics.accuracy_unknown_off,
        )
        mlflow.log_text(card, "model_card.md")
        client = mlflow.tracking.MlflowClient()
        client.set_model_version_tag(
            cfg.registry.model_name,
            version,
            f"{T}model_card",
            f"{mlflow.get_artifact_uri()}/model_card.md",
        )
        client.update_model_version(
            cfg.registry.model_name, version, description=f"{description}\n\n{card}"[:60000]
        )
        if decision.passed:
            registry.set_alias(cfg.registry.model_name, CHALLENGER, version)
            if cfg.gate.require_approval:
                client.set_model_version_tag(
                    cfg.registry.model_name, version, f"{T}awaiting_approval", "true"
                )
        mlflow.set_tags(
            {f"{T}model_version": version, f"{T}registered_model": cfg.registry.model_name}
        )
    link_parent_run(ctx.parent_run_id, cfg.registry.model_name, version, trained.model_uri, card)
    log.info(
        "register: %s version %s (%s)",
        cfg.registry.model_name,
        version,
        "challenger" if decision.passed else "rejected, no alias",
    )
    return Registered(
        model_name=cfg.registry.model_name,
        version=version,
        passed=decision.passed,
        require_approval=cfg.gate.require_approval,
        review=review_text(cfg.registry.model_name, version, decision, ctx),
    )


def link_parent_run(parent_run_id: str, name: str, version: str, model_uri: str, card: str) -> None:
    """The pipeline's parent run names the version it produced: MLflow's run page lists it under
    "Registered models" (the model is among the run's outputs), a tag and the model card say which."""
    client = mlflow.tracking.MlflowClient()
    registry.link_version_to_run(parent_run_id, name, version, model_uri)
    client.set_tag(parent_run_id, f"{T}model_version", version)
    client.set_tag(parent_run_id, f"{T}registered_version", registry.version_uri(name, version))
    client.log_text(parent_run_id, card, "model_card.md")


def _store_reference(ctx: RunContext, trained: Trained, evaluated: Evaluated) -> str:
    """The version's reference for monitoring: its answers on its test split (``monitoring``)."""
    import pandas as pd

    from visionops.evaluation.paired import PREDICTIONS_FILE
    from visionops.monitoring.service import record_reference
    from visionops.serving.model import load_classifier

    assert evaluated.predictions is not None
    split = load_test_split(evaluated.test_data)
    stored = pd.read_parquet(evaluated.predictions.local_path() / PREDICTIONS_FILE)
    uri = ctx.store().stage_path("reference")
    record_reference(
        load_classifier(trained.model_uri),
        split.images,
        pd.DataFrame(
            {"label": stored["candidate"], "probability": stored["candidate_probability"]}
        ),
        split.y_true,
        uri,
        meta={"model_uri": trained.model_uri, "run_key": ctx.run_key},
    )
    return uri


def review_text(name: str, version: str, decision: GateDecision, ctx: RunContext) -> str:
    """What the person asked to approve reads (Markdown): the decision, its evidence, where to look."""
    lines = [
        f"**{name} version {version}** passed the gate: accuracy {decision.metrics['accuracy']:.4f}, "
        f"macro-F1 {decision.metrics['macro_f1']:.4f}.",
        "",
        *[f"- {reason}" for reason in decision.reasons],
    ]
    paired = (decision.comparison or {}).get("paired")
    if paired:
        lines += [
            "",
            f"Paired evidence on {paired['n']} test images: McNemar p = {paired['mcnemar_p_two_sided']:.4g}, "
            f"accuracy difference CI [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}].",
        ]
    lines += [
        "",
        f"MLflow parent run `{ctx.parent_run_id}` (its description and model card). **Approve** moves "
        "`champion` to this version after re-checking the champion in service; **Reject** leaves it.",
    ]
    return "\n".join(lines)


def _existing_version(name: str, run_key: str) -> str | None:
    """The version this run registered already (a retried task must not register twice)."""
    client = mlflow.tracking.MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{T}run_key` = '{run_key}'")
    except mlflow.exceptions.MlflowException:
        return None
    return str(found[0].version) if found else None


def _json(text: str | None, default: Any) -> Any:
    """A JSON tag of the parent run (``default`` when absent or clipped)."""
    try:
        return json.loads(text) if text else default
    except json.JSONDecodeError:
        return default
