"""ResNet-18 (torchvision, no download) with transfer-learning modes.

Pretrained weights come only from a local file (a torchvision ``resnet18`` state dict saved with
``torch.save``), loaded with ``weights_only=True``. Modes:

- ``scratch``: random init, everything trains;
- ``feature_extraction``: the pretrained backbone is frozen (and kept in eval mode so its batch
  norm statistics stay as learned), only a new head trains;
- ``finetune_last_n``: the last ``finetune_blocks`` of the four residual stages and the head train;
- ``full_finetune``: start from the weights, everything trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionops.models.cnn import hw

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


def _load_weights(net: nn.Module, weights_path: str) -> None:
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights_path {weights_path}: no such file (weights are never downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is always new
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"model.weights_path {weights_path} is not a resnet18 state dict: "
                         f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}")


def build_resnet18(*, in_channels: int, image_size: int | tuple[int, int], num_classes: int, dropout: float,
                   transfer_mode: str = "scratch", weights_path: str | None = None, finetune_blocks: int = 1,
                   **_: Any) -> nn.Module:
    """ResNet-18 for ``in_channels`` and ``image_size``; ``width`` does not apply (fixed 64..512)."""
    from torchvision.models import resnet18

    if transfer_mode not in TRANSFER_MODES:
        raise ValueError(f"model.transfer_mode must be one of {TRANSFER_MODES}, got {transfer_mode!r}")
    if transfer_mode != "scratch" and not weights_path:
        raise ValueError(f"model.transfer_mode {transfer_mode!r} needs pretrained weights: set model.weights_path "
                         "to a local resnet18 state dict file (nothing is downloaded)")
    if not 1 <= finetune_blocks <= 4:
        raise ValueError(f"model.finetune_blocks must be 1..4, got {finetune_blocks}")
    net = resnet18(weights=None)
    if weights_path:
        _load_weights(net, weights_path)
    if in_channels != 3:
        # Grey input: the pretrained RGB filters summed over colour give the same response to grey.
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.conv1.weight.copy_(old.weight.sum(1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels)
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
