"""Preprocessing and data-loading speed, as ratios against a baseline run beside it in this process.

    .venv/bin/python bench/preprocess_bench.py [--data ../shared/datasets/coil20] [--size 64] [--repeat 3]

1. decode + resize images/s with 1 and 2 worker processes (``preprocess.load_images``);
2. one epoch of batches from the uint8 cache (memory-mapped ``train_x.npy``) versus a torchvision
   ``ImageFolder`` that decodes and transforms every file each epoch (both through a DataLoader);
3. a preprocess cache hit (RunStore lookup by fingerprint + memory-map) versus a cold preprocess.

Real photographs: COIL-20 (``labels.csv``); falls back to the digits PNGs when it is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "coil20"))
    parser.add_argument("--size", type=int, default=64, help="side after resizing")
    parser.add_argument(
        "--repeat", type=int, default=3, help="list every file this many times (more work)"
    )
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visionops-bench-"))
    os.environ.setdefault("VISIONOPS_HOME", str(tmp / "home"))
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torchvision import datasets, transforms

    from visionops.core.config import DataConfig
    from visionops.core.storage import RunStore, fingerprint
    from visionops.data.ingest import build_manifest, list_items
    from visionops.data.preprocess import load_images, load_split, preprocess_to
    from visionops.data.sources import list_csv

    labels_csv = Path(args.data) / "labels.csv"
    items = list_csv(labels_csv) if labels_csv.is_file() else list_items(DataConfig())
    source = str(labels_csv) if labels_csv.is_file() else "digits PNGs (COIL-20 absent)"
    paths = [i.path for i in items] * args.repeat
    print(
        f"data: {source}, {len(items)} files x{args.repeat}, resized to {args.size}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    )

    # 0. How much parallelism the machine gives right now (other jobs take cores): the ceiling of 1.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spin = [2_000_000] * 8
    serial = best_of(lambda: [_spin(n) for n in spin], 2)

    def pooled() -> None:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_spin, spin))

    print(
        f"0. CPU ceiling: a pure-Python loop in 2 processes vs 1 -> ratio {serial / best_of(pooled, 2):.2f}x "
        f"(load average {os.getloadavg()[0]:.1f})"
    )

    # 1. workers
    load_images(paths[:50], args.size, 1, workers=2)  # warm the page cache and the pool code path
    t1 = best_of(lambda: load_images(paths, args.size, 1, workers=1))
    t2 = best_of(lambda: load_images(paths, args.size, 1, workers=2))
    print(
        f"1. preprocess: 1 worker {len(paths) / t1:,.0f} img/s, 2 workers {len(paths) / t2:,.0f} img/s "
        f"-> ratio {t1 / t2:.2f}x"
    )

    # 2. one epoch: cache vs ImageFolder
    folder = tmp / "imagefolder"
    for item in items:
        target = folder / str(item.label) / Path(item.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(item.path)
    manifest = build_manifest(items)
    out = tmp / "cache"
    out.mkdir()
    preprocess_to(
        manifest,
        out,
        size=args.size,
        channels=1,
        val_fraction=0.15,
        test_fraction=0.15,
        seed=0,
        workers=2,
    )
    tf = transforms.Compose(
        [
            transforms.Grayscale(1),
            transforms.Resize((args.size, args.size)),
            transforms.PILToTensor(),
        ]
    )
    decoded = DataLoader(
        datasets.ImageFolder(str(folder), transform=tf), batch_size=args.batch, shuffle=True
    )

    def epoch_files() -> int:
        return sum(len(x) for x, _ in decoded)

    def epoch_cache() -> int:
        split = load_split(out, "train")  # memory-mapped uint8
        ds = TensorDataset(
            torch.from_numpy(np.array(split.x)), torch.from_numpy(split.y)
        )  # read into memory
        return sum(len(x) for x, _ in DataLoader(ds, batch_size=args.batch, shuffle=True))

    n_train = len(load_split(out, "train").y)
    tf_files, tf_cache = best_of(epoch_files), best_of(epoch_cache)
    print(
        f"2. one epoch: ImageFolder decoding {len(items)} files {tf_files * 1000:.0f} ms "
        f"({len(items) / tf_files:,.0f} img/s); cache {n_train} images {tf_cache * 1000:.1f} ms "
        f"({n_train / tf_cache:,.0f} img/s) -> per-image ratio {(tf_files / len(items)) / (tf_cache / n_train):.1f}x"
    )

    # 3. cache hit vs cold, the way the preprocess stage looks its output up
    root = str(tmp / "root")
    fp = fingerprint("preprocess-bench", source, args.size)

    def stage(run_key: str) -> None:
        store = RunStore(run_key, root)
        found = store.find("preprocess", fp)
        if found is None:
            with store.writing("preprocess", fp) as pending:
                preprocess_to(
                    manifest,
                    pending.path,
                    size=args.size,
                    channels=1,
                    val_fraction=0.15,
                    test_fraction=0.15,
                    seed=0,
                    workers=2,
                )
            found = pending.output
        load_split(found.local_path(), "train")

    cold = []
    for i in range(3):  # a fresh root each time: really cold
        root = str(tmp / f"root{i}")
        start = time.perf_counter()
        stage("cold")
        cold.append(time.perf_counter() - start)
    hits = []
    for i in range(5):
        start = time.perf_counter()
        stage(f"hit{i}")
        hits.append(time.perf_counter() - start)
    print(
        f"3. preprocess: cold {min(cold) * 1000:.0f} ms, cache hit {statistics.median(hits) * 1000:.1f} ms "
        f"-> ratio {min(cold) / statistics.median(hits):.0f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
