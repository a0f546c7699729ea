"""GPU training throughput: mixed precision + channels_last against fp32, and the trainer against a plain loop.

Run on a machine with a CUDA GPU (defaults: vgg11 and resnet18 at 96x96 and 224x224):

    .venv/bin/python bench/gpu_throughput.py
    .venv/bin/python bench/gpu_throughput.py --models vgg16 --sizes 224 --batch 128

For every model and size, on the same data, initial weights and batch size:

* ``plain``: a hand-written fp32 loop (data on the device, AdamW, the same validation pass);
* ``trainer fp32``: ``training.engine.fit`` with ``amp`` and ``channels_last`` off;
* ``trainer amp``: ``fit`` with both on (bf16 autocast where the GPU supports it, else fp16 with
  loss scaling; channels_last memory format).

Each measures training images/s of its second epoch (the first pays cuDNN autotuning and the
allocator's warm-up), rounds alternate the order, and the ratios printed are medians of the
per-round ratios: trainer fp32 / plain (the trainer's overhead) and amp / fp32 (what mixed
precision buys). It also runs on CPU (``--device cpu --sizes 32 --n 256``) as a check that it
works; there amp and channels_last are ignored by design, so the amp ratio is ~1.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn

from _common import plain_epoch
from visionops.core.config import TrainConfig
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.engine import FitOptions, fit
from visionops.training.precision import resolve_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(
    model: nn.Module, train: Split, val: Split, batch: int, device: torch.device
) -> float:
    """The baseline written by hand: two fp32 epochs; returns the second epoch's training images/s."""
    model = model.to(device)
    x, y = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    xv, yv = torch.from_numpy(val.x).to(device), torch.from_numpy(val.y).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    rate = 0.0
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        plain_epoch(model, x, y, xv, yv, opt, loss_fn, gen, batch)
        _sync(device)
        rate = len(y) / (time.perf_counter() - start)
    return rate


def trainer(
    model: nn.Module, train: Split, val: Split, batch: int, device: torch.device, amp: bool
) -> float:
    """``fit`` for two epochs; the second epoch's training images/s (its own timing, validation included)."""
    options = FitOptions(train=TrainConfig(amp=amp, channels_last=amp))
    res = fit(
        model,
        train,
        val,
        max_epochs=2,
        batch_size=batch,
        learning_rate=1e-3,
        weight_decay=1e-4,
        patience=2,
        seed=0,
        device=device,
        options=options,
    )
    return len(train.y) / res.history[-1].seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["vgg11", "resnet18"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[96, 224])
    ap.add_argument(
        "--n", type=int, default=2048, help="training images (random uint8, 3 channels)"
    )
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--width", type=float, default=1.0, help="model.width (smaller for a CPU check)"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        print(
            f"GPU {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}; amp precision here: {resolve_precision(device, True)}"
        )
    else:
        print(
            f"CPU ({torch.get_num_threads()} threads); torch {torch.__version__}: amp and channels_last are "
            "ignored on CPU, so amp/fp32 is ~1 by design"
        )
    rng = np.random.default_rng(0)
    rows = []
    for size in a.sizes:
        x = rng.integers(0, 256, (a.n, 3, size, size), dtype=np.uint8)
        y = rng.integers(0, 10, a.n).astype(np.int64)
        train, val = Split(x, y), Split(x[:64], y[:64])
        for model_name in a.models:
            torch.manual_seed(0)
            base = NormalizedNet(
                build_model(
                    model_name,
                    in_channels=3,
                    image_size=size,
                    num_classes=10,
                    dropout=0.5,
                    width=a.width,
                ),
                [0.5] * 3,
                [0.25] * 3,
            )
            runs: dict[str, list[float]] = {"plain": [], "fp32": [], "amp": []}
            order = list(runs)
            for i in range(a.rounds):
                for kind in order if i % 2 == 0 else order[::-1]:
                    net = copy.deepcopy(base)
                    rate = (
                        plain_loop(net, train, val, a.batch, device)
                        if kind == "plain"
                        else trainer(net, train, val, a.batch, device, amp=kind == "amp")
                    )
                    runs[kind].append(rate)
                    del net
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            overhead = statistics.median(f / p for f, p in zip(runs["fp32"], runs["plain"]))
            speedup = statistics.median(m / f for m, f in zip(runs["amp"], runs["fp32"]))
            rows.append(
                (model_name, size, *(statistics.median(runs[k]) for k in order), overhead, speedup)
            )
            print(
                f"{model_name:9s} {size:3d}px  plain {rows[-1][2]:8.0f}  trainer fp32 {rows[-1][3]:8.0f}  "
                f"trainer amp {rows[-1][4]:8.0f} img/s   trainer/plain {overhead:.3f}   amp/fp32 {speedup:.2f}",
                flush=True,
            )
    print(
        "\n| model | size | plain fp32 img/s | trainer fp32 img/s | trainer amp+channels_last img/s "
        "| trainer/plain | amp/fp32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for model_name, size, plain, fp32, amp, overhead, speedup in rows:
        print(
            f"| {model_name} | {size} | {plain:.0f} | {fp32:.0f} | {amp:.0f} | {overhead:.3f} | {speedup:.2f} |"
        )


if __name__ == "__main__":
    main()
