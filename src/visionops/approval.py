"""A person's approval before promotion (``gate.require_approval``).

Inside ``train_pipeline`` the ``approve`` task (Airflow 3 HITL ``ApprovalOperator``) shows the gate's
decision; its answer reaches ``promote`` (approved) or ``finish`` (rejected, or no answer before the
deadline), which record it here. The ``promote_challenger`` DAG asks for the same approval later, for
a version still behind ``challenger`` (e.g. one whose in-pipeline request ran out of time).
Approval cannot override a failed gate (that is ``visionops registry promote --force``, recorded).
"""

from __future__ import annotations

import time
from typing import Any

from visionops.errors import InputError
from visionops.tracking import TAG_PREFIX


APPROVE = "Approve"  # the ApprovalOperator's options
T = TAG_PREFIX


def is_approved(answer: dict[str, Any] | None) -> bool:
    """Whether the HITL answer (``chosen_options``, ``responded_by_user``, ...) approves."""
    return bool(answer) and list(answer.get("chosen_options") or []) == [APPROVE]


def responder(answer: dict[str, Any] | None) -> str:
    """Who answered, as recorded on the version; the deadline's default answer has no user."""
    user = (answer or {}).get("responded_by_user")
    if not user:
        return "nobody (no answer before the deadline; the default applied)"
    return str(user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)


def approval_tags(answer: dict[str, Any]) -> dict[str, str]:
    """Tags that record an approval on the version and the run."""
    at = answer.get("responded_at")
    at = at.isoformat() if hasattr(at, "isoformat") else str(at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {f"{T}approved_by": responder(answer), f"{T}approved_at": at, f"{T}awaiting_approval": "false"}


def record_answer(parent_run_id: str, name: str, version: str, answer: dict[str, Any]) -> None:
    """After the ``approve`` task: a rejection (or the deadline's default) on the run and the version.

    An explicit rejection also takes ``challenger`` off the version (a person ruled it out); after a
    deadline it stays, so that ``promote_challenger`` can still ask later.
    """
    import mlflow

    from visionops import registry

    if is_approved(answer):
        return
    who = responder(answer)
    client = mlflow.tracking.MlflowClient()
    reason = f"rejected by {who}" if answer.get("responded_by_user") else "no answer before the deadline"
    for key, value in ((f"{T}approval", reason), (f"{T}awaiting_approval", "false")):
        client.set_model_version_tag(name, version, key, value)
    client.set_tag(parent_run_id, f"{T}approval", reason)
    client.set_tag(parent_run_id, f"{T}promoted", "false")
    challenger = registry.get_alias(name, registry.CHALLENGER)
    if answer.get("responded_by_user") and challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, registry.CHALLENGER)


def describe_candidate(model_name: str, version: str | None = None) -> dict[str, Any]:
    """The version to approve (default: the one behind ``challenger``) and its gate decision now."""
    from visionops import registry, tracking
    from visionops.version_gate import gate_for_version

    tracking.configure()
    if not version:
        challenger = registry.get_alias(model_name, registry.CHALLENGER)
        if challenger is None:
            raise InputError(f"{model_name} has no challenger alias: nothing awaits approval")
        version = str(challenger.version)
    decision, against = gate_for_version(model_name, str(version))
    return {"name": model_name, "version": str(version), "against": against, "passed": decision.passed,
            "summary": decision.summary(), "reasons": decision.reasons}


def promote_approved(described: dict[str, Any], approval: dict[str, Any] | None) -> dict[str, Any]:
    """Promote the approved version under the promotion lock (re-checking the champion) with the smoke test."""
    from visionops import tracking
    from visionops.champion import promote_safely
    from visionops.version_gate import recheck_version, smoke_for_version

    tracking.configure()
    name, version = described["name"], described["version"]
    if not described["passed"]:
        raise InputError(f"{name} v{version} failed the gate; approval cannot override it: {described['summary']}")
    if not is_approved(approval):
        raise InputError(f"{name} v{version} was not approved (answer: {(approval or {}).get('chosen_options')})")
    result = promote_safely(name, version, evaluated_against=described["against"],
                            recheck=recheck_version(name, version), run_key=f"approval:{responder(approval)}",
                            smoke_test=smoke_for_version(name, version), tags=approval_tags(approval or {}))
    if not result.promoted:
        raise InputError(f"{name} v{version} not promoted: the champion changed to v{result.rechecked_against}: "
                         + "; ".join(result.reasons))
    return {"promoted": True, "version": version, "replaced": result.replaced}
