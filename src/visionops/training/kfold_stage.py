"""The train stage's K-fold path (``train.folds`` > 1): pool train and val, cut stratified folds that
keep near-copy groups whole, train a member per fold, and record it all in the train run.

Recorded: param ``folds``; tags ``visionops.ensemble_members`` (K) and ``visionops.ensemble``
(``soft_voting``), on the parent run too, with its ``oof_accuracy`` metric (the run summary reads
them there); per member its epochs (``member<k>_val_accuracy`` etc., step = epoch),
``member<k>_best_val_accuracy``, ``member<k>_best_epoch``, ``member<k>_epochs_trained`` and the
fold sizes; ``oof_accuracy``, ``oof_loss`` (mean negative log-likelihood) and
``best_val_accuracy`` = ``oof_accuracy``.

The out-of-fold accuracy scores every pooled image by the member that did not train on it, but
that member stopped at its best epoch on that same fold: like ``best_val_accuracy`` of a single
network, it is slightly optimistic. The test split (the evaluate stage) is the unbiased figure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient
from torch import nn

import mlflow
from visionops.core.config import PipelineConfig
from visionops.core.constants import TAG_PREFIX as T
from visionops.data.preprocess import Split
from visionops.training.engine import EpochMetrics
from visionops.training.ensemble import fold_assignments
from visionops.training.kfold import KFoldResult, fit_kfold, pool
from visionops.training.stage_parts import Fitted, epoch_metrics, log_missing_epochs

log = logging.getLogger("visionops")

ENSEMBLE_MEMBERS_TAG = f"{T}ensemble_members"


def _prefix(k: int) -> str:
    return f"member{k}_"


def fit_ensemble(
    cfg: PipelineConfig,
    train: Split,
    val: Split,
    groups: np.ndarray,
    *,
    labels: list[str],
    build: Callable[[], nn.Module],
    fit_kwargs: dict[str, Any],
    checkpoint: Path | None,
    run_id: str,
    parent_run_id: str,
    reopened: bool,
) -> Fitted:
    """Train ``train.folds`` members on the pooled splits and return their soft-voting ensemble.

    ``groups``: the near-copy group of each train row, then of each val row (``load_groups``).
    """
    t = cfg.train
    data = pool(train, val)
    folds = fold_assignments(data.y, groups, t.folds, t.seed, labels)
    tags = {ENSEMBLE_MEMBERS_TAG: str(t.folds), f"{T}ensemble": "soft_voting"}
    mlflow.set_tags(tags)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)

    def on_epoch(k: int, m: EpochMetrics) -> None:
        mlflow.log_metrics({_prefix(k) + n: v for n, v in epoch_metrics(m).items()}, step=m.epoch)
        log.info(
            "member %d/%d epoch %d: train_loss %.4f val_accuracy %.4f (%.1fs)",
            k + 1,
            t.folds,
            m.epoch,
            m.train_loss,
            m.val_accuracy,
            m.seconds,
        )

    def on_restore(k: int, history: list[dict[str, Any]]) -> None:
        log.info("member %d: %d epoch(s) from an earlier attempt", k, len(history))
        log_missing_epochs(run_id, history, reopened, prefix=_prefix(k))

    result = fit_kfold(
        build,
        data,
        folds,
        seed=t.seed,
        fit_kwargs=fit_kwargs,
        tta=list(t.tta),
        checkpoint=checkpoint,
        on_epoch=on_epoch,
        on_restore=on_restore,
    )
    return _record(result, parent_run_id)


def _record(result: KFoldResult, parent_run_id: str) -> Fitted:
    """The members' and the ensemble's figures into the train run (and OOF accuracy on the parent)."""
    accuracy, loss = result.oof()
    metrics: dict[str, float] = {
        "oof_accuracy": accuracy,
        "oof_loss": loss,
        "best_val_accuracy": accuracy,
    }
    for m in result.members:
        held = int((result.folds == m.fold).sum())
        metrics |= {
            _prefix(m.fold) + "best_val_accuracy": m.best_val_accuracy,
            _prefix(m.fold) + "best_epoch": m.best_epoch,
            _prefix(m.fold) + "epochs_trained": m.epochs_trained,
            _prefix(m.fold) + "n_val": held,
            _prefix(m.fold) + "n_train": len(result.folds) - held,
        }
    epochs = sum(m.epochs_trained for m in result.members)
    metrics["epochs_trained"] = epochs
    mlflow.log_metrics(metrics)
    MlflowClient().log_metric(parent_run_id, "oof_accuracy", accuracy)
    restored = [str(m.fold) for m in result.members if m.restored or m.resumed_from]
    if restored:
        mlflow.set_tag(f"{T}resumed_members", ",".join(restored))
    log.info(
        "ensemble of %d: out-of-fold accuracy %.4f, loss %.4f (members' best fold accuracy %s)",
        len(result.members),
        accuracy,
        loss,
        ", ".join(f"{m.best_val_accuracy:.4f}" for m in result.members),
    )
    return Fitted(
        model=result.model,
        histories=[m.history for m in result.members],
        best_val_accuracy=accuracy,
        epochs_trained=epochs,
        held_out=(result.oof_probabilities, result.y),
        members=len(result.members),
        oof_accuracy=accuracy,
    )
