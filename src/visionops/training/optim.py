"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over the parameters that train (frozen backbones are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov and momentum > 0,
        )
    raise ValueError(f"train.optimizer must be adamw, adam or sgd, got {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    max_epochs: int,
    patience: int,
    step_size: int = 10,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``plateau``: x0.1 when validation accuracy stalls (the VGG recipe); ``cosine``; ``step``; ``none``."""
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=max(1, patience // 2)
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "none":
        return None
    raise ValueError(f"train.scheduler must be plateau, cosine, step or none, got {name!r}")


def scheduler_step(scheduler: object | None, val_accuracy: float) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_accuracy)
    else:
        scheduler.step()
