"""The stages after evaluation: gate, promote, reject (register: ``release.register``). Nothing moves
unless the gate passed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import mlflow
from visionops.core import tracking
from visionops.core.config import GateConfig
from visionops.core.constants import CHAMPION
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import (
    ApprovalAnswer,
    Evaluated,
    GateDecision,
    Promotion,
    Registered,
)
from visionops.core.errors import InputError
from visionops.evaluation.paired import (
    PairedPredictions,
    candidate_predictions,
    load_answers,
    load_baselines,
    load_paired,
)
from visionops.release.approval import approval_tags, is_approved
from visionops.release.champion import SmokeTestError, promote_safely
from visionops.release.gate import decide

log = logging.getLogger("visionops")

# The gate and reject tasks never score a model: evaluation.scoring (which loads torch through the
# served model) and serving.smoke are imported where a recheck or a smoke test runs, so that those
# tasks' processes do not pay for torch's import (about 3 s each under a scheduler).


def gate_stage(ctx: RunContext, evaluated: Evaluated) -> GateDecision:
    """Decide with the configured thresholds and the champion comparison; record the decision."""
    cfg = ctx.config()
    tracking.configure()
    paired = baselines = None
    if evaluated.predictions:
        # The model's answers and the simple baselines', on the same images (per-class rules too).
        baselines = load_answers(evaluated.predictions)
        if evaluated.champion:
            paired = load_paired(evaluated.predictions)  # both models on the same test images
    with tracking.stage_run(ctx.parent_run_id, "gate"):
        decision = decide(
            evaluated.metrics.model_dump(),
            evaluated.champion.model_dump() if evaluated.champion else None,
            cfg.gate,
            paired,
            baselines,
            _dropped_classes(ctx.parent_run_id),
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


def _dropped_classes(parent_run_id: str) -> dict[str, str]:
    """The classes validate dropped from this run's data (class -> why), from the parent run."""
    import json

    tag = mlflow.tracking.MlflowClient().get_run(parent_run_id).data.tags.get(f"{T}dropped_classes")
    try:
        return json.loads(tag) if tag else {}
    except json.JSONDecodeError:  # clipped: the reasons are lost, the classes still "removed"
        return {}


def recheck_against(
    evaluated: Evaluated, name: str, gate_cfg: GateConfig
) -> Callable[[str], GateDecision]:
    """The gate again, against whichever version is champion now, on this run's test split and paired."""

    def recheck(current: str) -> GateDecision:
        from visionops.evaluation.scoring import load_test_split, score_version

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
                {key: values.tolist() for key, values in split.slices.items()},
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
        from visionops.evaluation.scoring import load_test_split
        from visionops.serving.smoke import smoke_test

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
