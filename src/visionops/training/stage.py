"""The train stage: full training with the tuned parameters, per-epoch metrics, the served model logged.

Every epoch is checkpointed into the run folder, so a retried train task resumes after the last
finished epoch instead of starting over, logging on in the MLflow run the interrupted attempt opened.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import Trained
from visionops.core.run_view import log_params_once
from visionops.core.storage import StageOutput, fingerprint, visionops_home
from visionops.data.preprocess import load_labels, load_split, load_stats
from visionops.data.split_datasets import log_split_datasets
from visionops.serving.model import log_classifier, tta_label
from visionops.training.checkpoint import (
    load_checkpoint,
    record_run_id,
    recorded_run_id,
    remove_checkpoint,
)
from visionops.training.engine import EpochMetrics, fit, seed_everything, select_device
from visionops.training.inputs import build_network, encoder_of, training_output
from visionops.training.packaging import served_extras
from visionops.training.precision import resolve_precision
from visionops.training.settings import apply_params, current_params, fit_options

log = logging.getLogger("visionops")


def _save_learning_curves(history: list[EpochMetrics], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m.epoch for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [m.train_loss for m in history], label="train")
    ax_loss.plot(epochs, [m.val_loss for m in history], label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.plot(epochs, [m.train_accuracy for m in history], label="train")
    ax_acc.plot(epochs, [m.val_accuracy for m in history], label="val")
    ax_acc.set(title="accuracy", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def checkpoint_path(ctx: RunContext, fp: str) -> Path:
    """Inside the run folder when the data root is local; under VISIONOPS_HOME otherwise."""
    store = ctx.store()
    if store.is_local:
        return Path(store.stage_path("train-checkpoint")) / f"{fp[:16]}.pt"
    return visionops_home() / "checkpoints" / ctx.run_key / f"{fp[:16]}.pt"


def _log_missing_epochs(run_id: str, history: list[dict[str, Any]], reopened: bool) -> None:
    """Log the checkpoint's epochs that ``run_id`` lacks (step = epoch): every one in a new run; in a
    reopened run only those the interrupted attempt checkpointed but did not live to log (the loop
    saves an epoch's checkpoint before it reports the epoch)."""
    client = MlflowClient()
    logged: dict[str, set[int]] = {}
    for m in history:
        metrics = epoch_metrics(EpochMetrics(**m))
        for key in metrics.keys() - logged.keys():
            steps = client.get_metric_history(run_id, key) if reopened else []
            logged[key] = {s.step for s in steps}
        missing = {k: v for k, v in metrics.items() if m["epoch"] not in logged[k]}
        if missing:
            mlflow.log_metrics(missing, step=m["epoch"])


def train_stage(ctx: RunContext, preprocessed: StageOutput, params: dict[str, Any]) -> Trained:
    """Train with ``params`` (tuned or configured), log metrics and the model; reuse a finished run's model."""
    cfg = apply_params(ctx.config(), params)
    tracking.configure()
    fp = fingerprint(
        "train", preprocessed.fingerprint, params, cfg.model.model_dump(), cfg.train.model_dump()
    )
    store = ctx.store()
    ckpt = checkpoint_path(ctx, fp) if cfg.train.checkpoint else None
    # An interrupted attempt (an exception, or a worker killed without a word) left its run id
    # beside the checkpoint: the retry reopens that run instead of leaving it behind.
    earlier_run = recorded_run_id(ckpt) if ckpt is not None else None
    with tracking.stage_run(ctx.parent_run_id, "train", resume_run_id=earlier_run) as run_id:
        done = store.find("train", fp)
        if done is not None and done.meta.get("run_key") == ctx.run_key:
            # A retried task: the model of this run is already logged.
            mlflow.set_tag(f"{T}reused_output", "true")
            return Trained.model_validate(done.meta)
        reopened = earlier_run is not None and run_id == earlier_run
        if ckpt is not None and not reopened:
            record_run_id(ckpt, run_id)  # before the first epoch: a kill at any point finds it
        folder = preprocessed.local_path()
        stats, labels = load_stats(folder), load_labels(folder)
        # Images, or for a feature model (face_embedding) their cached embeddings.
        inputs = training_output(ctx, cfg, preprocessed).local_path()
        train, val = (load_split(inputs, s) for s in ("train", "val"))
        test = load_split(folder, "test")
        device = select_device(cfg.train.device)
        t = cfg.train
        mlflow.set_tags(device_tags(device, resolve_precision(device, t.amp)))
        mlflow.log_params(
            {
                **params,
                "model": cfg.model.name,
                "max_epochs": t.max_epochs,
                "batch_size": t.batch_size,
                "patience": t.patience,
                "optimizer": t.optimizer,
                "scheduler": t.scheduler,
                "loss": t.loss,
                "label_smoothing": t.label_smoothing,
                "augment_strength": t.augment.strength,
                "accumulate_steps": t.accumulate_steps,
                "model_width": cfg.model.width,
                "transfer_mode": cfg.model.transfer_mode,
                "tta": tta_label(t.tta),
            }
        )
        # On the parent too: the values this model trained with (tuned or configured) are what a
        # person compares between pipeline runs.
        log_params_once(ctx.parent_run_id, current_params(cfg))
        seed_everything(t.seed)  # the initial weights come from the seed too
        net = build_network(cfg, len(labels), stats)
        if not reopened or "n_parameters" not in MlflowClient().get_run(run_id).data.metrics:
            mlflow.log_metric("n_parameters", sum(p.numel() for p in net.parameters()))
            mlflow.log_metric(
                "n_trainable_parameters",
                sum(p.numel() for p in net.parameters() if p.requires_grad),
            )
        earlier = load_checkpoint(ckpt) if ckpt is not None else None
        if earlier is not None:
            # A retry: the run gets the epochs before the interruption (a reopened run has most of
            # them already), so its curves are whole and every epoch is logged once.
            mlflow.set_tag(f"{T}resumed_after_epoch", str(earlier["epoch"]))
            _log_missing_epochs(run_id, earlier["history"], reopened)
            log.info(
                "train: resuming after epoch %d from %s in %s run %s",
                earlier["epoch"],
                ckpt,
                "the interrupted attempt's" if reopened else "a new",
                run_id,
            )

        def on_epoch(m: EpochMetrics) -> None:
            mlflow.log_metrics(epoch_metrics(m), step=m.epoch)
            log.info(
                "epoch %d: train_loss %.4f val_accuracy %.4f (%.1fs)",
                m.epoch,
                m.train_loss,
                m.val_accuracy,
                m.seconds,
            )

        result = fit(
            net,
            train,
            val,
            max_epochs=t.max_epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            patience=t.patience,
            seed=t.seed,
            device=device,
            on_epoch=on_epoch,
            options=fit_options(cfg),
            checkpoint=ckpt,
        )
        mlflow.log_metrics(
            {
                "best_val_accuracy": result.best_val_accuracy,
                "best_epoch": result.best_epoch,
                "epochs_trained": len(result.history),
            }
        )
        result.model.to("cpu")
        extras = served_extras(cfg, result.model, train, val, encoder_of(cfg))
        if extras["unknown"]["threshold"] is not None:
            mlflow.log_metric("unknown_threshold", extras["unknown"]["threshold"])
        if extras["unknown"].get("strangers_estimate"):
            estimate = extras["unknown"]["strangers_estimate"]["strangers_unknown"]
            mlflow.log_metric("unknown_strangers_estimate", estimate)
        with tempfile.TemporaryDirectory() as tmp:
            curves = Path(tmp) / "learning_curves.png"
            _save_learning_curves(result.history, curves)
            mlflow.log_artifact(str(curves))
            uris = log_classifier(
                result.model,
                labels=labels,
                image_size=cfg.data.image_size,
                channels=cfg.data.channels,
                example=np.array(test.x[:2]),
                workdir=Path(tmp),
                data_profile=folder / "data_profile.json",
                tta=t.tta,
                **extras,
            )
        # The sets on the train run and on the model: the model version's source model lists them.
        log_split_datasets(
            preprocessed, cfg.data, ctx.parent_run_id, run_id=run_id, model_uri=uris["model_uri"]
        )
        meta = {
            **uris,
            "train_run_id": run_id,
            "run_key": ctx.run_key,
            "best_val_accuracy": result.best_val_accuracy,
            "epochs_trained": len(result.history),
            "resumed_from_epoch": result.resumed_from,
            "params": params,
        }
        with store.writing("train", fp) as pending:
            (pending.path / "train.json").write_text(json.dumps(meta, indent=2))
            pending.meta = meta
        if ckpt is not None:
            # With its run record: the committed output now answers any retry.
            remove_checkpoint(ckpt)
    log.info(
        "train: best val_accuracy %.4f at epoch %d of %d; model %s",
        result.best_val_accuracy,
        result.best_epoch,
        len(result.history),
        uris["model_uri"],
    )
    return Trained.model_validate(meta)
