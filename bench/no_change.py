"""No change, no work: the wall time of a run that finds nothing changed since the champion, as a
ratio of the full run before it, both through ``visionops pipeline run`` (real Airflow and MLflow).

Run: .venv/bin/python bench/no_change.py [--rounds 2] [--config conf/digits.yaml] [--set KEY=VALUE ...]

Each round, in a fresh home: a full run (it becomes the champion), then the same data, config and
code again, which stops after ``check_changes``. The ratio is per round (same machine, minutes
apart); the median is printed. Takes about 2.5 minutes a round with the shipped digits config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(home: Path, config: str, sets: list[str]) -> tuple[float, dict]:
    env = dict(os.environ)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        {
            "VISIONOPS_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "AIRFLOW_HOME": str(home / "airflow"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    summary = home / f"summary-{time.monotonic_ns()}.json"
    cmd = [str(Path(sys.executable).parent / "visionops"), "pipeline", "run", "--config", config]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--summary-json", str(summary)], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return elapsed, json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default=str(REPO / "conf" / "digits.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    ratios = []
    print("| round | full run (s) | unchanged run (s) | ratio | unchanged since |")
    print("|---|---|---|---|---|")
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            full, first = run(home, args.config, args.set)
            if first.get("champion_version") is None:
                raise SystemExit(f"the full run promoted nothing: {first.get('gate_reasons')}")
            again, second = run(home, args.config, args.set)
            if second.get("unchanged_since") is None:
                raise SystemExit(f"the second run was not unchanged: {second.get('changes')}")
            ratios.append(again / full)
            print(
                f"| {i + 1} | {full:.1f} | {again:.1f} | {again / full:.3f} | "
                f"v{second['unchanged_since']} |"
            )
    print(f"\nmedian ratio unchanged / full: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
