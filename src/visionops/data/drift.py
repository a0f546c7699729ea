"""Data profiles and drift: per-feature histograms of the training data and the PSI against them.

A profile is written by preprocess (``data_profile.json``, train split only) and must travel with the
model so that the next run's validation can compare its data with the champion's training data.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "data_profile.json"
FEATURES = ("mean_intensity", "std_intensity", "width", "height")
_EPS = 1e-4  # floor on bin proportions: PSI is undefined for empty bins

log = logging.getLogger("visionops")


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
        features[name] = {"cuts": cuts.tolist(), "proportions": _proportions(values, cuts).tolist(),
                          "n": int(len(values)), "mean": float(values.mean())}
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
            rows.append({"feature": name, "psi": round(psi(ref, values), 6),
                         "mean": float(values.mean()), "reference_mean": ref.get("mean")})
    return rows


def write_profile(folder: Path, profile: dict[str, Any]) -> Path:
    path = folder / PROFILE_FILE
    path.write_text(json.dumps(profile, indent=2))
    return path


def champion_reference(model_name: str, alias: str = "champion") -> dict[str, Any] | None:
    """Label map and data profile of the model in service, or None when there is none.

    The label map comes from ``preprocessing.json`` inside the pyfunc model; the profile from a
    ``data_profile.json`` stored with the model (absent for models logged before profiles existed,
    in which case only the schema is compared).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.tracking.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name}@{alias}", dst_path=tmp))
        except MlflowException as exc:
            log.warning("champion %s v%s: cannot download its artifacts (%s)", model_name,
                        version.version, exc)
            return None
        reference: dict[str, Any] = {"version": str(version.version), "labels": None, "profile": None}
        for path in local.rglob("preprocessing.json"):
            reference["labels"] = json.loads(path.read_text()).get("labels")
            break
        for path in local.rglob(PROFILE_FILE):
            reference["profile"] = json.loads(path.read_text())
            break
        if reference["profile"] is None and version.run_id:
            reference["profile"] = _profile_of_pipeline_run(client, version.run_id, tmp)
    if reference["labels"] is None and reference["profile"]:
        reference["labels"] = reference["profile"].get("labels")
    return reference


def _profile_of_pipeline_run(client: Any, train_run_id: str, tmp: str) -> dict[str, Any] | None:
    """The profile the preprocess stage of the champion's pipeline run logged (sibling of its train run)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from visionops.tracking import TAG_PREFIX

    try:
        run = client.get_run(train_run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            return None
        siblings = client.search_runs(
            [run.info.experiment_id], max_results=5,
            filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.`{TAG_PREFIX}stage` = 'preprocess'")
        for sibling in siblings:
            got = mlflow.artifacts.download_artifacts(run_id=sibling.info.run_id, artifact_path=PROFILE_FILE,
                                                      dst_path=tmp)
            return json.loads(Path(got).read_text())
    except (MlflowException, OSError) as exc:
        log.warning("no data profile for the champion's training run %s: %s", train_run_id, exc)
    return None
