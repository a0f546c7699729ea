"""Pruning: best validation accuracy and epochs trained with and without the pruner.

Run: .venv/bin/python bench/pruning.py [--trials 24] [--seeds 7 11 13 ...] [--pruner NAME] [--set tune.pruner_KEY=VALUE]

Same trial budget, same seeds, same search space (a wide learning-rate range, so some trials are
hopeless), on scikit-learn's digits. Goal: within 0.5 points of accuracy at <= 50% of the epochs,
read on the median over the seeds (every seed's figures are printed too).
Without --pruner/--set the pipeline's default pruner settings (``TuneConfig``) are measured. Each
``tune.seed`` runs both arms (the sampler's seed; the trials' training seeds are the same in both).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from _common import config, digits_splits
from visionops.core.config import parse_override
from visionops.tuning import journal_storage, run_study


def study_epochs(storage, name: str) -> int:  # noqa: ANN001
    study = optuna.load_study(study_name=name, storage=storage)
    return sum(t.user_attrs.get("epochs", 0) for t in study.trials)


def trial_lines(storage, name: str) -> list[str]:  # noqa: ANN001
    study = optuna.load_study(study_name=name, storage=storage)
    return [
        f"    #{t.number:2d} lr {t.params['learning_rate']:.1e}  {t.state.name:8s} epochs "
        f"{t.user_attrs.get('epochs', 0)}  best {max(t.intermediate_values.values(), default=0):.4f}"
        for t in study.trials
    ]


def run_arm(
    overrides: dict,
    name: str,
    tmp: Path,
    splits,  # noqa: ANN001
    verbose: bool,
) -> tuple[float, int, int, float]:
    train, val = splits
    cfg = config(**overrides)
    storage = journal_storage(tmp / f"{name}.log")
    start = time.perf_counter()
    res = run_study(
        cfg,
        train,
        val,
        mean=[0.3],
        std=[0.35],
        num_classes=10,
        storage=storage,
        study_name=name,
        tuning_run_id=None,
    )
    row = (res.best_value, study_epochs(storage, name), res.n_pruned, time.perf_counter() - start)
    print(
        f"  {name:16s} best val_accuracy {row[0]:.4f}  epochs {row[1]:4d}  "
        f"pruned {row[2]:2d}/{cfg.tune.n_trials}  {row[3]:.0f}s",
        flush=True,
    )
    if verbose:
        print("\n".join(trial_lines(storage, name)))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--pruner",
        default=None,
        choices=["median", "percentile", "successive_halving", "hyperband"],
        help="default: the pipeline's default (tune.pruner)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="tune.pruner_KEY=VALUE",
        help="more pruner settings, e.g. --set tune.pruner_percentile=25",
    )
    ap.add_argument("--trials", type=int, default=24, help="trial budget of each arm")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[7, 11, 13, 1, 2, 3, 4, 5],
        help="tune.seed values, each a pair of studies",
    )
    ap.add_argument("--verbose", action="store_true", help="print every trial")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = digits_splits()
    base = {
        "tune.n_trials": a.trials,
        "tune.epochs_per_trial": a.epochs,
        "tune.objective": "val_accuracy",  # the figures below are accuracies
        "tune.learning_rate": [1e-6, 3e-2],
    }
    pruned_overrides = dict(parse_override(item) for item in a.set)
    if a.pruner:
        pruned_overrides["tune.pruner"] = a.pruner
    tune = config(**base, **pruned_overrides).tune
    settings = {k: v for k, v in tune.model_dump().items() if k.startswith("pruner")}
    print(f"{a.trials} trials x {a.epochs} epochs; pruner settings {settings}")
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            print(f"tune.seed {seed}")
            acc0, ep0, _, _ = run_arm(
                {**base, "tune.seed": seed, "tune.pruner": "none"},
                f"none-{seed}",
                Path(tmp),
                splits,
                a.verbose,
            )
            acc1, ep1, n_pruned, _ = run_arm(
                {**base, **pruned_overrides, "tune.seed": seed},
                f"{tune.pruner}-{seed}",
                Path(tmp),
                splits,
                a.verbose,
            )
            results.append((seed, 100 * (acc1 - acc0), ep1 / ep0, n_pruned))
    print("\nseed  accuracy diff (points)  epochs ratio  pruned  goal (>= -0.5 points, <= 0.5)")
    for seed, diff, ratio, n_pruned in results:
        met = "met" if diff >= -0.5 and ratio <= 0.5 else "NOT met"
        print(f"{seed:4d}  {diff:+22.2f}  {ratio:12.3f}  {n_pruned:3d}/{a.trials}  {met}")
    diffs, ratios = [r[1] for r in results], [r[2] for r in results]
    print(
        f"median accuracy difference (pruned - unpruned) = {statistics.median(diffs):+.2f} points "
        f"(worst {min(diffs):+.2f})"
    )
    print(
        f"median ratio epochs pruned/unpruned = {statistics.median(ratios):.3f} (worst {max(ratios):.3f})"
    )
    print(f"wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
