"""The train stage resumes after an interruption: an Airflow retry continues from the last epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlflow
from visionops.core.context import RunContext
from visionops.core.storage import StageOutput
from visionops.pipeline import stages as pipeline


class _Crash(Exception):
    pass


def test_interrupted_train_stage_resumes_with_whole_curves(
    mlflow_store: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
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
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id="manual__resume")
    ingested = pipeline.ingest(context)
    pre = pipeline.preprocess(context, ingested)
    tuned = pipeline.tune(context, pre)
    ctx = RunContext.from_dict(context)
    out = StageOutput(pre["uri"], pre["fingerprint"], pre["meta"])

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
    monkeypatch.setattr(stage, "epoch_metrics", real)

    meta = stage.train_stage(ctx, out, tuned["best_params"]).to_dict()  # the retry
    assert meta["epochs_trained"] == 4
    assert meta["resumed_from_epoch"] == 4  # epoch 3 finished and was checkpointed before the crash
    assert not checkpoints[0].exists()  # removed once the model is committed
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(meta["train_run_id"])
    assert run.data.tags["visionops.resumed_after_epoch"] == "3"
    for key in ("val_accuracy", "train_loss", "learning_rate", "images_per_second"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == [1, 2, 3, 4], (
            key
        )  # continuous: the epochs before the crash are in the retry's run
    assert run.data.tags["visionops.device"] == "cpu" and run.data.tags["torch_version"]
    assert run.data.tags["visionops.precision"] == "fp32"  # amp applies on CUDA only
