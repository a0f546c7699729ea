"""Tracking helpers that need no store. (The run layout on a real store: tests/integration/test_tracking_runs.py.)"""

from __future__ import annotations

import logging

import pytest
from mlflow.entities import Run, RunData, RunInfo, RunTag

from visionops.core import tracking


def test_flatten_nested_config():
    assert tracking.flatten("", {"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": 3,
    }


def test_run_url_is_the_mlflow_ui_page_of_the_run(monkeypatch):
    monkeypatch.delenv("VISIONOPS_MLFLOW_UI_URL", raising=False)
    view = (
        "?workflowType=machine_learning"  # MLflow's model-training view, whatever the browser chose
    )
    assert tracking.run_url("3", "abc") == f"http://127.0.0.1:5000/#/experiments/3/runs/abc{view}"
    monkeypatch.setenv("VISIONOPS_MLFLOW_UI_URL", "https://mlflow.example/team/")
    assert tracking.mlflow_ui_url() == "https://mlflow.example/team"
    assert (
        tracking.run_url("3", "abc")
        == f"https://mlflow.example/team/#/experiments/3/runs/abc{view}"
    )


def test_log_run_url_logs_one_info_line_on_the_visionops_logger(monkeypatch, caplog):
    monkeypatch.setenv("VISIONOPS_MLFLOW_UI_URL", "http://mlflow.example:5000")
    with caplog.at_level(logging.INFO, logger="visionops"):
        tracking.log_run_url("7", "r1")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "visionops",
            logging.INFO,
            "MLflow run: http://mlflow.example:5000/#/experiments/7/runs/r1"
            "?workflowType=machine_learning",
        )
    ]


def _run(status: str = "RUNNING", parent: str | None = "p1", lifecycle: str = "active") -> Run:
    tags = [RunTag("mlflow.parentRunId", parent)] if parent else []
    info = RunInfo("r1", "0", "me", status, 0, None, lifecycle)
    return Run(info, RunData(tags=tags))


@pytest.mark.parametrize(
    ("run", "reopen"),
    [
        (_run("RUNNING"), True),  # its worker was killed: nobody ended it
        (_run("FAILED"), True),  # the attempt raised
        (_run("KILLED"), True),
        (_run("FINISHED"), False),  # a finished run is never written to again
        (_run(lifecycle="deleted"), False),
        (_run(parent="other"), False),  # another pipeline run's
        (_run(parent=None), False),  # not a stage's child run
        (None, False),  # gone
    ],
)
def test_a_stage_run_is_reopened_only_when_unfinished_alive_and_of_the_same_parent(run, reopen):
    assert tracking.can_reopen(run, "p1") is reopen
