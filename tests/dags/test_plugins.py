"""The Airflow plugin loads and its MLflow link resolves a DAG run to its MLflow parent run."""

from __future__ import annotations

import importlib.util
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
    assert plugin.fastapi_apps[0]["url_prefix"] == plugin_module.ROUTE
    nav = next(v for v in plugin.external_views if v["destination"] == "nav")
    assert nav["href"].endswith("/#/experiments?workflowType=machine_learning")


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
    missing = client.get(
        "/mlflow-run",
        params={"dag_id": "train_pipeline", "run_id": "manual__2"},
        follow_redirects=False,
    )
    assert missing.status_code == 404
    assert "manual__2" in missing.json()["detail"]
