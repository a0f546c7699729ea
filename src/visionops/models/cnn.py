"""Convolutional classifiers built from 3x3 conv blocks: small_cnn, face_cnn, fashion_cnn."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from a side length or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """Channel count times the width multiplier, never below ``minimum``."""
    return max(minimum, int(round(channels * width)))


def flat_features(features: nn.Module, in_channels: int, image_size: int | tuple[int, int]) -> int:
    h, w = hw(image_size)
    with torch.no_grad():
        was_training = features.training
        features.eval()  # batch norm cannot run train-mode statistics on a single probe image
        n = int(features(torch.zeros(1, in_channels, h, w)).numel())
        features.train(was_training)
        return n


def _conv_block(c_in: int, c_out: int, batch_norm: bool = False, padding: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=padding)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class ConvClassifier(nn.Module):
    """Conv feature blocks followed by a dropout-regularised fully connected head."""

    def __init__(
        self,
        features: nn.Sequential,
        flat: int,
        hidden: list[int],
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        self.features = features
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _build(
    filters: list[int],
    hidden: list[int],
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    width: float = 1.0,
    batch_norm: bool = False,
    **_: Any,
) -> ConvClassifier:
    blocks, c_in, side = [], in_channels, min(hw(image_size))
    for c_out in filters:
        if side < 2:
            raise ValueError(
                f"image_size {image_size} is too small for {len(filters)} pooling blocks"
            )
        blocks.append(_conv_block(c_in, scaled(c_out, width), batch_norm))
        c_in, side = scaled(c_out, width), side // 2
    features = nn.Sequential(*blocks)
    head = [scaled(h, width, 8) for h in hidden]
    return ConvClassifier(
        features, flat_features(features, in_channels, image_size), head, num_classes, dropout
    )


def build_small_cnn(**kw: Any) -> ConvClassifier:
    """Two conv blocks (32, 64) and a 128-unit head: fast on CPU, strong on small images."""
    return _build([32, 64], [128], **kw)


def build_face_cnn(**kw: Any) -> ConvClassifier:
    """The face service's network: four conv blocks (16, 32, 64, 128), fc 512, fc 1024, dropout."""
    return _build([16, 32, 64, 128], [512, 1024], **kw)


def build_fashion_cnn(
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    width: float = 1.0,
    **_: Any,
) -> nn.Module:
    """conv 32 -> BN -> pool, conv 64 -> BN -> pool, fc 600 -> dropout -> fc 120 -> classes."""
    if min(hw(image_size)) < 6:
        raise ValueError(f"image_size {image_size} is too small for fashion_cnn (needs >= 6)")
    c1, c2 = scaled(32, width), scaled(64, width)
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3),
        nn.BatchNorm2d(c2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    flat = flat_features(features, in_channels, image_size)
    h1, h2 = scaled(600, width, 16), scaled(120, width, 8)
    model = ConvClassifier(features, flat, [], num_classes, dropout)
    # The recipe's head: dropout only after the first fully connected layer.
    model.classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, h1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
        nn.Linear(h2, num_classes),
    )
    return model
