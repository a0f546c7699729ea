"""Batch scoring: a folder of images labelled by a registered model version, to CSV.

A model reference is ``NAME`` (alias ``champion``), ``NAME@ALIAS`` or ``NAME/VERSION``. Aliases are
resolved to a version once, when scoring starts, so that a promotion during a long batch cannot
mix two models in one output file. An embedding model's vectors go beside the CSV
(``<output>.embeddings.npz``: ``path`` and ``embeddings``, NaN rows for files not answered), for
the monitor's embedding check.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from visionops.core.constants import CHAMPION, IMAGE_SUFFIXES
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import BatchScored, ModelRef
from visionops.core.errors import InputError

CSV_COLUMNS = ["path", "label", "probability", "box", "status", "error", "model_version"]
EMBEDDINGS_SUFFIX = ".embeddings.npz"


def embeddings_path(output: str) -> str:
    """Where the embeddings of the CSV ``output`` go (beside it, same stem)."""
    return output.removesuffix(".csv") + EMBEDDINGS_SUFFIX


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
            raise InputError(
                f"model reference {ref!r}: expected NAME/VERSION with a numeric version"
            )
        return name, None, version
    if not ref:
        raise InputError("model reference is empty: expected NAME[@ALIAS|/VERSION]")
    return ref, CHAMPION, None


def resolve_model(ref: str) -> ModelRef:
    """Pin a model reference to a version now (the registry is read once)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = parse_model_ref(ref)
    client = MlflowClient()
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise InputError(
            f"model {name!r} has no {what} in the registry ({exc.error_code})"
        ) from exc
    return ModelRef(name=name, version=str(mv.version), requested=ref)


def list_images(input_dir: str | Path) -> list[Path]:
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def predict_files(model_uri: str, files: list[Path], batch_size: int = 64) -> pd.DataFrame:
    """Label every file through the served pyfunc, ``batch_size`` files per call.

    Files go in encoded, as over HTTP: the model decodes them, and a face model finds the face in
    each photo. A file that is not an image, or a photo without exactly one face, gets its own
    ``status`` and ``error`` instead of failing the batch. An embedding model's answer keeps its
    ``embedding`` column (not part of the CSV).
    """
    from visionops.serving.model import EMBEDDING_COLUMN, has_encoder, load_classifier

    model = load_classifier(model_uri)
    params: dict = {}
    # Files are photos: a face model looks for the face even in a photo that happens to be chip-sized.
    if getattr(model.unwrap_python_model(), "faces", None):
        params["input"] = "photo"
    columns = CSV_COLUMNS[:-1]
    if has_encoder(model):
        params["return_embeddings"] = True
        columns = [*columns, EMBEDDING_COLUMN]
    parts = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        out = model.predict([p.read_bytes() for p in chunk], params=params or None)
        if "box" not in out.columns:
            out["box"] = None
        parts.append(out)
    frame = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CSV_COLUMNS[1:-1])
    )
    frame["box"] = [
        ",".join(map(str, b)) if b is not None and len(b) else None for b in frame["box"]
    ]
    frame.insert(0, "path", [str(p) for p in files])
    return frame[columns]


def check_output(output: str, *, overwrite: bool) -> None:
    """Refuse, before anything is scored, an output that is a folder, or that exists (with its
    embeddings file, for an embedding model) unless ``overwrite``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(output)
    if fs.isdir(path):
        raise InputError(f"output {output} is a folder; name a CSV file inside it")
    if overwrite:
        return
    for target in (output, embeddings_path(output)):
        tfs, tpath = fsspec.core.url_to_fs(target)
        if tfs.exists(tpath):
            raise InputError(
                f"output {target} exists; pass --overwrite (the batch_predict DAG: "
                "overwrite=true) to replace it"
            )


def write_whole(uri: str, data: bytes) -> None:
    """Write ``data`` so that ``uri`` holds either its old content or all of the new, never part.

    A local file is written beside the target under a temporary name and renamed over it (atomic
    within one file system); an object store's single PUT is already all-or-nothing."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(str(Path(path).parent), exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600: keep the mode of the file replaced, else a plain 0644.
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_embeddings(frame: pd.DataFrame, output: str) -> str:
    """The batch's embeddings beside its CSV, written whole (``write_whole``)."""
    import io

    import numpy as np

    from visionops.serving.model import embedding_matrix

    buf = io.BytesIO()
    np.savez_compressed(
        buf, path=frame["path"].to_numpy(dtype=str), embeddings=embedding_matrix(frame)
    )
    uri = embeddings_path(output)
    write_whole(uri, buf.getvalue())
    return uri


def score_folder(
    resolved: ModelRef,
    input_dir: str,
    output: str,
    *,
    overwrite: bool = False,
    shadow: ModelRef | None = None,
) -> BatchScored:
    """Score a folder with a pinned model version, write the CSV and log it to MLflow; returns references.

    An existing output is refused unless ``overwrite`` (``check_output``), before any image is
    scored; the CSV is written whole (``write_whole``): a reader never sees half of it. ``shadow``:
    a challenger scored on the same files, its agreement with ``resolved`` recorded
    (``serving.shadow``); the CSV holds ``resolved``'s answers only."""
    import mlflow
    from visionops.core import tracking

    files = list_images(input_dir)
    check_output(output, overwrite=overwrite)
    frame = predict_files(resolved.uri, files)
    frame["model_version"] = resolved.version
    write_whole(output, frame[CSV_COLUMNS].to_csv(index=False).encode())
    from visionops.serving.model import EMBEDDING_COLUMN

    embeddings = _write_embeddings(frame, output) if EMBEDDING_COLUMN in frame else None
    exp = tracking.experiment_id("visionops-batch-predict")
    with mlflow.start_run(
        experiment_id=exp, run_name=f"batch_predict/{resolved.name}/v{resolved.version}"
    ) as run:
        tracking.log_run_url(exp, run.info.run_id)
        mlflow.set_tags(
            {
                f"{T}model_name": resolved.name,
                f"{T}model_version": resolved.version,
                f"{T}model_requested": resolved.requested,
                f"{T}output": output,
            }
        )
        mlflow.log_params({"input_dir": input_dir, "model_uri": resolved.uri})
        mlflow.log_metrics(
            {
                "n_images": len(frame),
                "mean_probability": float(frame["probability"].mean()),
                "n_unknown": int((frame["status"] == "unknown").sum()),
                "n_not_scored": int(frame["status"].isin(["rejected", "invalid"]).sum()),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "predictions.csv"
            frame[CSV_COLUMNS].to_csv(local, index=False)
            mlflow.log_artifact(str(local))
        shadowed = None
        if shadow is not None:
            from visionops.serving.shadow import shadow_batch

            theirs = predict_files(shadow.uri, files)
            shadowed = shadow_batch(resolved, shadow, frame, theirs, run.info.run_id)
    return BatchScored(
        output=output,
        n_images=len(frame),
        embeddings=embeddings,
        model=resolved,
        mlflow_run_id=run.info.run_id,
        n_unknown=int((frame["status"] == "unknown").sum()),
        n_not_scored=int(frame["status"].isin(["rejected", "invalid"]).sum()),
        shadow=shadowed,
    )


def batch_predict(
    model: ModelRef,
    input_dir: str,
    output_path: str | None,
    *,
    run_id: str,
    overwrite: bool = False,
    shadow: bool | None = None,
) -> BatchScored:
    """Score a folder with a pinned version; the CSV goes under the data root unless ``output_path``.

    A given ``output_path`` that exists is refused unless ``overwrite``. The default path is this
    run's own (its run key in the name): a retry of the task replaces what an earlier try wrote.
    ``shadow``: score with the challenger too (None: as the version's ``serving.shadow`` says)."""
    from visionops.core import tracking
    from visionops.core.storage import data_root, run_key_from

    tracking.configure()
    if not input_dir:
        raise InputError("param input_dir is empty: name a folder of images")
    from visionops.serving.shadow import challenger_beside, shadow_wanted

    wanted = shadow_wanted(model.name, model.version) if shadow is None else shadow
    beside = challenger_beside(model) if wanted else None
    if output_path:
        return score_folder(model, input_dir, output_path, overwrite=overwrite, shadow=beside)
    output = (
        f"{data_root().rstrip('/')}/predictions/{model.name}/v{model.version}/"
        f"{run_key_from(run_id)}.csv"
    )
    return score_folder(model, input_dir, output, overwrite=True, shadow=beside)
