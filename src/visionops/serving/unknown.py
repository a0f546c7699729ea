"""Answering ``unknown``: a score per image, a threshold chosen on the validation split at train time.

Two scores:

- ``distance`` (``face_embedding``): Euclidean distance from the image's face embedding to the
  nearest enrolled embedding (the training and validation images, stored with the model);
  ``unknown`` when it is above the threshold. dlib's embedding is trained so that one person's
  faces lie close together, so a stranger is far from every enrolled face whatever the
  classifier head says.
- ``probability`` (every other model): the winning class probability; ``unknown`` below the threshold.

``auto`` takes held-out scores of known images. Distances: each validation image's distance to the
nearest training image of its own person, and each enrolled (train + val) image's distance to the
nearest *other* enrolled image of its person (leave-one-out: about six times as many samples as
the validation split alone, whose maximum of ~20 distances underestimated the tail on Yale); the
threshold is their ``serving.unknown_quantile`` quantile (default 0.98). Probabilities: the
winning probabilities of the validation images the model labels correctly; the threshold is their
``1 - unknown_quantile`` quantile (default 1.0: the least sure right answer, so a model answers
``unknown`` only below any confidence a right validation answer had). Kept free of torch: the
served model imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

UNKNOWN = "unknown"


def nearest_distance(
    x: np.ndarray, enrolled: np.ndarray, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``: the Euclidean distance to the nearest row of ``enrolled``, and its index."""
    x, enrolled = np.asarray(x, np.float32), np.asarray(enrolled, np.float32)
    if len(enrolled) == 0:
        return np.full(len(x), np.inf, np.float32), np.full(len(x), -1)
    dist, idx = np.empty(len(x), np.float32), np.empty(len(x), np.int64)
    sq = (enrolled**2).sum(1)
    for s in range(0, len(x), chunk):
        xb = x[s : s + chunk]
        d2 = np.maximum((xb**2).sum(1)[:, None] + sq[None, :] - 2.0 * xb @ enrolled.T, 0.0)
        idx[s : s + chunk] = d2.argmin(1)
        dist[s : s + chunk] = np.sqrt(d2[np.arange(len(xb)), idx[s : s + chunk]])
    return dist, idx


def own_class_distances(
    val_x: np.ndarray, val_y: np.ndarray, train_x: np.ndarray, train_y: np.ndarray
) -> np.ndarray:
    """Each validation embedding's distance to the nearest training embedding of its own class."""
    out = np.full(len(val_x), np.inf, np.float32)
    for c in np.unique(val_y):
        mask = train_y == c
        if mask.any():
            out[val_y == c] = nearest_distance(val_x[val_y == c], train_x[mask])[0]
    return out[np.isfinite(out)]


def leave_one_out_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each embedding's distance to the nearest other embedding of its own class (classes of one skipped)."""
    x, out = np.asarray(x, np.float32), []
    for c in np.unique(y):
        members = x[np.asarray(y) == c]
        if len(members) < 2:
            continue
        d = np.sqrt(np.maximum(((members[:, None, :] - members[None, :, :]) ** 2).sum(-1), 0.0))
        np.fill_diagonal(d, np.inf)
        out.append(d.min(axis=1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def distance_scores(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray
) -> np.ndarray:
    """Held-out distances of known faces: validation to training, and leave-one-out within train + val."""
    return np.concatenate(
        [
            own_class_distances(val_x, val_y, train_x, train_y),
            leave_one_out_distances(
                np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
            ),
        ]
    )


DEFAULT_QUANTILE = {"distance": 0.98, "probability": 1.0}


def choose_threshold(
    setting: Any, quantile: float | None, val_scores: np.ndarray | None, score: str
) -> float | None:
    """The threshold for ``serving.unknown_threshold`` (``auto``, None or a number) and a score kind."""
    if setting is None:
        return None
    if setting != "auto":
        return float(setting)
    if val_scores is None or len(val_scores) == 0:
        return None  # nothing to choose from: never answer unknown rather than guess
    quantile = DEFAULT_QUANTILE[score] if quantile is None else quantile
    q = quantile if score == "distance" else 1.0 - quantile
    return float(np.quantile(np.asarray(val_scores, np.float64), q))


def unknown_mask(scores: np.ndarray, threshold: float | None, score: str) -> np.ndarray:
    """The rows to answer ``unknown``; none when the threshold is None or negative."""
    scores = np.asarray(scores, np.float64)
    if threshold is None or threshold < 0:
        return np.zeros(len(scores), bool)
    return scores > threshold if score == "distance" else scores < threshold
