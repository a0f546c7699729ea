"""Models: one builder per architecture (the names are the config catalog's), adapting to channels and image size.

This module imports no torch: the builders load it when a model is built.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from visionops.core.config.catalog import FEATURE_MODELS, MODEL_NAMES, TRANSFER_MODELS

__all__ = [
    "FEATURE_MODELS",
    "TRANSFER_MODELS",
    "available_models",
    "build_from_config",
    "build_model",
    "is_feature_model",
]

if TYPE_CHECKING:
    from torch import nn

_BUILDERS: dict[str, str] = {
    "small_cnn": "visionops.models.cnn:build_small_cnn",
    "face_cnn": "visionops.models.cnn:build_face_cnn",
    "fashion_cnn": "visionops.models.cnn:build_fashion_cnn",
    "vgg11": "visionops.models.vgg:build_vgg11",
    "vgg13": "visionops.models.vgg:build_vgg13",
    "vgg16": "visionops.models.vgg:build_vgg16",
    "vgg19": "visionops.models.vgg:build_vgg19",
    "resnet18": "visionops.models.resnet:build_resnet18",
    "vit_tiny": "visionops.models.vit:build_vit_tiny",
    "face_embedding": "visionops.models.embedding:build_face_embedding",
}

if set(_BUILDERS) != set(MODEL_NAMES):  # one list of names: the config's catalog
    raise ImportError(
        f"visionops.models builds {sorted(_BUILDERS)} but the config catalog names {sorted(MODEL_NAMES)}"
    )


def is_feature_model(name: str) -> bool:
    return name in FEATURE_MODELS


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    dropout: float,
    **options: Any,
) -> nn.Module:
    """Instantiate the architecture ``name`` for the given input shape and class count.

    ``image_size`` is a side length or ``(height, width)``. ``options`` are the architecture's own
    knobs (``width``, ``batch_norm``, ``init``, ``transfer_mode``, ``weights_path``, ...); a builder
    ignores the ones that do not concern it, so one config section serves every model.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    module, func = _BUILDERS[name].split(":")
    return getattr(import_module(module), func)(
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        dropout=dropout,
        **options,
    )


def build_from_config(
    model_cfg: Any, *, in_channels: int, image_size: int | tuple[int, int], num_classes: int
) -> nn.Module:
    """Build from a ``ModelConfig`` section (name, dropout and the architecture options)."""
    opts = model_cfg.model_dump()
    name, dropout = opts.pop("name"), opts.pop("dropout")
    return build_model(
        name,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        dropout=dropout,
        **opts,
    )
