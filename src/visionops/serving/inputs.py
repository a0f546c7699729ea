"""What the served model accepts, turned into one image per row.

Accepted: a uint8 (or 0-255 integer) batch ``(N, H, W)`` / ``(N, H, W, C)``, one 2-D image, a
list of arrays of any sizes, and encoded images (PNG, JPEG, ... as bytes or base64 text, a
``data:image/...;base64,`` prefix allowed) alone, in a list, in a DataFrame column (``image``, or
the only column) or in a dict ``{"image": [...]}``: what ``mlflow models serve`` hands over for
``{"inputs": ...}`` and ``{"dataframe_split": ...}`` requests. A row that cannot be read becomes a
``BadInput`` with the reason, so that one broken photo does not fail the batch.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from visionops.core.constants import IMAGE_FORMATS

MAX_PIXELS = (
    40_000_000  # as data.max_pixels: larger claims are refused undecoded (decompression bombs)
)
IMAGE_COLUMN = "image"


@dataclass(frozen=True)
class BadInput:
    """A row that is not an image; ``reason`` says why."""

    reason: str


Row = np.ndarray | BadInput


def decode_image(data: bytes | str) -> np.ndarray:
    """Encoded bytes or base64 text -> uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB."""
    from PIL import Image

    if isinstance(data, str):
        text = data.strip()
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not base64 text ({exc})") from None
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"{img.width}x{img.height} pixels is more than {MAX_PIXELS}")
        grey = img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        if img.mode.startswith("I"):
            wide = np.asarray(
                img, dtype=np.uint32
            )  # as training reads 16-bit images: scaled, not clipped
            return (wide >> (8 if wide.max(initial=0) <= 0xFFFF else 24)).astype(np.uint8)
        return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)


def _pixels(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "iu" and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"pixel values must be 0-255, got {arr.min()}..{arr.max()}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"expected uint8 pixels or an encoded image, got {arr.dtype}")
    return arr.astype(np.uint8)  # JSON requests arrive as int64


def _row(value: Any) -> Row:
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return decode_image(bytes(value))
        if isinstance(value, str):
            return decode_image(value)
        if isinstance(value, np.ndarray) and value.dtype.kind in "OSU" and value.ndim == 0:
            return _row(value.item())
        arr = _pixels(value)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(
                f"expected an image HxW or HxWxC (C in 1, 3, 4), got shape {arr.shape}"
            )
        return arr
    except Exception as exc:  # noqa: BLE001 - any unreadable row is reported on its row
        return BadInput(f"{type(exc).__name__}: {exc}")


def _column(frame: pd.DataFrame) -> pd.Series:
    if IMAGE_COLUMN in frame.columns:
        return frame[IMAGE_COLUMN]
    if len(frame.columns) == 1:
        return frame.iloc[:, 0]
    raise ValueError(
        f"a DataFrame input needs a column {IMAGE_COLUMN!r} (or exactly one column) of encoded "
        f"images, got columns {list(frame.columns)}"
    )


def as_rows(model_input: Any) -> list[Row]:
    """One decoded image (or ``BadInput``) per input row; a ValueError when the container is not understood."""
    if isinstance(model_input, pd.DataFrame):
        return [_row(v) for v in _column(model_input)]
    if isinstance(model_input, pd.Series):
        return [_row(v) for v in model_input]
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ValueError(
                f"a dict input needs the key {IMAGE_COLUMN!r}, got {sorted(model_input)}"
            )
        value = model_input[IMAGE_COLUMN]
        return as_rows(value if isinstance(value, (list, tuple, np.ndarray)) else [value])
    if isinstance(model_input, (str, bytes, bytearray)):
        return [_row(model_input)]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "OSU":  # encoded images: (N,) or (N, 1) from a JSON request
            return (
                [_row(v) for v in model_input.reshape(len(model_input), -1)[:, 0]]
                if model_input.ndim
                else [_row(model_input.item())]
            )
        if model_input.ndim == 2:
            return [_row(model_input)]
        if model_input.ndim in (3, 4):
            return [_row(img) for img in model_input]
        raise ValueError(
            f"expected images of shape (N, H, W) or (N, H, W, C), got {model_input.shape}"
        )
    return [_row(v) for v in model_input]


def as_image_list(model_input: Any) -> list[np.ndarray]:
    """Like ``as_rows`` but every row must be an image (a ValueError names the first that is not)."""
    rows = as_rows(model_input)
    for i, row in enumerate(rows):
        if isinstance(row, BadInput):
            raise ValueError(f"input row {i}: {row.reason}")
    return rows  # type: ignore[return-value]
