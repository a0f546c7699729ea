"""The served model: raw uint8 images in, labels and probabilities out.

The network (with its normalisation) is logged with ``mlflow.pytorch.log_model``; the registered
model is a pyfunc that carries that network, the label map and the preprocessing, so that
``mlflow.pyfunc.load_model("models:/<name>@champion").predict(images)`` needs nothing else.
Test-time augmentation (``train.tta``) is part of the package too: stored in the preprocessing
file and applied in ``predict``, so evaluation and serving compute the same probabilities.
"""


import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from visionops.data.images import to_model_array
from visionops.tta import check_views, predict_proba

PREPROCESSING_FILE = "preprocessing.json"
PROBA_PREFIX = "proba_"


def as_image_list(model_input: Any) -> list[np.ndarray]:
    """Accept a batch array ``(N, H, W)`` / ``(N, H, W, C)``, a single 2-D image, or a list of arrays."""
    if isinstance(model_input, pd.DataFrame):
        raise TypeError("pass images as a uint8 array (N, H, W) or (N, H, W, C), not a DataFrame")
    if isinstance(model_input, np.ndarray):
        if model_input.ndim == 2:
            return [model_input]
        if model_input.ndim in (3, 4):
            return list(model_input)
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {model_input.shape}")
    return [np.asarray(img, dtype=np.uint8) for img in model_input]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc model: resize and convert like training did, run the network (over the TTA views, if
    any), map indices to labels."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        meta = json.loads(Path(context.artifacts["preprocessing"]).read_text())
        self.labels: list[str] = meta["labels"]
        self.image_size: int = meta["image_size"]
        self.channels: int = meta["channels"]
        self.tta: list[str] = check_views(meta.get("tta", []))  # models logged before TTA have none
        # Logged in the pt2 (torch.export) format: a graph captured in eval mode, no pickled classes.
        self.network = mlflow.pytorch.load_model(context.artifacts["network"], map_location="cpu")

    # np.ndarray is a hint MLflow accepts without deriving a schema: the tensor signature given at
    # logging time is the schema.
    def predict(self, context, model_input: np.ndarray, params=None):  # noqa: ANN001, ANN201
        """Labels and the winning class probability for a batch of raw images.

        With ``params={"return_probabilities": True}`` it adds one column per class,
        ``proba_<label>``, in the order of the label map (what top-k and calibration need).
        """
        images = as_image_list(model_input)
        if not images:
            return pd.DataFrame({"label": pd.Series(dtype=str), "probability": pd.Series(dtype=float)})
        batch = np.stack([to_model_array(img, self.image_size, self.channels) for img in images])
        probs = predict_proba(self.network, torch.from_numpy(batch), self.tta).numpy()
        best = probs.argmax(axis=1)
        out = pd.DataFrame({
            "label": [self.labels[i] for i in best],
            "probability": probs[np.arange(len(best)), best].astype(float),
        })
        if (params or {}).get("return_probabilities"):
            out = pd.concat([out, pd.DataFrame(probs.astype(float), columns=[PROBA_PREFIX + lb for lb in self.labels])],
                            axis=1)
        return out


def serving_signature(channels: int) -> mlflow.models.ModelSignature:
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    shape = (-1, -1, -1) if channels == 1 else (-1, -1, -1, 3)
    return mlflow.models.ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), shape)]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]),
        params=ParamSchema([ParamSpec("return_probabilities", "boolean", False)]),
    )


def to_raw_images(x: np.ndarray) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` -> what a user passes: ``(N, H, W)`` for grey, ``(N, H, W, C)`` for colour."""
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def pip_requirements() -> list[str]:
    import PIL
    import torchvision  # test-time augmentation's views are torchvision transforms

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}", f"pillow=={PIL.__version__}"]


def log_classifier(network: torch.nn.Module, *, labels: list[str], image_size: int, channels: int,
                   example: np.ndarray, workdir: Path, data_profile: Path | None = None,
                   tta: Sequence[str] = ()) -> dict[str, str]:
    """Log the network (pytorch flavour) and the pyfunc classifier into the active run; return their URIs.

    ``data_profile`` (the training data's statistics) travels with the model so that a later run
    can measure drift against the model in service. ``tta`` (views of ``visionops.tta``) is
    stored with the preprocessing and applied by every ``predict`` of the served model.
    """
    package_dir = str(Path(__file__).resolve().parent)
    network_info = mlflow.pytorch.log_model(
        network.cpu().eval(), name="network", input_example=example[:2],
        serialization_format="pt2", pip_requirements=pip_requirements(),
    )
    meta = {"labels": labels, "image_size": image_size, "channels": channels, "tta": check_views(tta),
            "input": "uint8 array (N, H, W) for grey or (N, H, W, 3) for colour, any size"}
    meta_path = workdir / PREPROCESSING_FILE
    meta_path.write_text(json.dumps(meta, indent=2))
    model_info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("served_model.py")),  # models from code: no pickling
        artifacts={"network": network_info.model_uri, "preprocessing": str(meta_path),
                   **({"data_profile": str(data_profile)} if data_profile and data_profile.exists() else {})},
        code_paths=[package_dir],
        signature=serving_signature(channels),
        input_example=to_raw_images(example[:2]),
        pip_requirements=pip_requirements(),
    )
    return {"network_uri": network_info.model_uri, "model_uri": model_info.model_uri}


def load_classifier(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(model_uri)


def model_labels(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """The class set a served classifier predicts (its label map)."""
    return list(model.unwrap_python_model().labels)


def model_tta(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """The test-time augmentation views a served classifier applies ([] = none)."""
    return list(getattr(model.unwrap_python_model(), "tta", []))


def tta_label(views: Sequence[str]) -> str:
    """``none`` or the views joined by ``+`` (how runs record it)."""
    return "+".join(views) or "none"


def predict_probabilities(model: mlflow.pyfunc.PyFuncModel, images: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Predictions and the (N, n_classes) probability matrix, through the served model's own predict."""
    out = model.predict(images, params={"return_probabilities": True})
    cols = [c for c in out.columns if c.startswith(PROBA_PREFIX)]
    if not cols:
        raise ValueError("this model version does not return per-class probabilities "
                         "(it was logged before params.return_probabilities existed)")
    return out[["label", "probability"]], out[cols].to_numpy(dtype=float)
