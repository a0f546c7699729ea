"""The training loop: uint8 batches in, early stopping on validation accuracy, per-epoch history.

Optional: gradient accumulation, augmentation of the training split, focal loss / label
smoothing / class weights, and on CUDA mixed precision (bf16, or fp16 with loss scaling on GPUs
without bf16; see ``precision``), channels_last and ``torch.compile``. A checkpoint after every
epoch lets an interrupted run continue where it stopped.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionops.core.batching import inference_batch_size
from visionops.core.config import TrainConfig
from visionops.core.progress import Progress
from visionops.data.preprocess import Split
from visionops.training.augment import augment_batch, build_augment
from visionops.training.checkpoint import (
    load_checkpoint,
    restore_rng,
    restore_scaler,
    rng_state,
    save_checkpoint,
)
from visionops.training.feed import StreamedImages, device_feed, memory_budget_bytes, rows_of
from visionops.training.losses import balanced_class_weights, make_loss
from visionops.training.optim import make_optimizer, make_scheduler, scheduler_step
from visionops.training.precision import Precision, autocast, grad_scaler, resolve_precision

log = logging.getLogger(__name__)


def select_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault(
            "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
        )  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass(frozen=True)
class FitOptions:
    """How the loop runs: the ``train`` section of the config (optimiser, schedule, loss, augmentation,
    precision, ...; its defaults are plain AdamW), plus what is decided outside it."""

    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: str = "uniform"  # uniform | balanced (each class drawn equally often)
    precision: str = (
        "auto"  # auto (from train.amp and the device) | bf16 | fp16 | fp32: forced (tests)
    )


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
    best_val_loss: float = float("inf")
    stopped_early: bool = False
    resumed_from: int = 0
    precision: Precision = "fp32"
    streamed: bool = False  # the splits were read from their files batch by batch (training.feed)
    processes: int = 1  # processes that trained it together (training.distributed)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes training together (0, 1 outside
    ``torch.distributed``; see ``visionops.training.distributed``)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def training_batches(
    y: torch.Tensor, batch_size: int, generator: torch.Generator, sampling: str = "uniform"
) -> list[torch.Tensor]:
    """An epoch's batches: a shuffled pass, or ``balanced`` weighted sampling with replacement.

    Balanced sampling draws every class equally often in expectation (weight 1/class size per
    image), so small classes are seen as much as large ones without dropping any photo.
    """
    if sampling != "balanced":
        return _batches(len(y), batch_size, generator)
    labels = y.cpu()
    weights = 1.0 / torch.bincount(labels).double()[labels]
    order = torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    return list(order.split(batch_size))


def fit_one_epoch(
    model: nn.Module,
    x: torch.Tensor | StreamedImages,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batch_size: int,
    generator: torch.Generator,
    *,
    options: FitOptions = FitOptions(),
    transform=None,
    scaler: torch.amp.GradScaler | None = None,
    what: str = "training",
) -> tuple[float, float]:
    """One pass over the training data (its first ``train.max_steps_per_epoch`` batches when set);
    returns (mean loss, accuracy) over the images it saw. A long pass logs its progress as ``what``.

    ``scaler`` carries the fp16 loss scale from epoch to epoch (``fit`` passes its own); without
    one, a fresh scaler for the options' precision is used.
    """
    model.train()
    device = x.device
    precision = resolve_precision(device, options.train.amp, options.precision)
    scaler = scaler if scaler is not None else grad_scaler(device, precision)
    # channels_last is a layout of 4-d image batches; feature batches (N, D) keep theirs.
    memory = (
        torch.channels_last
        if options.train.channels_last and device.type == "cuda" and x.ndim == 4
        else torch.contiguous_format
    )
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    batches = training_batches(y, batch_size, generator, options.sampling)
    if options.train.max_steps_per_epoch is not None:
        batches = batches[: options.train.max_steps_per_epoch]
    rank, world = rank_and_world()
    if world > 1:
        # Every process draws the same batches (one seed); each takes its share of every batch,
        # and DistributedDataParallel averages the gradients: one step of the whole batch. A last
        # batch with fewer images than processes is left out (one process would have none).
        batches = [b[rank::world] for b in batches if len(b) >= world]
    seen = sum(len(b) for b in batches)
    progress = Progress(what, seen * world, logger=log, always=False) if rank == 0 else None
    accumulate = max(1, options.train.accumulate_steps)
    optimizer.zero_grad(set_to_none=True)
    for i, (idx, rows) in enumerate(zip(batches, rows_of(x, batches), strict=True)):
        xb, yb = augment_batch(transform, rows).contiguous(memory_format=memory), y[idx]
        with autocast(device, precision):
            logits = model(xb)
            loss = loss_fn(logits, yb)
        # A disabled scaler (bf16, fp32) returns the loss as is and steps the optimizer plainly.
        scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
        if (i + 1) % accumulate == 0 or i + 1 == len(batches):
            # Gradient clipping, if ever added, goes here after scaler.unscale_(optimizer).
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        # Summed on the device: no host sync per batch.
        total_loss += loss.detach().float() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        if progress is not None:
            progress.update(len(yb) * world)
    if progress is not None:
        progress.done()
    if world > 1:
        totals = torch.stack(
            [
                total_loss.double(),
                correct.double(),
                torch.tensor(seen, dtype=torch.double, device=device),
            ]
        )
        torch.distributed.all_reduce(totals)
        total_loss, correct, seen = totals[0], totals[1], int(totals[2].item())
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    x: torch.Tensor | StreamedImages,
    y: torch.Tensor,
    loss_fn: nn.Module,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    batches = _batches(len(y), batch_size, None)
    for idx, rows in zip(batches, rows_of(x, batches), strict=True):
        with autocast(x.device, precision):
            logits = model(rows)
            total_loss += loss_fn(logits.float(), y[idx]).item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
    return total_loss / len(y), correct / len(y)


def _loss_and_augment(
    opts: FitOptions,
    labels: np.ndarray,
    yt: torch.Tensor,
    yv: torch.Tensor,
    xt: torch.Tensor | StreamedImages,
    device: torch.device,
) -> tuple[nn.Module, Any]:
    """The training loss (class weights from ``labels`` when balanced) and the augmentation of
    the training images (None for features of a frozen encoder, which are not images)."""
    n_classes = int(max(int(yt.max()), int(yv.max())) + 1) if len(yt) else 1
    weight = (
        balanced_class_weights(np.asarray(labels), n_classes).to(device)
        if opts.train.class_weights == "balanced"
        else None
    )
    loss_fn = make_loss(
        opts.train.loss,
        label_smoothing=opts.train.label_smoothing,
        focal_gamma=opts.train.focal_gamma,
        weight=weight,
    ).to(device)
    if xt.ndim == 4:
        transform = build_augment(opts.train.augment, xt.shape[1], xt.shape[2], xt.shape[3])
    elif opts.train.augment.strength > 0:
        # Features (N, D) of a frozen encoder are not images: flips and crops mean nothing there.
        raise ValueError(
            "train.augment.strength must be 0 for a model trained on features (N, D), "
            f"got {opts.train.augment.strength}"
        )
    else:
        transform = None
    return loss_fn, transform


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    max_epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    patience: int,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    options: FitOptions | None = None,
    checkpoint: Path | None = None,
) -> FitResult:
    """Train, step the schedule on validation accuracy, stop early; checkpoint each epoch if asked.

    Returns the model with the weights of its best validation epoch. ``on_epoch`` may raise to
    stop (the tuner's pruning does). With ``checkpoint``, a run finding a checkpoint there
    continues after its last epoch, with the same RNG states, so the result is as if uninterrupted.
    """
    opts = options or FitOptions()
    seed_everything(seed, opts.train.deterministic)
    if device.type == "cuda" and not opts.train.deterministic:
        torch.backends.cudnn.benchmark = (
            True  # fixed input shapes: let cuDNN pick the fastest kernels
        )
    model = model.to(device)
    if opts.train.channels_last and device.type == "cuda" and np.asarray(train.x).ndim == 4:
        model = model.to(memory_format=torch.channels_last)
    step_model = (
        torch.compile(model) if opts.train.compile else model
    )  # state dicts stay on `model`
    eval_model = step_model
    rank, world = rank_and_world()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # Each process of a distributed run holds its own copy of the splits.
    budget = memory_budget_bytes(opts.train.max_memory_gb, device) / world
    fed, streamed = device_feed(
        {"train": train.x, "val": val.x}, device, budget, opts.train.loader_workers
    )
    xt, xv = fed["train"], fed["val"]
    yt, yv = (torch.from_numpy(np.array(s.y)).to(device) for s in (train, val))
    optimizer = make_optimizer(
        model,
        opts.train.optimizer,
        lr=learning_rate,
        weight_decay=weight_decay,
        momentum=opts.train.momentum,
        nesterov=opts.train.nesterov,
    )
    scheduler = make_scheduler(
        optimizer,
        opts.train.scheduler,
        max_epochs=max_epochs,
        patience=patience,
        step_size=opts.train.step_size,
        gamma=opts.train.gamma,
    )
    loss_fn, transform = _loss_and_augment(opts, train.y, yt, yv, xt, device)
    eval_loss = nn.CrossEntropyLoss()  # validation loss stays comparable across loss settings
    generator = torch.Generator().manual_seed(seed)
    precision = resolve_precision(device, opts.train.amp, opts.precision)
    scaler = grad_scaler(device, precision)
    result = FitResult(model=model, precision=precision, streamed=streamed, processes=world)
    best_state, since_best, start_epoch = copy.deepcopy(model.state_dict()), 0, 1
    saved = load_checkpoint(checkpoint) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"], generator)
        restore_scaler(scaler, saved.get("scaler"))
        result.history = [EpochMetrics(**m) for m in saved["history"]]
        result.best_epoch, result.best_val_accuracy = (
            saved["best_epoch"],
            saved["best_val_accuracy"],
        )
        result.best_val_loss = saved.get(
            "best_val_loss", float("inf")
        )  # absent in older checkpoints
        best_state, since_best = saved["best_state"], saved["since_best"]
        start_epoch = result.resumed_from = saved["epoch"] + 1
        result.stopped_early = saved["stopped_early"]
    pixels = int(np.prod(xv.shape[2:])) if xv.ndim == 4 else 1
    eval_batch = inference_batch_size(pixels, cap=batch_size * 4)
    steps = opts.train.max_steps_per_epoch
    per_epoch = (
        len(yt) if steps is None else min(len(yt), steps * batch_size)
    )  # images an epoch sees
    for epoch in range(start_epoch, max_epochs + 1):
        if result.stopped_early:
            break
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr_loss, tr_acc = fit_one_epoch(
            step_model,
            xt,
            yt,
            optimizer,
            loss_fn,
            batch_size,
            generator,
            options=opts,
            transform=transform,
            scaler=scaler,
            what=f"train epoch {epoch}/{max_epochs}",
        )
        # Every process scores the whole validation split with the same weights: the same figures,
        # so all of them take the same early-stopping and schedule decisions.
        va_loss, va_acc = evaluate_split(eval_model, xv, yv, eval_loss, eval_batch, precision)
        seconds = time.perf_counter() - start
        metrics = EpochMetrics(
            epoch, tr_loss, tr_acc, va_loss, va_acc, lr, seconds, per_epoch / seconds
        )
        result.history.append(metrics)
        scheduler_step(scheduler, va_acc)
        # Ties on accuracy go to the lower validation loss: on a small or easy validation split the
        # accuracy saturates early (every face right by epoch 5), and the epochs after it still
        # widen the margins; keeping the first saturated epoch kept an under-trained model.
        better = va_acc > result.best_val_accuracy or (
            va_acc == result.best_val_accuracy and va_loss < result.best_val_loss
        )
        if better or epoch == 1:
            result.best_epoch, result.best_val_accuracy, result.best_val_loss = (
                epoch,
                va_acc,
                va_loss,
            )
            best_state, since_best = copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        result.stopped_early = since_best >= patience
        if checkpoint is not None and rank == 0:
            save_checkpoint(
                checkpoint,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),  # {} unless fp16: the loss scale a resumed run goes on with
                    "rng": rng_state(generator),
                    "history": [asdict(m) for m in result.history],
                    "best_epoch": result.best_epoch,
                    "best_val_accuracy": result.best_val_accuracy,
                    "best_val_loss": result.best_val_loss,
                    "best_state": best_state,
                    "since_best": since_best,
                    "stopped_early": result.stopped_early,
                },
            )
        if on_epoch is not None and rank == 0:
            on_epoch(metrics)
    model.load_state_dict(best_state)
    model.eval()
    return result
