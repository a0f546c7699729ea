"""Preprocess: decode, convert channels, resize, stratified split, train-only statistics, uint8 arrays."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

from visionops.data.drift import build_profile, write_profile
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


def assign_splits(manifest: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int,
                  **_: object) -> np.ndarray:
    """The split of every manifest row: the one function validate (leakage check) and preprocess share."""
    return stratified_split(manifest["label"].astype(str).tolist(), val_fraction, test_fraction, seed)


def _load_chunk(args: tuple[list[str], int, int]) -> np.ndarray:
    paths, size, channels = args
    return np.stack([load_image(p, size, channels) for p in paths]).astype(np.uint8)


def load_images(paths: Sequence[str], size: int, channels: int, workers: int = 1) -> np.ndarray:
    """Decode and resize ``paths`` into one uint8 ``(N, C, size, size)`` array, in worker processes.

    Chunks keep the per-task overhead small; results come back in order.
    """
    paths = list(paths)
    if not paths:
        return np.zeros((0, channels, size, size), np.uint8)
    if workers <= 1 or len(paths) < 2 * workers:
        return _load_chunk((paths, size, channels))
    step = max(1, -(-len(paths) // (workers * 4)))
    chunks = [(paths[i:i + step], size, channels) for i in range(0, len(paths), step)]
    # fork: workers start in milliseconds and inherit the imported modules; nothing here holds locks.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return np.concatenate(list(pool.map(_load_chunk, chunks)))


@dataclass(frozen=True)
class PreprocessResult:
    counts: dict[str, int]
    labels: list[str]
    mean: list[float]
    std: list[float]


def preprocess_to(manifest: pd.DataFrame, out: Path, *, size: int, channels: int,
                  val_fraction: float, test_fraction: float, seed: int, workers: int = 1) -> PreprocessResult:
    """Write ``{split}_x.npy`` (uint8 N,C,H,W, memory-mappable), ``{split}_y.npy``, ``splits.parquet``,
    ``label_map.json``, ``stats.json`` and ``data_profile.json`` (train rows' feature histograms)."""
    labels = sorted(manifest["label"].astype(str).unique())
    to_index = {label: i for i, label in enumerate(labels)}
    split = assign_splits(manifest, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    frame = manifest[["path", "label", "sha256"]].copy()
    frame["split"] = split
    frame["class_index"] = frame["label"].astype(str).map(to_index)
    frame.to_parquet(out / "splits.parquet", index=False)
    counts = {}
    for name in SPLITS:
        rows = frame[frame["split"] == name]
        x = load_images(rows["path"].tolist(), size, channels, workers)
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
    write_profile(out, build_profile(manifest[np.asarray(split) == "train"], labels))
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
