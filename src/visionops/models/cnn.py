"""Convolutional classifiers built from 3x3 conv blocks."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def _flat_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, image_size, image_size)).numel())


class ConvClassifier(nn.Module):
    """Conv feature blocks followed by a dropout-regularised fully connected head."""

    def __init__(self, features: nn.Sequential, flat: int, hidden: list[int], num_classes: int, dropout: float):
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


def _build(filters: list[int], hidden: list[int], *, in_channels: int, image_size: int,
           num_classes: int, dropout: float) -> ConvClassifier:
    blocks, c_in, side = [], in_channels, image_size
    for c_out in filters:
        if side < 2:
            raise ValueError(f"image_size {image_size} is too small for {len(filters)} pooling blocks")
        blocks.append(_conv_block(c_in, c_out))
        c_in, side = c_out, side // 2
    features = nn.Sequential(*blocks)
    return ConvClassifier(features, _flat_features(features, in_channels, image_size), hidden, num_classes, dropout)


def build_small_cnn(**kw) -> ConvClassifier:
    """Two conv blocks (32, 64) and a 128-unit head: fast on CPU, strong on small images."""
    return _build([32, 64], [128], **kw)


def build_face_cnn(**kw) -> ConvClassifier:
    """The face service's network: four conv blocks (16, 32, 64, 128), fc 512, fc 1024, dropout."""
    return _build([16, 32, 64, 128], [512, 1024], **kw)
