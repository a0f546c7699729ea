"""Answering ``unknown``: a score per image, a threshold chosen from the enrolled images at train time.

Two scores:

- ``distance`` (``face_embedding``): Euclidean distance from the image's face embedding to the
  nearest enrolled embedding (the training and validation images, stored with the model);
  ``unknown`` when it is above the threshold. dlib's embedding is trained so that one person's
  faces lie close together, so a stranger is far from every enrolled face whatever the
  classifier head says.
- ``probability`` (every other model): the winning class probability; ``unknown`` below the threshold.

``auto`` for distances (``distance_threshold``) takes the held-out distances of known faces, all
from the enrolled images (never the test split, never strangers): each validation face's distance
to the nearest training face of its person, and each enrolled (train + val) face's distance to the
nearest *other* enrolled face of its person (leave-one-out, so every person's spread counts). Of
these ``n`` distances it takes the ``ceil((n + 1) q)``-th smallest, ``q`` =
``serving.unknown_quantile`` (default 0.98): the split-conformal rank, under which a new photo of
an enrolled person is named with probability at least ``q`` when the faces are exchangeable (only
roughly: one person's distances are related). The plain ``q`` quantile, the rule before, falls
short of ``q`` on a few dozen distances (with 4 photos a person it turned 3.5% of the enrolled
people's Yale photos into ``unknown``, up to 12% on one draw; ``bench/unknown_threshold.py``).

With fewer than ``q / (1 - q)`` distances (49 at 0.98) no rank certifies ``q``: the threshold is
the largest distance raised towards a prior, dlib's own same-person distance of 0.6
(``DLIB_PRIOR``: dlib calls two embeddings closer than 0.6 the same person), by the share of the
49 distances that are missing. The prior only ever raises it: more photos could only show a larger
largest distance. No distance at all: the prior alone. ``quantile: 1.0`` is the largest distance,
with no prior.

The strangers' side is estimated from the same images (``strangers_estimate``): every enrolled
person in turn is a stranger to the rest, and the share of their faces further than the threshold
from every other person's is the expected share of strangers answered ``unknown`` (it followed the
strangers' share measured on Yale within two points, pooled over draws). It is reported, and
warned about below ``STRANGERS_BAR``, not used to move the threshold: on Yale it is too noisy from
one draw of twelve people to steer by.

Probabilities: the winning probabilities of the validation images the model labels correctly; the
threshold is their ``1 - unknown_quantile`` quantile (default 1.0: the least sure right answer, so
a model answers ``unknown`` only below any confidence a right validation answer had). Kept free of
torch: the served model imports it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

UNKNOWN = "unknown"
# dlib's documented tolerance for its face embedding (dlib_face_v1): the prior of ``auto`` distances.
DLIB_PRIOR = 0.6
# The bar: at least this share of strangers answered ``unknown`` (a warning below it).
STRANGERS_BAR = 0.9
# Enrolled faces whose distance to the other people's faces the strangers' estimate measures (a
# seeded sample above it: the search is over all enrolled faces for each).
ESTIMATE_ROWS = 2000


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


def distance_threshold(
    genuine: np.ndarray, quantile: float | None = None, prior: float = DLIB_PRIOR
) -> dict[str, Any]:
    """``auto`` for distances (the module docstring): the threshold and the evidence it used."""
    q = DEFAULT_QUANTILE["distance"] if quantile is None else quantile
    scores = np.sort(np.asarray(genuine, np.float64))
    n = len(scores)
    needed = math.inf if q >= 1.0 else math.ceil(q / (1.0 - q) - 1e-9)
    rank = math.ceil((n + 1) * q - 1e-9)
    record: dict[str, Any] = {"n_distances": n, "quantile": q, "prior": prior}
    if n and (rank <= n or q >= 1.0):
        rank = min(rank, n)
        return {**record, "rank": rank, "prior_weight": 0.0, "threshold": float(scores[rank - 1])}
    largest = float(scores[-1]) if n else 0.0
    weight = 1.0 - n / needed
    threshold = largest + weight * max(0.0, prior - largest)
    return {
        **record,
        "rank": None,
        "largest": largest if n else None,
        "prior_weight": weight,
        "threshold": float(threshold),
    }


def strangers_estimate(
    x: np.ndarray, y: np.ndarray, threshold: float, seed: int = 0
) -> dict[str, Any] | None:
    """The share of enrolled faces further than ``threshold`` from every *other* person's faces: the
    expected share of strangers answered ``unknown`` (None with fewer than two people)."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    if len(np.unique(y)) < 2:
        return None
    rows = np.arange(len(y))
    if len(rows) > ESTIMATE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, ESTIMATE_ROWS, replace=False))
    far = np.zeros(len(rows), bool)
    for c in np.unique(y[rows]):
        mine = rows[y[rows] == c]
        far[y[rows] == c] = nearest_distance(x[mine], x[y != c])[0] > threshold
    return {"strangers_unknown": float(far.mean()), "n_faces": int(len(rows))}


def choose_threshold(
    setting: Any, quantile: float | None, val_scores: np.ndarray | None, score: str
) -> float | None:
    """The threshold for ``serving.unknown_threshold`` (``auto``, None or a number) and a score kind.

    ``val_scores``: the held-out distances of known faces (``distance_scores``), or the winning
    probabilities of right validation answers.
    """
    if setting is None:
        return None
    if setting != "auto":
        return float(setting)
    if score == "distance":
        return distance_threshold(np.asarray([] if val_scores is None else val_scores), quantile)[
            "threshold"
        ]
    if val_scores is None or len(val_scores) == 0:
        return None  # nothing to choose from: never answer unknown rather than guess
    quantile = DEFAULT_QUANTILE[score] if quantile is None else quantile
    return float(np.quantile(np.asarray(val_scores, np.float64), 1.0 - quantile))


def unknown_record(model: Any) -> dict[str, Any] | None:
    """A served pyfunc model's ``unknown`` record (score, threshold, the evidence ``auto`` used), or
    None when it never answers ``unknown``."""
    record = getattr(model.unwrap_python_model(), "unknown", None) or {}
    return record if record.get("threshold") is not None else None


def unknown_mask(scores: np.ndarray, threshold: float | None, score: str) -> np.ndarray:
    """The rows to answer ``unknown``; none when the threshold is None or negative."""
    scores = np.asarray(scores, np.float64)
    if threshold is None or threshold < 0:
        return np.zeros(len(scores), bool)
    return scores > threshold if score == "distance" else scores < threshold
