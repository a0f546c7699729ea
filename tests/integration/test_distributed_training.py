"""Training one network with two processes (DistributedDataParallel on gloo, launched by torchrun):
it trains, rank 0 checkpoints and logs every epoch once to the MLflow run, a second launch resumes
from the checkpoint, and the model is as good as one process's, within noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import mlflow
from visionops.core.config import TrainConfig
from visionops.data.preprocess import load_split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.distributed import fit_distributed
from visionops.training.engine import FitOptions, evaluate_split, fit

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")


def _digits(folder: Path) -> Path:
    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    for name, rows in (("train", order[:1400]), ("val", order[1400:])):
        np.save(folder / f"{name}_x.npy", x[rows])
        np.save(folder / f"{name}_y.npy", y[rows])
    return folder


def _net() -> NormalizedNet:
    torch.manual_seed(0)
    net = build_model("small_cnn", in_channels=1, image_size=8, num_classes=10, dropout=0.1)
    return NormalizedNet(net, [0.3], [0.4])


def test_two_gloo_processes_train_checkpoint_resume_and_log_one_run(tmp_path: Path) -> None:
    folder = _digits(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("ddp", artifact_location=str(tmp_path / "artifacts"))
    settings = {
        "batch_size": 64,
        "learning_rate": 3e-3,
        "weight_decay": 0.0,
        "patience": 20,
        "options": FitOptions(train=TrainConfig(loader_workers=0)),
    }
    train, val = load_split(folder, "train"), load_split(folder, "val")
    alone = fit(_net(), train, val, max_epochs=6, seed=0, device=CPU, **settings)

    ckpt = tmp_path / "ckpt" / "train.pt"
    with mlflow.start_run(experiment_id=experiment) as run:
        run_id = run.info.run_id
    common = {"processes": 2, "device": CPU, "seed": 0, "checkpoint": ckpt, "run_id": run_id}
    first = fit_distributed(_net(), folder, max_epochs=3, **common, **settings)
    assert first.processes == 2  # a process group of two trained it, each on half of every batch
    assert ckpt.is_file() and [m.epoch for m in first.history] == [1, 2, 3]
    # A second launch (a retried task) finds rank 0's checkpoint and goes on after epoch 3.
    both = fit_distributed(_net(), folder, max_epochs=6, **common, **settings)
    assert both.resumed_from == 4
    assert [m.epoch for m in both.history] == list(range(1, 7))
    # Rank 0 alone logged: every epoch once in the one run.
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 7))
    # The weights handed back are the best epoch's, and as good as one process's within noise
    # (377 validation digits: one image is 0.27 points; the two runs see different batch splits).
    yv = torch.from_numpy(val.y)
    _, accuracy = evaluate_split(
        both.model, torch.from_numpy(np.array(val.x)), yv, torch.nn.CrossEntropyLoss(), 256
    )
    assert accuracy == pytest.approx(both.best_val_accuracy)
    assert both.best_val_accuracy > 0.9
    assert abs(both.best_val_accuracy - alone.best_val_accuracy) <= 0.03, (
        both.best_val_accuracy,
        alone.best_val_accuracy,
    )
