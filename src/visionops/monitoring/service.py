"""Monitoring the model in service: what it saw and answered, against its reference.

* ``record_reference``: at registration, the version's test split (model-form input statistics of the
  images, its answers, their confidences, the true labels) is stored under the run and logged with
  the version (MLflow artifacts ``reference/`` of the register run; tag ``visionops.reference_uri``).
* ``record_batch``: after batch scoring, the same record of what the batch held and got (the
  ``visionops://predictions`` asset event names it).
* ``check_batch``: the ``monitor`` DAG's check of a recorded batch against the reference of the
  version that answered it: a drift report (HTML) logged to MLflow, linked from the model version
  (tags ``visionops.drift_report_run``, ``visionops.drift``), and the verdict.

An embedding model (``face_embedding``) adds on both sides the encoder's vector of every answered
image, as the served model returns it (``params.return_embeddings``), for the embedding check.

Statistics are compared in *model form* (after the model's own resize and colour conversion) on
both sides: the reference is a preprocessed split, a batch is what users send. A face model's
input statistics are left out: its batch holds photos and its reference chips (the served model
finds the face inside the photo), so its answers, confidences and embeddings are compared.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from PIL import Image

from visionops.core.constants import IMAGE_FORMATS
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import BatchScored, DriftChecked, Recorded
from visionops.core.errors import InputError
from visionops.core.storage import StageOutput, data_root, run_key_from
from visionops.monitoring.drift import Observations, detect_drift
from visionops.monitoring.report import drift_report_html

log = logging.getLogger("visionops")
MONITOR_EXPERIMENT = "visionops-monitor"
REPORT_FILE = "drift_report.html"
DEFAULT_ALPHA = 0.01  # family-wise false-alarm rate per checked batch (bench/drift_alarms.py)


def _save(observations: Observations, uri: str) -> str:
    """Write observations to a folder path or fsspec URL (written whole, then moved into place)."""
    fs, path = fsspec.core.url_to_fs(uri)
    with tempfile.TemporaryDirectory() as tmp:
        observations.save(Path(tmp) / "obs")
        fs.makedirs(str(Path(path).parent), exist_ok=True)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.put(str(Path(tmp) / "obs"), path, recursive=True)
    return uri


def _load(uri: str) -> Observations:
    return Observations.load(StageOutput(uri, "", {}).local_path())


def record_reference(
    model: Any,
    images: np.ndarray,
    predictions: pd.DataFrame,
    true: list[str],
    uri: str,
    meta: dict[str, Any],
) -> Observations:
    """The reference of a version: its answers on its test split (``images`` as stored by preprocess),
    and for an embedding model the served model's embeddings of those images."""
    from visionops.serving.model import embedding_matrix, has_encoder, held_out_params

    wrapped = model.unwrap_python_model()
    embeddings = None
    if has_encoder(model):
        answer = model.predict(images, params={**held_out_params(model), "return_embeddings": True})
        embeddings = embedding_matrix(answer)
    observations = Observations.from_predictions(
        images,
        predictions,
        true=true,
        embeddings=embeddings,
        image_size=wrapped.image_size,
        channels=wrapped.channels,
        meta={**meta, "faces": getattr(wrapped, "faces", None) is not None},
    )
    _save(observations, uri)
    return observations


def _decode(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            return np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
    except Exception:  # noqa: BLE001 - an undecodable file was reported by scoring already
        return None


def record_batch(
    model_uri: str,
    name: str,
    version: str,
    files: list[Path],
    scored: pd.DataFrame,
    run_id: str,
    embeddings: np.ndarray | None = None,
) -> Recorded:
    """What a scored batch held (model-form input statistics) and got (label, confidence), with an
    embedding model's ``embeddings`` (one row per file, as batch scoring wrote them)."""
    from visionops.serving.model import load_classifier

    wrapped = load_classifier(model_uri).unwrap_python_model()
    images = [_decode(p) for p in files]
    answered = [
        i
        for i, img in enumerate(images)
        if img is not None and np.isfinite(scored["probability"].iloc[i])
    ]
    frame = scored.iloc[answered].reset_index(drop=True)
    observations = Observations.from_predictions(
        [images[i] for i in answered],
        frame[["label", "probability"]],
        embeddings=None if embeddings is None else np.asarray(embeddings)[answered],
        image_size=wrapped.image_size,
        channels=wrapped.channels,
        meta={
            "model_name": name,
            "model_version": version,
            "faces": getattr(wrapped, "faces", None) is not None,
            "files": len(files),
        },
    )
    uri = f"{data_root().rstrip('/')}/monitoring/{name}/v{version}/{run_key_from(run_id)}"
    _save(observations, uri)
    return Recorded(
        uri=uri, model_name=name, model_version=str(version), n_images=len(observations)
    )


def record_scored(scored: BatchScored, run_id: str) -> Recorded:
    """``record_batch`` for the CSV a ``batch_predict`` run wrote (``path,label,probability,...``) and,
    for an embedding model, the embeddings written beside it."""
    with fsspec.open(scored.output, "r") as fh:
        frame = pd.read_csv(fh)
    embeddings = None
    if scored.embeddings:
        with fsspec.open(scored.embeddings, "rb") as fh, np.load(fh) as npz:
            if npz["path"].tolist() != frame["path"].astype(str).tolist():
                raise InputError(
                    f"{scored.embeddings}: its rows are not the files of {scored.output} "
                    "(the two were not written by one batch_predict run)"
                )
            embeddings = npz["embeddings"]
    model = scored.model
    return record_batch(
        model.uri,
        model.name,
        model.version,
        [Path(p) for p in frame["path"]],
        frame,
        run_id,
        embeddings=embeddings,
    )


def check_batch(recorded: Recorded, alpha: float = DEFAULT_ALPHA) -> DriftChecked:
    """The recorded batch against the reference of the version that answered it; the report goes to
    MLflow and the version is tagged with the verdict and the report's run."""
    from mlflow.tracking import MlflowClient

    import mlflow
    from visionops.core import tracking

    client = MlflowClient()
    name, version = recorded.model_name, recorded.model_version
    tags = client.get_model_version(name, version).tags or {}
    reference_uri = tags.get(f"{T}reference_uri")
    if not reference_uri:
        raise InputError(
            f"{name} v{version} has no stored reference (tag {T}reference_uri): it was registered "
            "before monitoring existed; retrain it to monitor it"
        )
    reference, batch = _load(reference_uri), _load(recorded.uri)
    faces = bool(reference.meta.get("faces"))
    result = detect_drift(reference, batch, alpha=alpha, statistics=[] if faces else None)
    html = drift_report_html(
        result,
        reference,
        batch,
        title=f"Drift report: {name} v{version}",
        model=f"{name} v{version}",
        batch=recorded.uri,
    )
    experiment = tracking.experiment_id(MONITOR_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment, run_name=f"monitor/{name}/v{version}") as run:
        tracking.log_run_url(experiment, run.info.run_id)
        mlflow.set_tags(
            {
                f"{T}model_name": name,
                f"{T}model_version": version,
                f"{T}drift": str(result.drifted).lower(),
                f"{T}batch_uri": recorded.uri,
                "mlflow.note.content": (
                    f"{result.summary()}. Model version: models:/{name}/{version}."
                ),
            }
        )
        mlflow.log_metrics(
            {
                "drifted": float(result.drifted),
                "n_images": float(result.n_current),
                "checks_drifted": float(len(result.drifted_checks)),
                **{f"confidence_{k}": v for k, v in result.confidence.items() if v is not None},
            }
        )
        mlflow.log_text(html, REPORT_FILE)
        mlflow.log_dict(result.to_dict(), "drift_result.json")
    client.set_model_version_tag(name, version, f"{T}drift", str(result.drifted).lower())
    client.set_model_version_tag(name, version, f"{T}drift_report_run", run.info.run_id)
    log.info("monitor %s v%s: %s", name, version, result.summary())
    return DriftChecked(
        drifted=result.drifted,
        summary=result.summary(),
        model_name=name,
        model_version=version,
        config=tags.get(f"{T}config_file"),
        report_run_id=run.info.run_id,
        extra=result.to_extra(),
    )
