"""Preprocess: decode, convert channels, resize, the planned group split, train-only statistics, uint8 arrays.

Each split is decoded chunk by chunk straight into its memory-mapped ``.npy`` file and the training
statistics are summed on the way, so memory stays bounded by the chunks in flight, not the data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from visionops.core.config import PreprocessConfig, ValidateConfig
from visionops.core.constants import IMAGE_FORMATS
from visionops.core.memory import PageReleaser
from visionops.core.parallel import ordered_map
from visionops.core.progress import Progress
from visionops.data.drift import build_profile, write_profile
from visionops.data.images import to_model_array
from visionops.data.sources import SLICE_PREFIX
from visionops.data.split import SPLITS, SplitPlan, plan_split, stratified_split

__all__ = [
    "SPLITS",
    "stratified_split",
    "load_image",
    "load_images",
    "iter_images",
    "ChannelStats",
    "preprocess_to",
    "load_split",
    "load_labels",
    "load_stats",
    "load_test_clean",
    "load_groups",
    "PreprocessResult",
]


log = logging.getLogger(__name__)


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    with Image.open(path, formats=IMAGE_FORMATS) as img:
        return to_model_array(img, size, channels)


def _load_chunk(args: tuple[list[str], int, int]) -> np.ndarray:
    paths, size, channels = args
    return np.stack([load_image(p, size, channels) for p in paths]).astype(np.uint8)


# The most bytes of decoded images one worker task returns (a chunk of 224 px colour photos is
# about 400 of them): memory stays bounded by the chunks in flight, whatever the split's size.
CHUNK_BYTES = 64 * 2**20


def iter_images(
    paths: Sequence[str],
    size: int,
    channels: int,
    workers: int = 1,
    chunk_bytes: int | None = None,
) -> Iterator[np.ndarray]:
    """Decode and resize ``paths`` into uint8 ``(n, C, size, size)`` chunks, in order, in worker
    processes; at most two chunks per worker are in flight, so memory does not grow with ``paths``."""
    paths = list(paths)
    workers = max(1, workers)
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    step = max(1, min(chunk_bytes // (channels * size * size), -(-len(paths) // (workers * 4))))
    chunks = [(paths[i : i + step], size, channels) for i in range(0, len(paths), step)]
    # The workers only when there is enough to share: below two images a worker, one process.
    yield from ordered_map(_load_chunk, chunks, workers if len(paths) >= 2 * workers else 1)


def load_images(paths: Sequence[str], size: int, channels: int, workers: int = 1) -> np.ndarray:
    """Decode and resize ``paths`` into one uint8 ``(N, C, size, size)`` array (filled chunk by
    chunk: no second copy of the whole)."""
    out = np.zeros((len(paths), channels, size, size), np.uint8)
    at = 0
    for chunk in iter_images(paths, size, channels, workers):
        out[at : at + len(chunk)] = chunk
        at += len(chunk)
    return out


class ChannelStats:
    """Per-channel mean and standard deviation of uint8 images in [0, 1], one chunk at a time.

    The sums are kept as exact integers (int64 holds the squares of a million 224 px photos), so
    the result does not depend on the chunking and no float copy of the images is ever made.
    """

    def __init__(self, channels: int) -> None:
        self.pixels = 0
        self.sums = np.zeros(channels, np.int64)
        self.squares = np.zeros(channels, np.int64)

    def add(self, x: np.ndarray) -> None:
        self.pixels += x.shape[0] * x.shape[2] * x.shape[3]
        self.sums += x.sum(axis=(0, 2, 3), dtype=np.int64)
        wide = x.astype(np.uint16)  # 255 ** 2 fits in 16 bits
        self.squares += (wide * wide).sum(axis=(0, 2, 3), dtype=np.int64)

    def mean_std(self) -> tuple[list[float], list[float]]:
        if self.pixels == 0:
            return [0.0] * len(self.sums), [1.0] * len(self.sums)
        n = self.pixels
        sums, squares = (int(v) for v in self.sums), (int(v) for v in self.squares)
        mean, std = [], []
        for s, q in zip(sums, squares, strict=True):
            mean.append(s / n / 255.0)
            # n * q - s * s in Python integers: exact, never negative.
            std.append(max(((n * q - s * s) / (n * n)) ** 0.5 / 255.0, 1e-6))
        return mean, std


def _write_split(
    path: Path,
    paths: list[str],
    size: int,
    channels: int,
    workers: int,
    stats: ChannelStats | None,
    what: str,
) -> None:
    """Decode ``paths`` chunk by chunk straight into the preallocated ``.npy`` file at ``path``."""
    shape = (len(paths), channels, size, size)
    if not paths:
        np.save(path, np.zeros(shape, np.uint8))
        return
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    progress = Progress(what, len(paths), logger=log)
    pages = PageReleaser(x)  # written pages leave this process's resident set (the file keeps them)
    at = 0
    for chunk in iter_images(paths, size, channels, workers):
        x[at : at + len(chunk)] = chunk
        at += len(chunk)
        pages.add(chunk.nbytes)
        if stats is not None:
            stats.add(chunk)
        progress.update(len(chunk))
    x.flush()
    del x
    progress.done()


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
    slices = [c for c in manifest.columns if c.startswith(SLICE_PREFIX)]  # carried for evaluation
    frame = manifest.loc[kept, ["path", "label", "sha256", *slices]].copy()
    frame["split"] = plan.split[kept]
    frame["class_index"] = frame["label"].astype(str).map(to_index)
    frame["group"] = plan.group[kept]
    frame["near_copy_in_train"] = plan.near_copy_in_train[kept]
    frame.to_parquet(out / "splits.parquet", index=False)
    counts = {}
    train_stats = ChannelStats(channels)
    for name in SPLITS:
        rows = frame[frame["split"] == name]
        _write_split(
            out / f"{name}_x.npy",
            rows["path"].tolist(),
            size,
            channels,
            workers,
            train_stats if name == "train" else None,
            f"preprocess: {name} split decoded",
        )
        np.save(out / f"{name}_y.npy", rows["class_index"].to_numpy(dtype=np.int64))
        counts[name] = len(rows)
        if name == "test":  # the clean subset evaluation reports beside the full figures
            np.save(out / "test_clean.npy", ~rows["near_copy_in_train"].to_numpy(dtype=bool))
    (out / "label_map.json").write_text(json.dumps({"labels": labels}, indent=2))
    mean, std = train_stats.mean_std()
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


def load_slices(folder: Path, name: str, n: int) -> dict[str, np.ndarray]:
    """Per slice (a ``slice_*`` column the manifest carried): its value for each row of split
    ``name``, in the order of its arrays; {} when the data has no slices."""
    path = folder / "splits.parquet"
    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    columns = [c for c in frame.columns if c.startswith(SLICE_PREFIX)]
    rows = frame.loc[frame["split"] == name, columns]
    if not columns or len(rows) != n:
        return {}
    return {
        c.removeprefix(SLICE_PREFIX): rows[c].fillna("unknown").astype(str).to_numpy()
        for c in columns
    }


def load_labels(folder: Path) -> list[str]:
    return json.loads((folder / "label_map.json").read_text())["labels"]


def load_stats(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())
