"""Serving the registered model: batch scoring of a folder to CSV, and the post-promotion smoke test.

A model reference is ``NAME`` (alias ``champion``), ``NAME@ALIAS`` or ``NAME/VERSION``. Aliases are
resolved to a version once, when scoring starts, so that a promotion during a long batch cannot
mix two models in one output file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visionops.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CSV_COLUMNS = ["path", "label", "probability", "box", "status", "error", "model_version"]


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    requested: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "uri": self.uri}


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME[@ALIAS|/VERSION]`` -> (name, alias, version); the alias defaults to ``champion``."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if not name or not alias:
            raise InputError(f"model reference {ref!r}: expected NAME@ALIAS")
        return name, alias, None
    if "/" in ref:
        name, version = ref.split("/", 1)
        if not name or not version.isdigit():
            raise InputError(f"model reference {ref!r}: expected NAME/VERSION with a numeric version")
        return name, None, version
    if not ref:
        raise InputError("model reference is empty: expected NAME[@ALIAS|/VERSION]")
    return ref, "champion", None


def resolve_model(ref: str) -> ResolvedModel:
    """Pin a model reference to a version now (the registry is read once)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = parse_model_ref(ref)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise InputError(f"model {name!r} has no {what} in the registry ({exc.error_code})") from exc
    return ResolvedModel(name, str(mv.version), ref)


def list_images(input_dir: str | Path) -> list[Path]:
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def predict_files(model_uri: str, files: list[Path], batch_size: int = 64) -> pd.DataFrame:
    """Label every file through the served pyfunc, ``batch_size`` files per call.

    Files go in encoded, as over HTTP: the model decodes them, and a face model finds the face in
    each photo. A file that is not an image, or a photo without exactly one face, gets its own
    ``status`` and ``error`` instead of failing the batch.
    """
    from visionops.inference import load_classifier

    model = load_classifier(model_uri)
    # Files are photos: a face model looks for the face even in a photo that happens to be chip-sized.
    params = {"input": "photo"} if getattr(model.unwrap_python_model(), "faces", None) else None
    parts = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        out = model.predict([p.read_bytes() for p in chunk], params=params)
        if "box" not in out.columns:
            out["box"] = None
        parts.append(out)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CSV_COLUMNS[1:-1])
    frame["box"] = [",".join(map(str, b)) if b is not None and len(b) else None for b in frame["box"]]
    frame.insert(0, "path", [str(p) for p in files])
    return frame[CSV_COLUMNS[:-1]]


def score_folder(resolved: ResolvedModel, input_dir: str, output: str) -> dict[str, Any]:
    """Score a folder with a pinned model version, write the CSV and log it to MLflow; returns references."""
    import fsspec
    import mlflow

    from visionops import tracking

    frame = predict_files(resolved.uri, list_images(input_dir))
    frame["model_version"] = resolved.version
    fs, path = fsspec.core.url_to_fs(output)
    fs.makedirs(str(Path(path).parent), exist_ok=True)
    with fs.open(path, "w") as fh:  # written in one go: a failed run leaves no half file under the name
        frame[CSV_COLUMNS].to_csv(fh, index=False)
    exp = tracking.experiment_id("visionops-batch-predict")
    with mlflow.start_run(experiment_id=exp, run_name=f"batch_predict/{resolved.name}/v{resolved.version}") as run:
        mlflow.set_tags({"visionops.model_name": resolved.name, "visionops.model_version": resolved.version,
                         "visionops.model_requested": resolved.requested, "visionops.output": output})
        mlflow.log_params({"input_dir": input_dir, "model_uri": resolved.uri})
        mlflow.log_metrics({"n_images": len(frame), "mean_probability": float(frame["probability"].mean()),
                             "n_unknown": int((frame["status"] == "unknown").sum()),
                             "n_not_scored": int(frame["status"].isin(["rejected", "invalid"]).sum())})
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "predictions.csv"
            frame[CSV_COLUMNS].to_csv(local, index=False)
            mlflow.log_artifact(str(local))
    return {"output": output, "n_images": len(frame), "model": resolved.to_dict(), "mlflow_run_id": run.info.run_id,
            "n_unknown": int((frame["status"] == "unknown").sum()),
            "n_not_scored": int(frame["status"].isin(["rejected", "invalid"]).sum())}


def resolve_for_batch(model_name: str, alias: str) -> dict[str, str]:
    """The ``batch_predict`` DAG's first task: pin ``models:/NAME@ALIAS`` to a version."""
    from visionops import tracking

    tracking.configure()
    return resolve_model(f"{model_name}@{alias}").to_dict()


def batch_predict(resolved: dict[str, str], input_dir: str, output_path: str | None, *, run_id: str) -> dict[str, Any]:
    """The ``batch_predict`` DAG's scoring task: the pinned version over a folder, CSV under the data root."""
    from visionops import tracking
    from visionops.storage import data_root, run_key_from

    tracking.configure()
    model = ResolvedModel(resolved["name"], resolved["version"], resolved["requested"])
    if not input_dir:
        raise InputError("param input_dir is empty: name a folder of images")
    output = output_path or (f"{data_root().rstrip('/')}/predictions/{model.name}/v{model.version}/"
                             f"{run_key_from(run_id)}.csv")
    return score_folder(model, input_dir, output)


def smoke_test(model_uri: str, images: np.ndarray, expected: list[str], timeout_s: int = 300) -> None:
    """Load ``model_uri`` in a fresh Python process and check it labels ``images`` as ``expected``."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "images.npy"
        np.save(batch, images)
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
               "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri()}
        proc = subprocess.run([sys.executable, "-m", "visionops.serving", "smoke", model_uri, str(batch)],
                              capture_output=True, text=True, env=env, timeout=timeout_s, cwd=tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"loading or predicting with {model_uri} failed in a fresh process: "
                           f"{proc.stderr.strip()[-1500:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got != list(expected):
        raise RuntimeError(f"{model_uri} in a fresh process labelled {got}, the evaluated model said {expected}")


def _smoke_main(model_uri: str, batch: str) -> None:
    from visionops.inference import held_out_params, load_classifier

    model = load_classifier(model_uri)
    out = model.predict(np.load(batch), params=held_out_params(model) or None)
    if not out["probability"].between(0.0, 1.0).all():
        raise SystemExit(f"probabilities outside [0, 1]: {out['probability'].tolist()}")
    print(json.dumps(out["label"].astype(str).tolist()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: the post-promotion smoke test's fresh process")
    parser.add_argument("cmd", choices=["smoke"])
    parser.add_argument("model_uri")
    parser.add_argument("batch")
    args = parser.parse_args()
    _smoke_main(args.model_uri, args.batch)
