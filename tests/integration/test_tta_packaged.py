"""Test-time augmentation as part of the packaged model: the pyfunc applies the stored TTA after a round
trip through a real (temporary, SQLite) MLflow store, and the evaluate stage scores through it and records
it. (The views and the averaged probabilities: tests/unit/test_tta.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import mlflow
from testkit import left_right

_left_right = left_right  # class 0 bright on the left, class 1 on the right: mirroring swaps them


def test_pyfunc_applies_the_stored_tta_after_a_round_trip(
    mlflow_store: Path, tmp_path: Path, no_active_run: None
) -> None:
    from visionops.core import tracking
    from visionops.data.preprocess import Split
    from visionops.models import build_model
    from visionops.models.wrappers import NormalizedNet
    from visionops.serving.model import (
        PREPROCESSING_FILE,
        log_classifier,
        model_tta,
        predict_probabilities,
    )
    from visionops.training.engine import fit

    torch.manual_seed(0)
    net = NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.0),
        [0.3],
        [0.3],
    )
    result = fit(
        net,
        Split(*_left_right(64, 0)),
        Split(*_left_right(16, 1)),
        max_epochs=2,
        batch_size=16,
        learning_rate=3e-3,
        weight_decay=0.0,
        patience=5,
        seed=0,
        device=torch.device("cpu"),
    )
    exp_id = tracking.experiment_id("unit-tta")
    uris = {}
    for views in ([], ["hflip"]):
        workdir = tmp_path / ("+".join(views) or "none")
        workdir.mkdir()
        with mlflow.start_run(experiment_id=exp_id):
            uris[tuple(views)] = log_classifier(
                result.model,
                labels=["left", "right"],
                image_size=8,
                channels=1,
                example=_left_right(2, 3)[0],
                workdir=workdir,
                tta=views,
            )["model_uri"]
        assert json.loads((workdir / PREPROCESSING_FILE).read_text())["tta"] == views

    x, _ = _left_right(10, seed=5)
    plain = mlflow.pyfunc.load_model(uris[()])
    flipped = mlflow.pyfunc.load_model(uris[("hflip",)])
    assert model_tta(plain) == [] and model_tta(flipped) == ["hflip"]
    _, p_plain = predict_probabilities(plain, x[:, 0])
    preds, p_tta = predict_probabilities(flipped, x[:, 0])
    with torch.no_grad():
        p_orig = torch.softmax(result.model(torch.from_numpy(x)), dim=1).numpy()
        p_mirror = torch.softmax(result.model(torch.from_numpy(x[..., ::-1].copy())), dim=1).numpy()
    np.testing.assert_allclose(p_plain, p_orig, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_tta, (p_orig + p_mirror) / 2, rtol=1e-5, atol=1e-6)
    # Mirroring swaps left and right: averaged over both views, the model is much less sure.
    assert p_tta.max(axis=1).mean() < p_plain.max(axis=1).mean() - 0.1
    np.testing.assert_allclose(preds["probability"], p_tta.max(axis=1), rtol=1e-6)


def test_evaluation_scores_the_packaged_tta_and_records_it(mlflow_store: Path, repo: Path) -> None:
    """train.tta reaches the served model; evaluate scores through it and logs which TTA it was."""
    from visionops.core.storage import StageOutput
    from visionops.evaluation.paired import PREDICTIONS_FILE
    from visionops.evaluation.scoring import load_test_split
    from visionops.pipeline import stages as pipeline

    # hflip is wrong for digits; here it only has to change the probabilities measurably.
    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "train.max_epochs": 2,
            "tune.n_trials": 0,
            "train.tta": "hflip",
            "experiment": "tta-test",
            "data.image_size": 8,
            "registry.model_name": "tta-test-model",
        },
    }
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id="manual__tta")
    pre = pipeline.preprocess(context, pipeline.ingest(context))
    trained = pipeline.train(context, pre, pipeline.tune(context, pre))
    evaluated = pipeline.evaluate(context, pre, trained)

    client = mlflow.tracking.MlflowClient()
    train_run = client.get_run(trained["train_run_id"])
    assert train_run.data.params["tta"] == "hflip"
    assert train_run.data.tags["visionops.precision"] == "fp32"  # CPU
    eval_run = client.get_run(evaluated["evaluate_run_id"])
    assert eval_run.data.params["tta"] == "hflip" and eval_run.data.tags["visionops.tta"] == "hflip"
    report = json.loads(
        Path(client.download_artifacts(eval_run.info.run_id, "evaluation/report.json")).read_text()
    )
    assert report["tta"] == "hflip"

    # The stored confidences are the mean of the network's softmax over the image and its mirror.
    raw = load_test_split(StageOutput(pre["uri"], pre["fingerprint"], pre["meta"])).images
    network = mlflow.pytorch.load_model(trained["network_uri"], map_location="cpu")
    x = torch.from_numpy(raw[:, None].copy())
    with torch.no_grad():
        p_orig = torch.softmax(network(x), dim=1).numpy()
        p_both = (
            p_orig
            + torch.softmax(network(torch.from_numpy(raw[:, None, :, ::-1].copy())), dim=1).numpy()
        ) / 2
    ref = evaluated["predictions"]
    stored = pd.read_parquet(
        StageOutput(ref["uri"], ref["fingerprint"], ref["meta"]).local_path() / PREDICTIONS_FILE
    )
    np.testing.assert_allclose(
        stored["candidate_probability"], p_both.max(axis=1), rtol=1e-5, atol=1e-6
    )
    assert np.abs(p_both.max(axis=1) - p_orig.max(axis=1)).max() > 1e-3
