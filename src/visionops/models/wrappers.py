"""Wrappers that make a network self-contained for serving."""

from __future__ import annotations

import torch
from torch import nn


class NormalizedNet(nn.Module):
    """Wraps a network so that it takes uint8 ``(N, C, H, W)`` and normalises with the training statistics."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        return self.net((x - self.mean) / self.std)
