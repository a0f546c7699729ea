"""Preprocess: decode, convert channels, resize, stratified split, train-only statistics, uint8 arrays."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

from visionops.data.images import to_model_array

SPLITS = ("train", "val", "test")


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    with Image.open(path) as img:
        return to_model_array(img, size, channels)


def stratified_split(labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split names per row (``train``/``val``/``test``), stratified by label, reproducible for a seed."""
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    out = np.empty(len(labels), dtype=object)
    out[train], out[val], out[test] = "train", "val", "test"
    return out


@dataclass(frozen=True)
class PreprocessResult:
    counts: dict[str, int]
    labels: list[str]
    mean: list[float]
    std: list[float]


def preprocess_to(manifest: pd.DataFrame, out: Path, *, size: int, channels: int,
                  val_fraction: float, test_fraction: float, seed: int) -> PreprocessResult:
    """Write ``{split}_x.npy`` (uint8 N,C,H,W), ``{split}_y.npy``, ``splits.parquet``, ``label_map.json``, ``stats.json``."""
    labels = sorted(manifest["label"].astype(str).unique())
    to_index = {label: i for i, label in enumerate(labels)}
    split = stratified_split(manifest["label"].astype(str).tolist(), val_fraction, test_fraction, seed)
    frame = manifest[["path", "label", "sha256"]].copy()
    frame["split"] = split
    frame["class_index"] = frame["label"].astype(str).map(to_index)
    frame.to_parquet(out / "splits.parquet", index=False)
    counts = {}
    for name in SPLITS:
        rows = frame[frame["split"] == name]
        x = np.stack([load_image(p, size, channels) for p in rows["path"]]).astype(np.uint8)
        np.save(out / f"{name}_x.npy", x)
        np.save(out / f"{name}_y.npy", rows["class_index"].to_numpy(dtype=np.int64))
        counts[name] = len(rows)
        if name == "train":
            scaled = x.astype(np.float64) / 255.0
            mean = scaled.mean(axis=(0, 2, 3)).tolist()
            std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-6).tolist()
    (out / "label_map.json").write_text(json.dumps({"labels": labels}, indent=2))
    stats = {"image_size": size, "channels": channels, "mean": mean, "std": std, "counts": counts}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return PreprocessResult(counts, labels, mean, std)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8 (N, C, H, W)
    y: np.ndarray  # int64 (N,)


def load_split(folder: Path, name: str, mmap: bool = True) -> Split:
    return Split(np.load(folder / f"{name}_x.npy", mmap_mode="r" if mmap else None),
                 np.load(folder / f"{name}_y.npy"))


def load_labels(folder: Path) -> list[str]:
    return json.loads((folder / "label_map.json").read_text())["labels"]


def load_stats(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())
