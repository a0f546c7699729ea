"""VGG (Simonyan & Zisserman 2014), configurations A, B, D, E, adapted to small images and CPUs.

A width multiplier scales every layer; pooling stops once the feature map is a single pixel, so
28x28 digits run through the same 5-stage network as 224x224 photos.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visionops.models.cnn import hw, scaled

M = "M"
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "B": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "D": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "E": [
        64,
        64,
        M,
        128,
        128,
        M,
        256,
        256,
        256,
        256,
        M,
        512,
        512,
        512,
        512,
        M,
        512,
        512,
        512,
        512,
        M,
    ],
}


class VGG(nn.Module):
    def __init__(
        self,
        cfg: list[int | str],
        *,
        in_channels: int,
        image_size: int | tuple[int, int],
        num_classes: int,
        dropout: float,
        width: float,
        batch_norm: bool,
        init: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, (h, w) = in_channels, hw(image_size)
        for item in cfg:
            if item == M:
                if min(h, w) >= 2:  # skip pools that would shrink the map to nothing
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            c_out = scaled(int(item), width)
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        # The paper's 7x7 map at 224 pixels; smaller images keep what they have left.
        self.pool = nn.AdaptiveAvgPool2d((min(7, h), min(7, w)))
        hidden = scaled(4096, width, 16)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * min(7, h) * min(7, w), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init(init)

    def _init(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "paper":  # N(0, 0.01^2) weights, zero biases (section 3.1)
                    nn.init.normal_(m.weight, 0.0, 0.01)
                elif isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _vgg(
    config: str,
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    width: float = 1.0,
    batch_norm: bool = False,
    init: str = "default",
    **_: Any,
) -> VGG:
    if init not in ("default", "paper"):
        raise ValueError(f"model.init must be 'default' or 'paper', got {init!r}")
    return VGG(
        CONFIGS[config],
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        dropout=dropout,
        width=width,
        batch_norm=batch_norm,
        init=init,
    )


def build_vgg11(**kw: Any) -> VGG:
    """Configuration A: 8 conv + 3 fc layers."""
    return _vgg("A", **kw)


def build_vgg13(**kw: Any) -> VGG:
    """Configuration B: 10 conv + 3 fc layers."""
    return _vgg("B", **kw)


def build_vgg16(**kw: Any) -> VGG:
    """Configuration D: 13 conv + 3 fc layers."""
    return _vgg("D", **kw)


def build_vgg19(**kw: Any) -> VGG:
    """Configuration E: 16 conv + 3 fc layers."""
    return _vgg("E", **kw)
