"""Test-time augmentation: the views, the averaged probabilities, and TTA as part of the packaged model."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from testkit import left_right
import torch
from torch import nn

from visionops.config import TrainConfig
from visionops.tta import TTA_VIEWS, predict_proba, view_batches


def _not_flip_invariant_net() -> nn.Module:
    """Logits from a linear map of the pixels: mirroring the image changes them."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(1 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.float().flatten(1) / 255.0)

    return Net().eval()


def _batch(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g)


def test_config_views_are_the_views_the_model_knows() -> None:
    (literal,) = typing.get_args(TrainConfig.model_fields["tta"].annotation)
    assert typing.get_args(literal) == TTA_VIEWS


def test_no_tta_is_the_plain_softmax() -> None:
    net, x = _not_flip_invariant_net(), _batch()
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)
    torch.testing.assert_close(predict_proba(net, x, []), expected)


def test_hflip_averages_the_softmax_of_the_original_and_the_mirror() -> None:
    net, x = _not_flip_invariant_net(), _batch()
    mirrored = x[..., torch.arange(x.shape[-1] - 1, -1, -1)]  # columns reversed, by hand
    with torch.no_grad():
        p_orig, p_flip = torch.softmax(net(x), dim=1), torch.softmax(net(mirrored), dim=1)
    got = predict_proba(net, x, ["hflip"])
    torch.testing.assert_close(got, (p_orig + p_flip) / 2)
    assert (got - p_orig).abs().max() > 1e-3  # the model is not flip-invariant: TTA changed the answer
    torch.testing.assert_close(got.sum(dim=1), torch.ones(len(x)))


def test_shift_views_move_the_image_by_one_pixel_each_way() -> None:
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[0, 0, 3, 3] = 255
    views = view_batches(x, ["shift"])
    assert len(views) == 5 and torch.equal(views[0], x)
    assert all(v.shape == x.shape and v.dtype == torch.uint8 for v in views)
    bright = {tuple(torch.nonzero(v[0, 0]).flatten().tolist()) for v in views[1:]}
    assert bright == {(3, 2), (3, 4), (2, 3), (4, 3)}  # d = max(1, round(8 / 16)) = 1


def test_crop_view_zooms_into_the_centre() -> None:
    x = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    x[..., 1:15, 1:15] = 200  # a frame of 0 one pixel wide
    (_, zoomed) = view_batches(x, ["crop"])
    assert zoomed.shape == x.shape and zoomed.dtype == torch.uint8
    assert zoomed.float().mean() > x.float().mean()  # the dark frame is cropped away
    assert len(view_batches(x, ["hflip", "shift", "crop"])) == 1 + 1 + 4 + 1


def test_unknown_or_repeated_views_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation views \\['vflip'\\]"):
        view_batches(_batch(), ["vflip"])
    with pytest.raises(ValueError, match="repeat"):
        predict_proba(_not_flip_invariant_net(), _batch(), ["hflip", "hflip"])


# -- the packaged model and the stages ---------------------------------------------------------------


_left_right = left_right  # class 0 bright on the left, class 1 on the right: mirroring swaps them


def test_pyfunc_applies_the_stored_tta_after_a_round_trip(mlflow_store: Path, tmp_path: Path,
                                                         no_active_run: None) -> None:
    from visionops import tracking
    from visionops.data.preprocess import Split
    from visionops.inference import PREPROCESSING_FILE, log_classifier, model_tta, predict_probabilities
    from visionops.models import build_model
    from visionops.models.wrappers import NormalizedNet
    from visionops.training.engine import fit

    torch.manual_seed(0)
    net = NormalizedNet(build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.0),
                        [0.3], [0.3])
    result = fit(net, Split(*_left_right(64, 0)), Split(*_left_right(16, 1)), max_epochs=2, batch_size=16,
                 learning_rate=3e-3, weight_decay=0.0, patience=5, seed=0, device=torch.device("cpu"))
    exp_id = tracking.experiment_id("unit-tta")
    uris = {}
    for views in ([], ["hflip"]):
        workdir = tmp_path / ("+".join(views) or "none")
        workdir.mkdir()
        with mlflow.start_run(experiment_id=exp_id):
            uris[tuple(views)] = log_classifier(result.model, labels=["left", "right"], image_size=8, channels=1,
                                                example=_left_right(2, 3)[0], workdir=workdir, tta=views)["model_uri"]
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
    from visionops import pipeline
    from visionops.evaluation import PREDICTIONS_FILE, load_test_set
    from visionops.storage import StageOutput

    # hflip is wrong for digits; here it only has to change the probabilities measurably.
    params = {"config": str(repo / "conf" / "digits.yaml"),
              "overrides": {"train.max_epochs": 2, "tune.n_trials": 0, "train.tta": "hflip",
                            "experiment": "tta-test", "data.image_size": 8,
                            "registry.model_name": "tta-test-model"}}
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
    report = json.loads(Path(client.download_artifacts(eval_run.info.run_id, "evaluation/report.json")).read_text())
    assert report["tta"] == "hflip"

    # The stored confidences are the mean of the network's softmax over the image and its mirror.
    _, raw, _ = load_test_set(StageOutput(pre["uri"], pre["fingerprint"], pre["meta"]))
    network = mlflow.pytorch.load_model(trained["network_uri"], map_location="cpu")
    x = torch.from_numpy(raw[:, None].copy())
    with torch.no_grad():
        p_orig = torch.softmax(network(x), dim=1).numpy()
        p_both = (p_orig + torch.softmax(network(torch.from_numpy(raw[:, None, :, ::-1].copy())), dim=1).numpy()) / 2
    ref = evaluated["predictions"]
    stored = pd.read_parquet(StageOutput(ref["uri"], ref["fingerprint"], ref["meta"]).local_path() / PREDICTIONS_FILE)
    np.testing.assert_allclose(stored["candidate_probability"], p_both.max(axis=1), rtol=1e-5, atol=1e-6)
    assert np.abs(p_both.max(axis=1) - p_orig.max(axis=1)).max() > 1e-3
