"""promote_challenger: a person approves (Airflow 3 HITL) before the challenger becomes champion.

train_pipeline asks for approval itself (``gate.require_approval: true``, task ``approve``); this DAG
asks later, for the version behind ``challenger`` (e.g. when that request ran out of time). Thin wiring only:
each task is one call to its adapter in ``visionops.pipeline.approval``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from visionops.pipeline import approval as approval_tasks
from visionops_tasks import run_stage

DOC = """
### Approve a challenger, then promote it

`describe` runs the gate for the version (default: `models:/<model_name>@challenger`) against the
champion in service, on the version's own test split. `approve` waits for a person: the subject
and body show the decision and its reasons (McNemar p-value, confidence interval). On **Approve**,
`promote` re-checks the champion under the promotion lock, moves `champion` and runs the smoke
test, recording who approved. On **Reject** nothing moves. A version that fails the gate cannot
be approved into service (use `visionops registry promote --force`, which is recorded); nor can
one that has not shadowed the champion for `registry.min_shadow_batches` batches with the
agreement its config asks (`serving.shadow`).
"""


@dag(
    dag_id="promote_challenger",
    description="A person approves the challenger before it becomes champion (asked again after a run).",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=DOC,
    tags=["visionops", "registry", "approval"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("visionops-digits", type="string", title="Registered model"),
        "version": Param(
            None,
            type=["null", "string"],
            title="Version",
            description="Version to promote; empty = the one behind the challenger alias.",
        ),
    },
)
def promote_challenger():
    @task
    def describe() -> dict:
        params = get_current_context()["params"]
        return run_stage(approval_tasks.describe, params["model_name"], params.get("version"))

    described = describe()
    approve = ApprovalOperator(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='describe')['name'] }} version "
        "{{ ti.xcom_pull(task_ids='describe')['version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='describe')['summary'] }}",
        response_timeout=timedelta(days=3),
        retries=0,
    )

    @task
    def promote(described: dict, approval: dict) -> dict:
        return run_stage(approval_tasks.promote, described, approval)

    described >> approve
    promote(described, approve.output)


promote_challenger()
