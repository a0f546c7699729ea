"""Ingest: list a source's files and record what each one is (hash, size, mode, whether it decodes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from visionops.config import DataConfig
from visionops.data.sources import Item, export_digits, list_csv, list_imagefolder
from visionops.storage import file_sha256, visionops_home

MANIFEST_COLUMNS = ["path", "label", "sha256", "size_bytes", "width", "height", "mode", "decode_error"]


def list_items(data: DataConfig) -> list[Item]:
    """The ``(path, label)`` pairs of the configured source."""
    if data.source == "digits":
        root = Path(data.path) if data.path else visionops_home() / "sources" / "digits"
        return list_imagefolder(export_digits(root))
    if data.source == "imagefolder":
        return list_imagefolder(data.path)
    return list_csv(data.path)


def source_fingerprint_parts(items: list[Item]) -> list[tuple[str, str | None, int, int]]:
    """Cheap identity of the source files (path, label, size, mtime) used to reuse an earlier ingest."""
    parts = []
    for item in items:
        try:
            st = os.stat(item.path)
            parts.append((item.path, item.label, st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append((item.path, item.label, -1, -1))
    return parts


def inspect_image(path: str) -> dict[str, Any]:
    """Hash the file and decode it fully; problems go into ``decode_error`` instead of raising."""
    record: dict[str, Any] = {"sha256": None, "size_bytes": None, "width": None, "height": None,
                              "mode": None, "decode_error": None}
    try:
        record["size_bytes"] = os.path.getsize(path)
        record["sha256"] = file_sha256(path)
    except OSError as exc:
        record["decode_error"] = f"cannot read file: {exc.strerror or exc}"
        return record
    try:
        with Image.open(path) as img:
            record["width"], record["height"], record["mode"] = img.width, img.height, img.mode
            img.load()  # header-only checks miss truncated files
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        record["decode_error"] = f"{type(exc).__name__}: {exc}"
    return record


def build_manifest(items: list[Item]) -> pd.DataFrame:
    """One row per file with the columns of ``MANIFEST_COLUMNS``."""
    rows = [{"path": item.path, "label": item.label, **inspect_image(item.path)} for item in items]
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for col in ("size_bytes", "width", "height"):
        frame[col] = frame[col].astype("Int64")
    return frame
