"""Pruning: best validation accuracy and epochs trained with and without the pruner.

Run: .venv/bin/python bench/pruning.py [--pruner median|hyperband]

Same trial budget, same seeds, same search space (a wide learning-rate range, so some trials are
hopeless), on scikit-learn's digits. Goal: within 0.5 points of accuracy at <= 50% of the epochs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from _common import config, digits_splits
from visionops.tuning import journal_storage, run_study


def study_epochs(storage, name: str) -> int:  # noqa: ANN001
    study = optuna.load_study(study_name=name, storage=storage)
    return sum(t.user_attrs.get("epochs", 0) for t in study.trials)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train, val = digits_splits()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ("none", a.pruner):
            cfg = config(**{"tune.n_trials": a.trials, "tune.epochs_per_trial": a.epochs, "tune.pruner": pruner,
                            "tune.learning_rate": [1e-6, 3e-2], "tune.seed": 7})
            storage = journal_storage(Path(tmp) / f"{pruner}.log")
            start = time.perf_counter()
            res = run_study(cfg, train, val, mean=[0.3], std=[0.35], num_classes=10, storage=storage,
                            study_name=pruner, tuning_run_id=None)
            rows[pruner] = (res.best_value, study_epochs(storage, pruner), res.n_pruned, time.perf_counter() - start)
            print(f"{pruner:10s} best val_accuracy {res.best_value:.4f}  epochs {rows[pruner][1]:4d}  "
                  f"pruned {res.n_pruned:2d}/{a.trials}  {rows[pruner][3]:.0f}s")
    (acc0, ep0, _, _), (acc1, ep1, _, _) = rows["none"], rows[a.pruner]
    print(f"accuracy difference (pruned - unpruned) = {100 * (acc1 - acc0):+.2f} points")
    print(f"ratio epochs pruned/unpruned = {ep1 / ep0:.3f}")


if __name__ == "__main__":
    main()
