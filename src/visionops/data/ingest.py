"""Ingest: list a source's files and record what each one is (hash, size, mode, whether it decodes).

Incremental: a file whose (path, size, mtime) match the previous manifest is not read again; a file
whose size or mtime changed is re-read, and keeps its ``first_seen`` time when its hash did not change.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from visionops.core.config import DataConfig
from visionops.core.constants import IMAGE_FORMATS
from visionops.core.parallel import ordered_map
from visionops.core.progress import Progress
from visionops.core.storage import file_sha256, visionops_home
from visionops.data.images import to_model_array
from visionops.data.sources import (
    SLICE_PREFIX,
    Item,
    export_digits,
    list_csv,
    list_imagefolder,
)

MANIFEST_COLUMNS = [
    "path",
    "label",
    "sha256",
    "size_bytes",
    "mtime_ns",
    "width",
    "height",
    "mode",
    "channels",
    "mean_intensity",
    "std_intensity",
    "dhash",
    "thumb",
    "box",
    "decode_error",
    "first_seen",
    "group",
    "split",
]  # group, split: the source's own (csv), else null
log = logging.getLogger(__name__)
DEFAULT_MAX_PIXELS = 40_000_000
_THUMB = 64  # side of the grey thumbnail the statistics and the perceptual hash are computed on
THUMB_SIDE = (
    16  # side of the stored grey thumbnail that confirms a perceptual-hash match (256 bytes)
)


def list_items(data: DataConfig) -> list[Item]:
    """The ``(path, label)`` pairs of the configured source (URL manifests: see ``urls.ingest_urls``)."""
    if data.source == "digits":
        root = Path(data.path) if data.path else visionops_home() / "sources" / "digits"
        return list_imagefolder(export_digits(root))
    if data.source == "imagefolder":
        return list_imagefolder(data.path)
    if data.source == "urls":
        raise ValueError("URL manifests are downloaded first: use visionops.data.urls.ingest_urls")
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


def dhash_hex(image: Image.Image) -> str:
    """64-bit difference hash (imagehash) as 16 hex digits."""
    import imagehash

    return str(imagehash.dhash(image, hash_size=8))


def inspect_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Hash the file and decode it fully; problems go into ``decode_error`` instead of raising.

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims enormous dimensions (a decompression bomb) costs nothing.
    """
    record: dict[str, Any] = {
        "sha256": None,
        "size_bytes": None,
        "mtime_ns": None,
        "width": None,
        "height": None,
        "mode": None,
        "channels": None,
        "mean_intensity": None,
        "std_intensity": None,
        "dhash": None,
        "thumb": None,
        "decode_error": None,
    }
    try:
        st = os.stat(path)
        record["size_bytes"], record["mtime_ns"] = st.st_size, st.st_mtime_ns
        record["sha256"] = file_sha256(path)
    except OSError as exc:
        record["decode_error"] = f"cannot read file: {exc.strerror or exc}"
        return record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                record["width"], record["height"], record["mode"] = img.width, img.height, img.mode
                record["channels"] = len(img.getbands())
                if img.width * img.height > max_pixels:
                    record["decode_error"] = (
                        f"DecompressionBombError: {img.width}x{img.height} = "
                        f"{img.width * img.height} pixels > data.max_pixels={max_pixels}"
                    )
                    return record
                img.load()  # header-only checks miss truncated files
                thumb = to_model_array(img, _THUMB, 1)[0]
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        record["decode_error"] = f"{type(exc).__name__}: {exc}"
        return record
    record["mean_intensity"] = float(thumb.mean())
    record["std_intensity"] = float(thumb.std())
    record["dhash"] = dhash_hex(Image.fromarray(thumb))
    record["thumb"] = to_model_array(thumb, THUMB_SIDE, 1)[0].tobytes()
    return record


def _inspect_chunk(args: tuple[list[str], int]) -> list[dict[str, Any]]:
    paths, max_pixels = args
    return [inspect_image(p, max_pixels) for p in paths]


# Files one worker task inspects: small enough to balance the workers and report progress often.
INSPECT_CHUNK = 256


def inspect_images(
    paths: list[str], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """``inspect_image`` of each path, in order, in ``workers`` processes; at most two chunks per
    worker in flight, and a progress line every 10 s in the log."""
    chunks = [
        (paths[i : i + INSPECT_CHUNK], max_pixels) for i in range(0, len(paths), INSPECT_CHUNK)
    ]
    progress = Progress("ingest: files inspected", len(paths), unit="files", logger=log)
    for records in ordered_map(_inspect_chunk, chunks, workers):
        yield from records
        progress.update(len(records))
    progress.done()


# The files an ingest has to read, one row each: where its row goes in the manifest (``at``), what
# the source says of it, and the hash and first-seen time of its previous row (None when new).
TODO_COLUMNS = ["at", "path", "label", "box", "group", "split", "old_sha256", "old_first_seen"]


def plan_manifest(
    items: list[Item], previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the source into the rows of ``previous`` that still hold (path, size and mtime
    unchanged; with their position ``at``) and the files to read (``TODO_COLUMNS``)."""
    known = (
        {}
        if previous is None or previous.empty
        else {row["path"]: row for row in previous.to_dict("records")}
    )
    kept: list[dict[str, Any]] = []
    todo: list[dict[str, Any]] = []
    for at, item in enumerate(items):
        old = known.get(item.path)
        box = ",".join(str(v) for v in item.box) if getattr(item, "box", None) else None
        try:
            st = os.stat(item.path)
            same = (
                old is not None
                and old.get("size_bytes") == st.st_size
                and old.get("mtime_ns") == st.st_mtime_ns
            )
        except OSError:
            same = False
        given = {
            "label": item.label,
            "box": box,
            "group": getattr(item, "group", None),
            "split": getattr(item, "split", None),
            **{f"{SLICE_PREFIX}{k}": v for k, v in getattr(item, "slices", ())},
        }
        if same and not pd.isna(old.get("sha256")):
            kept.append({**old, **given, "at": at})
            continue
        was = old is not None and not pd.isna(old.get("sha256"))
        todo.append(
            {
                "at": at,
                "path": item.path,
                **given,
                "old_sha256": old["sha256"] if was else None,
                "old_first_seen": float(old["first_seen"]) if was else None,
            }
        )
    slices = sorted(
        {f"{SLICE_PREFIX}{k}" for item in items for k, _ in getattr(item, "slices", ())}
    )
    return (
        pd.DataFrame(kept, columns=[*MANIFEST_COLUMNS, *slices, "at"]),
        pd.DataFrame(todo, columns=[*TODO_COLUMNS, *slices]),
    )


def read_files(
    todo: pd.DataFrame, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 1
) -> list[dict[str, Any]]:
    """``inspect_image`` of each file of a plan's ``todo`` (or a chunk of it), in its order."""
    return list(inspect_images(todo["path"].tolist(), max_pixels, workers))


def assemble_manifest(
    kept: pd.DataFrame, todo: pd.DataFrame, records: list[dict[str, Any]], now: float
) -> pd.DataFrame:
    """The manifest (``MANIFEST_COLUMNS``, the source's order) from a plan and the records of its
    files; ``frame.attrs["reread"]`` counts the files read."""
    slices = [c for c in todo.columns if c.startswith(SLICE_PREFIX)]
    rows: list[dict[str, Any] | None] = [None] * (len(kept) + len(todo))
    for row in kept.to_dict("records"):
        rows[int(row.pop("at"))] = row
    for item, record in zip(todo.to_dict("records"), records, strict=True):
        # A touched file with the same content keeps the time it was first seen.
        same = pd.notna(item["old_sha256"]) and item["old_sha256"] == record["sha256"]
        rows[int(item["at"])] = {
            "path": item["path"],
            **record,
            **{k: item[k] for k in ("label", "box", "group", "split", *slices)},
            "first_seen": item["old_first_seen"] if same else now,
        }
    frame = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *slices])
    for col in ("size_bytes", "mtime_ns", "width", "height", "channels"):
        frame[col] = frame[col].astype("Int64")
    for col in ("mean_intensity", "std_intensity", "first_seen"):
        frame[col] = frame[col].astype("float64")
    for col in ("group", "split"):
        frame[col] = frame[col].astype("string")
    frame.attrs["reread"] = len(todo)
    return frame


def build_manifest(
    items: list[Item],
    previous: pd.DataFrame | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    now: float | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per file with the columns of ``MANIFEST_COLUMNS``, in one process and its ``workers``.

    Rows of ``previous`` (an earlier manifest of the same source) are reused for files whose path,
    size and mtime are unchanged; ``frame.attrs["reread"]`` counts the files actually read. The
    pipeline's ingest does the same in chunks that Airflow can map over workers
    (``visionops.data.ingest_stage``).
    """
    kept, todo = plan_manifest(items, previous)
    records = read_files(todo, max_pixels, workers)
    return assemble_manifest(kept, todo, records, time.time() if now is None else now)


def catalog_path(data: DataConfig) -> Path:
    """Where the last manifest of this source is kept for incremental re-ingest."""
    from visionops.core.storage import fingerprint

    return visionops_home() / "catalog" / f"{fingerprint(data.source, data.path)[:16]}.parquet"


def load_catalog(data: DataConfig) -> pd.DataFrame | None:
    path = catalog_path(data)
    return pd.read_parquet(path) if path.is_file() else None


def save_catalog(data: DataConfig, manifest: pd.DataFrame) -> None:
    path = catalog_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(
        f"{path.stem}.{os.getpid()}.tmp"
    )  # two ingests of one source never share it
    manifest.to_parquet(tmp, index=False)
    tmp.replace(path)
