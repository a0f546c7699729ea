"""Simple baselines beside every evaluation: what a deep model must beat to earn its place.

Two classical scikit-learn models are fitted on the run's training split and scored on the same
test images as the model:

* ``logistic_regression``: multinomial logistic regression on standardised pixels;
* ``pca_svm``: PCA (whitened) then an RBF support vector machine, the classic recipe for small
  image sets (eigenfaces + SVM).

Each has a small grid of settings chosen on the validation split, as the model's own settings
are; the chosen one is refitted on the training split only (the model never trains on the
validation split either). Their cost is bounded at every size of data: images with more than
``baseline.max_features`` pixels x channels are shrunk by area averaging; a training (or validation)
split of more than ``baseline.max_train_images`` images is cut to a stratified subsample of that
many, every class kept, the note saying so; the whole test split is scored, in chunks, so that
their cost beyond the fit grows linearly with it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from visionops.core.config import BaselineConfig, GateConfig
from visionops.core.contracts import BaselineScore
from visionops.core.memory import PageReleaser
from visionops.core.storage import StageOutput
from visionops.data.preprocess import load_split
from visionops.evaluation.metrics import classification_metrics, clean_metrics
from visionops.evaluation.paired import paired_statistics

# The settings tried on the validation split (small on purpose: a baseline is cheap or it is not one).
LOGISTIC_C = (0.01, 0.1, 1.0)
SVM_C = (1.0, 10.0, 100.0)
PCA_VARIANCE = (0.8, 0.95)
LOGISTIC_MAX_ITER = 500
SEED = 0
# Test images turned into features and labelled at a time (bounds the float32 copy of the split).
PREDICT_CHUNK = 4096
SHRINK_CHUNK = 256  # images shrunk at a time (bounds the float copy of large images)


@dataclass
class BaselineFit:
    """One baseline's answers on the test images, or why it was not fitted."""

    name: str
    predictions: list[str] | None  # per test image; None when skipped
    params: dict[str, Any] = field(default_factory=dict)  # the setting chosen on validation
    val_accuracy: float | None = None
    fit_seconds: float = 0.0
    features: int = 0  # pixels x channels it saw
    note: str = ""  # e.g. "images shrunk from 150x150 to 36x36"
    skipped: str | None = None


def features_of(
    x: np.ndarray, max_features: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """uint8 ``(N, C, H, W)`` -> float32 ``(N, C*H'*W')`` in [0, 1], shrunk by area averaging to at
    most ``max_features`` values per image; the note says when it was shrunk. ``rows``: only these
    rows of ``x`` (sorted indices), in their order.

    A chunk of rows at a time, read from ``x`` as it is (a memory-mapped split stays on disk, its
    pages given back as they are read): a float copy of 5,000 photos at 224 px at once would be 3 GB.
    """
    _, c, h, w = x.shape
    n = len(x) if rows is None else len(rows)
    shrink = c * h * w > max_features
    scale = (max_features / (c * h * w)) ** 0.5 if shrink else 1.0
    side_h, side_w = (max(1, int(h * scale)), max(1, int(w * scale))) if shrink else (h, w)
    out = np.empty((n, c * side_h * side_w), np.float32)
    pages = PageReleaser(x)
    for i in range(0, n, SHRINK_CHUNK):
        part = np.asarray(
            x[i : i + SHRINK_CHUNK] if rows is None else x[rows[i : i + SHRINK_CHUNK]]
        )
        pages.add(part.nbytes)
        if shrink:
            small = F.interpolate(
                torch.from_numpy(part).float(), size=(side_h, side_w), mode="area"
            ).numpy()
        else:
            small = part.astype(np.float32)
        out[i : i + len(part)] = small.reshape(len(part), -1) / 255.0
    if not shrink:
        return out, ""
    note = f"images shrunk from {h}x{w} to {side_h}x{side_w} (baseline.max_features {max_features})"
    return out, note


def stratified_subsample(y: np.ndarray, size: int, seed: int = SEED) -> np.ndarray:
    """Sorted row indices of a subsample of ``size`` rows of labels ``y``, each class in proportion
    to its share and never fewer than one row (a class of one image keeps it), drawn with ``seed``.
    All rows when there are no more than ``size``.

    Written here because scikit-learn's stratified samplers either refuse a class of one image
    (``train_test_split``) or drop a class whose share rounds to nothing (``resample``): a baseline
    must see every class the model sees, or the comparison is tilted in the model's favour.
    """
    y = np.asarray(y)
    n = len(y)
    if n <= size:
        return np.arange(n)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    size = max(size, len(classes))  # one row per class at the least
    exact = counts * size / n
    remainder = exact - np.floor(exact)
    quota = np.maximum(np.floor(exact).astype(np.int64), 1)
    # Short of `size`: a row more to the classes with the largest remainders; over it (the classes
    # raised to one row): a row less from those with the smallest, never below one.
    while quota.sum() < size:
        quota[
            np.argmax(np.where(quota < counts, remainder - (quota - np.floor(exact)), -np.inf))
        ] += 1
    while quota.sum() > size:
        quota[np.argmin(np.where(quota > 1, remainder + (np.floor(exact) - quota), np.inf))] -= 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(inverse == c), int(quota[c]), replace=False)
        for c in range(len(classes))
    ]
    return np.sort(np.concatenate(picked))


def _subsample(
    x: np.ndarray, y: np.ndarray, size: int, split: str, max_features: int
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The features (``features_of``) of a stratified subsample of at most ``size`` rows of
    ``x``, read chunk by chunk from a memory-mapped split, their labels, the note saying so ("" when
    nothing was cut) and the note on shrinking."""
    y = np.asarray(y)
    if len(y) <= size:
        features, shrunk = features_of(x, max_features)
        return features, shrunk, y, ""
    rows = stratified_subsample(y, size)
    note = (
        f"fitted on a stratified subsample of {len(rows)} of {len(y)} {split} images "
        f"(baseline.max_train_images {size})"
        if split == "training"
        else f"setting chosen on {len(rows)} of {len(y)} {split} images"
    )
    features, shrunk = features_of(x, max_features, rows)
    return features, shrunk, y[rows], note


def _predict_in_chunks(model: Pipeline, x: np.ndarray, max_features: int) -> np.ndarray:
    """A fitted baseline's labels for uint8 images ``x``, PREDICT_CHUNK images at a time."""
    out = [
        model.predict(features_of(np.asarray(x[i : i + PREDICT_CHUNK]), max_features)[0])
        for i in range(0, len(x), PREDICT_CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _logistic(c: float) -> Pipeline:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=LOGISTIC_MAX_ITER, random_state=SEED)
    )


def _pca_svm(c: float, variance: float) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        PCA(n_components=variance, whiten=True, svd_solver="full", random_state=SEED),
        SVC(C=c, kernel="rbf", gamma="scale", random_state=SEED),
    )


def _candidates(name: str) -> list[tuple[dict[str, Any], Any]]:
    if name == "logistic_regression":
        return [({"C": c}, lambda c=c: _logistic(c)) for c in LOGISTIC_C]
    return [
        ({"C": c, "pca_variance": v}, lambda c=c, v=v: _pca_svm(c, v))
        for v in PCA_VARIANCE
        for c in SVM_C
    ]


def _pca_svm_candidates(
    x_train: np.ndarray, y_train: np.ndarray
) -> list[tuple[dict[str, Any], Pipeline]]:
    """Every ``pca_svm`` setting fitted on train, with one PCA for all of them.

    A PCA keeping less variance is the first components of one keeping more (the same SVD, cut
    shorter; whitening is per component), so the scaler and the PCA are fitted once, at the largest
    ``PCA_VARIANCE``, and each setting's SVM is fitted on its first components: the same models as
    fitting each setting's pipeline from scratch, at one SVD instead of six (the SVD of 5,000
    images of 4,096 features was a quarter of the baselines' time).
    """
    scaler = StandardScaler().fit(x_train)
    pca = PCA(n_components=max(PCA_VARIANCE), whiten=True, svd_solver="full", random_state=SEED)
    z_train = pca.fit_transform(scaler.transform(x_train))
    # As scikit-learn counts the components a variance fraction keeps.
    cumulative = np.cumsum(pca.explained_variance_ratio_, dtype=np.float64)
    fitted = []
    for params, _ in _candidates("pca_svm"):
        k = min(
            int(np.searchsorted(cumulative, params["pca_variance"], side="right")) + 1,
            pca.n_components_,
        )
        svc = SVC(C=params["C"], kernel="rbf", gamma="scale", random_state=SEED)
        svc.fit(z_train[:, :k], y_train)
        first = FunctionTransformer(lambda z, k=k: pca.transform(z)[:, :k])
        fitted.append((params, make_pipeline(scaler, first, svc)))
    return fitted


def _fit_one(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    refit_on_val: bool = False,
) -> tuple[Pipeline, dict[str, Any], float | None]:
    """The setting with the best validation accuracy (the first on ties), fitted on train, or on
    train + val when ``refit_on_val`` (the images a K-fold ensemble learns from)."""
    candidates = _candidates(name)
    if len(y_val) == 0:  # nothing to choose on: the middle setting
        params, build = candidates[len(candidates) // 2]
        return build().fit(x_train, y_train), params, None
    if name == "pca_svm":
        fitted = _pca_svm_candidates(x_train, y_train)
    else:
        fitted = [(params, build().fit(x_train, y_train)) for params, build in candidates]
    scores = [float(np.mean(model.predict(x_val) == y_val)) for _, model in fitted]
    best = int(np.argmax(scores))  # the first of the best on ties
    params, model = fitted[best]
    if refit_on_val:
        model = candidates[best][1]().fit(
            np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
        )
    return model, params, scores[best]


def fit_baselines(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test_x: np.ndarray,
    labels: list[str],
    cfg: BaselineConfig,
    refit_on_val: bool = False,
) -> list[BaselineFit]:
    """Fit ``cfg.models`` on ``train`` (uint8 ``(N, C, H, W)`` images, int labels), choose each one's
    setting on ``val``, and label ``test_x``; class names come from ``labels``. ``refit_on_val``:
    the chosen setting is fitted again on train + val, so that a baseline learns from the same
    images as a K-fold ensemble (``train.folds`` > 1) before they are compared."""
    fits: list[BaselineFit] = []
    if not cfg.models:
        return fits
    start = time.perf_counter()
    size, width = cfg.max_train_images, cfg.max_features
    xtr, note, y_train, train_note = _subsample(*train, size, "training", width)
    xva, _, y_val, val_note = _subsample(*val, size, "validation", width)
    features_seconds = time.perf_counter() - start  # shared by the baselines, counted in each
    n_classes = len(np.unique(y_train))
    for name in cfg.models:
        if n_classes < 2:
            fits.append(
                BaselineFit(name, None, skipped="fewer than 2 classes in the training split")
            )
            continue
        start = time.perf_counter() - features_seconds
        with warnings.catch_warnings():
            # A capped solver is part of the baseline's bound, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model, params, val_accuracy = _fit_one(name, xtr, y_train, xva, y_val, refit_on_val)
            predicted = _predict_in_chunks(model, test_x, cfg.max_features)
        notes = (note, train_note, val_note, "fitted on train + val" if refit_on_val else "")
        fits.append(
            BaselineFit(
                name,
                [labels[int(i)] for i in predicted],
                params=params,
                val_accuracy=val_accuracy,
                fit_seconds=time.perf_counter() - start,
                features=int(xtr.shape[1]),
                note=", ".join(n for n in notes if n),
            )
        )
    return fits


def evaluate_baselines(
    preprocessed: StageOutput,
    labels: list[str],
    y_true: list[str],
    clean: np.ndarray,
    y_pred: list[str],
    cfg: BaselineConfig,
    gate: GateConfig,
    refit_on_val: bool = False,
) -> tuple[list[BaselineScore], dict[str, list[str]]]:
    """Fit the baselines on a preprocess output's training split and score them on its test split
    beside the model's labels ``y_pred``, with the paired evidence of the gate (``gate.alpha``,
    ``gate.bootstrap_samples``); also returns each fitted baseline's labels per test image.
    ``refit_on_val``: see ``fit_baselines``."""
    if not cfg.models:
        return [], {}
    folder = preprocessed.local_path()
    train, val, test = (load_split(folder, name) for name in ("train", "val", "test"))
    fits = fit_baselines((train.x, train.y), (val.x, val.y), test.x, labels, cfg, refit_on_val)
    scores, predictions = [], {}
    for fit in fits:
        if fit.predictions is None:
            scores.append(BaselineScore(name=fit.name, skipped=fit.skipped))
            continue
        predictions[fit.name] = fit.predictions
        full = classification_metrics(y_true, fit.predictions, labels)
        scores.append(
            BaselineScore(
                name=fit.name,
                accuracy=full["accuracy"],
                macro_f1=full["macro_f1"],
                **{
                    k: v
                    for k, v in clean_metrics(y_true, fit.predictions, labels, clean).items()
                    if k != "n_test_clean"
                },
                params=fit.params,
                fit_seconds=fit.fit_seconds,
                note=fit.note,
                paired=paired_statistics(
                    y_true,
                    y_pred,
                    fit.predictions,
                    alpha=gate.alpha,
                    n_bootstrap=gate.bootstrap_samples,
                ),
            )
        )
    return scores, predictions


def best_baseline(scores: list[BaselineScore]) -> BaselineScore | None:
    """The fitted baseline with the highest test accuracy (None when none was fitted)."""
    fitted = [s for s in scores if s.accuracy is not None]
    return max(fitted, key=lambda s: s.accuracy) if fitted else None
