"""Ingest -> validate -> preprocess on real photographs (COIL-20 via its labels.csv), real duplicate
files in the digits, and the near-copy test's false-alarm rate on the digits."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from testkit import COIL20, needs_shared
from visionops.core.config import DataConfig, load_config
from visionops.data.checks import nearest_train
from visionops.data.ingest import build_manifest, list_items
from visionops.data.preprocess import load_split, load_stats, preprocess_to
from visionops.data.sources import list_imagefolder
from visionops.data.split import SPLITS, plan_split
from visionops.data.validate import validate_manifest

REPO = Path(__file__).resolve().parents[2]


@needs_shared(COIL20)
def test_coil20_ingest_validate_preprocess(tmp_path: Path) -> None:
    """The shipped conf/coil20.yaml: turntable chains are grouped, no error, every class in every split."""
    cfg = load_config(REPO / "conf" / "coil20.yaml", {"data.path": str(COIL20 / "labels.csv")})
    assert cfg.validate_.leakage_severity == "error"  # no longer relaxed for this data set
    manifest = build_manifest(list_items(cfg.data))
    assert len(manifest) == 1000 and manifest["decode_error"].isna().all()
    assert set(manifest["mode"]) == {"L"}

    plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
    per_class = Counter(zip(manifest["label"], plan.split, strict=True))
    assert all(per_class[(f"obj{c}", s)] >= 1 for c in range(1, 21) for s in SPLITS)
    # Pieces of a chain never straddle splits; the links at cuts are the only near-copies across.
    assert plan.stats["n_near_copy_pairs"] > 500 and plan.stats["n_cut_groups"] > 0
    for gid in np.unique(plan.group):
        assert len(set(plan.split[plan.group == gid])) == 1
    report = validate_manifest(
        manifest, config=cfg.validate_, docs_dir=tmp_path / "docs", plan=plan
    )
    assert report.success, report.summary()
    assert report.statistics["n_classes"] == 20 and report.statistics["n_errors"] == 0
    (cut,) = [i for i in report.issues if i.column == "cut_link_pixel_diff"]
    assert cut.severity == "warning"
    assert (
        report.statistics["split_plan"]["n_held_out_with_train_copy"]
        == int(plan.near_copy_in_train.sum())
        > 0
    )
    assert report.data_docs_index is not None and report.data_docs_index.is_file()

    out = tmp_path / "pre"
    out.mkdir()
    result = preprocess_to(manifest, out, size=32, channels=1, plan=plan)
    assert sum(result.counts.values()) == 1000
    assert abs(result.counts["test"] - 150) <= 20 and abs(result.counts["val"] - 150) <= 20
    train = load_split(out, "train")
    assert isinstance(train.x, np.memmap) and train.x.shape == (result.counts["train"], 1, 32, 32)
    clean = np.load(out / "test_clean.npy")
    assert clean.shape == (result.counts["test"],) and 0 < clean.sum() < len(clean)
    assert 0.05 < load_stats(out)["mean"][0] < 0.95
    assert (out / "data_profile.json").is_file()


def test_digits_with_copied_files_pass_with_a_warning(tmp_path: Path) -> None:
    """Real duplicate files (same label) are dropped and listed; the run is not stopped."""
    source = Path(list_items(DataConfig())[0].path).parents[1]
    shutil.copytree(source, tmp_path / "digits")
    copies = []
    for label, name in (("3", "copy_a.png"), ("7", "copy_b.png")):
        first = sorted((tmp_path / "digits" / label).glob("*.png"))[0]
        copies.append(shutil.copy(first, first.with_name(f"zz_{name}")))
    manifest = build_manifest(list_imagefolder(tmp_path / "digits"))
    plan = plan_split(manifest)
    report = validate_manifest(manifest, docs_dir=tmp_path / "docs", plan=plan)
    assert report.success, report.summary()
    (dup,) = [i for i in report.issues if i.column == "duplicate_of"]
    assert dup.severity == "warning" and dup.description.startswith("2 file(s)")
    assert {row["path"] for row in dup.offending} == {str(p) for p in copies}
    assert all(str(p) in report.summary() for p in copies)
    assert report.statistics["split_plan"]["n_duplicates_dropped"] == 2
    assert plan.kept.sum() == len(manifest) - 2


def test_digits_held_out_images_are_not_false_leaks() -> None:
    """Unrelated 8x8 digits share a dHash within 4 bits all the time; the thumbnail check clears them."""
    manifest = build_manifest(list_items(DataConfig()))
    plan = plan_split(manifest)
    diff, _, bits = nearest_train(manifest, plan.split, max_bits=4)
    candidates = [d for d in diff if d is not None]
    assert len(candidates) > 100  # the hash alone would flag these
    assert min(candidates) > 5.0  # the default near_duplicate_max_diff
    assert plan.stats["n_near_copy_pairs"] <= 5 and not plan.near_copy_in_train.any()


def test_ingest_in_two_worker_processes_gives_the_manifest_of_one() -> None:
    """The digits inspected in two processes, a third of them known from an earlier manifest
    (reused, the rest read): the same rows in the same order as one process reading them all."""
    items = list_items(DataConfig())
    one = build_manifest(items, now=1.0)
    previous = one.iloc[::3]
    two = build_manifest(items, previous, now=1.0, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert two.attrs["reread"] == len(items) - len(previous)
