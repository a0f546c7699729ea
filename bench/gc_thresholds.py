"""The garbage collector's thresholds: CPU of one pipeline run with visionops' thresholds against
Python's own, side by side, through ``visionops pipeline run`` (real Airflow and MLflow).

Run: .venv/bin/python bench/gc_thresholds.py [--rounds 3] [--set KEY=VALUE ...]

Each round runs the same small digits run twice, each in a fresh home, in alternating order:
``VISIONOPS_GC_THRESHOLD=default`` (CPython's 700/10/10) and unset (``visionops.core.interpreter``).
CPU is the user + system time of every process the run waited for (the ``visionops`` command,
``airflow db migrate``, ``airflow dags test``, the smoke test), from ``getrusage(RUSAGE_CHILDREN)``;
the ratio is per round, and the median is printed. Takes about 1.5 minutes a round.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The e2e's small run: the mechanics of a whole run, a few seconds of training.
SMALL = [
    "train.max_epochs=8",
    "model.width=1",
    "model.batch_norm=false",
    "tune.n_trials=2",
    "tune.epochs_per_trial=2",
    "tune.workers=2",
    "gate.compare_with_baselines=false",
    "gate.min_accuracy=0.5",
    "gate.min_macro_f1=0.5",
]


def cpu_of_run(home: Path, gc_setting: str | None, sets: list[str]) -> float:
    env = dict(os.environ)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.pop("VISIONOPS_GC_THRESHOLD", None)
    if gc_setting is not None:
        env["VISIONOPS_GC_THRESHOLD"] = gc_setting
    env.update(
        {
            "VISIONOPS_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "AIRFLOW_HOME": str(home / "airflow"),
            "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    cmd = [str(Path(sys.executable).parent / "visionops"), "pipeline", "run"]
    for item in [*SMALL, "registry.model_name=bench-gc", "experiment=bench-gc", *sets]:
        cmd += ["--set", item]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        for r in range(args.rounds):
            order = ["default", None] if r % 2 == 0 else [None, "default"]
            cpu = {}
            for setting in order:
                cpu[setting] = cpu_of_run(Path(tmp) / f"r{r}-{setting}", setting, args.sets)
            ratios.append(cpu[None] / cpu["default"])
            print(
                f"round {r + 1}: Python's thresholds {cpu['default']:.1f} CPU-s, "
                f"visionops' {cpu[None]:.1f} CPU-s, ratio {ratios[-1]:.3f}",
                flush=True,
            )
    print(f"median ratio (visionops' / Python's thresholds): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
