"""Model zoo: a registry of architecture names, each a builder adapting to channels and image size.

The registry itself imports no torch, so that config validation stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

_BUILDERS: dict[str, str] = {
    "small_cnn": "visionops.models.cnn:build_small_cnn",
    "face_cnn": "visionops.models.cnn:build_face_cnn",
}


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int, dropout: float) -> nn.Module:
    """Instantiate the architecture ``name`` for the given input shape and class count."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    module, func = _BUILDERS[name].split(":")
    return getattr(import_module(module), func)(
        in_channels=in_channels, image_size=image_size, num_classes=num_classes, dropout=dropout
    )
