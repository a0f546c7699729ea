"""Airflow plugin: links from Airflow to MLflow.

* "MLflow" in the navigation bar opens the MLflow UI.
* "MLflow run" on every DAG run opens that run's MLflow parent run (found by its tags).

Both go through small redirect endpoints served by the Airflow API server. The MLflow UI address as a
browser sees it comes from ``VISIONOPS_MLFLOW_UI_URL`` (default http://127.0.0.1:5000), read by
``visionops.core.tracking.mlflow_ui_url``, the one place that knows it (the stages' logs print their
runs' URLs with it). Both open MLflow's model-training view: the 3.17 UI otherwise shows whichever
of its GenAI and model-training views the browser last chose, GenAI when it never chose.

Nothing heavy is imported until a link is followed: every Airflow process, task processes
included, loads this plugin, and ``visionops.core.tracking`` imports MLflow.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse

ROUTE = "/visionops"


app = FastAPI(
    title="visionops links", description="Redirects from Airflow objects to MLflow pages."
)


@app.get("/mlflow")
def mlflow_ui() -> RedirectResponse:
    """Redirect to the MLflow UI's experiments, in its model-training view."""
    from visionops.core.constants import MLFLOW_ML_VIEW_QUERY
    from visionops.core.tracking import mlflow_ui_url

    return RedirectResponse(f"{mlflow_ui_url()}/#/experiments?{MLFLOW_ML_VIEW_QUERY}")


@app.get("/mlflow-run")
def mlflow_run(dag_id: str, run_id: str) -> RedirectResponse:
    """Redirect to the MLflow parent run of an Airflow DAG run."""
    from visionops.core.tracking import configure, find_run_for_airflow, run_url

    configure()
    found = find_run_for_airflow(dag_id, run_id)
    if found is None:
        raise HTTPException(
            404, f"no MLflow run is tagged with DAG {dag_id!r} and run {run_id!r} (yet)"
        )
    return RedirectResponse(run_url(*found))


class VisionopsMlflowPlugin(AirflowPlugin):
    name = "visionops_mlflow"
    fastapi_apps = [{"app": app, "url_prefix": ROUTE, "name": "visionops links"}]
    external_views = [
        {"name": "MLflow", "href": f"{ROUTE}/mlflow", "destination": "nav", "category": "browse"},
        {
            "name": "MLflow run",
            "href": f"{ROUTE}/mlflow-run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
        },
    ]
