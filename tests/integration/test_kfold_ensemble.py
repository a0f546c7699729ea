"""train.folds: the train stage trains a K-fold soft-voting ensemble on the digits (real ingest,
preprocess, PyTorch and a SQLite MLflow store) and logs it as ONE served model, whose probabilities
are the mean of its members', in this process and in a fresh one; a retry after a crash reuses the
finished members and leaves one train run and one model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mlflow
from visionops.core.context import RunContext
from visionops.core.storage import StageOutput
from visionops.pipeline import stages as pipeline

K = 3


class _Crash(Exception):
    pass


def test_folds_train_one_served_soft_voting_ensemble(
    mlflow_store: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from visionops.serving.model import predict_probabilities, to_raw_images
    from visionops.serving.unknown import choose_threshold
    from visionops.training import kfold_stage, stage

    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "train.folds": K,
            "train.max_epochs": 2,
            "train.patience": 10,
            "train.augment.strength": 0.0,
            "model.width": 0.5,
            "tune.n_trials": 0,
            "serving.unknown_threshold": "auto",
            "experiment": "kfold-test",
            "data.image_size": 8,
        },
    }
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id="manual__kfold")
    pre = pipeline.preprocess(context, pipeline.ingest(context))
    tuned = pipeline.tune(context, pre)
    ctx = RunContext.from_dict(context)
    out = StageOutput(pre["uri"], pre["fingerprint"], pre["meta"])

    seen = {}  # the K-fold result, members and all, as the stage got it
    real_fit = kfold_stage.fit_kfold

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["result"] = real_fit(*args, **kwargs)
        return seen["result"]

    monkeypatch.setattr(kfold_stage, "fit_kfold", spy)
    # The worker dies while logging member 1's second epoch (checkpointed, not yet logged).
    real_metrics, calls = kfold_stage.epoch_metrics, []

    def crash_at_the_fourth_epoch(m):  # noqa: ANN001, ANN202
        calls.append(m.epoch)
        if len(calls) == 4:
            raise _Crash("worker lost")
        return real_metrics(m)

    monkeypatch.setattr(kfold_stage, "epoch_metrics", crash_at_the_fourth_epoch)
    with pytest.raises(_Crash):
        stage.train_stage(ctx, out, tuned["best_params"])
    monkeypatch.setattr(kfold_stage, "epoch_metrics", real_metrics)
    trained = stage.train_stage(ctx, out, tuned["best_params"])  # the retry
    result = seen["result"]
    # Member 0 read back, member 1 continued after its checkpointed epoch 2, member 2 trained.
    assert [m.restored for m in result.members] == [True, False, False]
    assert [m.resumed_from for m in result.members] == [0, 3, 0]
    assert len(result.members) == K
    assert trained.ensemble_members == K
    assert trained.best_val_accuracy == pytest.approx(trained.oof_accuracy)
    assert trained.oof_accuracy == pytest.approx(result.oof()[0]) and trained.oof_accuracy > 0.5

    client = mlflow.tracking.MlflowClient()
    run = client.get_run(trained.train_run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert run.data.params["folds"] == str(K)
    assert tags["visionops.ensemble_members"] == str(K)
    for key in ("oof_accuracy", "oof_loss", "best_val_accuracy", "epochs_trained"):
        assert key in metrics, key
    assert metrics["epochs_trained"] == 2 * K
    for k in range(K):
        assert metrics[f"member{k}_best_val_accuracy"] == result.members[k].best_val_accuracy
        assert metrics[f"member{k}_best_epoch"] in (1, 2)
        assert metrics[f"member{k}_epochs_trained"] == 2
        for key in ("val_accuracy", "train_loss"):  # each epoch once, replayed or not
            steps = client.get_metric_history(run.info.run_id, f"member{k}_{key}")
            assert sorted(s.step for s in steps) == [1, 2], (k, key)
    assert tags["visionops.resumed_members"] == "0,1"
    parent = client.get_run(ctx.parent_run_id)
    assert parent.data.tags["visionops.ensemble_members"] == str(K)
    assert parent.data.metrics["oof_accuracy"] == pytest.approx(trained.oof_accuracy)

    # One served model (and its one network) from the one train run: one version when registered.
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'",
    )
    train_runs = [r.info.run_id for r in children if r.data.tags.get("visionops.stage") == "train"]
    assert train_runs == [run.info.run_id]  # the retry reopened the interrupted attempt's run
    child_ids = {r.info.run_id for r in children}
    ours = sorted((m.name, m.source_run_id) for m in models if m.source_run_id in child_ids)
    assert ours == [("model", run.info.run_id), ("network", run.info.run_id)]
    assert list(Path(ctx.store().stage_path("train-checkpoint")).glob("*.pt")) == []

    # The served probabilities are the mean of the members' softmax.
    folder = out.local_path()
    x = np.load(folder / "test_x.npy")[:40]
    model = mlflow.pyfunc.load_model(trained.model_uri)
    _, served = predict_probabilities(model, to_raw_images(x))
    with torch.no_grad():
        members = [
            torch.softmax(m(torch.from_numpy(x)), dim=1).numpy() for m in result.model.members
        ]
    mean = np.mean(members, axis=0)
    np.testing.assert_allclose(served, mean, atol=1e-5)
    assert np.abs(served - members[0]).max() > 1e-4  # the members differ: a real mean was taken

    # The unknown threshold comes from the out-of-fold probabilities of all pooled images.
    unknown = model.unwrap_python_model().unknown  # as read from the model's preprocessing.json
    right = result.oof_probabilities.argmax(1) == result.y
    assert unknown["n_validation"] == int(right.sum())
    expected = choose_threshold("auto", None, result.oof_probabilities.max(1)[right], "probability")
    assert unknown["threshold"] == pytest.approx(expected)

    # And the same answers from a fresh process.
    np.save(tmp_path / "x.npy", to_raw_images(x))
    code = (
        "import sys, numpy as np, mlflow\n"
        "from visionops.serving.model import predict_probabilities\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], predict_probabilities(m, np.load(sys.argv[2]))[1])\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            trained.model_uri,
            str(tmp_path / "x.npy"),
            str(tmp_path / "p.npy"),
        ],
        check=True,
        timeout=300,
    )
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), served, atol=1e-6)
