"""A person's approval before promotion: the answer's handling, and the promote_challenger DAG's steps
(its adapters in ``visionops.pipeline.approval``, called with the JSON the tasks pass).

The in-pipeline approval (train_pipeline's ``approve`` task) runs end to end in tests/e2e.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from visionops.core.constants import CHALLENGER, CHAMPION
from visionops.core.contracts import ApprovalAnswer
from visionops.core.errors import InputError
from visionops.pipeline.approval import describe as describe_candidate
from visionops.pipeline.approval import promote as promote_approved
from visionops.release import registry
from visionops.release.approval import is_approved, record_answer, responder

REPO = Path(__file__).resolve().parents[2]


def test_dag_waits_on_an_approval_operator_before_promote() -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    bag = DagBag(dag_folder=str(REPO / "dags" / "promote_challenger.py"))
    assert bag.import_errors == {}
    dag = bag.dags["promote_challenger"]
    assert isinstance(dag.get_task("approve"), ApprovalOperator)
    assert dag.get_task("describe").downstream_task_ids == {"approve", "promote"}
    assert dag.get_task("approve").downstream_task_ids == {"promote"}
    assert "xcom_pull(task_ids='describe')['summary']" in dag.get_task("approve").body


@pytest.fixture()
def challenger(good_and_bad: str) -> str:
    """v1 good behind ``challenger``, v2 bad."""
    registry.set_alias(good_and_bad, CHALLENGER, "1")
    return good_and_bad


def test_describe_and_promote_after_approval(challenger: str) -> None:
    described = describe_candidate(challenger)
    assert (
        described["version"] == "1" and described["passed"] is True and described["against"] is None
    )
    assert described["summary"].startswith("gate PASSED")
    result = promote_approved(
        described,
        {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "alice"}},
    )
    assert result == {"promoted": True, "version": "1", "replaced": None, "reasons": []}
    tags = MlflowClient().get_model_version(challenger, "1").tags
    assert tags["visionops.approved_by"] == "alice"
    assert tags["visionops.smoke_test"] == "passed"
    assert str(registry.get_alias(challenger, CHAMPION).version) == "1"


def test_approval_cannot_override_a_failed_gate(challenger: str) -> None:
    registry.set_alias(challenger, CHAMPION, "1")
    described = describe_candidate(challenger, "2")
    assert described["passed"] is False and described["against"] == "1"
    with pytest.raises(InputError, match="approval cannot override"):
        promote_approved(
            described, {"chosen_options": ["Approve"], "responded_by_user": {"name": "bob"}}
        )
    assert str(registry.get_alias(challenger, CHAMPION).version) == "1"


def test_no_challenger_is_a_clear_error(serving_tracking: dict[str, Any]) -> None:
    name = f"appr-{uuid.uuid4().hex[:6]}"
    m = serving_tracking["models"]["good"]
    registry.register_version(name, m["model_uri"], m["run_id"], {}, "x")
    with pytest.raises(InputError, match="no challenger alias"):
        describe_candidate(name)


def test_a_rejected_answer_promotes_nothing(challenger: str) -> None:
    described = describe_candidate(challenger)
    with pytest.raises(InputError, match="was not approved"):
        promote_approved(
            described, {"chosen_options": ["Reject"], "responded_by_user": {"name": "carol"}}
        )
    assert registry.get_alias(challenger, CHAMPION) is None


def test_reading_answers() -> None:
    assert is_approved(ApprovalAnswer.model_validate({"chosen_options": ["Approve"]}))
    assert not is_approved(ApprovalAnswer.model_validate({"chosen_options": ["Reject"]}))
    assert not is_approved(ApprovalAnswer.model_validate({"chosen_options": ["Approve", "Reject"]}))
    assert not is_approved(None)
    assert (
        responder(ApprovalAnswer.model_validate({"responded_by_user": {"id": "3", "name": "dana"}}))
        == "dana"
    )
    assert responder(
        ApprovalAnswer.model_validate({"chosen_options": ["Reject"], "responded_by_user": None})
    ).startswith("nobody")


def test_record_answer_rejection_and_deadline(challenger: str) -> None:
    client = MlflowClient()
    exp = client.create_experiment(f"appr-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    # No answer before the deadline: recorded, but challenger stays so that it can be asked again.
    record_answer(
        parent,
        challenger,
        "1",
        ApprovalAnswer.model_validate({"chosen_options": ["Reject"], "responded_by_user": None}),
    )
    assert (
        client.get_model_version(challenger, "1").tags["visionops.approval"]
        == "no answer before the deadline"
    )
    assert str(registry.get_alias(challenger, CHALLENGER).version) == "1"
    # A person rejected it: recorded with the name, and the version is no longer a challenger.
    record_answer(
        parent,
        challenger,
        "1",
        ApprovalAnswer.model_validate(
            {"chosen_options": ["Reject"], "responded_by_user": {"name": "erin"}}
        ),
    )
    assert (
        client.get_model_version(challenger, "1").tags["visionops.approval"] == "rejected by erin"
    )
    run_tags = client.get_run(parent).data.tags
    assert (
        run_tags["visionops.approval"] == "rejected by erin"
        and run_tags["visionops.promoted"] == "false"
    )
    assert registry.get_alias(challenger, CHALLENGER) is None
    assert registry.get_alias(challenger, CHAMPION) is None
