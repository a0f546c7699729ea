"""The Airflow plugin loads and its MLflow link resolves a DAG run to its MLflow parent run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

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


def test_plugin_declares_views_and_app(plugin_module):
    plugin = plugin_module.VisionopsMlflowPlugin
    destinations = {v["name"]: v["destination"] for v in plugin.external_views}
    assert destinations == {"MLflow": "nav", "MLflow run": "dag_run"}
    run_view = next(v for v in plugin.external_views if v["destination"] == "dag_run")
    assert "{DAG_ID}" in run_view["href"] and "{RUN_ID}" in run_view["href"]
    nav = next(v for v in plugin.external_views if v["destination"] == "nav")
    assert (
        nav["href"] == f"{plugin_module.ROUTE}/mlflow"
    )  # a redirect: the URL is read when followed
    assert plugin.fastapi_apps[0]["url_prefix"] == plugin_module.ROUTE


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


@pytest.mark.integration  # a parent run in an MLflow (SQLite) store
def test_mlflow_run_link_redirects_to_the_parent_run(plugin_module, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from visionops.core import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("VISIONOPS_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    tracking.configure()
    exp = tracking.experiment_id("links")
    parent = tracking.start_parent_run(
        exp, "train_pipeline/manual__1", {"visionops.dag_id": "train_pipeline"}
    )
    client = TestClient(plugin_module.app)
    ok = client.get(
        "/mlflow-run",
        params={"dag_id": "train_pipeline", "run_id": "manual__1"},
        follow_redirects=False,
    )
    assert ok.status_code == 307
    assert ok.headers["location"] == (
        f"http://mlflow.example:5000/#/experiments/{exp}/runs/{parent}"
        "?workflowType=machine_learning"  # MLflow's model-training view, whatever the browser chose
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
