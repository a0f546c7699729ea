"""The stages after evaluation: gate, register, promote, reject. Nothing moves unless the gate passed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import mlflow
from visionops.core import tracking
from visionops.core.config import GateConfig
from visionops.core.constants import CHALLENGER, CHAMPION
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import (
    ApprovalAnswer,
    Evaluated,
    GateDecision,
    Promotion,
    Registered,
    Trained,
)
from visionops.core.errors import InputError
from visionops.data.preprocess import load_labels
from visionops.evaluation.paired import (
    PairedPredictions,
    candidate_predictions,
    load_baselines,
    load_paired,
)
from visionops.evaluation.report import model_card
from visionops.evaluation.scoring import load_test_split, score_version
from visionops.release import registry
from visionops.release.approval import approval_tags, is_approved
from visionops.release.champion import SmokeTestError, promote_safely
from visionops.release.gate import decide
from visionops.serving.smoke import smoke_test

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


def gate_stage(ctx: RunContext, evaluated: Evaluated) -> GateDecision:
    """Decide with the configured thresholds and the champion comparison; record the decision."""
    cfg = ctx.config()
    tracking.configure()
    paired = baselines = None
    if evaluated.predictions:
        baselines = load_baselines(evaluated.predictions)  # the simple baselines, same images
        if evaluated.champion:
            paired = load_paired(evaluated.predictions)  # both models on the same test images
    with tracking.stage_run(ctx.parent_run_id, "gate"):
        decision = decide(
            evaluated.metrics.model_dump(),
            evaluated.champion.model_dump() if evaluated.champion else None,
            cfg.gate,
            paired,
            baselines,
        )
        tracking.log_json(decision.to_dict(), "gate/decision.json")
        mlflow.set_tags(
            {
                f"{T}gate": "passed" if decision.passed else "rejected",
                f"{T}gate_reasons": tracking.reasons_text(decision.reasons),
            }
        )
        mlflow.log_metric("gate_passed", float(decision.passed))
    client = mlflow.tracking.MlflowClient()
    client.set_tag(ctx.parent_run_id, f"{T}gate", "passed" if decision.passed else "rejected")
    client.set_tag(ctx.parent_run_id, f"{T}gate_reasons", tracking.reasons_text(decision.reasons))
    (log.info if decision.passed else log.warning)("%s", decision.summary())
    return decision


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
    }
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
    mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}model_version", version)
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
        f"MLflow parent run `{ctx.parent_run_id}` (model card on its register run). **Approve** moves "
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


def recheck_against(
    evaluated: Evaluated, name: str, gate_cfg: GateConfig
) -> Callable[[str], GateDecision]:
    """The gate again, against whichever version is champion now, on this run's test split and paired."""

    def recheck(current: str) -> GateDecision:
        split = load_test_split(evaluated.test_data)
        champion = score_version(name, current, split)
        paired = baselines = None
        if evaluated.predictions:
            baselines = load_baselines(evaluated.predictions)
            paired = PairedPredictions(
                split.y_true,
                candidate_predictions(evaluated.predictions),
                champion.predictions,
                split.labels,
                champion.labels,
                split.clean.tolist(),
            )  # gate.judge_on: clean needs the mask here too
        return decide(
            evaluated.metrics.model_dump(),
            champion.score.model_dump(),
            gate_cfg,
            paired,
            baselines,
        )

    return recheck


def smoke_check(name: str, evaluated: Evaluated, n_images: int) -> Callable[[], None] | None:
    """The post-promotion smoke test: the first held-out images, labelled as evaluation labelled them."""
    if n_images == 0 or not evaluated.predictions:
        return None
    predictions = evaluated.predictions

    def check() -> None:
        images = load_test_split(evaluated.test_data).head(n_images).images
        smoke_test(
            f"models:/{name}@{CHAMPION}", images, candidate_predictions(predictions)[:n_images]
        )

    return check


def promote_stage(
    ctx: RunContext,
    registered: Registered,
    evaluated: Evaluated,
    approval: ApprovalAnswer | None = None,
) -> Promotion:
    """Move ``champion`` to the new version under the promotion lock, deciding again if it changed.

    With ``gate.require_approval`` the ``approve`` task's answer must be an approval (who and when are
    recorded on the version); the gate is still re-checked, since the champion may have moved while a
    person was deciding. After the move a fresh process must load ``models:/NAME@champion`` and label
    held-out images as the evaluation did; otherwise the aliases go back and the task fails.
    """
    cfg = ctx.config()
    tracking.configure()
    name, version = registered.model_name, registered.version
    client = mlflow.tracking.MlflowClient()
    extra_tags: dict[str, str] = {}
    if cfg.gate.require_approval:
        if not is_approved(approval):
            raise InputError(
                f"gate.require_approval is set but {name} v{version} has no approval "
                f"(answer: {approval.chosen_options if approval else None}); nothing was promoted"
            )
        extra_tags = approval_tags(approval)
    with tracking.stage_run(ctx.parent_run_id, "promote"):
        try:
            result = promote_safely(
                name,
                version,
                evaluated_against=evaluated.champion.version if evaluated.champion else None,
                recheck=recheck_against(evaluated, name, cfg.gate),
                run_key=ctx.run_key,
                smoke_test=smoke_check(name, evaluated, cfg.registry.smoke_test_images),
                tags=extra_tags,
            )
        except SmokeTestError:
            client.set_tag(ctx.parent_run_id, f"{T}promoted", "false")
            raise
        mlflow.set_tags(
            {
                f"{T}promotion_lock": result.lock,
                f"{T}rechecked_against": result.rechecked_against or "",
            }
        )
        if not result.promoted:
            client.set_tag(ctx.parent_run_id, f"{T}gate", "rejected")
            client.set_tag(
                ctx.parent_run_id, f"{T}gate_reasons", tracking.reasons_text(result.reasons)
            )
            client.set_tag(ctx.parent_run_id, f"{T}promoted", "false")
            return Promotion(promoted=False, version=version, reasons=result.reasons)
        mlflow.set_tags(
            {
                f"{T}champion_version": version,
                f"{T}replaced_version": result.replaced or "",
                **extra_tags,
            }
        )
    client.set_tag(ctx.parent_run_id, f"{T}champion_version", version)
    client.set_tag(ctx.parent_run_id, f"{T}promoted", "true")
    if extra_tags:
        client.set_tag(
            ctx.parent_run_id, f"{T}approval", f"approved by {extra_tags[f'{T}approved_by']}"
        )
    if result.replaced:
        client.set_tag(ctx.parent_run_id, f"{T}replaced_version", result.replaced)
    log.info(
        "promote: %s@champion -> version %s (replaced %s)", name, version, result.replaced or "none"
    )
    return Promotion(promoted=True, version=version, replaced=result.replaced)


def reject_stage(ctx: RunContext, registered: Registered, decision: GateDecision) -> Promotion:
    """Record the rejection where people look: the task log, the MLflow runs, the model version."""
    tracking.configure()
    with tracking.stage_run(ctx.parent_run_id, "reject"):
        mlflow.set_tags(
            {f"{T}gate": "rejected", f"{T}gate_reasons": tracking.reasons_text(decision.reasons)}
        )
    mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}promoted", "false")
    log.warning(
        "REJECTED: version %s of %s stays without alias; the champion is unchanged. Reasons: %s",
        registered.version,
        registered.model_name,
        " | ".join(decision.reasons),
    )
    return Promotion(promoted=False, version=registered.version, reasons=decision.reasons)
