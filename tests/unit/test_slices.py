"""Slices of the data (lighting, camera, session): read from a CSV's ``slice_*`` columns or from each
path by ``data.slices``, carried by the manifest and the split into the evaluation, and judged by the
gate value by value with the per-class rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionops.core.config import DataConfig, GateConfig
from visionops.data.ingest import build_manifest
from visionops.data.preprocess import load_slices, preprocess_to
from visionops.data.sources import list_csv, with_slices
from visionops.evaluation.metrics import slice_figures
from visionops.evaluation.paired import PairedPredictions
from visionops.evaluation.report import render_markdown
from visionops.release.gate import decide


def _photos(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    lines = ["path,label,slice_camera"]
    for label in ("a", "b"):
        for i in range(n):
            light = ("leftlight", "rightlight", "normal")[i % 3]
            path = root / label / f"{i}_{light}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
            lines.append(f"{label}/{path.name},{label},{'phone' if i % 2 else ''}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_slices_come_from_csv_columns_and_paths_and_reach_the_test_split(tmp_path: Path) -> None:
    items = with_slices(list_csv(_photos(tmp_path / "src")), {"lighting": "(left|right)light"})
    assert items[0].slices == (("camera", "unknown"), ("lighting", "left"))
    assert items[1].slices == (("camera", "phone"), ("lighting", "right"))
    assert dict(items[2].slices)["lighting"] == "other"
    manifest = build_manifest(items)
    assert {"slice_camera", "slice_lighting"} <= set(manifest.columns)
    out = tmp_path / "pre"
    out.mkdir()
    preprocess_to(manifest, out, size=8, channels=1, test_fraction=0.25, val_fraction=0.25)
    n_test = len(np.load(out / "test_y.npy"))
    slices = load_slices(out, "test", n_test)
    splits = pd.read_parquet(out / "splits.parquet")
    test = splits[splits["split"] == "test"]
    assert slices["lighting"].tolist() == test["slice_lighting"].tolist()
    assert set(slices["camera"]) <= {"phone", "unknown"}


def test_a_slice_pattern_must_compile_and_have_a_group() -> None:
    with pytest.raises(ValueError, match=r"slice 'lighting': 'left' needs a group"):
        DataConfig(slices={"lighting": "left"})
    with pytest.raises(ValueError, match=r"slice 'x': '\(' is no regular expression"):
        DataConfig(slices={"x": "("})
    with pytest.raises(ValueError, match=r"slice name 'Light'"):
        DataConfig(slices={"Light": "(x)"})


def test_the_gate_judges_each_value_of_a_slice() -> None:
    # 'left' lit images: the champion gets 10 of 12, the candidate 5; the rest the same or better.
    y = ["a", "b"] * 6 + ["a", "b"] * 12
    light = ["left"] * 12 + ["even"] * 24
    champ = list(y)
    cand = list(y)
    for i in (0, 1):
        champ[i] = "b" if y[i] == "a" else "a"
    for i in range(7):
        cand[i] = "b" if y[i] == "a" else "a"
    paired = PairedPredictions(y, cand, champ, ["a", "b"], ["a", "b"], slices={"lighting": light})
    cfg = GateConfig(
        min_accuracy=0.0, min_macro_f1=0.0, max_regression=1.0, max_class_regression=10
    )
    decision = decide({"accuracy": 0.8, "macro_f1": 0.8}, {"version": "2"}, cfg, paired)
    assert decision.passed is False
    assert (
        "slice lighting 'left': accuracy 41.7% against 83.3% for champion v2 on the same 12 test "
        "images, 41.7 points down > gate.max_class_regression 10"
    ) in decision.reasons
    assert [r["group"] for r in decision.slices["lighting"]] == ["left", "even"]
    # The evaluation report: accuracy per value, lowest first, the champion's beside it.
    figures = slice_figures(y, cand, champ, {"lighting": np.asarray(light)})
    assert [(r["value"], r["n"]) for r in figures["lighting"]] == [("left", 12), ("even", 24)]
    md = render_markdown(_report(y, cand, figures))
    assert "| left | 12 | 0.4167 | 0.8333 |" in md and "| even | 24 | 1.0000 | 1.0000 |" in md


def _report(y: list[str], cand: list[str], slices: dict) -> dict:
    from visionops.evaluation.metrics import classification_metrics

    metrics = classification_metrics(y, cand, ["a", "b"])
    metrics["ece"] = 0.0
    return {
        "metrics": metrics,
        "calibration_bins": [],
        "champion": None,
        "baselines": [],
        "model_uri": "runs:/r/model",
        "test_size": len(y),
        "labels": ["a", "b"],
        "slices": slices,
    }
