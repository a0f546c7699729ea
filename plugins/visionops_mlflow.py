"""Airflow plugin: links from Airflow to MLflow.

* "MLflow" in the navigation bar opens the MLflow UI.
* "MLflow run" on every DAG run opens that run's MLflow parent run (found by its tags), through a
  small redirect endpoint served by the Airflow API server.

The MLflow UI address as a browser sees it comes from ``VISIONOPS_MLFLOW_UI_URL``
(default http://127.0.0.1:5000). Both links open MLflow's model-training view: the 3.17 UI otherwise
shows whichever of its GenAI and model-training views the browser last chose, GenAI when it never
chose. Nothing heavy is imported until a link is followed.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse

from visionops.core.constants import MLFLOW_ML_VIEW_QUERY

ROUTE = "/visionops"


def mlflow_ui_url() -> str:
    return os.environ.get("VISIONOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


app = FastAPI(
    title="visionops links", description="Redirects from Airflow objects to MLflow pages."
)


@app.get("/mlflow-run")
def mlflow_run(dag_id: str, run_id: str) -> RedirectResponse:
    """Redirect to the MLflow parent run of an Airflow DAG run."""
    from visionops.core.tracking import configure, find_run_for_airflow

    configure()
    found = find_run_for_airflow(dag_id, run_id)
    if found is None:
        raise HTTPException(
            404, f"no MLflow run is tagged with DAG {dag_id!r} and run {run_id!r} (yet)"
        )
    experiment_id, parent_run_id = found
    return RedirectResponse(
        f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{parent_run_id}?{MLFLOW_ML_VIEW_QUERY}"
    )


class VisionopsMlflowPlugin(AirflowPlugin):
    name = "visionops_mlflow"
    fastapi_apps = [{"app": app, "url_prefix": ROUTE, "name": "visionops links"}]
    external_views = [
        {
            "name": "MLflow",
            "href": f"{mlflow_ui_url()}/#/experiments?{MLFLOW_ML_VIEW_QUERY}",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "MLflow run",
            "href": f"{ROUTE}/mlflow-run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
        },
    ]
