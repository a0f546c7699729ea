"""Training-split augmentation on uint8 image tensors (torchvision.transforms.v2), one strength knob.

v2 transforms draw one set of random parameters per call, so a batch is augmented image by image
to give every image its own flip, crop, jitter and erasing.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from visionops.core.config import AugmentConfig


def build_augment(spec: AugmentConfig, channels: int, height: int, width: int) -> v2.Compose | None:
    """The per-image pipeline for ``spec``, or None when the strength is 0."""
    s = spec.strength
    if s <= 0:
        return None
    ops: list[torch.nn.Module] = []
    if spec.hflip:
        ops.append(v2.RandomHorizontalFlip(0.5))
    if spec.crop == "pad":
        pad = max(1, round(s * min(height, width) / 8))
        ops.append(v2.RandomCrop((height, width), padding=pad, padding_mode="reflect"))
    elif spec.crop == "resized":
        ops.append(
            v2.RandomResizedCrop((height, width), scale=(1.0 - 0.6 * s, 1.0), antialias=True)
        )
    elif spec.crop != "none":
        raise ValueError(f"train.augment.crop must be pad, resized or none, got {spec.crop!r}")
    if spec.jitter:
        colour = channels == 3  # saturation and hue mean nothing on grey images
        ops.append(
            v2.ColorJitter(
                brightness=0.4 * s,
                contrast=0.4 * s,
                saturation=0.4 * s if colour else None,
                hue=0.1 * s if colour else None,
            )
        )
    if spec.erasing:
        ops.append(v2.RandomErasing(p=0.5 * s, scale=(0.02, 0.02 + 0.2 * s), value=0))
    return v2.Compose(ops) if ops else None


def augment_batch(transform: v2.Compose | None, x: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each uint8 image of ``x`` (N, C, H, W)."""
    if transform is None:
        return x
    return torch.stack([transform(img) for img in x])
