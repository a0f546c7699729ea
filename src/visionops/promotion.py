"""Register, promote, reject: the stages after the gate. Nothing moves unless the gate passed."""

from __future__ import annotations

import logging
from typing import Any

import mlflow

from visionops import registry, tracking
from visionops.gate import GateDecision, decide
from visionops.runs import RunContext
from visionops.storage import StageOutput

log = logging.getLogger("visionops")
T = tracking.TAG_PREFIX


def register_stage(ctx: RunContext, trained: dict[str, Any], evaluated: dict[str, Any],
                   decision: GateDecision) -> dict[str, Any]:
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
        f"{T}gate_reasons": "; ".join(decision.reasons),
        f"{T}data_fingerprint": parent_tags.get(f"{T}data_fingerprint", ""),
        f"{T}config_hash": ctx.config_hash,
        f"{T}code_version": parent_tags.get(f"{T}code_version", ""),
        f"{T}dag_id": ctx.dag_id,
        f"{T}airflow_run_id": ctx.airflow_run_id,
        f"{T}run_key": ctx.run_key,
        f"{T}parent_run_id": ctx.parent_run_id,
        f"{T}train_run_id": trained["train_run_id"],
        f"{T}model": cfg.model.name,
    }
    if decision.comparison:
        tags[f"{T}compared_with_version"] = decision.comparison["champion_version"]
    description = (f"{cfg.model.name} on {cfg.data.source} data; test accuracy "
                   f"{decision.metrics['accuracy']:.4f}, macro-F1 {decision.metrics['macro_f1']:.4f}. "
                   f"{decision.summary()}")
    with tracking.stage_run(ctx.parent_run_id, "register"):
        version = _existing_version(cfg.registry.model_name, ctx.run_key) or registry.register_version(
            cfg.registry.model_name, trained["model_uri"], trained["train_run_id"], tags, description)
        if decision.passed:
            registry.set_alias(cfg.registry.model_name, registry.CHALLENGER, version)
        mlflow.set_tags({f"{T}model_version": version, f"{T}registered_model": cfg.registry.model_name})
    mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}model_version", version)
    log.info("register: %s version %s (%s)", cfg.registry.model_name, version,
             "challenger" if decision.passed else "rejected, no alias")
    return {"model_name": cfg.registry.model_name, "version": version, "passed": decision.passed}


def _existing_version(name: str, run_key: str) -> str | None:
    """The version this run registered already (a retried task must not register twice)."""
    client = mlflow.tracking.MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{T}run_key` = '{run_key}'")
    except mlflow.exceptions.MlflowException:
        return None
    return str(found[0].version) if found else None


def promote_stage(ctx: RunContext, registered: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
    """Move ``champion`` to the new version, deciding again if the champion changed since evaluation."""
    cfg = ctx.config()
    tracking.configure()
    name, version = registered["model_name"], registered["version"]
    client = mlflow.tracking.MlflowClient()
    with tracking.stage_run(ctx.parent_run_id, "promote"):
        evaluated_against = (evaluated.get("champion") or {}).get("version")
        current = registry.get_alias(name, registry.CHAMPION)
        if current is not None and str(current.version) not in (str(evaluated_against), str(version)):
            # Another run promoted meanwhile: compare with that model on this run's test split.
            from visionops.evaluation import champion_metrics_for

            test_data = StageOutput(evaluated["test_data"]["uri"], evaluated["test_data"]["fingerprint"], {})
            champion = champion_metrics_for(test_data, name, str(current.version))
            decision = decide(evaluated["metrics"], champion, cfg.gate)
            if not decision.passed:
                client.set_model_version_tag(name, version, f"{T}gate", "rejected")
                client.set_model_version_tag(name, version, f"{T}gate_reasons", "; ".join(decision.reasons))
                client.set_tag(ctx.parent_run_id, f"{T}gate", "rejected")
                log.warning("promote: champion changed to v%s meanwhile; %s", current.version, decision.summary())
                return {"promoted": False, "version": version, "reasons": decision.reasons}
        replaced = registry.promote_to_champion(name, version, run_key=ctx.run_key)
        mlflow.set_tags({f"{T}champion_version": version, f"{T}replaced_version": replaced or ""})
    client.set_tag(ctx.parent_run_id, f"{T}champion_version", version)
    client.set_tag(ctx.parent_run_id, f"{T}promoted", "true")
    log.info("promote: %s@champion -> version %s (replaced %s)", name, version, replaced or "none")
    return {"promoted": True, "version": version, "replaced": replaced}


def reject_stage(ctx: RunContext, registered: dict[str, Any], decision: GateDecision) -> dict[str, Any]:
    """Record the rejection where people look: the task log, the MLflow runs, the model version."""
    tracking.configure()
    with tracking.stage_run(ctx.parent_run_id, "reject"):
        mlflow.set_tags({f"{T}gate": "rejected", f"{T}gate_reasons": "; ".join(decision.reasons)[:4900]})
    mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}promoted", "false")
    log.warning("REJECTED: version %s of %s stays without alias; the champion is unchanged. Reasons: %s",
                registered["version"], registered["model_name"], " | ".join(decision.reasons))
    return {"promoted": False, "version": registered["version"], "reasons": decision.reasons}
