"""The train stage resumes after an interruption: an Airflow retry continues from the last epoch, in
the MLflow run the interrupted attempt opened (one train run per pipeline run, its curves continued)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlflow
from visionops.core.context import RunContext
from visionops.core.storage import StageOutput
from visionops.pipeline import stages as pipeline
from visionops.training.checkpoint import recorded_run_id, run_record_path


class _Crash(Exception):
    pass


EPOCH_KEYS = ("val_accuracy", "train_loss", "learning_rate", "images_per_second")


@pytest.mark.parametrize(
    "interruption",
    [
        "failed",  # an exception: MLflow marks the attempt's run FAILED
        "killed",  # SIGKILL of the worker: nobody ends the run, it stays RUNNING
        "run_gone",  # the recorded run was deleted meanwhile: a new run gets the whole history
    ],
)
def test_interrupted_train_stage_resumes_in_one_run_with_whole_curves(
    mlflow_store: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, interruption: str
) -> None:
    from visionops.training import stage

    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "train.max_epochs": 4,
            "train.patience": 10,
            "tune.n_trials": 0,
            "experiment": "resume-test",
            "data.image_size": 8,
        },
    }
    context = pipeline.start(
        params, dag_id="train_pipeline", airflow_run_id=f"manual__resume_{interruption}"
    )
    ingested = pipeline.ingest(context)
    pre = pipeline.preprocess(context, ingested)
    tuned = pipeline.tune(context, pre)
    ctx = RunContext.from_dict(context)
    out = StageOutput(pre["uri"], pre["fingerprint"], pre["meta"])
    client = mlflow.tracking.MlflowClient()

    real = stage.epoch_metrics

    def crash_after_2(m):  # noqa: ANN001, ANN202 - the worker dies while logging epoch 3
        if m.epoch == 3:
            raise _Crash("worker lost")
        return real(m)

    monkeypatch.setattr(stage, "epoch_metrics", crash_after_2)
    with pytest.raises(_Crash):
        stage.train_stage(ctx, out, tuned["best_params"])
    checkpoints = list(Path(ctx.store().stage_path("train-checkpoint")).glob("*.pt"))
    assert len(checkpoints) == 1
    interrupted = recorded_run_id(checkpoints[0])  # the attempt's run, recorded beside it
    assert interrupted is not None
    assert client.get_run(interrupted).info.status == "FAILED"
    # Epoch 3 was checkpointed but never logged: the crash came between the two.
    assert [m.step for m in client.get_metric_history(interrupted, "val_accuracy")] == [1, 2]
    if interruption == "killed":
        client.update_run(interrupted, status="RUNNING")
        client.update_run(ctx.parent_run_id, status="RUNNING")
    elif interruption == "run_gone":
        client.delete_run(interrupted)
    monkeypatch.setattr(stage, "epoch_metrics", real)

    meta = stage.train_stage(ctx, out, tuned["best_params"]).to_dict()  # the retry
    assert meta["epochs_trained"] == 4
    assert meta["resumed_from_epoch"] == 4  # epoch 3 finished and was checkpointed before the crash
    assert not checkpoints[0].exists()  # removed once the model is committed
    assert not run_record_path(checkpoints[0]).exists()  # and its run record with it
    if interruption == "run_gone":
        assert meta["train_run_id"] != interrupted
    else:
        assert meta["train_run_id"] == interrupted  # reopened, not a second run

    children = client.search_runs(
        [client.get_run(ctx.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'",
    )
    train_runs = [r for r in children if r.data.tags.get("visionops.stage") == "train"]
    assert [r.info.run_id for r in train_runs] == [meta["train_run_id"]]  # no orphan left behind
    run = train_runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["visionops.resumed_after_epoch"] == "3"
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        # Continuous, each epoch once: before the crash (logged then, or replayed into a new run),
        # the checkpointed but unlogged epoch 3, and the epoch trained after the resume.
        assert sorted(steps) == [1, 2, 3, 4], key
    assert len(client.get_metric_history(run.info.run_id, "n_parameters")) == 1
    # One served model (and its network) for the pipeline run, from the one train run.
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    child_ids = {r.info.run_id for r in children}
    ours = sorted((m.name, m.source_run_id) for m in models if m.source_run_id in child_ids)
    assert ours == [("model", run.info.run_id), ("network", run.info.run_id)]
    assert meta["model_uri"].startswith("models:/")
    assert run.data.tags["visionops.device"] == "cpu" and run.data.tags["torch_version"]
    assert run.data.tags["visionops.precision"] == "fp32"  # amp applies on CUDA only
