"""The shipped configs against the simple baselines, on every real set we have and small hard ones.

Run: .venv/bin/python bench/vs_baselines.py [--sets digits coil20 ...] [--seeds 1 2 3] [--set KEY=VALUE]

For each set and split seed the shipped config of the set's kind runs through the pipeline's own
stages, in process (start -> ingest -> validate -> preprocess -> tune -> train -> evaluate, the
champion None), each run in a fresh ``VISIONOPS_HOME`` (data root, Optuna journal) and a fresh
sqlite MLflow store. Only what points at the data is overridden (``data.*``, ``validate.*`` for
the derived sets, experiment and registry names), plus the seed: ``preprocess.seed``,
``train.seed`` and ``tune.seed`` are all the split seed. The baselines are the classical models
of ``visionops.evaluation.baselines`` (logistic regression, PCA + RBF SVM) on the same splits and
test images: the evaluate stage's ``baselines`` when it reports them, else fitted here with the
same call. The model's figure is the evaluate stage's test accuracy.

Sets (the derived ones are written as ``path,label`` CSV manifests into a temporary folder):

* ``digits``: conf/digits.yaml as shipped (scikit-learn's 1,797 digits at 16 px).
* ``coil20``: conf/coil20.yaml (COIL-20, 20 objects x 50 views, 32 px).
* ``yale``: conf/faces.yaml (the Yale faces, 15 people, dlib embedding + head).
* ``digits-small``: 30 digits per class (drawn with a fixed seed), at 8 px.
* ``coil20-small``: every third view of each COIL-20 object (17 views, 15 degrees apart), at 16 px.
* ``yale-small``: 6 distinct photos per person (drawn with a fixed seed) of the Yale faces.

It prints a line per run (model and baseline test accuracy, the model's best validation accuracy,
the tuning study's best value, wall time of the stages) and a Markdown table per set: mean
accuracies over the seeds and model minus the best baseline (the baseline with the higher mean),
in points. ``--set`` adds overrides to every run (experiments: e.g. ``--set train.max_epochs=30``).

Cost on the 2-core development machine (CPU only, shared with other jobs), 3 seeds: a run takes
about 60 s on digits, 80 s on COIL-20, 50 s on Yale, 20-35 s on the small sets (stages only; a
few seconds more to start the process); all six sets about 15 min. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
COIL20 = SHARED / "coil20"
YALE = SHARED / "yalefaces"
BASELINES = ("logistic_regression", "pca_svm")
SHORT = {"logistic_regression": "LR", "pca_svm": "PCA-SVM"}
SETS = ("digits", "coil20", "yale", "digits-small", "coil20-small", "yale-small")
DRAW_SEED = 0  # the draw of the derived sets' images: fixed, the same for every split seed


# --- the sets ------------------------------------------------------------------------------------


def _manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["path,label"] + [f"{p},{label}" for p, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _copy(src: Path | str, dst: Path) -> str:
    """A manifest's files must lie under its folder: the derived sets get copies."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)


def build_digits_small(folder: Path, per_class: int = 30) -> Path:
    """``per_class`` of scikit-learn's digits per class, written as 8x8 PNG (as the digits source does)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(DRAW_SEED)
    rows = []
    for label in range(10):
        chosen = rng.choice(np.flatnonzero(digits.target == label), per_class, replace=False)
        for i in sorted(chosen):
            pixels = np.clip(np.rint(digits.images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            out = folder / "images" / str(label) / f"{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(out)
            rows.append((str(out), str(label)))
    return _manifest(folder / "labels.csv", rows)


def build_coil20_small(folder: Path, step: int = 3) -> Path:
    """Every ``step``-th view of each COIL-20 object (views 0, 3, ..., 48: 17 an object)."""
    rows = []
    for line in (COIL20 / "labels.csv").read_text().splitlines()[1:]:
        path, label = line.rsplit(",", 1)
        view = int(Path(path).stem.rsplit("__", 1)[1])
        if view % step == 0:
            rows.append((_copy(COIL20 / path, folder / path), label))
    return _manifest(folder / "labels.csv", rows)


def build_yale_small(folder: Path, per_class: int = 6) -> Path:
    """``per_class`` photos per person, drawn with a fixed seed among the byte-distinct ones (Yale
    has 9 photos identical to another of the same person, which validate would drop)."""
    import numpy as np

    by_person: dict[str, list[str]] = {}
    seen: set[str] = set()
    for line in (YALE / "labels.csv").read_text().splitlines()[1:]:
        path, label = line.rsplit(",", 1)
        digest = hashlib.sha256((YALE / path).read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            by_person.setdefault(label, []).append(str(YALE / path))
    rng = np.random.default_rng(DRAW_SEED)
    rows = []
    for label in sorted(by_person):
        paths = sorted(by_person[label])
        for i in sorted(rng.choice(len(paths), per_class, replace=False)):
            rows.append((_copy(paths[i], folder / Path(paths[i]).relative_to(YALE)), label))
    return _manifest(folder / "labels.csv", rows)


def set_spec(name: str, data_dir: Path) -> tuple[str, dict]:
    """The config file of the set's kind and the overrides that point it at the data."""
    if name == "digits":
        return "conf/digits.yaml", {}
    if name == "coil20":
        return "conf/coil20.yaml", {"data.path": str(COIL20 / "labels.csv")}
    if name == "yale":
        return "conf/faces.yaml", {"data.path": str(YALE / "labels.csv")}
    if name == "digits-small":
        manifest = build_digits_small(data_dir / name)
        return "conf/digits.yaml", {
            "data.source": "csv",
            "data.path": str(manifest),
            "data.image_size": 8,
        }
    if name == "coil20-small":
        manifest = build_coil20_small(data_dir / name)
        return "conf/coil20.yaml", {
            "data.path": str(manifest),
            "data.image_size": 16,
            "validate.min_images_per_class": 10,
        }
    if name == "yale-small":
        manifest = build_yale_small(data_dir / name)
        return "conf/faces.yaml", {"data.path": str(manifest), "validate.min_images_per_class": 5}
    raise ValueError(f"unknown set {name!r}; known: {SETS}")


# --- one run (a child process with its own home and MLflow store) ---------------------------------


def _baselines_here(pre: dict) -> list[dict]:
    """The evaluate stage's call, made here: on the preprocess output's splits."""
    import numpy as np

    from visionops.core.config import BaselineConfig
    from visionops.core.storage import StageOutput
    from visionops.data.preprocess import load_labels, load_split
    from visionops.evaluation.baselines import fit_baselines

    folder = StageOutput(pre["uri"], pre["fingerprint"], pre["meta"]).local_path()
    tr, va, te = (load_split(folder, s) for s in ("train", "val", "test"))
    labels = load_labels(folder)
    truth = np.array([labels[int(i)] for i in te.y])
    out = []
    for fit in fit_baselines((tr.x, tr.y), (va.x, va.y), te.x, labels, BaselineConfig()):
        acc = (
            None if fit.predictions is None else float(np.mean(np.array(fit.predictions) == truth))
        )
        out.append(
            {
                "name": fit.name,
                "accuracy": acc,
                "skipped": fit.skipped,
                "val_accuracy": fit.val_accuracy,
            }
        )
    return out


def served_val_accuracy(pre: dict, model_uri: str) -> float:
    """The served model (test-time views and all, as evaluate scores it) on the validation split: the
    figure that settings are chosen on (the train stage's own is without test-time views)."""
    import numpy as np

    from visionops.core.storage import StageOutput
    from visionops.data.preprocess import load_labels, load_split
    from visionops.evaluation.scoring import predict_labels
    from visionops.serving.model import to_raw_images

    folder = StageOutput(pre["uri"], pre["fingerprint"], pre["meta"]).local_path()
    labels, val = load_labels(folder), load_split(folder, "val")
    predicted, _ = predict_labels(model_uri, to_raw_images(np.asarray(val.x)))
    return float(np.mean(np.array(predicted) == np.array([labels[int(i)] for i in val.y])))


def run_one(config: str, overrides: dict, run_name: str) -> dict:
    import logging

    import optuna

    from visionops.pipeline import stages as P

    logging.getLogger("visionops").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    ctx = P.start(
        {"config": config, "overrides": overrides},
        dag_id="train_pipeline",
        airflow_run_id=f"manual__{run_name}",
    )
    ing = P.ingest(ctx)
    P.validate(ctx, ing)
    pre = P.preprocess(ctx, ing)
    tuned = P.tune(ctx, pre)
    trained = P.train(ctx, pre, tuned)
    ev = P.evaluate(ctx, pre, trained)
    seconds = time.perf_counter() - start
    # A K-fold ensemble's members trained on val: its out-of-fold accuracy is the figure instead.
    ensemble = (trained.get("ensemble_members") or 1) > 1
    served_val = None if ensemble else served_val_accuracy(pre, trained["model_uri"])
    reported = [b for b in ev.get("baselines") or [] if b.get("accuracy") is not None]
    baselines = ev["baselines"] if reported else _baselines_here(pre)
    return {
        "accuracy": ev["metrics"]["accuracy"],
        "val_accuracy": trained["best_val_accuracy"],
        "served_val_accuracy": served_val,
        "tune_best": tuned.get("best_value"),
        "params": tuned["best_params"],
        "epochs": trained.get("epochs_trained"),
        "baselines": [
            {k: b.get(k) for k in ("name", "accuracy", "skipped", "val_accuracy")}
            for b in baselines
        ],
        "baselines_from": "evaluate" if reported else "bench",
        "seconds": seconds,
    }


def child_main(args: argparse.Namespace) -> None:
    payload = json.loads(args.child)
    result = run_one(payload["config"], payload["overrides"], payload["run_name"])
    print("RESULT " + json.dumps(result))


def spawn(config: str, overrides: dict, run_name: str, home: Path) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        {
            "VISIONOPS_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("VISIONOPS_DATA_ROOT", None)
    payload = json.dumps({"config": config, "overrides": overrides, "run_name": run_name})
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-800:]
        return {
            "error": f"exit {proc.returncode}: {tail}",
            "process_seconds": time.perf_counter() - start,
        }
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["process_seconds"] = time.perf_counter() - start
    return result


# --- the table ------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, list[dict]]) -> str:
    head = (
        "| set | runs | model mean accuracy | LR mean | PCA-SVM mean | model - best baseline (points)"
        " | model val accuracy | mean wall time per run |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        model = _mean([r["accuracy"] for r in ok])
        base = {
            b: _mean([x["accuracy"] for r in ok for x in r["baselines"] if x["name"] == b])
            for b in BASELINES
        }
        known = [v for v in base.values() if v is not None]
        gap = None if model is None or not known else 100 * (model - max(known))
        rows.append(
            f"| {name} | {len(ok)}/{len(runs)} | {_fmt(model)} | {_fmt(base['logistic_regression'])} "
            f"| {_fmt(base['pca_svm'])} | {_fmt(gap, '+.2f')} "
            f"| {_fmt(_mean([r['val_accuracy'] for r in ok]))} "
            f"| {_fmt(_mean([r['seconds'] for r in ok]), '.0f')} s |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for every run (experiments), e.g. --set train.max_epochs=30",
    )
    ap.add_argument("--json", type=Path, help="write every run's figures to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return
    from visionops.core.config import parse_override

    extra = dict(parse_override(item) for item in args.set)
    print(f"sets {args.sets}, seeds {args.seeds}, extra overrides {extra or 'none'}", flush=True)
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vs-baselines-") as tmp:
        tmp_path = Path(tmp)
        for name in args.sets:
            config, data = set_spec(name, tmp_path / "data")
            results[name] = []
            for seed in args.seeds:
                overrides = {
                    **data,
                    "experiment": f"bench-{name}",
                    "registry.model_name": f"bench-{name}",
                    "preprocess.seed": seed,
                    "train.seed": seed,
                    "tune.seed": seed,
                    **extra,
                }
                home = tmp_path / f"home-{name}-{seed}"
                r = spawn(config, overrides, f"bench-{name}-{seed}", home)
                results[name].append({"seed": seed, **r})
                if "error" in r:
                    print(f"{name:13s} seed {seed}: FAILED {r['error']}", flush=True)
                    continue
                base = "  ".join(
                    f"{SHORT.get(b['name'], b['name'])} {_fmt(b['accuracy'])}"
                    for b in r["baselines"]
                )
                print(
                    f"{name:13s} seed {seed}: model {r['accuracy']:.4f}  {base}  "
                    f"(val {r['val_accuracy']:.4f}, tune best {_fmt(r['tune_best'])}, "
                    f"{r['epochs']} epochs)  {r['seconds']:.0f} s "
                    f"[{r['process_seconds']:.0f} s with start-up; baselines from {r['baselines_from']}]",
                    flush=True,
                )
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
