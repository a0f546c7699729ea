"""visionops.data.split.plan_split on real files through ingest and the real GX suite: near-copy
chains grouped and cut, a manifest's group and split columns, leakage under a user-given split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from visionops.core.config import PreprocessConfig, ValidateConfig
from visionops.data.ingest import build_manifest
from visionops.data.preprocess import preprocess_to
from visionops.data.sources import Item, SourceError, list_csv
from visionops.data.split import SPLITS, plan_split
from visionops.data.validate import validate_manifest


def _chain_corpus(tmp_path: Path, corpus) -> list[Item]:
    """Class a: 30 views of one picture, each 2 grey levels brighter than the last (so each view is a
    near-copy of its 2 neighbours on each side, and not of views further away: a chain). Classes b
    and c: 30 distinct pictures each."""
    items = []
    base = corpus.textured(7) // 2 + 40
    for k in range(30):
        items.append(
            Item(
                str(
                    corpus.save(
                        tmp_path / "src" / "a" / f"{k:02d}.png", (base + 2 * k).astype(np.uint8)
                    )
                ),
                "a",
            )
        )
    for label, offset in (("b", 100), ("c", 200)):
        for k in range(30):
            items.append(
                Item(
                    str(
                        corpus.save(
                            tmp_path / "src" / label / f"{k:02d}.png", corpus.textured(offset + k)
                        )
                    ),
                    label,
                )
            )
    return items


def test_a_chain_of_near_copies_is_cut_and_reaches_every_split(tmp_path: Path, corpus) -> None:
    manifest = build_manifest(_chain_corpus(tmp_path, corpus))
    plan = plan_split(manifest, PreprocessConfig(), ValidateConfig())
    chain = np.flatnonzero(manifest["label"].to_numpy() == "a")
    assert plan.stats["n_near_copy_pairs"] == 29 + 28  # neighbours 1 and 2 apart, nothing else
    assert plan.stats["n_cut_groups"] == 1
    # Cut into contiguous pieces of at most 15% of the class (4 views), each in one split.
    pieces = [chain[plan.group[chain] == g] for g in np.unique(plan.group[chain])]
    assert all(len(p) <= 4 and np.all(np.diff(p) == 1) for p in pieces)
    assert all(len(set(plan.split[p])) == 1 for p in pieces)
    assert {s for s in plan.split[chain]} == set(SPLITS)
    # Only the links at cut boundaries may cross the split; the held-out views they touch are flagged.
    cross = [
        (i, j) for i in chain for j in chain if i < j <= i + 2 and plan.split[i] != plan.split[j]
    ]
    assert plan.stats["n_links_across_split"] == len(cross) > 0
    assert all(plan.group[i] != plan.group[j] for i, j in cross)
    flagged = set(np.flatnonzero(plan.near_copy_in_train))
    touched = {
        k
        for i, j in cross
        for k in (i, j)
        if plan.split[k] != "train" and "train" in (plan.split[i], plan.split[j])
    }
    assert flagged == touched
    np.testing.assert_array_equal(
        plan.split, plan_split(manifest, PreprocessConfig(), ValidateConfig()).split
    )

    report = validate_manifest(
        manifest,
        config=ValidateConfig(min_images_per_class=4),
        docs_dir=tmp_path / "docs",
        plan=plan,
    )
    assert report.success, report.summary()
    assert flagged  # for this seed, some held-out views sit next to a cut from a train piece
    (cut,) = [i for i in report.issues if i.column == "cut_link_pixel_diff"]
    assert cut.severity == "warning"
    assert {row["path"] for row in cut.offending} == {manifest["path"].iloc[k] for k in flagged}

    out = tmp_path / "pre"
    out.mkdir()
    preprocess_to(manifest, out, size=8, channels=1, plan=plan)
    test_rows = np.flatnonzero(plan.split == "test")
    np.testing.assert_array_equal(
        np.load(out / "test_clean.npy"), ~plan.near_copy_in_train[test_rows]
    )


def test_manifest_group_column_keeps_groups_together(tmp_path: Path, corpus) -> None:
    lines = ["path,label,group"]
    for label, offset in (("a", 0), ("b", 50)):
        for k in range(40):
            corpus.save(tmp_path / label / f"{k}.png", corpus.textured(offset + k))
            lines.append(f"{label}/{k}.png,{label},{label}-session{k // 4}")  # sessions of 4 photos
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    manifest = build_manifest(list_csv(tmp_path / "m.csv"))
    assert manifest["group"].iloc[5] == "a-session1"
    plan = plan_split(manifest, PreprocessConfig(seed=3), ValidateConfig())
    for _, rows in manifest.groupby("group").groups.items():
        assert len(set(plan.split[np.asarray([manifest.index.get_loc(r) for r in rows])])) == 1
    assert set(Counter(zip(manifest["label"], plan.split, strict=True))) == {
        (lab, s) for lab in "ab" for s in SPLITS
    }


def test_user_split_is_used_as_given_and_leakage_stops_the_run(tmp_path: Path, corpus) -> None:
    rows = ["path,label,split"]
    for label, offset in (("a", 0), ("b", 50)):
        for k in range(6):
            corpus.save(tmp_path / label / f"{k}.png", corpus.textured(offset + k))
            rows.append(
                f"{label}/{k}.png,{label},{('train', 'train', 'train', 'train', 'val', 'test')[k]}"
            )
    original = tmp_path / "a" / "0.png"
    near = corpus.save(
        tmp_path / "a" / "near.png",
        np.clip(corpus.textured(0).astype(int) + 2, 0, 255).astype(np.uint8),
    )
    rows.append("a/near.png,a,test")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    manifest = build_manifest(list_csv(tmp_path / "m.csv"))
    plan = plan_split(manifest, PreprocessConfig(), ValidateConfig())
    assert plan.forced and list(plan.split) == manifest["split"].tolist()

    report = validate_manifest(
        manifest,
        config=ValidateConfig(min_images_per_class=4),
        docs_dir=tmp_path / "docs",
        plan=plan,
    )
    assert not report.success
    (leak,) = [i for i in report.issues if i.column == "leak_pixel_diff"]
    assert leak.severity == "error"
    assert leak.offending[0]["path"] == str(near.resolve())
    assert leak.offending[0]["leaks_train_file"] == str(original.resolve())
    relaxed = validate_manifest(
        manifest,
        config=ValidateConfig(min_images_per_class=4, leakage_severity="warning"),
        docs_dir=tmp_path / "docs2",
        plan=plan,
    )
    assert relaxed.success

    (tmp_path / "bad.csv").write_text("path,label,split\na/0.png,a,training\n")
    with pytest.raises(SourceError, match=r"bad.csv:2: split 'training' is not one of"):
        list_csv(tmp_path / "bad.csv")
