"""Shared bits of the benchmarks: the digits data as uint8 splits, a small config, the plain baseline epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from visionops.core.config import PipelineConfig, build_config
from visionops.data.preprocess import Split


def digits_splits(seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 1,797 digits (8x8 grey) as uint8 (N, 1, 8, 8): 80% train, 20% validation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, va = order[:cut], order[cut:]
    return Split(x[tr], y[tr]), Split(x[va], y[va])


def config(**overrides) -> PipelineConfig:
    base = {"data.image_size": 8, "train.device": "cpu", "train.batch_size": 64}
    return build_config(PipelineConfig().to_dict(), {**base, **overrides}, source="bench")


def plain_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    gen: torch.Generator,
    batch: int,
) -> None:
    """One epoch of the baseline written by hand: shuffled steps, then a validation accuracy pass."""
    model.train()
    for idx in torch.randperm(len(y), generator=gen).split(batch):
        idx = idx.to(x.device)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _ = (model(xv).argmax(1) == yv).float().mean().item()
