"""Parallel tuning: completed trials per minute with 2 worker processes against 1, one shared study.

Run: .venv/bin/python bench/parallel_tuning.py

Every worker uses one torch thread (so two workers use two cores where one uses one: what adding
a worker buys), on the same journal-file storage, the same budget and search space. The clock runs
from the moment the workers are ready (imports done) to the last trial's end. The two settings
alternate for ``--rounds`` rounds and the median rate of each counts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna


def _worker(
    journal: str, study: str, worker: int, threads: int, trials: int, epochs: int, barrier, out
) -> None:  # noqa: ANN001
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import config, digits_splits
    from visionops.tuning import journal_storage, run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    train, val = digits_splits()
    cfg = config(
        **{"tune.n_trials": trials, "tune.epochs_per_trial": epochs, "tune.pruner": "none"}
    )
    storage = journal_storage(Path(journal))
    barrier.wait()
    start = time.perf_counter()
    n = run_worker(
        cfg,
        train,
        val,
        mean=[0.3],
        std=[0.35],
        num_classes=10,
        storage=storage,
        study_name=study,
        tuning_run_id=None,
        worker=worker,
    )
    out.put((start, time.perf_counter(), n))


def run(workers: int, threads: int, trials: int, epochs: int, tmp: str) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    journal = str(Path(tmp) / f"w{workers}.log")
    procs = [
        ctx.Process(
            target=_worker, args=(journal, f"w{workers}", i, threads, trials, epochs, barrier, out)
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return wall, sum(r[2] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    for i in range(a.rounds):
        for workers in (1, 2) if i % 2 == 0 else (2, 1):
            with tempfile.TemporaryDirectory() as tmp:
                wall, n = run(workers, 1, a.trials, a.epochs, tmp)
            rates[workers].append(60 * n / wall)
            print(
                f"round {i}: {workers} worker(s): {n} trials in {wall:.1f}s = {rates[workers][-1]:.1f} trials/min"
            )
    r1, r2 = (sorted(rates[w])[len(rates[w]) // 2] for w in (1, 2))
    print(
        f"{os.cpu_count()} cores; {a.trials} trials x {a.epochs} epochs on digits; 1 thread per worker"
    )
    print(f"median: 1 worker {r1:.1f} trials/min, 2 workers {r2:.1f} trials/min")
    print(f"ratio 2 workers / 1 worker = {r2 / r1:.3f}")


if __name__ == "__main__":
    main()
