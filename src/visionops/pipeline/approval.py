"""The ``promote_challenger`` tasks: the gate for a version awaiting approval, then its promotion."""

from __future__ import annotations

from visionops.core.contracts import ApprovalAnswer, Candidate, Promotion
from visionops.pipeline.adapter import stage


@stage
def describe(model_name: str, version: str | None = None) -> Candidate:
    """The version to approve (default: the one behind ``challenger``) and its gate decision now."""
    from visionops.release.approval import describe_candidate

    return describe_candidate(model_name, version)


@stage
def promote(described: Candidate, approval: ApprovalAnswer | None) -> Promotion:
    """Promote the approved version under the promotion lock (re-checking the champion), with the smoke test."""
    from visionops.release.approval import promote_approved

    return promote_approved(described, approval)
