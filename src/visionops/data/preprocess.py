"""Preprocess: decode, convert channels, resize, the planned group split, train-only statistics, uint8 arrays."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from visionops.core.config import PreprocessConfig, ValidateConfig
from visionops.data.drift import build_profile, write_profile
from visionops.data.images import to_model_array
from visionops.data.split import SPLITS, SplitPlan, plan_split, stratified_split

__all__ = [
    "SPLITS",
    "stratified_split",
    "load_image",
    "load_images",
    "preprocess_to",
    "load_split",
    "load_labels",
    "load_stats",
    "load_test_clean",
    "load_groups",
    "PreprocessResult",
]


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    with Image.open(path) as img:
        return to_model_array(img, size, channels)


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
    chunks = [(paths[i : i + step], size, channels) for i in range(0, len(paths), step)]
    # fork: workers start in milliseconds and inherit the imported modules; nothing here holds locks.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return np.concatenate(list(pool.map(_load_chunk, chunks)))


@dataclass(frozen=True)
class PreprocessResult:
    counts: dict[str, int]
    labels: list[str]
    mean: list[float]
    std: list[float]


def preprocess_to(
    manifest: pd.DataFrame,
    out: Path,
    *,
    size: int,
    channels: int,
    workers: int = 1,
    plan: SplitPlan | None = None,
    validate: ValidateConfig | None = None,
    **split_options: Any,
) -> PreprocessResult:
    """Write ``{split}_x.npy`` (uint8 N,C,H,W, memory-mappable), ``{split}_y.npy``, ``splits.parquet``
    (kept rows with split, group and near-copy flag), ``test_clean.npy`` (per test row: no near-copy in
    train), ``label_map.json``, ``stats.json`` and ``data_profile.json`` (train rows' feature histograms).

    ``plan`` is the split validate checked (``plan_split``); without it the plan is made here from
    ``split_options`` (``preprocess.*`` keys) and ``validate`` (near-copy thresholds).
    """
    if plan is None:
        plan = plan_split(manifest, PreprocessConfig(**split_options), validate)
    kept = plan.kept
    labels = sorted(manifest.loc[kept, "label"].astype(str).unique())
    to_index = {label: i for i, label in enumerate(labels)}
    frame = manifest.loc[kept, ["path", "label", "sha256"]].copy()
    frame["split"] = plan.split[kept]
    frame["class_index"] = frame["label"].astype(str).map(to_index)
    frame["group"] = plan.group[kept]
    frame["near_copy_in_train"] = plan.near_copy_in_train[kept]
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
        if name == "test":  # the clean subset evaluation reports beside the full figures
            np.save(out / "test_clean.npy", ~rows["near_copy_in_train"].to_numpy(dtype=bool))
    (out / "label_map.json").write_text(json.dumps({"labels": labels}, indent=2))
    stats = {
        "image_size": size,
        "channels": channels,
        "mean": mean,
        "std": std,
        "counts": counts,
        "split_plan": plan.stats,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    write_profile(out, build_profile(manifest[kept & (plan.split == "train")], labels))
    return PreprocessResult(counts, labels, mean, std)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8 (N, C, H, W)
    y: np.ndarray  # int64 (N,)


def load_split(folder: Path, name: str, mmap: bool = True) -> Split:
    return Split(
        np.load(folder / f"{name}_x.npy", mmap_mode="r" if mmap else None),
        np.load(folder / f"{name}_y.npy"),
    )


def load_test_clean(folder: Path, n_test: int) -> np.ndarray:
    """Per test row: True when it has no near-copy in train (all True for outputs made before the flag)."""
    path = folder / "test_clean.npy"
    return np.load(path).astype(bool) if path.exists() else np.ones(n_test, dtype=bool)


def load_groups(folder: Path, name: str, y: np.ndarray) -> np.ndarray:
    """The near-copy group id of each row of split ``name`` (int64, in the order of its arrays).

    ``preprocess_to`` writes a split's arrays in the order of its rows in ``splits.parquet``; ``y``
    (the split's labels) checks that the two still line up.
    """
    frame = pd.read_parquet(folder / "splits.parquet", columns=["split", "class_index", "group"])
    rows = frame[frame["split"] == name]
    if len(rows) != len(y) or not np.array_equal(rows["class_index"].to_numpy(), np.asarray(y)):
        raise ValueError(
            f"{folder / 'splits.parquet'}: its {name} rows ({len(rows)}) do not line up with "
            f"{name}_y.npy ({len(y)} rows): preprocess again to get both from one run"
        )
    return rows["group"].to_numpy(dtype=np.int64)


def load_labels(folder: Path) -> list[str]:
    return json.loads((folder / "label_map.json").read_text())["labels"]


def load_stats(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())
