"""Tracking layout against a real (temporary, SQLite) MLflow store: parent run found again on retry, stage
failures marked, cleared after a successful retry; experiments of MLflow's model-training kind; a
pipeline run as a person meets it in MLflow (name, params, figures, version link, description).
(Pure helpers: tests/unit/test_tracking.py, test_run_view.py, test_run_note.py.)"""

from __future__ import annotations

import json
import logging
import re

import pytest
from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking
from visionops.core.constants import EXPERIMENT_KIND_TAG


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
    assert urls == [
        f"MLflow run: http://127.0.0.1:5000/#/experiments/{exp}/runs/{child}"
        "?workflowType=machine_learning"
    ]
    child_run = client.get_run(child)
    assert child_run.data.tags["mlflow.parentRunId"] == parent
    assert child_run.data.tags["visionops.stage"] == "train"
    tracking.end_parent_run(parent)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert "visionops.failed_stage" not in run.data.tags
    assert run.data.tags["visionops.failed_stage_retried"] == "train"


def test_an_interrupted_stage_run_is_reopened_whatever_experiment_is_active(store, monkeypatch):
    """A retry reopens the interrupted attempt's run even when the process has another active
    experiment (set by earlier work in the same worker): MLflow alone refuses that."""
    exp = tracking.experiment_id("reopen")
    parent = tracking.start_parent_run(exp, "dag/reopen", {"visionops.dag_id": "dag"})
    with pytest.raises(RuntimeError), tracking.stage_run(parent, "train") as first:
        raise RuntimeError("worker lost")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment also sets it
    mlflow.set_experiment("elsewhere")
    assert mlflow.tracking.fluent._get_experiment_id() != exp  # the trap is armed
    with tracking.stage_run(parent, "train", resume_run_id=first) as again:
        assert again == first
    assert MlflowClient().get_run(first).info.status == "FINISHED"


def test_experiments_are_of_mlflows_model_training_kind_new_and_old(store, tmp_path):
    client = MlflowClient()
    fresh = tracking.experiment_id("fresh")
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # An experiment made before the pipeline set the kind gets it when the pipeline next uses it.
    old = client.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert tracking.experiment_id("made-before") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_a_pipeline_run_reads_in_mlflow(store, repo, monkeypatch):
    """Through the real stages (digits at 8 px, one epoch): the parent run's name, its few params, the
    config as an artifact, the headline figures, the registered version linked, the description."""
    from visionops.pipeline import stages as pipeline
    from visionops.release import registry

    monkeypatch.setenv("VISIONOPS_AIRFLOW_UI_URL", "http://airflow.example:8080")
    name = "readable-runs"
    overrides = {
        "train.max_epochs": 1,
        "tune.n_trials": 0,
        "data.image_size": 8,
        "gate.min_accuracy": 0.0,
        "gate.min_macro_f1": 0.0,
        "baseline.models": [],
        "experiment": name,
        "registry.model_name": name,
    }
    params = {"config": str(repo / "conf" / "digits.yaml"), "overrides": overrides}
    ctx = pipeline.start(params, dag_id="train_pipeline", airflow_run_id="manual__1")
    pre = pipeline.preprocess(ctx, pipeline.ingest(ctx))
    trained = pipeline.train(ctx, pre, pipeline.tune(ctx, pre))
    evaluated = pipeline.evaluate(ctx, pre, trained)
    registered = pipeline.register(ctx, trained, evaluated, pipeline.gate(ctx, evaluated))
    summary = pipeline.finish(ctx, registered)
    client = MlflowClient()
    exp = client.get_experiment(ctx["experiment_id"])
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    parent = client.get_run(ctx["parent_run_id"])
    tags = parent.data.tags

    # A name a person tells apart; the stages keep their short names.
    assert re.fullmatch(r"digits · small_cnn · manual · \d\d-\d\d \d\d:\d\d", parent.info.run_name)
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {"ingest", "preprocess", "train", "evaluate", "gate", "register"} <= {
        c.info.run_name for c in children
    }
    assert all(c.info.run_name == c.data.tags["visionops.stage"] for c in children)

    # The params a person compares (tuning off: the configured values), not the flattened config.
    p = parent.data.params
    assert 10 <= len(p) <= 20, sorted(p)
    assert not any("." in key for key in p)
    assert (p["config"], p["model"], p["image_size"], p["n_trials"]) == (
        "digits",
        "small_cnn",
        "8",
        "0",
    )
    assert p["learning_rate"] == "0.001" and p["batch_size"] == "64" and p["max_epochs"] == "1"
    assert p["data_fingerprint"] == tags["visionops.data_fingerprint"][:8]
    assert p["n_images"] == "1797" and p["n_classes"] == "10"
    # ... and the whole config stays an artifact.
    config = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/config/config.json")
    assert config["gate"]["min_accuracy"] == 0.0 and config["train"]["max_epochs"] == 1

    # The headline figures on the parent run itself, not only two levels down.
    on_parent = {f.path for f in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/misclassified.png",
        "evaluation/report.md",
    } <= on_parent
    assert "model_card.md" in {f.path for f in client.list_artifacts(parent.info.run_id)}

    # The registered version, linked as MLflow's run page reads it: the logged model is among the
    # parent run's outputs, and the logged model names its versions; the tag says which.
    version = registered["version"]
    model_id = trained["model_uri"].removeprefix("models:/")
    assert [o.model_id for o in parent.outputs.model_outputs] == [model_id]
    assert {"name": name, "version": version} in json.loads(
        client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    )
    assert tags["visionops.registered_version"] == f"models:/{name}/{version}"
    assert registry.link_version_to_run(parent.info.run_id, name, version, trained["model_uri"])
    # ... once: a retried register task adds nothing.
    assert len(json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])) == 1
    assert len(client.get_run(parent.info.run_id).outputs.model_outputs) == 1

    # The data it learnt from: the three sets on the parent run and, through metrics, on the model.
    sets = {i.dataset.name: i.dataset for i in parent.inputs.dataset_inputs}
    assert sorted(sets) == ["digits-test", "digits-train", "digits-val"]
    assert all(d.digest.startswith(tags["visionops.data_fingerprint"]) for d in sets.values())
    rows = {n: json.loads(d.profile)["num_rows"] for n, d in sets.items()}
    assert rows == {f"digits-{s}": n for s, n in pre["meta"]["counts"].items()}
    on_model = client.get_logged_model(model_id).metrics
    assert {(n, d.digest) for n, d in sets.items()} == {
        (m.dataset_name, m.dataset_digest) for m in on_model if m.dataset_name
    }

    # The description: the run summary in Markdown, with its links.
    note = tags["mlflow.note.content"]
    assert note.splitlines()[0] == "**Run FINISHED**, started by manual"
    assert "**Gate: PASSED**" in note
    link = f"#/models/{name}/versions/{version}?workflowType=machine_learning"
    assert f"[{name} v{version}]({link}) (`challenger`)" in note
    assert f"| test accuracy | {summary['test_accuracy']:.4f} |" in note
    assert "(http://airflow.example:8080/dags/train_pipeline/runs/manual__1)" in note
