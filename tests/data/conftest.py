"""Data-test fixtures: a corpus of real (good and broken) image files, and an MLflow store for the
tests marked ``integration`` (each test's own VISIONOPS_HOME comes from tests/conftest.py)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def store(mlflow_store: Path) -> Path:
    """The module's SQLite tracking store and registry (``mlflow_store``, tests/conftest.py)."""
    return mlflow_store


def textured(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random grey pattern: distinct per seed, and robust to resizing (like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def save(path: Path, pixels: np.ndarray | Image.Image, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(path, format=fmt, **kw)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid CRC) claims ``width`` x ``height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture()
def corpus() -> SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not imported by name)."""
    return SimpleNamespace(
        textured=textured, save=save, png_claiming=png_claiming, jpeg_bytes=jpeg_bytes
    )
