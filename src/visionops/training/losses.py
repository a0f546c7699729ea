"""Losses: cross-entropy with label smoothing, focal loss, class weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t) ** gamma``."""

    def __init__(
        self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(
            logits,
            target,
            weight=self.weight,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        p_t = torch.softmax(logits.float(), 1).gather(1, target[:, None]).squeeze(1)
        loss = (1.0 - p_t).pow(self.gamma) * ce
        if self.weight is None:
            return loss.mean()
        return loss.sum() / self.weight[target].sum()


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """``n / (k * count_c)`` per class: rare classes weigh more (sklearn's 'balanced')."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(
        np.float64
    )
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(
    kind: str,
    *,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    weight: torch.Tensor | None = None,
) -> nn.Module:
    if kind == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if kind == "focal":
        return FocalLoss(focal_gamma, weight, label_smoothing)
    raise ValueError(f"train.loss must be 'cross_entropy' or 'focal', got {kind!r}")
