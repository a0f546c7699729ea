"""MLflow tracking layout: one experiment per config, one parent run per pipeline run, a child per stage."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import LifecycleStage, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

import mlflow
from visionops.core.constants import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MAX_TAG_CHARS,
    MLFLOW_ML_VIEW_QUERY,
    REASON_SEPARATOR,
    TAG_PREFIX,
)
from visionops.core.storage import visionops_home

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    return f"sqlite:///{visionops_home() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def configure() -> str:
    """Point MLflow at the project's tracking store and registry; returns the URI."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return uri


def mlflow_ui_url() -> str:
    """The MLflow UI as a browser reaches it (``VISIONOPS_MLFLOW_UI_URL``), not the tracking URI."""
    return os.environ.get("VISIONOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def run_url(experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, in its model-training view (``MLFLOW_ML_VIEW_QUERY``)."""
    return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}?{MLFLOW_ML_VIEW_QUERY}"


def log_run_url(experiment_id: str, run_id: str) -> None:
    """``MLflow run: <url>`` in the log: Airflow's log view turns it into a link to the run."""
    logging.getLogger("visionops").info("MLflow run: %s", run_url(experiment_id, run_id))


def _artifact_location(name: str) -> str | None:
    """Local stores keep artifacts beside the database (never in the current directory)."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:"):
        return None  # a tracking server decides where artifacts go
    base = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return (base / name).as_uri()


def experiment_id(name: str) -> str:
    """The experiment ``name`` (created, or restored when deleted), of MLflow's kind for model training."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the pipeline set it
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=_artifact_location(name),
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )
    except mlflow.exceptions.MlflowException:
        # Another task created it meanwhile.
        return client.get_experiment_by_name(name).experiment_id


def find_runs(
    tags: dict[str, str], *, experiment_ids: list[str] | None = None, max_results: int = 1
) -> list[mlflow.entities.Run]:
    """Runs whose tags equal ``tags`` (full tag names), newest first: the one way runs are looked up.

    ``experiment_ids`` None searches every experiment (a run is known by its tags, not where it is).
    """

    def quote(value: str) -> str:
        return str(value).replace("'", "\\'")

    filter_string = " and ".join(f"tags.`{key}` = '{quote(value)}'" for key, value in tags.items())
    return mlflow.search_runs(  # MLflow pages through every experiment when none are named
        experiment_ids=experiment_ids,
        search_all_experiments=experiment_ids is None,
        filter_string=filter_string,
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )


def find_parent_run(exp_id: str, pipeline_run_id: str) -> str | None:
    runs = find_runs({f"{TAG_PREFIX}pipeline_run_id": pipeline_run_id}, experiment_ids=[exp_id])
    return runs[0].info.run_id if runs else None


def start_parent_run(
    exp_id: str, pipeline_run_id: str, tags: dict[str, str], run_name: str | None = None
) -> str:
    """The parent run of a pipeline run, created once (a retried start task finds it again)."""
    existing = find_parent_run(exp_id, pipeline_run_id)
    if existing:
        MlflowClient().update_run(existing, status="RUNNING")
        return existing
    run = MlflowClient().create_run(
        exp_id,
        run_name=run_name or tags.get(f"{TAG_PREFIX}run_key", pipeline_run_id),
        tags={**tags, f"{TAG_PREFIX}pipeline_run_id": pipeline_run_id},
    )
    return run.info.run_id


def end_parent_run(parent_run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run; a successful end clears the marks of failed attempts that were retried."""
    client = MlflowClient()
    if status == "FINISHED":
        tags = client.get_run(parent_run_id).data.tags
        for key in (f"{TAG_PREFIX}failed_stage", f"{TAG_PREFIX}error"):
            if key in tags:
                client.set_tag(parent_run_id, f"{key}_retried", tags[key])
                client.delete_tag(parent_run_id, key)
    client.set_terminated(parent_run_id, status=status)


def can_reopen(run: Run | None, parent_run_id: str) -> bool:
    """Whether a stage's earlier child run may take the retry's logging: it exists, is not deleted,
    is a child of ``parent_run_id`` and did not finish (an interrupted attempt is RUNNING or FAILED)."""
    return (
        run is not None
        and run.info.lifecycle_stage == LifecycleStage.ACTIVE
        and run.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent_run_id
        and run.info.status != RunStatus.to_string(RunStatus.FINISHED)
    )


def _get_run(client: MlflowClient, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except MlflowException:  # never existed, or removed for good
        return None


@contextmanager
def stage_run(
    parent_run_id: str,
    stage: str,
    tags: dict[str, str] | None = None,
    *,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """A child run for one stage; on error it and the parent are marked FAILED with the stage named.

    ``resume_run_id``: an earlier attempt's child run, reopened (status RUNNING again) when
    ``can_reopen`` allows, so a resumed stage goes on logging where it stopped; otherwise a new
    child run is opened. The yielded run id says which happened.
    """
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    if parent.info.status != "RUNNING":
        # A retried task after a failure: the pipeline run is live again.
        client.update_run(parent_run_id, status="RUNNING")
    child_tags = {f"{TAG_PREFIX}stage": stage, **(tags or {})}
    for key in ("dag_id", "airflow_run_id", "config_hash", "run_key"):
        if f"{TAG_PREFIX}{key}" in parent.data.tags:
            child_tags.setdefault(f"{TAG_PREFIX}{key}", parent.data.tags[f"{TAG_PREFIX}{key}"])
    earlier = _get_run(client, resume_run_id) if resume_run_id else None
    if can_reopen(earlier, parent_run_id):
        log.info("%s: reopening MLflow run %s of an interrupted attempt", stage, resume_run_id)
        # MLflow refuses to reopen a run outside the process's active experiment, which anything
        # before may have set (mlflow.set_experiment, in a library or an earlier task in the same
        # worker): the run's own experiment is the one to log in.
        mlflow.set_experiment(experiment_id=earlier.info.experiment_id)
        started = mlflow.start_run(run_id=resume_run_id, tags=child_tags)
    else:
        started = mlflow.start_run(
            experiment_id=parent.info.experiment_id,
            run_name=stage,
            parent_run_id=parent_run_id,
            tags=child_tags,
        )
    with started as run:
        log_run_url(parent.info.experiment_id, run.info.run_id)
        try:
            yield run.info.run_id
        except BaseException as exc:
            client.set_tag(parent_run_id, f"{TAG_PREFIX}failed_stage", stage)
            client.set_tag(parent_run_id, f"{TAG_PREFIX}error", clip(str(exc)))
            client.set_terminated(parent_run_id, status=RunStatus.to_string(RunStatus.FAILED))
            raise


def log_json(obj: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Log a JSON document as an artifact of ``run_id`` (or the active run)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    if run_id is None:
        mlflow.log_text(text, artifact_file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(text)
        parent = str(Path(artifact_file).parent)
        MlflowClient().log_artifact(run_id, str(path), None if parent == "." else parent)


def flatten(prefix: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: config sections as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(f"{name}.", value))
        else:
            out[name] = value
    return out


def find_run_for_airflow(dag_id: str, airflow_run_id: str) -> tuple[str, str] | None:
    """(experiment id, parent run id) of the MLflow parent run of an Airflow DAG run, if any."""
    runs = find_runs({f"{TAG_PREFIX}pipeline_run_id": f"{dag_id}/{airflow_run_id}"})
    return (runs[0].info.experiment_id, runs[0].info.run_id) if runs else None


def clip(text: str) -> str:
    """A text cut to what an MLflow tag holds."""
    return text[:MAX_TAG_CHARS]


def reasons_text(reasons: Sequence[str]) -> str:
    """Reasons as one tag value (``split_reasons`` reads them back); cut to what a tag holds."""
    return clip(REASON_SEPARATOR.join(reasons))


def split_reasons(text: str) -> list[str]:
    return [reason for reason in text.split(REASON_SEPARATOR) if reason]
