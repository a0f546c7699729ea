"""A person's approval before promotion (``gate.require_approval``).

Inside ``train_pipeline`` the ``approve`` task (Airflow 3 HITL ``ApprovalOperator``) shows the gate's
decision; its answer reaches ``promote`` (approved) or ``finish`` (rejected, or no answer before the
deadline), which record it here. The ``promote_challenger`` DAG asks for the same approval later, for
a version still behind ``challenger`` (e.g. one whose in-pipeline request ran out of time).
Approval cannot override a failed gate (that is ``visionops registry promote --force``, recorded).
"""

from __future__ import annotations

import time
from datetime import datetime

import mlflow
from visionops.core import tracking
from visionops.core.constants import CHALLENGER, REASON_SEPARATOR
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import ApprovalAnswer, Candidate, Promotion
from visionops.core.errors import InputError
from visionops.release import registry
from visionops.release.champion import promote_safely

APPROVE = "Approve"  # the ApprovalOperator's options


def is_approved(answer: ApprovalAnswer | None) -> bool:
    """Whether the HITL answer (``chosen_options``, ``responded_by_user``, ...) approves."""
    return answer is not None and answer.chosen_options == [APPROVE]


def responder(answer: ApprovalAnswer | None) -> str:
    """Who answered, as recorded on the version; the deadline's default answer has no user."""
    user = answer.responded_by_user if answer else None
    if not user:
        return "nobody (no answer before the deadline; the default applied)"
    return str(user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)


def approval_tags(answer: ApprovalAnswer) -> dict[str, str]:
    """Tags that record an approval on the version and the run."""
    at = answer.responded_at
    at = (
        at.isoformat()
        if isinstance(at, datetime)
        else (at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    )
    return {
        f"{T}approved_by": responder(answer),
        f"{T}approved_at": at,
        f"{T}awaiting_approval": "false",
    }


def record_answer(parent_run_id: str, name: str, version: str, answer: ApprovalAnswer) -> None:
    """After the ``approve`` task: a rejection (or the deadline's default) on the run and the version.

    An explicit rejection also takes ``challenger`` off the version (a person ruled it out); after a
    deadline it stays, so that ``promote_challenger`` can still ask later.
    """
    if is_approved(answer):
        return
    who = responder(answer)
    client = mlflow.tracking.MlflowClient()
    reason = f"rejected by {who}" if answer.responded_by_user else "no answer before the deadline"
    for key, value in ((f"{T}approval", reason), (f"{T}awaiting_approval", "false")):
        client.set_model_version_tag(name, version, key, value)
    client.set_tag(parent_run_id, f"{T}approval", reason)
    client.set_tag(parent_run_id, f"{T}promoted", "false")
    challenger = registry.get_alias(name, CHALLENGER)
    if (
        answer.responded_by_user
        and challenger is not None
        and str(challenger.version) == str(version)
    ):
        client.delete_registered_model_alias(name, CHALLENGER)


def describe_candidate(model_name: str, version: str | None = None) -> Candidate:
    """The version to approve (default: the one behind ``challenger``) and its gate decision now."""
    if not version:
        challenger = registry.get_alias(model_name, CHALLENGER)
        if challenger is None:
            raise InputError(f"{model_name} has no challenger alias: nothing awaits approval")
        version = str(challenger.version)
    # version_gate scores models (torch): imported where a version is judged, so that the tasks that
    # only record an answer (finish) do not pay for torch's import.
    from visionops.release.version_gate import gate_for_version

    decision, against = gate_for_version(model_name, str(version))
    passed, reasons = decision.passed, list(decision.reasons)
    shadow_ok, why = _shadow_rule(model_name, str(version), against)
    if why is not None:
        reasons.append(why)
    passed = passed and shadow_ok
    summary = f"gate {'PASSED' if passed else 'REJECTED'}: " + REASON_SEPARATOR.join(reasons)
    return Candidate(
        name=model_name,
        version=str(version),
        against=against,
        passed=passed,
        summary=summary,
        reasons=reasons,
    )


def _shadow_rule(name: str, version: str, champion: str | None) -> tuple[bool, str | None]:
    """``registry.min_shadow_batches`` / ``min_shadow_agreement`` of the version's training config
    against what its shadow batches beside the champion recorded (``serving.shadow``)."""
    from visionops.serving.shadow import shadow_rule, stored_config

    tags = dict(mlflow.tracking.MlflowClient().get_model_version(name, version).tags or {})
    cfg = stored_config(tags)
    if cfg is None:
        return True, None
    return shadow_rule(
        tags, champion, cfg.registry.min_shadow_batches, cfg.registry.min_shadow_agreement
    )


def promote_approved(described: Candidate, approval: ApprovalAnswer | None) -> Promotion:
    """Promote the approved version under the promotion lock (re-checking the champion) with the smoke test."""
    name, version = described.name, described.version
    if not described.passed:
        raise InputError(
            f"{name} v{version} failed the gate; approval cannot override it: {described.summary}"
        )
    if approval is None or not is_approved(approval):
        raise InputError(
            f"{name} v{version} was not approved (answer: {approval.chosen_options if approval else None})"
        )
    from visionops.release.version_gate import recheck_version, smoke_for_version

    result = promote_safely(
        name,
        version,
        evaluated_against=described.against,
        recheck=recheck_version(name, version),
        run_key=f"approval:{responder(approval)}",
        smoke_test=smoke_for_version(name, version),
        tags=approval_tags(approval),
    )
    if not result.promoted:
        raise InputError(
            f"{name} v{version} not promoted: the champion changed to v{result.rechecked_against}: "
            + tracking.reasons_text(result.reasons)
        )
    return Promotion(promoted=True, version=version, replaced=result.replaced)
