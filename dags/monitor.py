"""monitor: each batch the model in service scored, checked for drift against its reference.

Scheduled on the ``visionops://predictions`` asset (``batch_predict``'s ``record`` task). ``check``
compares each recorded batch with the reference stored with the version that answered it (its test
split): input statistics, predicted-class distribution, confidence (and embeddings where there are).
The HTML report goes to MLflow (experiment ``visionops-monitor``), linked from the model version.
``drift`` emits the ``visionops://drift`` asset event only when drift was found, with what drifted:
``train_pipeline`` then retrains, and a person approves the promotion.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from visionops_assets import DRIFT, PREDICTIONS

from visionops.pipeline import continuous
from visionops_tasks import run_stage

DOC = """
### Is the model in service still seeing what it was tested on?

Runs when `batch_predict` recorded a scored batch. **check** tests the batch against the version's
reference (Kolmogorov-Smirnov per input statistic, chi-square on the predicted classes, Mann-Whitney
on the confidences; Holm's correction holds the false-alarm rate at 1% per batch) and logs the drift
report to MLflow (`visionops-monitor`; the model version's tag `visionops.drift_report_run`).
**drift** runs only when drift was found: it emits `visionops://drift`, which starts
`train_pipeline` with `gate.require_approval` on. Skipped = no drift, no event.
"""


@dag(
    dag_id="monitor",
    description="Check each scored batch for drift against the model's reference; emit drift events.",
    schedule=[PREDICTIONS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["visionops", "continuous-training", "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
)
def monitor():
    @task
    def check() -> list:
        events = get_current_context()["triggering_asset_events"][PREDICTIONS]
        return [run_stage(continuous.check_drift, dict(event.extra)) for event in events]

    @task(outlets=[DRIFT])
    def drift(checked: list) -> dict:
        found = [c for c in checked if c["drifted"]]
        if not found:
            raise AirflowSkipException("no drift: no event")  # a skipped task emits no event
        latest = found[-1]
        get_current_context()["outlet_events"][DRIFT].extra = {
            "model_name": latest["model_name"],
            "model_version": latest["model_version"],
            "config": latest["config"],
            "report_run_id": latest["report_run_id"],
            "summary": latest["summary"],
            **latest["extra"],
        }
        return latest

    drift(check())


monitor()
