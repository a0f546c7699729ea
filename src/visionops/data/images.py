"""Image arrays in the model's layout. Kept free of heavy imports: the served model imports it."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_model_array(image: Image.Image | np.ndarray, size: int, channels: int) -> np.ndarray:
    """One image as uint8 ``(C, size, size)``: the single resize used in training and in serving."""
    if isinstance(image, np.ndarray):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array, got dtype {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(
                f"expected an image of shape HxW or HxWxC (C in 1, 3, 4), got {arr.shape}"
            )
        image = Image.fromarray(arr)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL's convert("L") clips 16/32-bit values at 255; scale the range to 8 bits instead.
        wide = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") or wide.max(initial=0) <= 0xFFFF else 24
        image = Image.fromarray((wide >> shift).astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1)
