"""``face_embedding``: a small head on a frozen 128-d face embedding (dlib's face-recognition ResNet).

The embedding is computed once per image (``visionops.data.embeddings``), so training and tuning
only fit this head: an L2-normalised input (dlib's embedding is made for Euclidean distances, its
scale carries no identity), an optional hidden layer with dropout, and a linear classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

EMBEDDING_DIM = 128


class EmbeddingHead(nn.Module):
    """(N, dim) float features -> (N, num_classes) logits."""

    def __init__(self, dim: int, num_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden > 0:
            layers += [nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
            dim = hidden
        layers.append(nn.Linear(dim, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        # Scaled up after normalising: unit vectors give logits too small for a linear layer to separate
        # quickly at usual learning rates.
        return self.classifier(nn.functional.normalize(x, dim=1) * 8.0)


def build_face_embedding(
    *,
    in_channels: int,
    image_size: Any,
    num_classes: int,
    dropout: float,
    hidden_units: int = 128,
    **_: Any,
) -> nn.Module:
    """The head; ``in_channels`` is the feature dimension here (128), ``image_size`` is unused."""
    dim = in_channels if in_channels > 3 else EMBEDDING_DIM
    return EmbeddingHead(dim, num_classes, hidden_units, dropout)
