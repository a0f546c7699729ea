"""Training streamed from memory-mapped splits through DataLoader worker processes (the path of
splits over ``train.max_memory_gb``) trains the same model as the same run fed from memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import left_right_split
from visionops.core.config import AugmentConfig, TrainConfig
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.engine import FitOptions, fit

pytestmark = pytest.mark.integration


def test_two_loader_workers_reading_the_files_train_the_model_fed_from_memory(
    tmp_path: Path,
) -> None:
    splits = {}
    for name, n, seed in (("train", 128, 1), ("val", 32, 2)):
        data = left_right_split(n, seed=seed)
        np.save(tmp_path / f"{name}_x.npy", data.x)
        splits[name] = Split(np.load(tmp_path / f"{name}_x.npy", mmap_mode="r"), data.y)
    runs = []
    for budget in (None, 1e-9):
        torch.manual_seed(0)
        net = build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.1)
        train = TrainConfig(
            max_memory_gb=budget, loader_workers=2, augment=AugmentConfig(strength=0.5)
        )
        runs.append(
            fit(
                NormalizedNet(net, [0.5], [0.25]),
                splits["train"],
                splits["val"],
                max_epochs=3,
                batch_size=16,
                learning_rate=1e-2,
                weight_decay=0.0,
                patience=5,
                seed=3,
                device=torch.device("cpu"),
                options=FitOptions(train=train),
            )
        )
    memory, streamed = runs
    assert (memory.streamed, streamed.streamed) == (False, True)
    assert [m.val_loss for m in memory.history] == [m.val_loss for m in streamed.history]
    for a, b in zip(
        memory.model.state_dict().values(), streamed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
