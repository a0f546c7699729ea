"""ResNet-18 (torchvision, no download) with transfer-learning modes.

Pretrained weights come only from a local file (a torchvision ``resnet18`` state dict saved with
``torch.save``), loaded with ``weights_only=True``. Modes:

- ``scratch``: random init, everything trains;
- ``feature_extraction``: the pretrained backbone is frozen (and kept in eval mode so its batch
  norm statistics stay as learned), only a new head trains;
- ``finetune_last_n``: the last ``finetune_blocks`` of the four residual stages and the head train;
- ``full_finetune``: start from the weights, everything trains.

``width`` scales every channel count (stem 64, stages 64/128/256/512) of a network trained from
scratch. Pretrained weights fix the widths, so a width other than 1.0 with a weights file is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from visionops.models.cnn import hw, scaled

TRANSFER_MODES = ("scratch", "feature_extraction", "finetune_last_n", "full_finetune")
_STAGES = ("layer1", "layer2", "layer3", "layer4")


class TransferResNet(nn.Module):
    """A torchvision ResNet whose frozen modules stay in eval mode while the rest trains."""

    def __init__(self, net: nn.Module, frozen: list[str]) -> None:
        super().__init__()
        self.net = net
        self.frozen = frozen

    def train(self, mode: bool = True) -> TransferResNet:
        super().train(mode)
        for name in self.frozen:
            self.net.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScaledResNet18(ResNet):
    """torchvision's ResNet-18 (its BasicBlock, layer builder and init) with every channel count
    times ``width``; width 1.0 is exactly ``torchvision.models.resnet18()``, weights and all."""

    def __init__(self, width: float = 1.0) -> None:
        self.width = width  # read by _make_layer, which ResNet.__init__ calls
        super().__init__(BasicBlock, [2, 2, 2, 2])
        stem = scaled(64, width)
        if (
            stem != self.conv1.out_channels
        ):  # torchvision hard-codes a 64-channel stem and a 512-input head
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(
                self.conv1.weight, mode="fan_out", nonlinearity="relu"
            )  # as ResNet's
            self.bn1 = nn.BatchNorm2d(stem)
            self.fc = nn.Linear(self.inplanes, self.fc.out_features)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001, ANN202
        if planes == 64:  # the first stage takes the stem's output, rebuilt at the scaled width
            self.inplanes = scaled(64, self.width)
        return super()._make_layer(block, scaled(planes, self.width), blocks, stride, dilate)


def _load_weights(net: nn.Module, weights_path: str) -> None:
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights_path {weights_path}: no such file (weights are never downloaded)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is always new
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"model.weights_path {weights_path} is not a resnet18 state dict: "
            f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}"
        )


def build_resnet18(
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    transfer_mode: str = "scratch",
    weights_path: str | None = None,
    finetune_blocks: int = 1,
    width: float = 1.0,
    **_: Any,
) -> nn.Module:
    """ResNet-18 for ``in_channels`` and ``image_size``, its channels scaled by ``width`` (from scratch only)."""
    if transfer_mode not in TRANSFER_MODES:
        raise ValueError(
            f"model.transfer_mode must be one of {TRANSFER_MODES}, got {transfer_mode!r}"
        )
    if transfer_mode != "scratch" and not weights_path:
        raise ValueError(
            f"model.transfer_mode {transfer_mode!r} needs pretrained weights: set model.weights_path "
            "to a local resnet18 state dict file (nothing is downloaded)"
        )
    if not 1 <= finetune_blocks <= 4:
        raise ValueError(f"model.finetune_blocks must be 1..4, got {finetune_blocks}")
    if width <= 0:
        raise ValueError(f"model.width must be > 0, got {width}")
    if weights_path and width != 1.0:
        raise ValueError(
            f"model.width {width} cannot be used with pretrained weights (model.transfer_mode "
            f"{transfer_mode!r}, model.weights_path {weights_path}): the weights fix resnet18's "
            "channel widths; set model.width to 1.0 (and leave tune.width null), or train from "
            "scratch without model.weights_path"
        )
    net = ScaledResNet18(width)
    if weights_path:
        _load_weights(net, weights_path)
    if in_channels != 3:
        # Grey input: the pretrained RGB filters summed over colour give the same response to grey.
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.conv1.weight.copy_(
                old.weight.sum(1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
            )
    if min(hw(image_size)) < 64:
        # Small images keep their resolution (the CIFAR recipe): no stride in the stem, no max pool.
        net.conv1.stride = (1, 1)
        net.maxpool = nn.Identity()
    net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
    frozen: list[str] = []
    if transfer_mode == "feature_extraction":
        frozen = ["conv1", "bn1", *_STAGES]
    elif transfer_mode == "finetune_last_n":
        frozen = ["conv1", "bn1", *_STAGES[: 4 - finetune_blocks]]
    for name in frozen:
        for p in net.get_submodule(name).parameters():
            p.requires_grad_(False)
    return TransferResNet(net, frozen)
