"""Cheap per-image input statistics, computed on the images as a user passes them to the model.

Every statistic is on the grey level in [0, 1] (colour images: luma, ITU-R BT.601) except
``saturation``; images of one shape are computed together (vectorised), in chunks that bound memory.

- ``brightness``: mean grey level;
- ``contrast``: standard deviation of the grey level;
- ``dark_fraction`` / ``bright_fraction``: share of pixels below 32/255, above 223/255;
- ``sharpness``: variance of the 4-neighbour Laplacian (blur lowers it);
- ``edge_density``: share of pixels whose Sobel gradient magnitude exceeds ``EDGE_THRESHOLD``;
- ``entropy``: Shannon entropy (bits) of the 16-bin grey-level histogram;
- ``saturation``: mean HSV saturation, 0 for grey images;
- ``height``, ``width``: the size as passed (before the model's resize).

In *model form* (``image_size`` given) the pixel statistics are computed on each image after the
model's own resize and colour conversion (``visionops.data.images.to_model_array``, the one of
training and serving), and there are no size columns: the form to use when one side is a
preprocessed split (the champion's test split is stored resized) and the other what users pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

PIXEL_STATISTICS = (
    "brightness",
    "contrast",
    "dark_fraction",
    "bright_fraction",
    "sharpness",
    "edge_density",
    "entropy",
    "saturation",
)
STATISTICS = (*PIXEL_STATISTICS, "height", "width")
DARK, BRIGHT = 32 / 255, 223 / 255
EDGE_THRESHOLD = 0.5  # Sobel magnitude on [0, 1] grey (a step of 1/8 of the range across 3 px)
HISTOGRAM_BINS = 16
_CHUNK_PIXELS = 1 << 22  # about 16 MiB of float32 per chunk and intermediate array


def _as_hwc(image: Any) -> np.ndarray:
    """One image as uint8 ``(H, W, C)``, C 1 or 3 (an alpha channel is dropped)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape HxW or HxWxC (C in 1, 3, 4), got {arr.shape}")
    return arr[:, :, :3] if arr.shape[2] == 4 else arr


def _groups(images: np.ndarray | Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row indices, uint8 (n, H, W, C) stack) per distinct image shape."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        batch = images if images.dtype == np.uint8 else np.clip(images, 0, 255).astype(np.uint8)
        if batch.ndim == 3:  # (N, H, W): grey, as the served model takes it
            batch = batch[..., None]
        elif batch.shape[3] not in (1, 3, 4):
            raise ValueError(
                f"expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4, got {batch.shape}"
            )
        if batch.shape[3] == 4:
            batch = batch[..., :3]
        return [(np.arange(len(batch)), batch)] if len(batch) else []
    arrays = [_as_hwc(img) for img in images]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, arr in enumerate(arrays):
        by_shape.setdefault(arr.shape, []).append(i)
    return [(np.asarray(rows), np.stack([arrays[i] for i in rows])) for rows in by_shape.values()]


def _grey_and_saturation(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = batch.astype(np.float32) / np.float32(255.0)
    if x.shape[3] == 1:
        return x[..., 0], np.zeros(len(x), np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    high, low = x.max(axis=3), x.min(axis=3)
    sat = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    return grey, sat.mean(axis=(1, 2))


def _same_shape(batch: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of a uint8 (n, H, W, C) stack."""
    n, h, w = batch.shape[:3]
    grey, saturation = _grey_and_saturation(batch)
    flat = grey.reshape(n, -1)
    p = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    centre = p[:, 1:-1, 1:-1]
    laplacian = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * centre
    # Sobel: smoothing [1, 2, 1] across the derivative [-1, 0, 1].
    dx = p[:, :, 2:] - p[:, :, :-2]
    dy = p[:, 2:, :] - p[:, :-2, :]
    gx = dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]
    gy = dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]
    magnitude = np.hypot(gx, gy).reshape(n, -1)
    bins = np.minimum((flat * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    offsets = (np.arange(n) * HISTOGRAM_BINS)[:, None]
    counts = np.bincount((bins + offsets).ravel(), minlength=n * HISTOGRAM_BINS)
    share = counts.reshape(n, HISTOGRAM_BINS) / flat.shape[1]
    entropy = 0.0 - np.sum(
        share * np.log2(share, out=np.zeros_like(share), where=share > 0), axis=1
    )
    return {
        "brightness": flat.mean(axis=1, dtype=np.float64),
        "contrast": flat.std(axis=1, dtype=np.float64),
        "dark_fraction": (flat < DARK).mean(axis=1),
        "bright_fraction": (flat > BRIGHT).mean(axis=1),
        "sharpness": laplacian.reshape(n, -1).var(axis=1, dtype=np.float64),
        "edge_density": (magnitude > EDGE_THRESHOLD).mean(axis=1),
        "entropy": entropy,
        "saturation": saturation,
        "height": np.full(n, float(h)),
        "width": np.full(n, float(w)),
    }


def model_form(images: np.ndarray | Sequence[Any], image_size: int, channels: int) -> np.ndarray:
    """The images as the model sees them: uint8 ``(N, size, size)`` grey or ``(N, size, size, 3)``."""
    if (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.shape[1:]
        == ((image_size, image_size) if channels == 1 else (image_size, image_size, 3))
    ):
        return images
    from visionops.data.images import to_model_array

    shape = (0, image_size, image_size) + (() if channels == 1 else (3,))
    arrays = [to_model_array(_as_hwc(img), image_size, channels) for img in images]
    if not arrays:
        return np.zeros(shape, np.uint8)
    batch = np.stack(arrays)  # (N, C, H, W)
    return batch[:, 0] if channels == 1 else batch.transpose(0, 2, 3, 1)


def image_statistics(
    images: np.ndarray | Sequence[Any], *, image_size: int | None = None, channels: int = 1
) -> pd.DataFrame:
    """One row per image, the columns of ``STATISTICS`` (floats); ``PIXEL_STATISTICS`` only in model
    form (``image_size`` and ``channels`` of the model given).

    ``images``: a uint8 batch ``(N, H, W)`` (grey) or ``(N, H, W, C)`` (C 1, 3 or 4), or a sequence of
    ``(H, W)`` / ``(H, W, C)`` arrays of any sizes: what the served model takes as arrays.
    """
    if image_size is not None:
        frame = image_statistics(model_form(images, image_size, channels))
        return frame[list(PIXEL_STATISTICS)]
    groups = _groups(images)
    n = sum(len(rows) for rows, _ in groups)
    out = {name: np.zeros(n) for name in STATISTICS}
    for rows, batch in groups:
        step = max(1, _CHUNK_PIXELS // max(1, int(np.prod(batch.shape[1:]))))
        for start in range(0, len(rows), step):
            part = _same_shape(batch[start : start + step])
            for name, values in part.items():
                out[name][rows[start : start + step]] = values
    return pd.DataFrame(out, columns=list(STATISTICS))
