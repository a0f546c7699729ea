"""visionops.training.feed: splits over the memory budget are streamed from their files batch by
batch, and a run fed that way is the same run as one fed from memory."""

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
from visionops.training.feed import StreamedImages, device_feed, memory_budget_bytes, rows_of

CPU = torch.device("cpu")


def _on_disk(split: Split, folder: Path, name: str) -> Split:
    np.save(folder / f"{name}_x.npy", split.x)
    return Split(np.load(folder / f"{name}_x.npy", mmap_mode="r"), split.y)


def test_streamed_rows_come_from_the_file_in_each_batch_order(tmp_path: Path) -> None:
    x = np.arange(10 * 2 * 3 * 3, dtype=np.uint8).reshape(10, 2, 3, 3)
    on_disk = _on_disk(Split(x, np.zeros(10)), tmp_path, "s").x
    batches = [torch.tensor([7, 2, 9]), torch.tensor([0]), torch.tensor([5, 1, 3, 8, 4, 6])]
    got = list(rows_of(StreamedImages(on_disk, CPU, workers=0), batches))
    assert [r.tolist() for r in got] == [x[b.numpy()].tolist() for b in batches]
    assert list(rows_of(torch.from_numpy(x), batches))[0].tolist() == x[[7, 2, 9]].tolist()


def test_the_feed_streams_only_past_the_budget() -> None:
    x = {"train": np.zeros((4, 1, 8, 8), np.uint8), "val": np.zeros((2, 1, 8, 8), np.uint8)}
    fed, streamed = device_feed(x, CPU, budget=6 * 64, workers=0)
    assert not streamed and all(isinstance(v, torch.Tensor) for v in fed.values())
    fed, streamed = device_feed(x, CPU, budget=6 * 64 - 1, workers=0)
    assert streamed and all(isinstance(v, StreamedImages) for v in fed.values())
    assert memory_budget_bytes(0.5, CPU) == 2**29
    assert 0 < memory_budget_bytes(None, CPU)


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_a_run_streamed_from_the_files_is_the_run_fed_from_memory(
    tmp_path: Path, strength: float
) -> None:
    """Same batches, same augmentation draws, same weights: the feed changes where the images
    are, not what the model learns (with and without augmentation, which draws from the RNG)."""
    train = _on_disk(left_right_split(96, seed=1), tmp_path, "train")
    val = _on_disk(left_right_split(32, seed=2), tmp_path, "val")
    runs = []
    for budget in (None, 1e-9):  # the default (it fits) and a budget every split is over
        torch.manual_seed(0)
        net = build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.1)
        options = FitOptions(
            train=TrainConfig(
                max_memory_gb=budget, loader_workers=0, augment=AugmentConfig(strength=strength)
            )
        )
        runs.append(
            fit(
                NormalizedNet(net, [0.5], [0.25]),
                train,
                val,
                max_epochs=3,
                batch_size=16,
                learning_rate=1e-2,
                weight_decay=0.0,
                patience=5,
                seed=3,
                device=CPU,
                options=options,
            )
        )
    memory, streamed = runs
    assert (memory.streamed, streamed.streamed) == (False, True)
    assert [(m.train_loss, m.val_accuracy) for m in memory.history] == [
        (m.train_loss, m.val_accuracy) for m in streamed.history
    ]
    for a, b in zip(
        memory.model.state_dict().values(), streamed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_max_steps_per_epoch_trains_on_the_first_batches_only() -> None:
    """A bounded number of batches per epoch (bench/scale.py measures memory, not this CPU's
    speed): the weights and loss after the limited epoch are those of two SGD steps by hand on the
    epoch's first two batches."""
    from visionops.training.engine import fit_one_epoch, training_batches

    data = left_right_split(96, seed=1)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    nets, losses = [], []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.0)
        nets.append(NormalizedNet(net, [0.5], [0.25]))
    limited, by_hand = nets
    opt = torch.optim.SGD(limited.parameters(), lr=0.1)
    options = FitOptions(train=TrainConfig(max_steps_per_epoch=2))
    loss_fn = torch.nn.CrossEntropyLoss()
    loss, _ = fit_one_epoch(
        limited, x, y, opt, loss_fn, 16, torch.Generator().manual_seed(5), options=options
    )
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    by_hand.train()
    for idx in training_batches(y, 16, torch.Generator().manual_seed(5))[:2]:
        step = loss_fn(by_hand(x[idx]), y[idx])
        step.backward()
        opt.step()
        opt.zero_grad()
        losses.append(step.item())
    assert loss == pytest.approx(sum(losses) / 2)  # two batches of 16: the mean over 32 images
    for a, b in zip(limited.state_dict().values(), by_hand.state_dict().values(), strict=True):
        assert torch.allclose(a, b)
