"""Ingest -> validate -> preprocess on real photographs (COIL-20 via its labels.csv), and the
leakage check's false-alarm rate on the digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionops.config import DataConfig, load_config
from visionops.data.checks import nearest_train
from visionops.data.ingest import build_manifest, list_items
from visionops.data.preprocess import assign_splits, load_split, load_stats, preprocess_to
from visionops.data.validate import validate_manifest

REPO = Path(__file__).resolve().parents[2]
COIL20 = REPO.parent / "shared" / "datasets" / "coil20"


@pytest.mark.skipif(not (COIL20 / "labels.csv").is_file(), reason=f"COIL-20 not present at {COIL20}")
def test_coil20_ingest_validate_preprocess(tmp_path: Path) -> None:
    cfg = load_config(REPO / "conf" / "coil20.yaml", {"data.path": str(COIL20 / "labels.csv")})
    manifest = build_manifest(list_items(cfg.data))
    assert len(manifest) == 1000 and manifest["decode_error"].isna().all()
    assert set(manifest["mode"]) == {"L"}

    splits = assign_splits(manifest, **cfg.preprocess.model_dump())
    report = validate_manifest(manifest, config=cfg.validate_, docs_dir=tmp_path / "docs", splits=splits)
    assert report.success, report.summary()
    assert report.statistics["n_classes"] == 20 and report.statistics["n_errors"] == 0
    # Turntable views 5 degrees apart are near-copies: recorded (a warning in conf/coil20.yaml).
    assert [i.column for i in report.issues] == ["leak_pixel_diff"]
    assert report.issues[0].severity == "warning"
    assert report.data_docs_index is not None and report.data_docs_index.is_file()

    out = tmp_path / "pre"
    out.mkdir()
    result = preprocess_to(manifest, out, size=32, channels=1, **cfg.preprocess.model_dump())
    assert result.counts == {"train": 700, "val": 150, "test": 150}
    train = load_split(out, "train")
    assert isinstance(train.x, np.memmap) and train.x.shape == (700, 1, 32, 32)
    assert 0.05 < load_stats(out)["mean"][0] < 0.95
    assert (out / "data_profile.json").is_file()


def test_digits_held_out_images_are_not_false_leaks() -> None:
    """Unrelated 8x8 digits share a dHash within 4 bits all the time; the thumbnail check clears them."""
    manifest = build_manifest(list_items(DataConfig()))
    splits = assign_splits(manifest, val_fraction=0.15, test_fraction=0.15, seed=42)
    diff, _, bits = nearest_train(manifest, splits, max_bits=4)
    candidates = [d for d in diff if d is not None]
    assert len(candidates) > 100  # the hash alone would flag these
    assert min(candidates) > 5.0  # the default near_duplicate_max_diff
