"""K-fold training of a soft-voting ensemble: member k trains on every fold but k, early-stopped on
fold k, and scores fold k (its out-of-fold probabilities). No MLflow here: the train stage
(``visionops.training.kfold_stage``) logs through the callbacks.

Resuming: with a checkpoint path, member k checkpoints its epochs beside it
(``<stem>.fold<k>.pt``, the loop's own per-epoch checkpoint) and, once finished, saves its best
weights and figures (``<stem>.member<k>.pt``) and drops the epoch checkpoint. A retry reuses the
finished members and continues the unfinished one after its last epoch, so a crash costs at most
an epoch and the ensemble is the one an uninterrupted run would have made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from visionops.data.preprocess import Split
from visionops.training.checkpoint import load_checkpoint, save_checkpoint
from visionops.training.engine import EpochMetrics, fit, seed_everything
from visionops.training.ensemble import SoftVotingEnsemble, oof_scores
from visionops.training.packaging import split_probabilities


@dataclass
class Member:
    """One member's training: its fold, figures on that fold, and whether a retry restored it."""

    fold: int
    best_val_accuracy: float
    best_epoch: int
    history: list[EpochMetrics] = field(default_factory=list)
    resumed_from: int = 0  # the first epoch a retry trained (checkpointed epoch + 1; 0: no retry)
    restored: bool = False  # finished by an earlier attempt, weights read back

    @property
    def epochs_trained(self) -> int:
        return len(self.history)


@dataclass
class KFoldResult:
    model: SoftVotingEnsemble
    members: list[Member]
    folds: np.ndarray  # per pooled row, the member that did not train on it
    oof_probabilities: np.ndarray  # (N, C), row i from member folds[i]
    y: np.ndarray

    def oof(self) -> tuple[float, float]:
        """Out-of-fold accuracy and negative log-likelihood."""
        return oof_scores(self.oof_probabilities, self.y)


def pool(train: Split, val: Split) -> Split:
    """Train and val as one split, train rows first (in memory: the folds index it at random)."""
    return Split(
        np.concatenate([np.asarray(train.x), np.asarray(val.x)]), np.concatenate([train.y, val.y])
    )


def member_paths(checkpoint: Path, k: int) -> tuple[Path, Path]:
    """Member k's per-epoch checkpoint and its finished record, beside the stage's checkpoint."""
    return (
        checkpoint.with_name(f"{checkpoint.stem}.fold{k}.pt"),
        checkpoint.with_name(f"{checkpoint.stem}.member{k}.pt"),
    )


def remove_member_files(checkpoint: Path, k: int) -> None:
    """Every member file of an ensemble of ``k``, once the stage's output is committed."""
    for i in range(k):
        for path in member_paths(checkpoint, i):
            path.unlink(missing_ok=True)


def _restore(net: nn.Module, record: dict[str, Any], k: int) -> Member:
    net.load_state_dict(record["state"])
    return Member(
        fold=k,
        best_val_accuracy=record["best_val_accuracy"],
        best_epoch=record["best_epoch"],
        history=[EpochMetrics(**m) for m in record["history"]],
        resumed_from=record["resumed_from"],
        restored=True,
    )


def fit_kfold(
    build: Callable[[], nn.Module],
    data: Split,
    folds: np.ndarray,
    *,
    seed: int,
    fit_kwargs: dict[str, Any],
    tta: list[str],
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, EpochMetrics], None] | None = None,
    on_restore: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> KFoldResult:
    """Train one member per fold with ``fit(**fit_kwargs)`` (seed ``seed + k``); ensemble them.

    ``build`` makes a fresh member network (called after seeding, so its initial weights come from
    the member's seed). ``on_epoch(k, metrics)`` hears every epoch trained now; ``on_restore(k,
    history)`` the epochs of a member that an earlier attempt finished or checkpointed.
    ``tta``: the served views, so the out-of-fold probabilities are the served model's.
    """
    k_folds = int(folds.max()) + 1
    members: list[Member] = []
    nets: list[nn.Module] = []
    oof = np.zeros((len(data.y), 0), np.float32)
    for k in range(k_folds):
        held = folds == k
        seed_everything(seed + k)
        net = build()
        epoch_ckpt, finished = member_paths(checkpoint, k) if checkpoint else (None, None)
        record = load_checkpoint(finished) if finished is not None else None
        if record is not None:
            member = _restore(net, record, k)
            if on_restore is not None:
                on_restore(k, record["history"])
        else:
            partial = load_checkpoint(epoch_ckpt) if epoch_ckpt is not None else None
            if partial is not None and on_restore is not None:
                on_restore(k, partial["history"])
            result = fit(
                net,
                Split(data.x[~held], data.y[~held]),
                Split(data.x[held], data.y[held]),
                seed=seed + k,
                on_epoch=(lambda m, k=k: on_epoch(k, m)) if on_epoch is not None else None,
                checkpoint=epoch_ckpt,
                **fit_kwargs,
            )
            net = result.model
            member = Member(
                k, result.best_val_accuracy, result.best_epoch, result.history, result.resumed_from
            )
            if finished is not None:
                _save_member(finished, net, member)
                epoch_ckpt.unlink(missing_ok=True)
        net = net.cpu().eval()
        probs = split_probabilities(net, Split(data.x[held], data.y[held]), tta)
        if oof.shape[1] == 0:
            oof = np.zeros((len(data.y), probs.shape[1]), np.float32)
        oof[held] = probs
        members.append(member)
        nets.append(net)
    return KFoldResult(SoftVotingEnsemble(nets).eval(), members, folds, oof, np.asarray(data.y))


def _save_member(path: Path, net: nn.Module, member: Member) -> None:
    save_checkpoint(
        path,
        {
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "best_val_accuracy": member.best_val_accuracy,
            "best_epoch": member.best_epoch,
            "history": [asdict(m) for m in member.history],
            "resumed_from": member.resumed_from,
        },
    )
