"""Data profiles and drift: per-feature histograms of the training data and the PSI against them.

A profile is written by preprocess (``data_profile.json``, train split only) and must travel with the
model so that the next run's validation can compare its data with the champion's training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "data_profile.json"
FEATURES = ("mean_intensity", "std_intensity", "width", "height")
_EPS = 1e-4  # floor on bin proportions: PSI is undefined for empty bins


def _cuts(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin boundaries: reference deciles, plus one just above the maximum so that values outside the
    reference range (below its minimum, above its maximum) fall in bins of their own."""
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, bins + 1))
    return np.unique(np.append(quantiles, np.nextafter(values.max(), np.inf)))


def _proportions(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    return counts / max(len(values), 1)


def build_profile(frame: Any, labels: list[str], bins: int = 10) -> dict[str, Any]:
    """The profile of a manifest's rows (use the training rows): class list and feature histograms."""
    features = {}
    for name in FEATURES:
        if name not in frame.columns:
            continue
        values = frame[name].dropna().to_numpy(dtype=float)
        if len(values) == 0:
            continue
        cuts = _cuts(values, bins)
        features[name] = {
            "cuts": cuts.tolist(),
            "proportions": _proportions(values, cuts).tolist(),
            "n": int(len(values)),
            "mean": float(values.mean()),
        }
    return {"labels": list(labels), "features": features}


def psi(reference: dict[str, Any], values: np.ndarray) -> float:
    """Population stability index of ``values`` against one feature of a profile."""
    cuts = np.asarray(reference["cuts"], dtype=float)
    expected = np.maximum(np.asarray(reference["proportions"], dtype=float), _EPS)
    actual = np.maximum(_proportions(np.asarray(values, dtype=float), cuts), _EPS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_table(frame: Any, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per profiled feature present in ``frame``: feature, psi, current and reference means."""
    rows = []
    for name, ref in profile.get("features", {}).items():
        if name not in frame.columns:
            continue
        values = frame[name].dropna().to_numpy(dtype=float)
        if len(values):
            rows.append(
                {
                    "feature": name,
                    "psi": round(psi(ref, values), 6),
                    "mean": float(values.mean()),
                    "reference_mean": ref.get("mean"),
                }
            )
    return rows


def write_profile(folder: Path, profile: dict[str, Any]) -> Path:
    path = folder / PROFILE_FILE
    path.write_text(json.dumps(profile, indent=2))
    return path
