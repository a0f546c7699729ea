"""face_embedding: the head, training on features, the cached features output, config refusals, inputs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from visionops.core.config import AugmentConfig, ConfigError, TrainConfig, build_config
from visionops.data.preprocess import Split
from visionops.models import build_model, is_feature_model
from visionops.training.engine import FitOptions, fit
from visionops.training.inputs import build_network, check_feature_options

FACE = {"model": {"name": "face_embedding"}, "data": {"image_size": 150, "channels": 3}}


def _features(n: int, seed: int) -> Split:
    """Two classes of 128-d 'embeddings' around two centres."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centres = np.stack([np.eye(128)[0], np.eye(128)[1]]).astype(np.float32)
    return Split(
        (centres[y] + rng.normal(0, 0.05, (n, 128))).astype(np.float32), y.astype(np.int64)
    )


def test_head_builds_and_fits_on_features_without_image_normalisation() -> None:
    cfg = build_config(FACE)
    assert is_feature_model("face_embedding") and not is_feature_model("small_cnn")
    net = build_network(cfg, 2, {"mean": [0.5] * 3, "std": [0.2] * 3})
    assert type(net).__name__ == "EmbeddingHead"  # no NormalizedNet around it
    linear = build_model(
        "face_embedding", in_channels=128, image_size=1, num_classes=3, dropout=0.0, hidden_units=0
    )
    assert linear(torch.zeros(2, 128)).shape == (2, 3)
    result = fit(
        net,
        _features(64, 0),
        _features(32, 1),
        max_epochs=5,
        batch_size=16,
        learning_rate=1e-2,
        weight_decay=0.0,
        patience=5,
        seed=0,
        device=torch.device("cpu"),
    )
    assert result.best_val_accuracy == 1.0
    with pytest.raises(ValueError, match="train.augment.strength must be 0"):
        fit(
            net,
            _features(8, 0),
            _features(8, 1),
            max_epochs=1,
            batch_size=4,
            learning_rate=1e-2,
            weight_decay=0.0,
            patience=1,
            seed=0,
            device=torch.device("cpu"),
            options=FitOptions(train=TrainConfig(augment=AugmentConfig(strength=0.5))),
        )


def test_incompatible_options_are_refused_naming_the_key() -> None:
    check_feature_options(build_config(FACE))
    with pytest.raises(ConfigError) as err:
        check_feature_options(
            build_config(
                {
                    "model": {"name": "face_embedding"},
                    "train": {"augment": {"strength": 0.3}, "tta": "hflip"},
                    "tune": {"n_trials": 2, "augment_strength": [0.0, 0.5]},
                }
            )
        )
    for key in ("data.image_size", "train.augment.strength", "train.tta", "tune.augment_strength"):
        assert key in str(err.value)
    with pytest.raises(ConfigError, match="model.hidden_units"):
        build_config({**FACE, "model": {"name": "face_embedding", "width": 0.5}})
    with pytest.raises(ConfigError, match="serving.unknown_threshold"):
        build_config({"serving": {"unknown_threshold": "sometimes"}})
    assert build_config({"serving": {"unknown_threshold": None}}).serving.unknown_threshold is None


def test_features_are_computed_once_and_reused(tmp_path: Path) -> None:
    from visionops.core.storage import RunStore
    from visionops.data.embeddings import ensure_features

    pre = tmp_path / "pre"
    pre.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        np.save(pre / f"{split}_x.npy", rng.integers(0, 255, (2, 3, 150, 150), dtype=np.uint8))
        np.save(pre / f"{split}_y.npy", np.array([0, 1]))
    (pre / "label_map.json").write_text(json.dumps({"labels": ["a", "b"]}))
    (pre / "stats.json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.2] * 3}))
    from visionops.core.storage import StageOutput

    preprocessed = StageOutput(str(pre), "f" * 64, {})
    first = ensure_features(RunStore("run-1", str(tmp_path / "root")), preprocessed)
    x = np.load(Path(first.uri) / "train_x.npy")
    assert x.shape == (2, 128) and x.dtype == np.float32 and not first.reused
    again = ensure_features(
        RunStore("run-2", str(tmp_path / "root")), preprocessed
    )  # another run, same data
    assert again.reused and again.uri == first.uri
    np.testing.assert_array_equal(np.load(Path(again.uri) / "train_x.npy"), x)


def _b64(img: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_inputs_accept_encoded_images_in_every_container() -> None:
    from visionops.serving.inputs import BadInput, as_rows

    grey, rgb = np.full((12, 9), 7, np.uint8), np.full((5, 6, 3), 200, np.uint8)
    png, jpg = _b64(grey, "PNG"), _b64(rgb, "JPEG")
    for container in (
        [png, jpg],
        np.array([png, jpg]),
        np.array([[png], [jpg]]),
        {"image": [png, jpg]},
        pd.DataFrame({"image": [png, jpg]}),
        [base64.b64decode(png), "data:image/jpeg;base64," + jpg],
    ):
        rows = as_rows(container)
        assert [r.shape for r in rows] == [(12, 9), (5, 6, 3)], type(container)
    assert (
        as_rows(np.array([[1, 2], [3, 4]], np.int64))[0].dtype == np.uint8
    )  # JSON pixels arrive as int64
    bad = as_rows(["%%%", np.array([[300]])])
    assert (
        all(isinstance(r, BadInput) for r in bad)
        and "base64" in bad[0].reason
        and "0-255" in bad[1].reason
    )


class _HalfBrightness(torch.nn.Module):
    """Logits from the mean brightness of each half: class 0 bright on the left (testkit.left_right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([left - right, right - left], dim=1) * 4.0


def test_image_models_get_a_probability_threshold_only_when_asked() -> None:
    from testkit import left_right_split
    from visionops.training.packaging import served_extras

    train, val = left_right_split(16, seed=0), left_right_split(12, seed=1)
    model = _HalfBrightness()
    cfg = build_config({"serving": {"unknown_threshold": "auto"}})
    extras = served_extras(cfg, model, train, val, encoder=None)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(val.x)), dim=1).numpy()
    right = probs.argmax(1) == val.y
    assert right.any()
    # The least sure right answer on the validation split (quantile 1.0 of the right answers' confidence).
    assert extras["unknown"] == {
        "score": "probability",
        "threshold": pytest.approx(probs.max(1)[right].min()),
        "setting": "auto",
        "quantile": None,
        "n_validation": int(right.sum()),
    }
    off = served_extras(build_config({}), model, train, val, encoder=None)
    assert off["unknown"]["threshold"] is None and off["unknown"]["setting"] is None
    fixed = served_extras(
        build_config({"serving": {"unknown_threshold": 0.7}}), model, train, val, encoder=None
    )
    assert fixed["unknown"]["threshold"] == 0.7
