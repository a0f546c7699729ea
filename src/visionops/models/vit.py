"""A small vision transformer (ViT-Ti shape: 3 heads, 12 blocks), adapted to any image size.

Patch embedding by a strided convolution, a learned class token and positional embedding,
pre-norm multi-head self-attention blocks, classification from the class token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visionops.models.cnn import hw


class ViT(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int | tuple[int, int],
        num_classes: int,
        dropout: float,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
    ) -> None:
        super().__init__()
        h, w = hw(image_size)
        if patch_size > min(h, w):
            raise ValueError(f"model.patch_size {patch_size} is larger than the image ({h}x{w})")
        self.grid = (h // patch_size, w // patch_size)
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=4 * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        if tokens.shape[1] != self.pos_embed.shape[1] - 1:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} gives {tokens.shape[1]} patches; the model was "
                f"built for a {self.grid[0]}x{self.grid[1]} grid"
            )
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def build_vit_tiny(
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    width: float = 1.0,
    patch_size: int | None = None,
    depth: int = 12,
    **_: Any,
) -> ViT:
    """ViT-Ti (dim 192 = 3 heads x 64, 12 blocks) times ``width``; by default about an 8x8 patch grid."""
    heads = 3
    dim = heads * max(8, int(round(64 * width)))
    if patch_size is None:
        patch_size = max(2, round(min(hw(image_size)) / 8))
    return ViT(
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        dropout=dropout,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
    )
