"""K-fold ensembles: folds that are stratified and keep near-copy groups whole, and the soft-voting
network that serves K members as one.

``SoftVotingEnsemble.forward`` returns the log of the members' mean probability, so every caller
that takes ``softmax(network(x))`` (the served pyfunc, TTA, evaluation) gets exactly that mean
without knowing it holds an ensemble; it exports with ``torch.export`` like a single network.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from visionops.core.config import ConfigError

# The smallest probability whose log is taken: log(0) would be -inf, and softmax of a row holding
# -inf is still right, but a NaN from -inf - -inf is not worth the risk.
MIN_PROBABILITY = 1e-12


class SoftVotingEnsemble(nn.Module):
    """K networks with the same classes; the output is ``log(mean_k softmax(member_k(x)))``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a soft-voting ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(MIN_PROBABILITY))


def _groups_per_class(y: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    return {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}


def fold_assignments(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int, labels: list[str] | None = None
) -> np.ndarray:
    """The fold (0..k-1) of each row: stratified by ``y``, no group in two folds, reproducible.

    scikit-learn's ``StratifiedGroupKFold`` (shuffled by ``seed``) assigns whole groups. A class
    with fewer than ``k`` groups could not be in every fold, and a class in one fold only would be
    unseen by the member early-stopped on it: that is a ``ConfigError`` naming ``train.folds`` and
    the largest K the data allows, not a silent fallback to fewer folds (the served model would no
    longer be what the config says). ``labels`` name the classes in messages.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) != len(groups):
        raise ValueError(f"{len(y)} labels but {len(groups)} group ids")
    counts = _groups_per_class(y, groups)

    def name(c: int) -> str:
        return repr(labels[c]) if labels is not None and c < len(labels) else str(c)

    short = {c: n for c, n in counts.items() if n < k}
    if short:
        named = ", ".join(
            f"class {name(c)}: {n}" for c, n in sorted(short.items(), key=lambda t: t[1])
        )
        raise ConfigError(
            f"train.folds: {k} folds need at least {k} groups of images (near-copies count once) "
            f"in every class of the pooled train and val splits; too few in {named}. Set "
            f"train.folds to at most {min(counts.values())} (1 trains one network on train/val)"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[held_out] = fold
    for c in counts:
        if (
            len(np.unique(folds[y == c])) < 2
        ):  # not expected with >= k groups; a member would miss it
            raise ConfigError(
                f"train.folds: class {name(c)} landed in one fold of {k}; lower train.folds"
            )
    return folds


def oof_scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean negative log-likelihood of out-of-fold probabilities ``(N, C)``."""
    y = np.asarray(y)
    if len(y) == 0:
        return 0.0, 0.0
    accuracy = float((probs.argmax(axis=1) == y).mean())
    picked = np.clip(probs[np.arange(len(y)), y], MIN_PROBABILITY, None)
    return accuracy, float(-np.log(picked).mean())
