"""The Airflow plugins load; their MLflow links resolve a DAG run (and a stage of it) to its MLflow runs.

What Airflow 3.3's UI shows of a plugin: a run-page view only with a ``url_route`` (in a frame, on
the Airflow origin here), and a task's extra links from ``GET .../taskInstances/{task}/links``, which
asks each global link's ``get_link``. tests/e2e/test_browser_e2e.py asks that endpoint of a running
API server.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_module():
    spec = importlib.util.spec_from_file_location(
        "visionops_mlflow", REPO / "plugins" / "visionops_mlflow.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_declares_views_links_and_app(plugin_module):
    plugin = plugin_module.VisionopsMlflowPlugin
    views = {v["name"]: v for v in plugin.external_views}
    assert views["MLflow"]["destination"] == "nav"
    run_view = views["MLflow run"]
    # Without url_route the 3.3 UI lists the view but draws no tab for it.
    assert run_view["destination"] == "dag_run" and run_view["url_route"]
    # The tab's frame shows the plugin's own page (Airflow's origin), never MLflow's (it refuses frames).
    assert run_view["href"].startswith(f"{plugin_module.ROUTE}/run?")
    assert "{DAG_ID}" in run_view["href"] and "{RUN_ID}" in run_view["href"]
    nav = next(v for v in plugin.external_views if v["destination"] == "nav")
    assert (
        nav["href"] == f"{plugin_module.ROUTE}/mlflow"
    )  # a redirect: the URL is read when followed
    assert plugin.fastapi_apps[0]["url_prefix"] == plugin_module.ROUTE
    assert {link.name for link in plugin.global_operator_extra_links} == {
        "MLflow run",
        "MLflow stage run",
    }


@pytest.mark.integration  # a fresh interpreter (subprocess)
def test_loading_the_plugins_imports_nothing_heavy(tmp_path):
    # Every Airflow process loads the plugins, each task process too (for its listeners).
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO / 'plugins')!r})\n"
        f"for name in ('visionops_mlflow', 'visionops_tasks'):\n"
        f"    runpy.run_path({str(REPO / 'plugins')!r} + '/' + name + '.py')\n"
        "print('loaded=' + ','.join(m for m in ('mlflow', 'torch', 'optuna') if m in sys.modules))\n"
    )
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "src"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded="


def test_airflow_registers_the_links_the_run_view_and_the_timetable():
    """The plugin manager (what the API server and the scheduler use) picks all of them up."""
    from airflow import plugins_manager

    names = {link.name for link in plugins_manager.get_global_operator_extra_links()}
    assert {"MLflow run", "MLflow stage run"} <= names
    external_views, _ = plugins_manager._get_ui_plugins()
    assert any(
        v["destination"] == "dag_run" and v.get("url_route") == "mlflow-run" for v in external_views
    )
    assert "visionops_schedule.CronWithoutCatchUp" in plugins_manager.get_timetables_plugins()


def _ti_key(dag_id: str, task_id: str, run_id: str = "manual__2026-12-03T09:00:00+00:00"):
    return SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1)


def _link(plugin_module, name: str, key) -> str:
    link = next(
        v for v in plugin_module.VisionopsMlflowPlugin.global_operator_extra_links if v.name == name
    )
    return link.get_link(None, ti_key=key)


def test_extra_links_point_at_the_redirect_endpoint(plugin_module):
    run_id = "manual__2026-12-03T09:00:00+00:00"
    parent = urlsplit(_link(plugin_module, "MLflow run", _ti_key("train_pipeline", "start")))
    assert parent.path == f"{plugin_module.ROUTE}/mlflow-run"
    assert parse_qs(parent.query) == {"dag_id": ["train_pipeline"], "run_id": [run_id]}
    stage = urlsplit(
        _link(plugin_module, "MLflow stage run", _ti_key("train_pipeline", "tune_worker"))
    )
    assert parse_qs(stage.query)["stage"] == ["tune"]
    # Every stage task has its stage link; tasks that open no child run have none (the UI hides "").
    for task_id in ("ingest", "validate", "preprocess", "train", "evaluate", "gate", "register"):
        query = parse_qs(
            urlsplit(
                _link(plugin_module, "MLflow stage run", _ti_key("train_pipeline", task_id))
            ).query
        )
        assert query["stage"] == [task_id]
    assert _link(plugin_module, "MLflow stage run", _ti_key("train_pipeline", "decide")) == ""
    # DAGs whose runs open no MLflow parent run get no link.
    assert _link(plugin_module, "MLflow run", _ti_key("watch_sources", "watch_digits")) == ""


def test_every_stage_task_of_train_pipeline_has_a_link(plugin_module):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "train_pipeline.py")).dags["train_pipeline"]
    for task in dag.tasks:
        assert _link(plugin_module, "MLflow run", _ti_key(dag.dag_id, task.task_id))
    stage_tasks = set(plugin_module.STAGE_OF_TASK)
    assert stage_tasks <= set(dag.task_ids)
    assert set(dag.task_ids) - stage_tasks == {
        "start",
        "check_changes",
        "after_check",
        "unchanged",
        "decide",
        "approve",
        "finish",
    }


@pytest.mark.integration  # a parent run and its stage runs in an MLflow (SQLite) store
def test_mlflow_run_link_redirects_to_the_parent_and_stage_runs(
    plugin_module, tmp_path, monkeypatch
):
    from fastapi.testclient import TestClient

    from visionops.core import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("VISIONOPS_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    tracking.configure()
    exp = tracking.experiment_id("links")
    parent = tracking.start_parent_run(
        exp,
        "train_pipeline/manual__1",
        {"visionops.dag_id": "train_pipeline", "visionops.airflow_run_id": "manual__1"},
    )
    with tracking.stage_run(parent, "ingest") as ingest_run:
        pass
    time.sleep(0.05)  # runs are ordered by start time (milliseconds)
    with tracking.stage_run(parent, "ingest") as ingest_retry:  # a retried task: its latest run
        pass
    client = TestClient(plugin_module.app)

    def location(**params) -> str:
        response = client.get("/mlflow-run", params=params, follow_redirects=False)
        assert response.status_code == 307, response.text
        return response.headers["location"]

    base = f"http://mlflow.example:5000/#/experiments/{exp}/runs"
    view = (
        "?workflowType=machine_learning"  # MLflow's model-training view, whatever the browser chose
    )
    assert location(dag_id="train_pipeline", run_id="manual__1") == f"{base}/{parent}{view}"
    assert (
        location(dag_id="train_pipeline", run_id="manual__1", stage="ingest")
        == f"{base}/{ingest_retry}{view}"
    )
    assert ingest_run != ingest_retry
    # A stage without a run of its own yet: the parent run.
    assert (
        location(dag_id="train_pipeline", run_id="manual__1", stage="train")
        == f"{base}/{parent}{view}"
    )
    ui = client.get("/mlflow", follow_redirects=False)
    assert (ui.status_code, ui.headers["location"]) == (
        307,
        "http://mlflow.example:5000/#/experiments?workflowType=machine_learning",
    )
    missing = client.get(
        "/mlflow-run",
        params={"dag_id": "train_pipeline", "run_id": "manual__2"},
        follow_redirects=False,
    )
    assert missing.status_code == 404
    assert "manual__2" in missing.json()["detail"]
    # The run-page view: the parent run and the stage runs, each opening MLflow in a new tab.
    page = client.get("/run", params={"dag_id": "train_pipeline", "run_id": "manual__1"})
    assert page.status_code == 200 and "x-frame-options" not in page.headers
    assert f"href='{base}/{parent}{view}' target='_blank'" in page.text
    assert f"{base}/{ingest_run}" in page.text and f"{base}/{ingest_retry}" in page.text
    assert (
        "window.top.document" in page.text
    )  # the frame has no allow-popups: the top page opens it
    waiting = client.get("/run", params={"dag_id": "train_pipeline", "run_id": "manual__2"})
    assert waiting.status_code == 200 and "No MLflow run is tagged" in waiting.text
