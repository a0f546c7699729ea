"""Drift alarms on scikit-learn's digits: false alarms on batches like the reference, detections on
shifted batches, and the champion's accuracy on each.

Run: .venv/bin/python bench/drift_alarms.py [--batches 20] [--size 200] [--alpha 0.01]
     (about 40 s on the 2-core CPU VM: 25 s to train, 10 s for the batches)

The model is trained the way the pipeline does it, in process: start, ingest, preprocess, tune
(``tune.n_trials 0``) and train on conf/digits.yaml (small_cnn, 16 px, 15 epochs at most) in a
temporary VISIONOPS_HOME and SQLite MLflow store; every prediction goes through the served pyfunc.

- reference: the champion's test split (as stored by preprocess), its predictions and confidences;
- in-distribution batches: ``--size`` images drawn without replacement from the validation split
  (held out from training; the trainer picked its best epoch on it, which can only make the model
  look more confident there, never less). The split has ~270 images, so the batches overlap: the
  false-alarm count is a count over correlated batches, not 20 independent trials;
- shifted batches, drawn the same way and then transformed: ``inverted`` (255 - x), ``rotated``
  30 degrees (bilinear, black fill), ``blurred`` (Gaussian, sigma 1 px at 16 px), and two other
  data sets without digit labels: random square crops of ``sklearn.datasets.load_sample_images()``
  and COIL-20 objects (/work/shared/datasets/coil20, skipped when absent), both greyed and resized
  to 8x8, the size of the digits' files.

Statistics are in model form (``image_size`` 16) on both sides, since the reference is the stored,
resized test split. Prints a Markdown table: alarms per kind of batch, the share of batches where each
check fired, and the model's accuracy (where labels exist) next to its reference accuracy.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COIL20 = ROOT.parent / "shared" / "datasets" / "coil20" / "images"


def train_champion(home: Path) -> tuple[str, Path]:
    """Run start -> ingest -> preprocess -> tune (0 trials) -> train; the served model's URI and the
    preprocess output folder."""
    os.environ["VISIONOPS_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    os.environ.pop("VISIONOPS_DATA_ROOT", None)
    import optuna

    from visionops.core import tracking
    from visionops.core.storage import StageOutput
    from visionops.pipeline import stages as P

    logging.getLogger("visionops").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.configure()
    ctx = P.start(
        {
            "config": str(ROOT / "conf" / "digits.yaml"),
            "overrides": {
                "tune.n_trials": 0,
                "train.device": "cpu",
                "experiment": "drift-bench",
                "registry.model_name": "drift-bench",
            },
        },
        dag_id="train_pipeline",
        airflow_run_id="manual__drift_bench",
    )
    pre = P.preprocess(ctx, P.ingest(ctx))
    trained = P.train(ctx, pre, P.tune(ctx, pre))
    return trained["model_uri"], StageOutput(
        pre["uri"], pre["fingerprint"], pre["meta"]
    ).local_path()


def sample_photo_crops(n: int, rng: np.random.Generator, side: int = 8) -> list[np.ndarray]:
    """Random square crops (32 to 256 px) of scikit-learn's two sample photos, grey, ``side`` px."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        size = int(rng.integers(32, 257))
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        crop = Image.fromarray(photo[top : top + size, left : left + size]).convert("L")
        out.append(np.asarray(crop.resize((side, side), Image.Resampling.BILINEAR)))
    return out


def coil20_images(side: int = 8) -> list[np.ndarray] | None:
    from PIL import Image

    if not COIL20.is_dir():
        return None
    files = sorted(COIL20.glob("*.png"))
    return [
        np.asarray(Image.open(f).convert("L").resize((side, side), Image.Resampling.BILINEAR))
        for f in files
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=20, help="batches per kind of shift")
    ap.add_argument("--null-batches", type=int, default=20, help="in-distribution batches")
    ap.add_argument("--size", type=int, default=200, help="images per batch")
    ap.add_argument("--alpha", type=float, default=0.01, help="family-wise false-alarm rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", type=Path, default=None, help="write one HTML report per kind here")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        model_uri, folder = train_champion(Path(tmp))
        trained_s = time.perf_counter() - start
        from scipy import ndimage

        import mlflow
        from visionops.data.preprocess import load_labels, load_split
        from visionops.monitoring.drift import CONFIDENCE, PREDICTED_CLASS, Observations
        from visionops.monitoring.report import write_drift_report

        model = mlflow.pyfunc.load_model(model_uri)
        labels = load_labels(folder)
        meta_size = int(load_split(folder, "test").x.shape[-1])

        def observe(images: np.ndarray | list[np.ndarray], true: np.ndarray | None) -> Observations:
            preds = model.predict(images)
            return Observations.from_predictions(images, preds, true=true, image_size=meta_size)

        def raw(name: str) -> tuple[np.ndarray, np.ndarray]:
            split = load_split(folder, name, mmap=False)
            return split.x[:, 0], np.array([labels[int(i)] for i in split.y])

        test_x, test_y = raw("test")
        val_x, val_y = raw("val")
        reference = observe(test_x, test_y)
        rng = np.random.default_rng(a.seed)
        coil = coil20_images()

        def rotate(x: np.ndarray) -> np.ndarray:
            return ndimage.rotate(x, 30, axes=(2, 1), reshape=False, order=1, cval=0)

        def blur(sigma: float):  # noqa: ANN202
            def apply(x: np.ndarray) -> np.ndarray:
                smooth = ndimage.gaussian_filter(x.astype(float), (0, sigma, sigma))
                return np.clip(np.rint(smooth), 0, 255).astype(np.uint8)

            return apply

        def from_val(shift):  # noqa: ANN001, ANN202
            def draw() -> tuple[np.ndarray, np.ndarray]:
                idx = rng.choice(len(val_x), a.size, replace=False)
                return shift(val_x[idx]), val_y[idx]

            return draw

        kinds = {
            "in-distribution (validation split)": from_val(lambda x: x),
            "inverted": from_val(lambda x: 255 - x),
            "rotated 30°": from_val(rotate),
            "blurred (Gaussian, σ=1 px)": from_val(blur(1.0)),
            "blurred (Gaussian, σ=2 px)": from_val(blur(2.0)),
            "sample-photo crops (8 px)": lambda: (sample_photo_crops(a.size, rng), None),
        }
        if coil is not None:
            kinds["COIL-20 objects (8 px)"] = lambda: (
                [coil[i] for i in rng.choice(len(coil), a.size, replace=False)],
                None,
            )
        rows = [
            run_kind(kind, draw, reference, observe, a, a.null_batches if i == 0 else a.batches)
            for i, (kind, draw) in enumerate(kinds.items())
        ]
        if a.report:
            a.report.mkdir(parents=True, exist_ok=True)
            for row in rows:
                name = "".join(ch if ch.isalnum() else "_" for ch in row["kind"])[:40]
                write_drift_report(
                    a.report / f"{name}.html",
                    row["last"],
                    reference,
                    row["last_batch"],
                    model="digits small_cnn (bench)",
                    batch=row["kind"],
                )
    total_s = time.perf_counter() - start
    print(
        f"\nReference: test split, {len(reference)} images, accuracy {reference.accuracy:.4f}, "
        f"mean confidence {reference.confidence.mean():.3f}. Batches of {a.size}, "
        f"alpha {a.alpha} (Holm over the checks). Columns 3-5: share of batches where the check "
        "fired (input: any statistic; the most frequent in brackets).\n"
    )
    print(
        "| batches | alarms | input statistics (KS) | predicted class (χ²) | confidence (MWU) "
        f"| accuracy (reference {reference.accuracy:.3f}) "
        f"| mean confidence (reference {reference.confidence.mean():.3f}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        n, fired = row["n"], row["fired"]
        acc = "–" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        print(
            f"| {row['kind']} | **{row['alarms']}/{n}** | {fired['input'] / n:.0%} "
            f"({row['inputs']}) | {fired[PREDICTED_CLASS] / n:.0%} | {fired[CONFIDENCE] / n:.0%} "
            f"| {acc} | {row['confidence']:.3f} |"
        )
    print(
        f"\ntrain {trained_s:.0f} s, batches {total_s - trained_s:.0f} s, total {total_s:.0f} s",
        file=sys.stderr,
    )


def run_kind(kind: str, draw, reference, observe, a: argparse.Namespace, n: int) -> dict:  # noqa: ANN001
    """``n`` batches from ``draw()`` (images, true labels or None), each tested for drift."""
    from visionops.monitoring.drift import INPUT_PREFIX, detect_drift

    alarms, fired, inputs, accuracies, confidences = 0, Counter(), Counter(), [], []
    result = batch = None
    for i in range(n):
        images, true = draw()
        batch = observe(images, true)
        result = detect_drift(reference, batch, alpha=a.alpha, seed=i)
        alarms += result.drifted
        names = [c.name for c in result.drifted_checks]
        fired.update(names)
        stats = [m.removeprefix(INPUT_PREFIX) for m in names if m.startswith(INPUT_PREFIX)]
        fired["input"] += bool(stats)
        inputs.update(stats)
        if batch.accuracy is not None:
            accuracies.append(batch.accuracy)
        confidences.append(float(batch.confidence.mean()))
    return {
        "kind": kind,
        "n": n,
        "alarms": alarms,
        "fired": fired,
        "inputs": ", ".join(f"{k} {v}" for k, v in inputs.most_common(2)) or "none",
        "accuracy": float(np.mean(accuracies)) if accuracies else None,
        "confidence": float(np.mean(confidences)),
        "last": result,
        "last_batch": batch,
    }


if __name__ == "__main__":
    main()
