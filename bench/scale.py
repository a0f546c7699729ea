"""The pipeline at the sizes users bring: each stage's time, its growth exponent, and peak memory.

    .venv/bin/python bench/scale.py                      # 32 px: 2k, 8k, 32k, 128k images
    .venv/bin/python bench/scale.py --side 224 --sizes 2000 8000 20000 --max-steps 10 \
        --memory-gb 1 --set train.batch_size=16

A synthetic 10-class colour image folder per size (a shape per class, in a random colour, place and
size, on noise: every image distinct), written once under ``--cache``, then one pipeline run on it
through Airflow (``visionops pipeline run``) in a fresh home, with the shipped config and only what
makes the data path show: ``data.image_size``, ``data.channels: 3``, ``tune.n_trials: 0``,
``train.max_epochs: 1``, ``preprocess.workers: 2``; at 224 px also ``train.max_steps_per_epoch``
(memory is what is measured there, not this CPU's speed) and ``train.max_memory_gb`` (the budget
past which training streams from the files, ``--memory-gb``).

Printed per size: the wall time of the run, of each stage (its MLflow run), the growth exponent of
each between consecutive sizes (log time ratio / log size ratio: 1.0 is linear), the peak resident
memory of the run's largest process against the size of the images as uint8 arrays, and the best
baseline's test accuracy (present at every size).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")
CLASSES = 10


def _draw(args: tuple[Path, int, int, int]) -> None:
    """Write images ``start .. start + count`` of the set into their class folders."""
    from PIL import Image, ImageDraw

    folder, side, start, count = args
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        label = i % CLASSES
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8) // 2
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        r = side * rng.uniform(0.2, 0.4)
        cx, cy = rng.uniform(r, side - r, 2)
        colour = tuple(int(v) for v in rng.integers(128, 256, 3))
        box = (cx - r, cy - r, cx + r, cy + r)
        if label < 5:  # a regular polygon of 3 to 6 sides, or a circle
            if label == 4:
                draw.ellipse(box, fill=colour)
            else:
                draw.regular_polygon(
                    (cx, cy, r), label + 3, rotation=rng.uniform(0, 360), fill=colour
                )
        elif label < 8:  # an outline: ring, square frame, cross
            width = max(1, int(r / 3))
            if label == 5:
                draw.ellipse(box, outline=colour, width=width)
            elif label == 6:
                draw.rectangle(box, outline=colour, width=width)
            else:
                draw.line((cx - r, cy, cx + r, cy), fill=colour, width=width)
                draw.line((cx, cy - r, cx, cy + r), fill=colour, width=width)
        else:  # two shapes side by side, or stripes
            if label == 8:
                draw.ellipse((cx - r, cy - r / 2, cx, cy + r / 2), fill=colour)
                draw.rectangle((cx, cy - r / 2, cx + r, cy + r / 2), fill=colour)
            else:
                for k in range(4):
                    y0 = cy - r + k * r / 2
                    draw.rectangle((cx - r, y0, cx + r, y0 + r / 4), fill=colour)
        img.save(folder / str(label) / f"{i:07d}.png")


def make_set(root: Path, n: int, side: int) -> Path:
    """The ``n``-image set of side ``side`` under ``root`` (made once, in two processes)."""
    folder = root / f"shapes-{side}px-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    for label in range(CLASSES):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    step = 2000
    jobs = [(folder, side, s, min(step, n - s)) for s in range(0, n, step)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_draw, jobs)
    done.touch()
    return folder


# Runs the command and prints the largest resident set of it and its descendants (Linux ru_maxrss:
# the largest child's, in KiB), so the figure is the run's own whatever process did the work.
_PEAK = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_pipeline(data: Path, side: int, args: argparse.Namespace, work: Path) -> dict:
    home = work / "home"
    overrides = {
        "data.source": "imagefolder",
        "data.path": str(data),
        "data.image_size": side,
        "data.channels": 3,
        "tune.n_trials": 0,
        "train.max_epochs": 1,
        "preprocess.workers": 2,
        "registry.model_name": f"scale-{side}",
    }
    if args.max_steps:
        overrides["train.max_steps_per_epoch"] = args.max_steps
    if args.memory_gb:
        overrides["train.max_memory_gb"] = args.memory_gb
    overrides |= dict(item.split("=", 1) for item in args.set)
    summary = work / "summary.json"
    bin_dir = Path(sys.executable).parent  # the venv running this bench
    cmd = [sys.executable, "-c", _PEAK, str(bin_dir / "visionops")]
    cmd += ["pipeline", "run", "--force", "--summary-json", str(summary)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "VISIONOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(
            f"the run on {data} failed (log: {work / 'run.log'}):\n{proc.stderr[-3000:]}"
        )
    peak = int(proc.stderr.rsplit("peak_rss_kib", 1)[1].split()[0]) * 1024
    result = json.loads(summary.read_text())
    return {"wall": wall, "peak": peak, "summary": result, **stage_seconds(home, result)}


def stage_seconds(home: Path, summary: dict) -> dict:
    """Seconds of each stage's MLflow run under the run's parent run; the best baseline's accuracy."""
    import mlflow

    os.environ["VISIONOPS_HOME"] = str(home)
    from visionops.core.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    parent = client.get_run(summary["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    seconds = {}
    for run in children:
        stage = run.data.tags.get("visionops.stage")
        if stage in STAGES and run.info.end_time:
            seconds[stage] = (run.info.end_time - run.info.start_time) / 1000
    metrics = parent.data.metrics
    return {
        "stages": seconds,
        "best_baseline": metrics.get("best_baseline_test_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "feed": next(
            (
                r.data.tags.get("visionops.train_feed")
                for r in children
                if r.data.tags.get("visionops.stage") == "train"
            ),
            None,
        ),
    }


def exponent(t0: float, t1: float, n0: int, n1: int) -> float:
    return math.log(max(t1, 1e-3) / max(t0, 1e-3)) / math.log(n1 / n0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000, 128000])
    parser.add_argument("--max-steps", type=int, default=None, help="train.max_steps_per_epoch")
    parser.add_argument("--memory-gb", type=float, default=None, help="train.max_memory_gb")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="another config override"
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "visionops-scale"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        start = time.perf_counter()
        data = make_set(Path(args.cache), n, args.side)
        made = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="visionops-scale-run-") as tmp:
            row = {"n": n, "made_s": made, **run_pipeline(data, args.side, args, Path(tmp))}
        row["data_bytes"] = n * 3 * args.side * args.side
        rows.append(row)
        s = row["stages"]
        print(
            f"{n:>7} images {args.side} px: wall {row['wall']:.0f} s, "
            + ", ".join(f"{k} {s.get(k, float('nan')):.1f} s" for k in STAGES)
            + f", peak RSS {row['peak'] / 2**30:.2f} GiB ({row['peak'] / row['data_bytes']:.1f}x the"
            f" uint8 images), feed {row['feed']}, test accuracy {row['test_accuracy']}, best"
            f" baseline {row['best_baseline']}",
            flush=True,
        )
    print("\ngrowth exponents (1.0 = linear) between consecutive sizes:")
    for a, b in zip(rows, rows[1:]):
        parts = [f"wall {exponent(a['wall'], b['wall'], a['n'], b['n']):.2f}"]
        for k in STAGES:
            if k in a["stages"] and k in b["stages"]:
                parts.append(f"{k} {exponent(a['stages'][k], b['stages'][k], a['n'], b['n']):.2f}")
        print(f"  {a['n']} -> {b['n']}: " + ", ".join(parts))
    if len(rows) > 2:
        a, b = rows[1], rows[-1]
        print(
            f"  {a['n']} -> {b['n']}: "
            + ", ".join(
                f"{k} {exponent(a['stages'][k], b['stages'][k], a['n'], b['n']):.2f}"
                for k in STAGES
                if k in a["stages"] and k in b["stages"]
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
