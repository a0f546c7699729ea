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


@dataclass
class Budget:
    """What one request may cost, so that the server's memory follows a budget and not the request.

    ``max_rows`` rows are read, the rest answered ``invalid`` unread; ``max_pixels`` pixels are
    decoded in all (counted from each image's header before it is decoded: a row past the budget is
    answered ``invalid`` undecoded); an image whose longer side is over ``max_side`` is shrunk as it
    is decoded (JPEG at decode time, Pillow's ``draft``; other formats right after, ``reduce``), so
    a decoded row holds at most ``max_side``² pixels while the next one is read; ``min_side``: a
    smaller image (its shorter side) is ``invalid``, as validation drops such images from training.
    """

    max_rows: int = 256
    max_pixels: int = 100_000_000
    max_side: int = 4096
    min_side: int = 1
    rows: int = 0
    pixels: int = 0

    def admit(self, width: int, height: int, what: str = "image") -> None:
        """Count one image of ``width`` x ``height`` against the budget, or raise ValueError."""
        if min(width, height) < max(1, self.min_side):
            raise ValueError(
                f"{what} {width}x{height} px is below validate.min_side={self.min_side}"
            )
        if self.pixels + width * height > self.max_pixels:
            raise ValueError(
                f"{what} {width}x{height} px is past the request's pixel budget "
                f"(serving.max_pixels_per_request={self.max_pixels}, {self.pixels} used): not "
                "decoded; send it in another request"
            )
        self.pixels += width * height


def decode_image(data: bytes | str, budget: Budget | None = None) -> np.ndarray:
    """Encoded bytes or base64 text -> uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB (see ``Budget``)."""
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
        if budget is not None:
            budget.admit(img.width, img.height, "encoded image")
            if max(img.size) > budget.max_side:
                img.draft(img.mode, (budget.max_side, budget.max_side))  # JPEG: decoded smaller
        img.load()
        if budget is not None and max(img.size) > budget.max_side:
            img = img.reduce(-(-max(img.size) // budget.max_side))
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


def _row(value: Any, budget: Budget | None = None) -> Row:
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU" and value.ndim == 0:
        value = value.item()  # one encoded image, wrapped
    try:
        if budget is not None:
            budget.rows += 1
            if budget.rows > budget.max_rows:
                return BadInput(
                    f"past the request's row limit (serving.max_rows={budget.max_rows}): not read; "
                    "send it in another request"
                )
        if isinstance(value, (bytes, bytearray, memoryview)):
            return decode_image(bytes(value), budget)
        if isinstance(value, str):
            return decode_image(value, budget)
        arr = _pixels(value)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(
                f"expected an image HxW or HxWxC (C in 1, 3, 4), got shape {arr.shape}"
            )
        if budget is not None:
            budget.admit(arr.shape[1], arr.shape[0])
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


def as_rows(model_input: Any, budget: Budget | None = None) -> list[Row]:
    """One decoded image (or ``BadInput``) per input row, read one after the other within ``budget``;
    a ValueError when the container is not understood."""

    def rows(values: Any) -> list[Row]:
        return [_row(v, budget) for v in values]

    if isinstance(model_input, pd.DataFrame):
        return rows(_column(model_input))
    if isinstance(model_input, pd.Series):
        return rows(model_input)
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ValueError(
                f"a dict input needs the key {IMAGE_COLUMN!r}, got {sorted(model_input)}"
            )
        value = model_input[IMAGE_COLUMN]
        return as_rows(value if isinstance(value, (list, tuple, np.ndarray)) else [value], budget)
    if isinstance(model_input, (str, bytes, bytearray)):
        return rows([model_input])
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "OSU":  # encoded images: (N,) or (N, 1) from a JSON request
            return (
                rows(model_input.reshape(len(model_input), -1)[:, 0])
                if model_input.ndim
                else rows([model_input.item()])
            )
        if model_input.ndim == 2:
            return rows([model_input])
        if model_input.ndim in (3, 4):
            return rows(model_input)
        raise ValueError(
            f"expected images of shape (N, H, W) or (N, H, W, C), got {model_input.shape}"
        )
    return rows(model_input)


def as_image_list(model_input: Any) -> list[np.ndarray]:
    """Like ``as_rows`` but every row must be an image (a ValueError names the first that is not)."""
    rows = as_rows(model_input)
    for i, row in enumerate(rows):
        if isinstance(row, BadInput):
            raise ValueError(f"input row {i}: {row.reason}")
    return rows  # type: ignore[return-value]
