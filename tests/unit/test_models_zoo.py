"""The model zoo: every architecture adapts to channels and image size, learns, and the transfer modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from visionops.core.config import ConfigError, PipelineConfig, build_config
from visionops.models import available_models, build_model

ZOO = ["face_cnn", "fashion_cnn", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "vit_tiny"]
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 96, 96), (1, 112, 92)]
# Small widths keep the CPU time down; resnet18 runs at its full (torchvision) width here.
OPTIONS = {
    "vgg11": {"width": 0.125},
    "vgg13": {"width": 0.125, "batch_norm": True},
    "vgg16": {"width": 0.125, "batch_norm": True},
    "vgg19": {"width": 0.125, "batch_norm": True},
    "vit_tiny": {"width": 0.25, "depth": 2},
    "face_cnn": {"width": 0.5},
    "fashion_cnn": {"width": 0.5},
}


def _build(name: str, c: int, h: int, w: int, classes: int = 5, **kw) -> nn.Module:
    return build_model(
        name,
        in_channels=c,
        image_size=(h, w),
        num_classes=classes,
        dropout=0.0,
        **{**OPTIONS.get(name, {}), **kw},
    )


def test_every_model_of_the_issue_is_registered() -> None:
    assert set(ZOO) <= set(available_models())


@pytest.mark.parametrize("name", ZOO)
def test_forward_and_backward_at_every_input_shape(name: str) -> None:
    torch.manual_seed(0)
    for c, h, w in SHAPES:
        model = _build(name, c, h, w)
        logits = model(torch.randn(3, c, h, w))
        assert logits.shape == (3, 5), (c, h, w)
        nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), (c, h, w)


@pytest.mark.parametrize("name", ZOO)
def test_each_model_overfits_one_small_batch(name: str) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 4
    model = _build(name, 1, 28, 28, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05, f"{name}: loss {first:.3f} -> {loss.item():.3f}"


def test_vgg_configurations_have_the_papers_depths() -> None:
    for name, convs in {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}.items():
        model = _build(name, 3, 32, 32)
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs, name
        assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3, name
    assert any(
        isinstance(m, nn.BatchNorm2d) for m in _build("vgg11", 3, 32, 32, batch_norm=True).modules()
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in _build("vgg11", 3, 32, 32).modules())
    # The width multiplier scales the first conv (64 filters at width 1).
    assert _build("vgg11", 3, 32, 32, width=0.25).features[0].out_channels == 16


def test_vgg_paper_init_is_normal_001_with_zero_bias() -> None:
    torch.manual_seed(0)
    model = _build("vgg16", 3, 32, 32, width=0.5, init="paper")
    weights = torch.cat(
        [m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    )
    assert weights.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(weights.mean().item()) < 1e-3
    assert all(
        (m.bias == 0).all() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    with pytest.raises(ValueError, match="model.init"):
        _build("vgg11", 3, 32, 32, init="xavier")


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for downloaded ImageNet weights: a torchvision resnet18 state dict on disk."""
    from torchvision.models import resnet18

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def _trainable(model: nn.Module) -> set[str]:
    return {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}


def test_resnet_transfer_modes(resnet_weights: Path) -> None:
    saved = torch.load(resnet_weights, weights_only=True)
    kw = {"weights_path": str(resnet_weights)}
    feat = _build("resnet18", 3, 96, 96, transfer_mode="feature_extraction", **kw)
    assert torch.equal(
        feat.net.layer3[0].conv1.weight, saved["layer3.0.conv1.weight"]
    )  # weights loaded
    assert _trainable(feat) == {"fc"}
    feat.train()
    assert (
        not feat.net.layer1.training and not feat.net.bn1.training
    )  # frozen batch norm keeps its statistics
    assert feat.net.fc.training
    last2 = _build("resnet18", 3, 96, 96, transfer_mode="finetune_last_n", finetune_blocks=2, **kw)
    assert _trainable(last2) == {"layer3", "layer4", "fc"}
    full = _build("resnet18", 3, 96, 96, transfer_mode="full_finetune", **kw)
    assert _trainable(full) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
    scratch = _build("resnet18", 3, 96, 96)
    assert not torch.equal(scratch.net.layer3[0].conv1.weight, saved["layer3.0.conv1.weight"])
    # Grey input: one filter answering a grey image as the colour filters answer its RGB copy.
    grey = _build("resnet18", 1, 96, 96, transfer_mode="full_finetune", **kw)
    assert torch.allclose(grey.net.conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))


def test_resnet_pretrained_modes_refuse_without_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs pretrained weights: set model.weights_path"):
        _build("resnet18", 3, 32, 32, transfer_mode="feature_extraction")
    with pytest.raises(FileNotFoundError, match="no such file .weights are never downloaded"):
        _build(
            "resnet18",
            3,
            32,
            32,
            transfer_mode="full_finetune",
            weights_path=str(tmp_path / "missing.pt"),
        )
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a resnet18 state dict"):
        _build("resnet18", 3, 32, 32, transfer_mode="full_finetune", weights_path=str(bad))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet_width_scales_the_channels_from_scratch() -> None:
    torch.manual_seed(0)
    full, half = _build("resnet18", 3, 96, 96), _build("resnet18", 3, 96, 96, width=0.5)
    assert [half.net.get_submodule(f"layer{i}")[1].conv2.out_channels for i in range(1, 5)] == [
        32,
        64,
        128,
        256,
    ]
    assert half.net.conv1.out_channels == 32 and half.net.fc[-1].in_features == 256
    # Channels halve, so the parameter count falls to about a quarter.
    assert _n_params(half) < 0.3 * _n_params(full)
    for c, h, w in [(1, 28, 28), (3, 96, 96)]:
        model = _build("resnet18", c, h, w, width=0.5)
        logits = model(torch.randn(3, c, h, w))
        assert logits.shape == (3, 5), (c, h, w)
        nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        assert all(
            p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
        ), (c, h, w)


def test_resnet_width_one_is_torchvisions_resnet18() -> None:
    from torchvision.models import resnet18

    from visionops.models.resnet import ScaledResNet18

    torch.manual_seed(3)
    expected = resnet18(weights=None).state_dict()
    torch.manual_seed(3)
    got = ScaledResNet18(1.0).state_dict()
    assert got.keys() == expected.keys()
    assert all(
        torch.equal(got[k], expected[k]) for k in expected
    )  # same modules, same init, same draws


def test_resnet_pretrained_weights_refuse_another_width(resnet_weights: Path) -> None:
    for mode in ("feature_extraction", "finetune_last_n", "full_finetune"):
        with pytest.raises(
            ValueError,
            match=f"model.width 0.5 cannot be used with pretrained weights "
            f"\\(model.transfer_mode '{mode}'",
        ):
            _build(
                "resnet18",
                3,
                32,
                32,
                transfer_mode=mode,
                weights_path=str(resnet_weights),
                width=0.5,
            )
    raw = PipelineConfig().to_dict()
    with pytest.raises(ConfigError, match="model.width 0.5 cannot be used with pretrained weights"):
        build_config(
            raw,
            {
                "model.name": "resnet18",
                "model.transfer_mode": "feature_extraction",
                "model.weights_path": str(resnet_weights),
                "model.width": 0.5,
            },
        )
    # Width 1.0 with the weights, and any width from scratch, are fine.
    build_config(
        raw,
        {
            "model.name": "resnet18",
            "model.transfer_mode": "feature_extraction",
            "model.weights_path": str(resnet_weights),
        },
    )
    assert build_config(raw, {"model.name": "resnet18", "model.width": 0.5}).model.width == 0.5


def test_model_config_keys_are_validated() -> None:
    raw = PipelineConfig().to_dict()
    with pytest.raises(
        ConfigError, match="model.transfer_mode 'feature_extraction' needs model.weights_path"
    ):
        build_config(raw, {"model.name": "resnet18", "model.transfer_mode": "feature_extraction"})
    with pytest.raises(ConfigError, match="applies to \\['resnet18'\\], not 'vgg16'"):
        build_config(
            raw,
            {
                "model.name": "vgg16",
                "model.transfer_mode": "full_finetune",
                "model.weights_path": "/x.pt",
            },
        )
    with pytest.raises(ConfigError, match="model.width"):
        build_config(raw, {"model.width": 0})
    cfg = build_config(raw, {"model.name": "vgg13", "model.width": 0.25, "model.batch_norm": True})
    assert (cfg.model.name, cfg.model.width, cfg.model.batch_norm) == ("vgg13", 0.25, True)


def test_vit_has_class_token_positions_and_attention() -> None:
    model = _build("vit_tiny", 3, 32, 32)
    assert model.cls_token.shape == (1, 1, model.pos_embed.shape[-1])
    assert model.pos_embed.shape[1] == 1 + model.grid[0] * model.grid[1] == 1 + 8 * 8
    assert any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    with pytest.raises(ValueError, match="built for a 8x8 grid"):
        model(torch.randn(1, 3, 64, 64))
