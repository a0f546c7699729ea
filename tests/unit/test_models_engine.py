"""visionops.models and visionops.training.engine: every architecture builds and learns; fit's contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from testkit import left_right_split
from visionops.data.preprocess import Split
from visionops.models import available_models, build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.engine import EpochMetrics, evaluate_split, fit, select_device

CPU = torch.device("cpu")


def test_registry_lists_the_known_models() -> None:
    assert available_models() == [
        "face_cnn",
        "face_embedding",
        "fashion_cnn",
        "resnet18",
        "small_cnn",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "vit_tiny",
    ]


@pytest.mark.parametrize("name", ["small_cnn", "face_cnn"])
@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 32)])
def test_each_model_builds_and_trains_one_step(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, image_size=size, num_classes=5, dropout=0.1)
    x = torch.randn(4, channels, size, size)
    logits = model(x)
    assert logits.shape == (4, 5)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    params = list(model.parameters())
    assert params and all(p.grad is not None for p in params)
    assert all(torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)


def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg'.*face_cnn.*small_cnn"):
        build_model("vgg", in_channels=1, image_size=16, num_classes=2, dropout=0.0)


def test_too_small_image_for_the_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="image_size 8 is too small for 4 pooling blocks"):
        build_model("face_cnn", in_channels=1, image_size=8, num_classes=2, dropout=0.0)


def test_normalized_net_takes_uint8_and_normalises_per_channel() -> None:
    net = NormalizedNet(nn.Identity(), mean=[0.5, 0.0, 1.0], std=[0.25, 1.0, 0.5])
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    x[:, 1] = 0
    out = net(x)
    assert out.dtype == torch.float32
    assert out[:, 0].unique().tolist() == [2.0]  # (1 - 0.5) / 0.25
    assert out[:, 1].unique().tolist() == [0.0]  # (0 - 0) / 1
    assert out[:, 2].unique().tolist() == [0.0]  # (1 - 1) / 0.5
    state = net.state_dict()
    assert state["mean"].flatten().tolist() == [0.5, 0.0, 1.0]  # statistics travel with the weights
    assert state["std"].flatten().tolist() == [0.25, 1.0, 0.5]


def test_normalized_net_wraps_a_real_model() -> None:
    torch.manual_seed(0)
    net = NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=3, dropout=0.0),
        [0.3],
        [0.2],
    )
    out = net(torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


_separable = left_right_split  # two classes: bright left half (0) or right half (1), with noise


def _net(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=dropout),
        [0.3],
        [0.3],
    )


def _fit(model: nn.Module, train: Split, val: Split, **kw):
    args = dict(
        max_epochs=3,
        batch_size=16,
        learning_rate=3e-3,
        weight_decay=0.0,
        patience=5,
        seed=1,
        device=CPU,
    )
    args.update(kw)
    return fit(model, train, val, **args)


def test_fit_learns_a_separable_problem() -> None:
    train, val = _separable(64, seed=0), _separable(32, seed=1)
    seen: list[EpochMetrics] = []
    result = _fit(_net(), train, val, on_epoch=seen.append)
    assert [m.epoch for m in result.history] == [1, 2, 3]
    assert seen == result.history
    assert result.best_val_accuracy >= 0.95
    assert result.best_val_accuracy == max(m.val_accuracy for m in result.history)
    assert result.history[result.best_epoch - 1].val_accuracy == result.best_val_accuracy
    assert result.stopped_early is False
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert all(m.learning_rate == pytest.approx(3e-3) for m in result.history[:2])
    assert all(m.seconds > 0 and m.images_per_second > 0 for m in result.history)
    # The returned model is in eval mode and scores what the history says.
    assert not result.model.training
    _, acc = evaluate_split(
        result.model, torch.from_numpy(val.x), torch.from_numpy(val.y), nn.CrossEntropyLoss(), 64
    )
    assert acc == pytest.approx(result.best_val_accuracy)


def test_fit_returns_the_best_epochs_weights() -> None:
    train = _separable(64, seed=0)
    flipped = _separable(32, seed=1)
    # Validation labels are the opposite of what training teaches: the better the fit, the worse val gets,
    # so the best validation epoch is early and the final epoch's weights are not the ones to return.
    val = Split(flipped.x, 1 - flipped.y)
    model = _net()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(m: EpochMetrics) -> None:
        snapshots[m.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    result = _fit(model, train, val, max_epochs=4, on_epoch=snapshot)
    assert len(result.history) == 4
    assert result.best_epoch < 4
    assert result.history[-1].train_accuracy == 1.0
    final = result.model.state_dict()
    best, last = snapshots[result.best_epoch], snapshots[4]
    assert all(torch.equal(final[k], best[k]) for k in best)
    assert not all(torch.equal(final[k], last[k]) for k in last)


def test_fit_breaks_accuracy_ties_with_the_validation_loss() -> None:
    # An easy problem: validation accuracy is perfect after the first epochs, while the loss keeps falling.
    train, val = _separable(64, seed=0), _separable(32, seed=1)
    result = _fit(_net(), train, val, max_epochs=8, patience=8)
    top = max(m.val_accuracy for m in result.history)
    tied = [m for m in result.history if m.val_accuracy == top]
    assert len(tied) >= 2, [m.val_accuracy for m in result.history]
    best = min(tied, key=lambda m: m.val_loss)
    assert result.best_epoch == best.epoch and result.best_epoch > tied[0].epoch
    assert result.best_val_loss == pytest.approx(best.val_loss)


def test_fit_stops_early_when_validation_plateaus() -> None:
    train, val = _separable(32, seed=0), _separable(16, seed=1)
    # A learning rate far below float32 resolution: the weights, and so val accuracy, never change.
    result = _fit(_net(), train, val, max_epochs=20, patience=2, learning_rate=1e-12)
    assert len({m.val_accuracy for m in result.history}) == 1
    assert result.stopped_early is True
    assert [m.epoch for m in result.history] == [
        1,
        2,
        3,
    ]  # best at 1, then 2 epochs without improvement
    assert result.best_epoch == 1


def test_fit_is_reproducible_with_the_same_seed() -> None:
    train, val = _separable(48, seed=0), _separable(16, seed=1)
    a = _fit(_net(seed=0, dropout=0.3), train, val, seed=11)
    b = _fit(_net(seed=0, dropout=0.3), train, val, seed=11)
    c = _fit(_net(seed=0, dropout=0.3), train, val, seed=12)
    assert [m.train_loss for m in a.history] == [m.train_loss for m in b.history]
    assert [m.val_loss for m in a.history] == [m.val_loss for m in b.history]
    assert [m.train_loss for m in a.history] != [m.train_loss for m in c.history]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])


def test_select_device() -> None:
    assert select_device("cpu") == CPU
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")
