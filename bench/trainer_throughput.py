"""Trainer throughput against a minimal plain PyTorch loop: same model, data, batch size, optimizer.

Run: .venv/bin/python bench/trainer_throughput.py   (prints images/s of both and the ratio)

Both train for the same epochs from the same initial weights and validate on the same small split
after every epoch (the plain loop the way one writes it by hand: forward, accuracy); the trainer
adds what a real run pays besides (metrics, history, early-stopping bookkeeping, best weights).
Rounds alternate between the two so that machine noise hits both alike; the ratio printed is the
median of the per-round ratios (the best rounds are printed too).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from _common import plain_epoch
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.engine import FitOptions, fit


def plain_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
) -> float:
    """The baseline: the loop one would write by hand. Returns training images per second."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        plain_epoch(model, x, y, xv, yv, opt, loss_fn, gen, batch)
    return epochs * len(y) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 keeps the figures stable on a shared machine",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (a.n, a.channels, a.size, a.size), dtype=np.uint8)
    y = rng.integers(0, 10, a.n).astype(np.int64)
    train, val = Split(x, y), Split(x[:64], y[:64])
    torch.manual_seed(0)
    base = NormalizedNet(
        build_model(
            a.model, in_channels=a.channels, image_size=a.size, num_classes=10, dropout=0.1
        ),
        [0.5] * a.channels,
        [0.25] * a.channels,
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xv, yv = torch.from_numpy(val.x), torch.from_numpy(val.y)
    plain, trainer = [], []

    def run_trainer() -> float:
        res = fit(
            copy.deepcopy(base),
            train,
            val,
            max_epochs=a.epochs,
            batch_size=a.batch,
            learning_rate=1e-3,
            weight_decay=1e-4,
            patience=a.epochs,
            seed=0,
            device=torch.device("cpu"),
            options=FitOptions(),
        )
        # Whole-epoch rate including validation: what the trainer really costs.
        return a.epochs * a.n / sum(m.seconds for m in res.history)

    for i in range(a.rounds):
        # Alternate which goes first, so that a drift in machine load favours neither.
        if i % 2:
            trainer.append(run_trainer())
            plain.append(plain_loop(copy.deepcopy(base), xt, yt, xv, yv, a.epochs, a.batch, 1e-3))
        else:
            plain.append(plain_loop(copy.deepcopy(base), xt, yt, xv, yv, a.epochs, a.batch, 1e-3))
            trainer.append(run_trainer())
    p, t = max(plain), max(trainer)
    print(
        f"model {a.model} {a.channels}x{a.size}x{a.size}, batch {a.batch}, {a.n} images x {a.epochs} epochs, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"plain loop: {p:9.1f} images/s   rounds {[round(v) for v in plain]}")
    print(f"trainer:    {t:9.1f} images/s   rounds {[round(v) for v in trainer]}")
    ratios = sorted(tr / pl for tr, pl in zip(trainer, plain))
    print(f"best-of ratio = {t / p:.3f}; per-round ratios {[round(r, 3) for r in ratios]}")
    print(f"ratio trainer/plain = {ratios[len(ratios) // 2]:.3f} (median of rounds)")


if __name__ == "__main__":
    main()
