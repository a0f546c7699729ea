"""What the train stage's two paths (one network, a K-fold ensemble) share: the per-epoch metrics
and their replay into a retried run, device tags, learning curves, and ``Fitted``, what either
path hands to packaging."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from torch import nn

import mlflow
from visionops.core.constants import TAG_PREFIX as T
from visionops.training.engine import EpochMetrics


@dataclass
class Fitted:
    """A trained served network and the figures the train run and ``Trained`` report."""

    model: nn.Module
    histories: list[list[EpochMetrics]]  # one per network trained (one, or one per member)
    best_val_accuracy: float  # an ensemble's: its out-of-fold accuracy
    epochs_trained: int  # an ensemble's: all members' together
    resumed_from: int | None = None  # one network: the first epoch a retry trained (0: none)
    # (probabilities, labels) of held-out images for the unknown threshold; None: the val split's.
    held_out: tuple[np.ndarray, np.ndarray] | None = None
    members: int = 1
    oof_accuracy: float | None = None


def epoch_metrics(m: EpochMetrics) -> dict[str, float]:
    return {
        "train_loss": m.train_loss,
        "train_accuracy": m.train_accuracy,
        "val_loss": m.val_loss,
        "val_accuracy": m.val_accuracy,
        "learning_rate": m.learning_rate,
        "epoch_seconds": m.seconds,
        "images_per_second": m.images_per_second,
    }


def log_epoch(m: EpochMetrics) -> None:
    """The task log's line for a finished epoch (one process or rank 0 of several)."""
    logging.getLogger("visionops").info(
        "epoch %d: train_loss %.4f val_accuracy %.4f (%.1fs)",
        m.epoch,
        m.train_loss,
        m.val_accuracy,
        m.seconds,
    )


def device_tags(device: torch.device, precision: str) -> dict[str, str]:
    """Where and how the run trained; ``precision`` is bf16, fp16 (with loss scaling) or fp32."""
    tags = {
        f"{T}device": str(device),
        f"{T}precision": precision,
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "python_version": platform.python_version(),
    }
    if device.type == "cuda":
        tags["gpu_name"] = torch.cuda.get_device_name(device)
        tags["cudnn_version"] = str(torch.backends.cudnn.version())
        tags["bf16_supported"] = str(torch.cuda.is_bf16_supported()).lower()
    return tags


def log_missing_epochs(
    run_id: str, history: list[dict[str, Any]], reopened: bool, prefix: str = ""
) -> None:
    """Log the checkpoint's epochs that ``run_id`` lacks (step = epoch, keys ``prefix`` + name):
    every one in a new run; in a reopened run only those the interrupted attempt checkpointed but
    did not live to log (the loop saves an epoch's checkpoint before it reports the epoch)."""
    client = MlflowClient()
    logged: dict[str, set[int]] = {}
    for m in history:
        metrics = {prefix + k: v for k, v in epoch_metrics(EpochMetrics(**m)).items()}
        for key in metrics.keys() - logged.keys():
            steps = client.get_metric_history(run_id, key) if reopened else []
            logged[key] = {s.step for s in steps}
        missing = {k: v for k, v in metrics.items() if m["epoch"] not in logged[k]}
        if missing:
            mlflow.log_metrics(missing, step=m["epoch"])


def save_learning_curves(histories: list[list[EpochMetrics]], path: Path) -> None:
    """Loss and accuracy per epoch, train and val; one pair of lines per network (member)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, history in enumerate(histories):
        name = f"member {k} " if len(histories) > 1 else ""
        epochs = [m.epoch for m in history]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            (line,) = ax.plot(
                epochs, [getattr(m, f"train_{key}") for m in history], label=f"{name}train"
            )
            ax.plot(
                epochs,
                [getattr(m, f"val_{key}") for m in history],
                label=f"{name}val",
                color=line.get_color() if len(histories) > 1 else None,
                linestyle="--" if len(histories) > 1 else "-",
            )
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(
        title="accuracy" + (" (val: the member's held-out fold)" if len(histories) > 1 else ""),
        xlabel="epoch",
    )
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
