"""Airflow plugin: links from Airflow to MLflow.

* "MLflow" in the navigation bar opens the MLflow UI (through ``/visionops/mlflow``).
* "MLflow run" and "MLflow stage run" under "Extra Links" on every task instance of a tracked DAG
  (``train_pipeline``): the DAG run's MLflow parent run, and the child run of the task's own stage.
* "MLflow run", a tab on every DAG run: a page of this plugin's own app, so on the Airflow origin
  (the UI shows a run-page view in a frame, and MLflow's ``X-Frame-Options: SAMEORIGIN`` refuses to
  be framed), listing the parent run and each stage's run, each opening MLflow in a new tab.

Every link goes through ``/visionops/mlflow-run?dag_id=&run_id=[&stage=]``, which finds the MLflow
run by its tags when the link is followed: drawing a link costs Airflow nothing, and nothing heavy
(mlflow) is imported until one is followed: every Airflow process, task processes included, loads
this plugin. The MLflow UI address as a browser sees it comes from ``VISIONOPS_MLFLOW_UI_URL``
(default http://127.0.0.1:5000), read by ``visionops.core.tracking.mlflow_ui_url``, the one place
that knows it. Every link opens MLflow's model-training view: the 3.17 UI otherwise shows whichever
of its GenAI and model-training views the browser last chose, GenAI when it never chose.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode, urlsplit

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

ROUTE = "/visionops"
# The DAGs whose runs open an MLflow parent run tagged with the Airflow run (visionops.core.run).
TRACKED_DAGS = frozenset({"train_pipeline"})
# The stage (tag visionops.stage of its MLflow child run) of each task that opens one.
STAGE_OF_TASK = {
    "ingest_plan": "ingest",
    "ingest_chunk": "ingest",  # the chunks are merged and recorded by the ingest run
    "ingest": "ingest",
    "validate": "validate",
    "preprocess": "preprocess",
    "tune_plan": "tune",
    "tune_worker": "tune",  # its trials are children of the tune run
    "tune": "tune",
    "train": "train",
    "evaluate": "evaluate",
    "gate": "gate",
    "register": "register",
    "promote": "promote",
    "reject": "reject",
}


def _base_path() -> str:
    """The path Airflow is served under (``[api] base_url``, e.g. ``/airflow``), else ''."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def run_link(dag_id: str, run_id: str, stage: str | None = None) -> str:
    """The redirect endpoint's address for a DAG run's MLflow parent run, or for one of its stages."""
    query = {"dag_id": dag_id, "run_id": run_id, **({"stage": stage} if stage else {})}
    return f"{_base_path()}{ROUTE}/mlflow-run?{urlencode(query)}"


class MlflowRunLink(BaseOperatorLink):
    """Extra link of every task of a tracked DAG: the DAG run's MLflow parent run."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id not in TRACKED_DAGS:
            return ""  # no link (the UI hides an empty one)
        return run_link(ti_key.dag_id, ti_key.run_id)


class MlflowStageRunLink(BaseOperatorLink):
    """Extra link of every task that logs a stage: that stage's MLflow child run."""

    name = "MLflow stage run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        stage = STAGE_OF_TASK.get(ti_key.task_id)
        if ti_key.dag_id not in TRACKED_DAGS or stage is None:
            return ""
        return run_link(ti_key.dag_id, ti_key.run_id, stage)


app = FastAPI(
    title="visionops links", description="Redirects from Airflow objects to MLflow pages."
)


def _run_url(experiment_id: str, run_id: str) -> str:
    from visionops.core.tracking import run_url

    return run_url(experiment_id, run_id)


@app.get("/mlflow")
def mlflow_ui() -> RedirectResponse:
    """Redirect to the MLflow UI's experiments, in its model-training view."""
    from visionops.core.constants import MLFLOW_ML_VIEW_QUERY
    from visionops.core.tracking import mlflow_ui_url

    return RedirectResponse(f"{mlflow_ui_url()}/#/experiments?{MLFLOW_ML_VIEW_QUERY}")


def _parent_run(dag_id: str, run_id: str) -> tuple[str, str] | None:
    from visionops.core.tracking import configure, find_run_for_airflow

    configure()
    return find_run_for_airflow(dag_id, run_id)


def _child_runs(experiment_id: str, parent_run_id: str, **tags: str) -> list[Any]:
    from visionops.core.constants import TAG_PREFIX
    from visionops.core.tracking import find_runs

    wanted = {
        "mlflow.parentRunId": parent_run_id,
        **{f"{TAG_PREFIX}{k}": v for k, v in tags.items()},
    }
    return find_runs(wanted, experiment_ids=[experiment_id], max_results=200)


@app.get("/mlflow-run")
def mlflow_run(dag_id: str, run_id: str, stage: str | None = None) -> RedirectResponse:
    """Redirect to the MLflow parent run of an Airflow DAG run, or to the child run of one stage.

    A stage without a run of its own yet (not started, skipped, or failed before opening it)
    redirects to the parent run, which lists the stages that have one.
    """
    found = _parent_run(dag_id, run_id)
    if found is None:
        raise HTTPException(
            404, f"no MLflow run is tagged with DAG {dag_id!r} and run {run_id!r} (yet)"
        )
    experiment_id, parent_run_id = found
    if stage:
        children = _child_runs(experiment_id, parent_run_id, stage=stage)
        if children:  # newest first: a retried task's latest attempt
            return RedirectResponse(_run_url(experiment_id, children[0].info.run_id))
    return RedirectResponse(_run_url(experiment_id, parent_run_id))


# In the UI's frame (sandboxed without allow-popups), a link cannot open a tab itself; the frame is
# on Airflow's origin, so a link of the Airflow page (its parent) opens it. Alone, links work as usual.
_OPEN_FROM_TOP = """
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[target=_blank]");
  if (!link || window.top === window) return;
  try {
    const doc = window.top.document;
    const a = doc.createElement("a");
    a.href = link.href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    doc.body.appendChild(a);
    a.click();
    a.remove();
    event.preventDefault();
  } catch (error) {
    /* not the Airflow page's origin: leave the link to the browser */
  }
});
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}"
        "table{border-collapse:collapse}td,th{padding:.3rem .8rem;text-align:left;"
        "border-bottom:1px solid #ddd}a.button{display:inline-block;padding:.5rem 1rem;"
        "background:#0194e2;color:#fff;border-radius:.3rem;text-decoration:none}"
        f"</style></head><body>{body}<script>{_OPEN_FROM_TOP}</script></body></html>"
    )


def _link(url: str, text: str, css: str = "") -> str:
    cls = f" class='{css}'" if css else ""
    return (
        f"<a{cls} href='{html.escape(url)}' target='_blank' rel='noopener'>{html.escape(text)}</a>"
    )


@app.get("/run", response_class=HTMLResponse)
def run_page(dag_id: str, run_id: str) -> HTMLResponse:
    """The MLflow runs of an Airflow DAG run: its parent run and each stage's child run."""
    title = f"MLflow runs of {dag_id} / {run_id}"
    head = f"<h3>{html.escape(title)}</h3>"
    if dag_id not in TRACKED_DAGS:
        return _page(
            title, f"{head}<p>Runs of {html.escape(dag_id)} open no MLflow parent run.</p>"
        )
    found = _parent_run(dag_id, run_id)
    if found is None:
        return _page(
            title,
            f"{head}<p>No MLflow run is tagged with this DAG run yet: its <code>start</code> task "
            "opens one. Reload this page when it has run.</p>",
        )
    from visionops.core.tracking import mlflow_ui_url

    experiment_id, parent_run_id = found
    rows = "".join(
        f"<tr><td>{html.escape(run.data.tags.get('visionops.stage', ''))}</td>"
        f"<td>{html.escape(run.info.status)}</td>"
        f"<td>{_link(_run_url(experiment_id, run.info.run_id), run.info.run_name or run.info.run_id)}"
        "</td></tr>"
        for run in reversed(_child_runs(experiment_id, parent_run_id))  # oldest (ingest) first
    )
    body = (
        f"{head}<p>{_link(_run_url(experiment_id, parent_run_id), 'Open the MLflow run', 'button')}"
        f"</p><p>Parent run <code>{html.escape(parent_run_id)}</code>, experiment "
        f"{html.escape(experiment_id)}, at {html.escape(mlflow_ui_url())}.</p>"
        + (
            f"<table><tr><th>stage</th><th>status</th><th>MLflow run</th></tr>{rows}</table>"
            if rows
            else ""
        )
    )
    return _page(title, body)


class VisionopsMlflowPlugin(AirflowPlugin):
    name = "visionops_mlflow"
    fastapi_apps = [{"app": app, "url_prefix": ROUTE, "name": "visionops links"}]
    global_operator_extra_links = [MlflowRunLink(), MlflowStageRunLink()]
    external_views = [
        {
            "name": "MLflow",
            "href": f"{_base_path()}{ROUTE}/mlflow",
            "destination": "nav",
            "category": "browse",
        },
        {
            # A run-page tab needs url_route (the UI shows it in a frame at .../plugin/<url_route>).
            "name": "MLflow run",
            "href": f"{_base_path()}{ROUTE}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "mlflow-run",
        },
    ]
