"""Drift of the model in service: a batch of what it saw and answered against the champion's reference.

The reference is stored with a champion at promotion: its test split's per-image input statistics,
predicted labels, confidences and true labels (and embeddings, for embedding models). A batch
recorded by batch scoring has the same fields, true labels usually missing. ``detect_drift`` runs:

- ``input:<statistic>``: two-sample Kolmogorov-Smirnov test per input statistic
  (``visionops.monitoring.statistics``); statistics constant and equal on both sides are skipped;
- ``predicted_class``: chi-square test of homogeneity on the 2 x K table of predicted-label counts
  (reference vs batch, so the reference's own sampling noise is accounted for); classes whose
  expected counts fall below ``min_expected`` are pooled into one bin first;
- ``confidence``: one-sided Mann-Whitney U test that the batch's confidences are lower;
- ``embedding`` (both sides have embeddings): a kernel two-sample test, the maximum mean
  discrepancy with a Gaussian kernel (median-distance bandwidth) and a permutation p-value. It sees
  any difference in distribution, in any number of dimensions, and its level is exact for any
  sample size; a classifier two-sample test would need a train/test split of an already small batch
  (less power) and a model fit per batch, and per-dimension tests pay a Bonferroni factor of the
  dimension and miss changes in correlation.

The family-wise false-alarm rate across the checks is held at ``alpha`` with Holm's step-down
correction (uniformly more powerful than Bonferroni, same guarantee under any dependence between
the checks): a batch drawn from the reference distribution alarms with probability at most about
``alpha``. The ties of discrete statistics make the KS tests conservative, not anti-conservative.

Why not Evidently (what issue 11 suggested): Evidently 0.7.23, the current 0.7 release, does not
import with the project's pandas 3.1 (it imports ``pandas.core.dtypes.common.infer_dtype_from_object``,
gone from pandas 3), and it requires plotly < 6 where the project pins plotly 7.1. The tests it would
run (KS, chi-square, MMD) are a few lines on scipy.stats, a maintained library already pinned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from visionops.monitoring.statistics import image_statistics

STATISTICS_FILE = "statistics.parquet"
PREDICTIONS_FILE = "predictions.parquet"
EMBEDDINGS_FILE = "embeddings.npz"
META_FILE = "observations.json"
FORMAT_VERSION = 1

INPUT_PREFIX = "input:"
PREDICTED_CLASS = "predicted_class"
CONFIDENCE = "confidence"
EMBEDDING = "embedding"
OTHER = "(other)"  # the bin of pooled rare classes


@dataclass
class Observations:
    """What a model saw and answered, one entry per image.

    ``statistics``: per-image input statistics (``image_statistics``); ``predicted``: labels as
    strings; ``confidence``: the served probability of the answer; ``true``: true labels (the
    reference has them; a served batch usually not); ``embeddings``: (N, D) for embedding models.
    """

    statistics: pd.DataFrame
    predicted: np.ndarray
    confidence: np.ndarray
    true: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.statistics = self.statistics.reset_index(drop=True)
        self.predicted = np.asarray(self.predicted).astype(str)
        self.confidence = np.asarray(self.confidence, dtype=np.float64)
        if self.true is not None:
            self.true = np.asarray(self.true).astype(str)
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if self.embeddings.ndim != 2:
                raise ValueError(f"embeddings must be (N, D), got shape {self.embeddings.shape}")
        n = len(self.predicted)
        sizes = {
            "statistics": len(self.statistics),
            "confidence": len(self.confidence),
            "true": n if self.true is None else len(self.true),
            "embeddings": n if self.embeddings is None else len(self.embeddings),
        }
        wrong = {k: v for k, v in sizes.items() if v != n}
        if wrong:
            raise ValueError(f"{n} predicted labels but {wrong}: one entry per image everywhere")

    def __len__(self) -> int:
        return len(self.predicted)

    @property
    def accuracy(self) -> float | None:
        """Share of predictions equal to the true label (None without true labels or images)."""
        if self.true is None or len(self) == 0:
            return None
        return float(np.mean(self.predicted == self.true))

    @classmethod
    def from_predictions(
        cls,
        images: np.ndarray | Sequence[Any],
        predictions: pd.DataFrame,
        *,
        true: Sequence[Any] | None = None,
        embeddings: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        image_size: int | None = None,
        channels: int = 1,
    ) -> Observations:
        """From the images passed to the served model and its answer (``label``, ``probability``).

        ``image_size``/``channels``: statistics in model form (``image_statistics``); use the same
        form on both sides of a comparison.

        Rows the model could not answer (``invalid``/``rejected``: no probability) are left out of
        everything: they have no confidence to compare, and batch scoring reports them itself.
        """
        if len(predictions) != len(images):
            raise ValueError(f"{len(images)} images but {len(predictions)} predictions")
        answered = np.isfinite(predictions["probability"].to_numpy(dtype=np.float64))
        keep = np.flatnonzero(answered)
        if isinstance(images, np.ndarray):
            kept_images: np.ndarray | list[Any] = images[keep]
        else:
            kept_images = [images[i] for i in keep]
        return cls(
            statistics=image_statistics(kept_images, image_size=image_size, channels=channels),
            predicted=predictions["label"].to_numpy()[keep],
            confidence=predictions["probability"].to_numpy(dtype=np.float64)[keep],
            true=None if true is None else np.asarray(true)[keep],
            embeddings=None if embeddings is None else np.asarray(embeddings)[keep],
            meta={
                **(meta or {}),
                "n_unanswered": int(len(answered) - len(keep)),
                "statistics_form": "raw"
                if image_size is None
                else f"model {image_size}x{channels}",
            },
        )

    def save(self, folder: str | Path) -> Path:
        """Write to ``folder``: statistics and predictions as parquet, embeddings as npz, a JSON meta."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.statistics.to_parquet(folder / STATISTICS_FILE, index=False)
        preds = pd.DataFrame({"predicted": self.predicted, "confidence": self.confidence})
        if self.true is not None:
            preds["true"] = self.true
        preds.to_parquet(folder / PREDICTIONS_FILE, index=False)
        if self.embeddings is not None:
            np.savez_compressed(folder / EMBEDDINGS_FILE, embeddings=self.embeddings)
        meta = {
            "format": FORMAT_VERSION,
            "n": len(self),
            "statistics": list(self.statistics.columns),
            "has_true": self.true is not None,
            "has_embeddings": self.embeddings is not None,
            "accuracy": self.accuracy,
            **self.meta,
        }
        (folder / META_FILE).write_text(json.dumps(_jsonable(meta), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Observations:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format", 1) > FORMAT_VERSION:
            raise ValueError(
                f"{folder}: observations format {meta['format']} is newer than this code"
            )
        preds = pd.read_parquet(folder / PREDICTIONS_FILE)
        embeddings = None
        if (folder / EMBEDDINGS_FILE).exists():
            with np.load(folder / EMBEDDINGS_FILE) as npz:
                embeddings = npz["embeddings"]
        extra = {
            k: v
            for k, v in meta.items()
            if k not in ("format", "n", "statistics", "has_true", "has_embeddings", "accuracy")
        }
        return cls(
            statistics=pd.read_parquet(folder / STATISTICS_FILE),
            predicted=preds["predicted"].to_numpy(),
            confidence=preds["confidence"].to_numpy(),
            true=preds["true"].to_numpy() if "true" in preds.columns else None,
            embeddings=embeddings,
            meta=extra,
        )


# What is stored with a champion at promotion (its test split) and what a served batch records are
# the same kind of record; the names say which side of the comparison one is on.
Reference = Observations
Batch = Observations


@dataclass
class Check:
    """One test of the family: its statistic, raw and Holm-adjusted p-values, and the verdict."""

    name: str
    kind: str  # input | prediction | confidence | embedding
    test: str
    statistic: float
    p_value: float
    p_adjusted: float = 1.0
    drifted: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DriftResult:
    """The verdict on one batch, JSON-able (``to_dict``/``from_dict``, ``to_extra`` for an asset event)."""

    drifted: bool
    alpha: float
    correction: str
    n_reference: int
    n_current: int
    checks: list[Check]
    confidence: dict[str, float | None]  # mean: reference, current
    class_distribution: dict[str, dict[str, float]]  # reference, current: label -> share
    accuracy: dict[str, float | None]  # reference, current (None without true labels)
    skipped: list[str] = field(default_factory=list)

    @property
    def drifted_checks(self) -> list[Check]:
        return [c for c in self.checks if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        fields = dict(data)
        fields["checks"] = [Check(**c) for c in data["checks"]]
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def to_extra(self) -> dict[str, Any]:
        """Compact: the verdict, what drifted (statistic, adjusted p, reference and current means),
        the batch size, mean confidence and accuracy. Small enough for an asset event's extra."""
        drifted = {}
        for c in self.drifted_checks:
            entry = {"test": c.test, "statistic": _round(c.statistic), "p": _round(c.p_adjusted)}
            for key in ("reference_mean", "current_mean"):
                if key in c.detail:
                    entry[key] = _round(c.detail[key])
            drifted[c.name] = entry
        extra = {
            "drifted": self.drifted,
            "alpha": self.alpha,
            "n_current": self.n_current,
            "n_reference": self.n_reference,
            "checks_run": len(self.checks),
            "drifted_checks": drifted,
            "confidence": {k: _round(v) for k, v in self.confidence.items()},
        }
        if self.accuracy.get("current") is not None:
            extra["accuracy"] = {k: _round(v) for k, v in self.accuracy.items()}
        return _jsonable(extra)

    def summary(self) -> str:
        """One line: the verdict and what drifted."""
        if not self.drifted:
            return f"no drift in {self.n_current} images ({len(self.checks)} checks, alpha {self.alpha})"
        names = ", ".join(f"{c.name} (p={c.p_adjusted:.2g})" for c in self.drifted_checks)
        return f"DRIFT in {self.n_current} images: {names}"


def _round(value: Any, digits: int = 4) -> Any:
    if value is None or not isinstance(value, float | int | np.floating | np.integer):
        return value
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, max(0, digits - 1 - int(math.floor(math.log10(abs(value))))))


def _jsonable(value: Any) -> Any:
    """Plain Python types; non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _shares(labels: np.ndarray) -> dict[str, float]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(v): float(c / max(1, len(labels))) for v, c in zip(values, counts)}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted p <= alpha)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def ks_check(name: str, reference: np.ndarray, current: np.ndarray) -> Check | None:
    """Two-sample KS test on one statistic; None when there is nothing to test (a side is empty,
    or both are the same constant)."""
    ref = reference[np.isfinite(reference)]
    cur = current[np.isfinite(current)]
    if len(ref) == 0 or len(cur) == 0:
        return None
    if ref.min() == ref.max() == cur.min() == cur.max():
        return None
    res = stats.ks_2samp(ref, cur)
    return Check(
        name=INPUT_PREFIX + name,
        kind="input",
        test="ks",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        detail={"reference_mean": float(ref.mean()), "current_mean": float(cur.mean())},
    )


def pooled_table(
    reference: np.ndarray, current: np.ndarray, min_expected: float = 5.0
) -> tuple[list[str], np.ndarray]:
    """The 2 x K table of label counts with rare classes pooled into ``OTHER``, so that every
    expected count under homogeneity is at least ``min_expected`` (Cochran's rule)."""
    labels = sorted(set(reference.tolist()) | set(current.tolist()))
    table = np.array(
        [[np.sum(side == lb) for lb in labels] for side in (reference, current)], dtype=np.float64
    )
    rows, total = table.sum(axis=1), table.sum()
    if total == 0 or rows.min() == 0:
        return labels, table
    # Expected count of a column is its total times row/total: the smaller row sets the bar.
    need = min_expected * total / rows.min()
    order = np.argsort(-table.sum(axis=0), kind="stable")
    big = [int(i) for i in order if table[:, i].sum() >= need]
    small = [int(i) for i in order if table[:, i].sum() < need]
    names = [labels[i] for i in big]
    columns = [table[:, i] for i in big]
    if small:
        pooled = table[:, small].sum(axis=1)
        # The pooled bin may itself be too small: fold the smallest kept classes into it.
        while pooled.sum() < need and columns:
            pooled = pooled + columns.pop()
            names.pop()
        names.append(OTHER)
        columns.append(pooled)
    return names, np.stack(columns, axis=1) if columns else np.zeros((2, 0))


def class_check(
    reference: np.ndarray, current: np.ndarray, min_expected: float = 5.0
) -> Check | None:
    """Chi-square test of homogeneity of the predicted-class distributions."""
    if len(reference) == 0 or len(current) == 0:
        return None
    names, table = pooled_table(reference, current, min_expected)
    if table.shape[1] < 2:
        return None
    res = stats.chi2_contingency(table, correction=False)
    ref_share = table[0] / table[0].sum()
    cur_share = table[1] / table[1].sum()
    change = cur_share - ref_share
    worst = int(np.argmax(np.abs(change)))
    return Check(
        name=PREDICTED_CLASS,
        kind="prediction",
        test="chi2",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        detail={
            "bins": names,
            "dof": int(res.dof),
            "largest_change": {
                "label": names[worst],
                "reference_share": float(ref_share[worst]),
                "current_share": float(cur_share[worst]),
            },
        },
    )


def confidence_check(reference: np.ndarray, current: np.ndarray) -> Check | None:
    """One-sided Mann-Whitney U test that the batch's confidences are lower than the reference's."""
    ref = reference[np.isfinite(reference)]
    cur = current[np.isfinite(current)]
    if len(ref) == 0 or len(cur) == 0:
        return None
    res = stats.mannwhitneyu(cur, ref, alternative="less")
    return Check(
        name=CONFIDENCE,
        kind="confidence",
        test="mann_whitney_less",
        statistic=float(res.statistic / (len(cur) * len(ref))),  # P(current > reference), ties half
        p_value=float(res.pvalue),
        detail={"reference_mean": float(ref.mean()), "current_mean": float(cur.mean())},
    )


def _squared_distances(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, *, permutations: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(MMD^2, permutation p-value, bandwidth) of a Gaussian kernel two-sample test.

    The bandwidth is the median pairwise distance of the pooled sample; the statistic is the biased
    MMD^2 estimate ``v' K v`` (v: +1/n on x, -1/m on y), computed for all permutations at once as
    matrix products. p = (1 + #{permuted >= observed}) / (1 + permutations).
    """
    z = np.concatenate([x, y]).astype(np.float64)
    n, total = len(x), len(x) + len(y)
    d2 = _squared_distances(z)
    upper = d2[np.triu_indices(total, k=1)]
    median = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-d2 / median)  # exp(-d^2 / (2 sigma^2)) with sigma^2 = median(d^2) / 2
    weights = np.array([1.0 / n] * n + [-1.0 / (total - n)] * (total - n))
    observed = float(weights @ kernel @ weights)
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, permutations, 500):
        size = min(500, permutations - start)
        v = np.stack([rng.permutation(weights) for _ in range(size)], axis=1)
        permuted = np.einsum("ij,ij->j", v, kernel @ v)
        exceed += int(np.sum(permuted >= observed - 1e-12))
    return observed, (1 + exceed) / (1 + permutations), math.sqrt(median / 2)


def embedding_check(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    permutations: int,
    max_samples: int,
    seed: int,
) -> Check | None:
    if len(reference) < 2 or len(current) < 2:
        return None
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"embeddings differ in dimension: reference {reference.shape[1]}, current {current.shape[1]}"
        )
    rng = np.random.default_rng(seed)

    def at_most(x: np.ndarray) -> np.ndarray:
        return x[rng.choice(len(x), max_samples, replace=False)] if len(x) > max_samples else x

    ref, cur = at_most(reference), at_most(current)
    mmd2, p, bandwidth = mmd_permutation_test(ref, cur, permutations=permutations, seed=seed)
    return Check(
        name=EMBEDDING,
        kind="embedding",
        test="mmd_permutation",
        statistic=mmd2,
        p_value=p,
        detail={
            "bandwidth": bandwidth,
            "permutations": permutations,
            "n_reference": len(ref),
            "n_current": len(cur),
            "dimension": int(reference.shape[1]),
        },
    )


def detect_drift(
    reference: Observations,
    current: Observations,
    *,
    alpha: float = 0.01,
    statistics: Sequence[str] | None = None,
    min_expected: float = 5.0,
    permutations: int = 2000,
    max_embedding_samples: int = 500,
    seed: int = 0,
) -> DriftResult:
    """Compare a batch with the reference; drift where any check rejects after Holm's correction.

    ``statistics``: the input statistics to test (default: every column both sides have).
    ``permutations``: of the embedding test; raised where needed so that its smallest possible
    p-value, 1/(1+permutations), can pass the strictest Holm threshold ``alpha / checks``.
    ``max_embedding_samples``: per side, drawn at random (``seed``) where a side has more.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    names = [
        c
        for c in (reference.statistics.columns if statistics is None else statistics)
        if c in reference.statistics.columns and c in current.statistics.columns
    ]
    checks: list[Check] = []
    skipped: list[str] = []

    def add(name: str, check: Check | None) -> None:
        if check is None:
            skipped.append(name)  # nothing to test: a side is empty, or both the same constant
        else:
            checks.append(check)

    for name in names:
        ref_values = reference.statistics[name].to_numpy(dtype=np.float64)
        add(
            INPUT_PREFIX + name,
            ks_check(name, ref_values, current.statistics[name].to_numpy(dtype=np.float64)),
        )
    add(PREDICTED_CLASS, class_check(reference.predicted, current.predicted, min_expected))
    add(CONFIDENCE, confidence_check(reference.confidence, current.confidence))
    if reference.embeddings is not None and current.embeddings is not None:
        needed = math.ceil(2 * (len(checks) + 1) / alpha)  # 1/(1+B) <= half the strictest Holm bar
        add(
            EMBEDDING,
            embedding_check(
                reference.embeddings,
                current.embeddings,
                permutations=max(permutations, needed),
                max_samples=max_embedding_samples,
                seed=seed,
            ),
        )
    adjusted = holm([c.p_value for c in checks])
    for check, p_adj in zip(checks, adjusted):
        check.p_adjusted = float(p_adj)
        check.drifted = bool(p_adj <= alpha)
    finite_ref = reference.confidence[np.isfinite(reference.confidence)]
    finite_cur = current.confidence[np.isfinite(current.confidence)]
    return DriftResult(
        drifted=any(c.drifted for c in checks),
        alpha=alpha,
        correction="holm",
        n_reference=len(reference),
        n_current=len(current),
        checks=checks,
        confidence={
            "reference": float(finite_ref.mean()) if len(finite_ref) else None,
            "current": float(finite_cur.mean()) if len(finite_cur) else None,
        },
        class_distribution={
            "reference": _shares(reference.predicted),
            "current": _shares(current.predicted),
        },
        accuracy={"reference": reference.accuracy, "current": current.accuracy},
        skipped=skipped,
    )
