"""Airflow task logs as a user reads them: a tiny ``train_pipeline`` run under Airflow's real task
supervisor (``supervised_executor``), which logs whatever a task writes to stderr at level error, in a
temporary AIRFLOW_HOME. Library INFO lines (MLflow's, Optuna's) must arrive at INFO, progress bars not
at all, and the stages' logs name their MLflow runs' URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from visionops.core import tracking

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
UI = "http://mlflow.example:5000"

RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).dags["train_pipeline"]
run = dag.test(run_conf=json.loads(sys.argv[2]), use_executor=True)
print(json.dumps({"state": str(run.state), "run_id": run.run_id}))
"""

# One short pass through every stage, one Optuna trial included.
TINY = {
    "experiment": "task-logs",
    "registry.model_name": "task-logs",
    "train.max_epochs": 1,
    "tune.n_trials": 1,
    "tune.epochs_per_trial": 1,
    "gate.min_accuracy": 0,
    "gate.min_macro_f1": 0,
    "gate.min_gain_over_baseline": None,
}
PROGRESS_BAR_MARKS = ("it/s]", "%|", "█", "\r")


@pytest.fixture(scope="module")
def pipeline_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the DAG once; the task logs (JSON lines per task id) and the MLflow store it wrote."""
    root = tmp_path_factory.mktemp("task-logs")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "supervised_executor.SupervisedExecutor",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "VISIONOPS_HOME": str(root / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "VISIONOPS_MLFLOW_UI_URL": UI,
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
        }
    )
    env.pop("VISIONOPS_DATA_ROOT", None)
    migrate = subprocess.run(
        [str(bin_dir / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    conf = {"config": str(REPO / "conf" / "digits.yaml"), "overrides": TINY}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(REPO / "dags" / "train_pipeline.py"), json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["state"] in ("success", "DagRunState.SUCCESS"), proc.stderr[-4000:]
    folder = root / "airflow" / "logs" / "dag_id=train_pipeline" / f"run_id={result['run_id']}"
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("task_id=*/**/attempt=1.log")):
        task_id = path.relative_to(folder).parts[0].removeprefix("task_id=")
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        logs.setdefault(task_id, []).extend(lines)
    return {"logs": logs, "run_id": result["run_id"], "tracking_uri": env["MLFLOW_TRACKING_URI"]}


def _show(lines: list[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join(
        f"{task}: {line['level']} {line.get('logger')}: {line['event']!r:.300}"
        for task, line in lines
    )


def test_library_info_is_logged_at_info_and_nothing_at_error(pipeline_logs: dict[str, Any]) -> None:
    logs = pipeline_logs["logs"]
    assert {"start", "tune_plan", "tune_worker", "tune", "train", "finish"} <= set(logs)
    everything = [(task, line) for task, lines in logs.items() for line in lines]
    # A successful run has nothing to report as an error: before, every MLflow INFO line, progress bar
    # and Optuna line came through stderr (logger "task.stderr") at level error.
    errors = [(t, line) for t, line in everything if line["level"] in ("error", "critical")]
    assert not errors, _show(errors)
    assert not [(t, line) for t, line in everything if line.get("logger") == "task.stderr"]
    bars = [
        (t, line)
        for t, line in everything
        if any(m in str(line["event"]) for m in PROGRESS_BAR_MARKS)
    ]
    assert not bars, _show(bars)
    # The libraries still speak, at their own level, under their own logger names.
    mlflow_train = [line for line in logs["train"] if str(line.get("logger")).startswith("mlflow")]
    assert mlflow_train and {line["level"] for line in mlflow_train} <= {"info", "warning"}
    assert any(line["level"] == "info" for line in mlflow_train), _show(
        [("train", x) for x in mlflow_train]
    )
    optuna_lines = [
        line for line in logs["tune_worker"] if str(line.get("logger")).startswith("optuna")
    ]
    assert any(
        line["level"] == "info" and "Trial 0 finished" in str(line["event"])
        for line in optuna_lines
    ), _show([("tune_worker", x) for x in logs["tune_worker"]])


def test_stage_logs_name_their_mlflow_runs(
    pipeline_logs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", pipeline_logs["tracking_uri"])
        env.delenv("MLFLOW_REGISTRY_URI", raising=False)
        tracking.configure()
        found = tracking.find_run_for_airflow("train_pipeline", pipeline_logs["run_id"])
        assert found is not None
        exp, parent = found
        (train,) = tracking.find_runs(
            {"mlflow.parentRunId": parent, "visionops.stage": "train"}, experiment_ids=[exp]
        )
    tracking.configure()  # MLflow keeps the URI it was given: back to the one the environment names

    def urls(task: str) -> list[str]:
        return [
            str(line["event"])
            for line in pipeline_logs["logs"][task]
            if str(line["event"]).startswith("MLflow run: ")
            and line["level"] == "info"
            and line.get("logger") == "visionops"
        ]

    view = "?workflowType=machine_learning"
    assert urls("start") == [f"MLflow run: {UI}/#/experiments/{exp}/runs/{parent}{view}"]
    assert urls("train") == [f"MLflow run: {UI}/#/experiments/{exp}/runs/{train.info.run_id}{view}"]
    for task in ("ingest", "validate", "preprocess", "tune_plan", "evaluate", "gate", "register"):
        assert len(urls(task)) == 1, task
