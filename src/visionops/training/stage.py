"""The train stage: full training with the tuned parameters, per-epoch metrics, the served model logged.

``train.folds: 1`` trains one network on the train split, early-stopped on the val split;
``train.folds: K`` trains a soft-voting ensemble of K members on the pooled splits
(``visionops.training.kfold_stage``). Either way one network is served, through one pyfunc.

Every epoch is checkpointed into the run folder, so a retried train task resumes after the last
finished epoch instead of starting over, logging on in the MLflow run the interrupted attempt opened
(an ensemble's finished members are kept beside it and reused).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking
from visionops.core.config import PipelineConfig
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import Trained
from visionops.core.run_view import log_params_once
from visionops.core.storage import RunStore, StageOutput, fingerprint, visionops_home
from visionops.data.preprocess import Split, load_groups, load_labels, load_split, load_stats
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
from visionops.training.kfold import remove_member_files
from visionops.training.kfold_stage import fit_ensemble
from visionops.training.packaging import served_extras
from visionops.training.precision import resolve_precision
from visionops.training.settings import apply_params, current_params, fit_options
from visionops.training.stage_parts import (
    Fitted,
    device_tags,
    epoch_metrics,
    log_epoch,
    log_missing_epochs,
    save_learning_curves,
)

__all__ = ["checkpoint_path", "device_tags", "epoch_metrics", "train_stage"]

log = logging.getLogger("visionops")


def checkpoint_path(ctx: RunContext, fp: str) -> Path:
    """Inside the run folder when the data root is local; under VISIONOPS_HOME otherwise."""
    store = ctx.store()
    if store.is_local:
        return Path(store.stage_path("train-checkpoint")) / f"{fp[:16]}.pt"
    return visionops_home() / "checkpoints" / ctx.run_key / f"{fp[:16]}.pt"


def _log_params(cfg: PipelineConfig, params: dict[str, Any], parent_run_id: str) -> None:
    t = cfg.train
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
            "folds": t.folds,
        }
    )
    # On the parent too: the values this model trained with (tuned or configured) are what a
    # person compares between pipeline runs.
    log_params_once(parent_run_id, current_params(cfg))


def _fit_kwargs(cfg: PipelineConfig, device: torch.device) -> dict[str, Any]:
    """``fit``'s settings from the config, the same for one network and for every member."""
    t = cfg.train
    return {
        "max_epochs": t.max_epochs,
        "batch_size": t.batch_size,
        "learning_rate": t.learning_rate,
        "weight_decay": t.weight_decay,
        "patience": t.patience,
        "device": device,
        "options": fit_options(cfg),
    }


def _fit_single(
    cfg: PipelineConfig,
    net: torch.nn.Module,
    train: Split,
    val: Split,
    fit_kwargs: dict[str, Any],
    ckpt: Path | None,
    run_id: str,
    reopened: bool,
    folder: Path,
) -> Fitted:
    """One network on train, early-stopped on val, resuming from the checkpoint a retry finds; by
    ``train.processes`` processes together when more than one (the splits read from ``folder``)."""
    earlier = load_checkpoint(ckpt) if ckpt is not None else None
    if earlier is not None:
        # A retry: the run gets the epochs before the interruption (a reopened run has most of
        # them already), so its curves are whole and every epoch is logged once.
        mlflow.set_tag(f"{T}resumed_after_epoch", str(earlier["epoch"]))
        log_missing_epochs(run_id, earlier["history"], reopened)
        log.info(
            "train: resuming after epoch %d from %s in %s run %s",
            earlier["epoch"],
            ckpt,
            "the interrupted attempt's" if reopened else "a new",
            run_id,
        )

    def on_epoch(m: EpochMetrics) -> None:
        mlflow.log_metrics(epoch_metrics(m), step=m.epoch)
        log_epoch(m)

    if cfg.train.processes > 1:
        from visionops.training.distributed import fit_distributed

        settings = {k: v for k, v in fit_kwargs.items() if k != "device"}
        result = fit_distributed(
            net,
            folder,
            processes=cfg.train.processes,
            device=fit_kwargs["device"],
            seed=cfg.train.seed,
            checkpoint=ckpt,
            run_id=run_id,
            **settings,
        )
    else:
        result = fit(
            net, train, val, seed=cfg.train.seed, on_epoch=on_epoch, checkpoint=ckpt, **fit_kwargs
        )
    # Where the images were read from: whole in memory, or streamed from the memory-mapped splits.
    mlflow.set_tag(f"{T}train_feed", "streamed" if result.streamed else "memory")
    mlflow.log_metrics(
        {
            "best_val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch,
            "epochs_trained": len(result.history),
        }
    )
    return Fitted(
        model=result.model,
        histories=[result.history],
        best_val_accuracy=result.best_val_accuracy,
        epochs_trained=len(result.history),
        resumed_from=result.resumed_from,
    )


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
        device = select_device(cfg.train.device)
        t = cfg.train
        mlflow.set_tags(device_tags(device, resolve_precision(device, t.amp)))
        _log_params(cfg, params, ctx.parent_run_id)
        seed_everything(t.seed)  # the initial weights come from the seed too
        net = build_network(cfg, len(labels), stats)
        if not reopened or "n_parameters" not in MlflowClient().get_run(run_id).data.metrics:
            _log_parameter_counts(net, t.folds)
        if t.folds > 1:
            groups = np.concatenate(
                [load_groups(folder, "train", train.y), load_groups(folder, "val", val.y)]
            )
            fitted = fit_ensemble(
                cfg,
                train,
                val,
                groups,
                labels=labels,
                build=lambda: build_network(cfg, len(labels), stats),
                fit_kwargs=_fit_kwargs(cfg, device),
                checkpoint=ckpt,
                run_id=run_id,
                parent_run_id=ctx.parent_run_id,
                reopened=reopened,
            )
        else:
            kwargs = _fit_kwargs(cfg, device)
            fitted = _fit_single(cfg, net, train, val, kwargs, ckpt, run_id, reopened, inputs)
        uris = _log_served_model(cfg, fitted, train, val, labels, folder)
        # The sets on the train run and on the model: the model version's source model lists them.
        log_split_datasets(
            preprocessed, cfg.data, ctx.parent_run_id, run_id=run_id, model_uri=uris["model_uri"]
        )
        meta = {
            **uris,
            "train_run_id": run_id,
            "run_key": ctx.run_key,
            "best_val_accuracy": fitted.best_val_accuracy,
            "epochs_trained": fitted.epochs_trained,
            "resumed_from_epoch": fitted.resumed_from,
            "params": params,
            "ensemble_members": fitted.members,
            "oof_accuracy": fitted.oof_accuracy,
        }
        _commit(store, fp, meta, ckpt, t.folds)
    what = "val" if fitted.members == 1 else f"ensemble of {fitted.members}, out-of-fold"
    log.info("train: %s accuracy %.4f; model %s", what, fitted.best_val_accuracy, uris["model_uri"])
    return Trained.model_validate(meta)


def _log_parameter_counts(net: torch.nn.Module, members: int) -> None:
    """The network's parameters (an ensemble's: all its members', ``members`` times one's)."""
    mlflow.log_metric("n_parameters", members * sum(p.numel() for p in net.parameters()))
    mlflow.log_metric(
        "n_trainable_parameters",
        members * sum(p.numel() for p in net.parameters() if p.requires_grad),
    )


def _commit(store: RunStore, fp: str, meta: dict[str, Any], ckpt: Path | None, folds: int) -> None:
    """The stage's output (``train.json``), then the checkpoints go: the output answers any retry."""
    with store.writing("train", fp) as pending:
        (pending.path / "train.json").write_text(json.dumps(meta, indent=2))
        pending.meta = meta
    if ckpt is not None:
        remove_checkpoint(ckpt)  # with its run record
        remove_member_files(ckpt, folds)


def _log_served_model(
    cfg: PipelineConfig,
    fitted: Fitted,
    train: Split,
    val: Split,
    labels: list[str],
    folder: Path,
) -> dict[str, str]:
    """Learning curves, the unknown threshold and the served model (network and pyfunc) into the run."""
    model = fitted.model.to("cpu")
    extras = served_extras(cfg, model, train, val, encoder_of(cfg), held_out=fitted.held_out)
    if extras["unknown"]["threshold"] is not None:
        mlflow.log_metric("unknown_threshold", extras["unknown"]["threshold"])
    if extras["unknown"].get("strangers_estimate"):
        estimate = extras["unknown"]["strangers_estimate"]["strangers_unknown"]
        mlflow.log_metric("unknown_strangers_estimate", estimate)
    test = load_split(folder, "test")
    with tempfile.TemporaryDirectory() as tmp:
        curves = Path(tmp) / "learning_curves.png"
        save_learning_curves(fitted.histories, curves)
        mlflow.log_artifact(str(curves))
        return log_classifier(
            model,
            labels=labels,
            image_size=cfg.data.image_size,
            channels=cfg.data.channels,
            example=np.array(test.x[:2]),
            workdir=Path(tmp),
            data_profile=folder / "data_profile.json",
            tta=cfg.train.tta,
            limits={
                "max_rows": cfg.serving.max_rows,
                "max_pixels": cfg.serving.max_pixels_per_request,
                "max_side": cfg.serving.max_decoded_side,
                # validate.min_side bounds what the network was trained on: the images, or for a
                # face model the chips cut from the photos (a photo has no such bound).
                "min_side": 1 if cfg.faces.enabled else cfg.validate_.min_side,
            },
            **extras,
        )
