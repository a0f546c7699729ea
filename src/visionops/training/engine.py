"""The training loop: uint8 batches in, early stopping on validation accuracy, per-epoch history."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from visionops.data.preprocess import Split


def select_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    images_per_second: float


@dataclass
class FitResult:
    model: nn.Module
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    stopped_early: bool = False


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def fit_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                  loss_fn: nn.Module, batch_size: int, generator: torch.Generator) -> tuple[float, float]:
    """One pass over the training data; returns (mean loss, accuracy)."""
    model.train()
    total_loss, correct = 0.0, 0
    for idx in _batches(len(y), batch_size, generator):
        xb, yb = x[idx], y[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / len(y), correct / len(y)


@torch.no_grad()
def evaluate_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
                   batch_size: int) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    for idx in _batches(len(y), batch_size, None):
        logits = model(x[idx])
        total_loss += loss_fn(logits, y[idx]).item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
    return total_loss / len(y), correct / len(y)


def fit(model: nn.Module, train: Split, val: Split, *, max_epochs: int, batch_size: int,
        learning_rate: float, weight_decay: float, patience: int, seed: int, device: torch.device,
        on_epoch: Callable[[EpochMetrics], None] | None = None) -> FitResult:
    """Train with AdamW, cut the learning rate x0.1 when validation accuracy stalls, stop early.

    Returns the model with the weights of its best validation epoch. ``on_epoch`` may raise to
    stop (the tuner's pruning does).
    """
    seed_everything(seed)
    model = model.to(device)
    # np.array copies the memory-mapped splits into writable memory that torch can share.
    xt, yt = torch.from_numpy(np.array(train.x)).to(device), torch.from_numpy(np.array(train.y)).to(device)
    xv, yv = torch.from_numpy(np.array(val.x)).to(device), torch.from_numpy(np.array(val.y)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.1, patience=max(1, patience // 2))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    result = FitResult(model=model)
    best_state, since_best = copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr_loss, tr_acc = fit_one_epoch(model, xt, yt, optimizer, loss_fn, batch_size, generator)
        va_loss, va_acc = evaluate_split(model, xv, yv, loss_fn, batch_size * 4)
        seconds = time.perf_counter() - start
        metrics = EpochMetrics(epoch, tr_loss, tr_acc, va_loss, va_acc, lr, seconds, len(yt) / seconds)
        result.history.append(metrics)
        scheduler.step(va_acc)
        if va_acc > result.best_val_accuracy or epoch == 1:
            result.best_epoch, result.best_val_accuracy = epoch, va_acc
            best_state, since_best = copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(metrics)
        if since_best >= patience:
            result.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
