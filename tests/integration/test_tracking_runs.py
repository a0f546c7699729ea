"""Tracking layout against a real (temporary, SQLite) MLflow store: parent run found again on retry, stage
failures marked, cleared after a successful retry. (Pure helpers: tests/unit/test_tracking.py.)"""

from __future__ import annotations

import logging

import pytest
from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.configure()
    yield
    while mlflow.active_run():
        mlflow.end_run()


def test_parent_run_is_found_again_and_stage_failure_then_retry(
    store, tmp_path, caplog, monkeypatch
):
    monkeypatch.delenv("VISIONOPS_MLFLOW_UI_URL", raising=False)
    exp = tracking.experiment_id("t")
    assert tracking._artifact_location("t").startswith("file://")  # never the current directory
    parent = tracking.start_parent_run(exp, "dag/run1", {"visionops.dag_id": "dag"})
    assert tracking.start_parent_run(exp, "dag/run1", {}) == parent
    assert tracking.find_run_for_airflow("dag", "run1") == (exp, parent)
    client = MlflowClient()
    with pytest.raises(RuntimeError), tracking.stage_run(parent, "train"):
        raise RuntimeError("out of memory")
    run = client.get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags["visionops.failed_stage"] == "train"
    assert "out of memory" in run.data.tags["visionops.error"]
    # The retried task succeeds: the run is live again, and a finished run keeps no failure mark.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionops"):
        with tracking.stage_run(parent, "train") as child:
            assert client.get_run(parent).info.status == "RUNNING"
    # The stage's log names its run's page once (Airflow's log view makes it a link).
    urls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLflow run: ")]
    assert urls == [f"MLflow run: http://127.0.0.1:5000/#/experiments/{exp}/runs/{child}"]
    child_run = client.get_run(child)
    assert child_run.data.tags["mlflow.parentRunId"] == parent
    assert child_run.data.tags["visionops.stage"] == "train"
    tracking.end_parent_run(parent)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert "visionops.failed_stage" not in run.data.tags
    assert run.data.tags["visionops.failed_stage_retried"] == "train"
