"""Promotion after a person's approval (``gate.require_approval``): the steps of the promote_challenger DAG.

With ``gate.require_approval: true`` the pipeline stops at ``challenger``; the ``promote_challenger``
DAG shows the gate's decision to a person (Airflow 3 HITL ``ApprovalOperator``) and, once approved,
runs the gate again against the champion in service and promotes with the smoke test. Approval
cannot override a failed gate (that is ``visionops registry promote --force``, recorded as such).
"""

from __future__ import annotations

import json
import time
from typing import Any

from visionops.errors import InputError


def describe_candidate(model_name: str, version: str | None = None) -> dict[str, Any]:
    """The version to approve (default: the one behind ``challenger``) and its gate decision now."""
    from visionops import registry, tracking
    from visionops.registry_cli import gate_for_version

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
    from visionops.promotion import recheck_version
    from visionops.registry_cli import smoke_for_version

    tracking.configure()
    name, version = described["name"], described["version"]
    if not described["passed"]:
        raise InputError(f"{name} v{version} failed the gate; approval cannot override it: {described['summary']}")
    who = json.dumps((approval or {}).get("responded_by_user"), default=str)
    result = promote_safely(name, version, evaluated_against=described["against"],
                            recheck=recheck_version(name, version), run_key=f"approval:{who}",
                            smoke_test=smoke_for_version(name, version),
                            tags={"visionops.approved_by": who,
                                  "visionops.approved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if not result.promoted:
        raise InputError(f"{name} v{version} not promoted: the champion changed to v{result.rechecked_against}: "
                         + "; ".join(result.reasons))
    return {"promoted": True, "version": version, "replaced": result.replaced}
