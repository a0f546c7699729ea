"""The train/val/test split, planned once for validate and preprocess alike (``plan_split``).

Exact duplicates are dropped (one copy kept), near-copies and a manifest's ``group`` column form
groups (bounded, see ``grouping``), and the groups are split stratified by label with
scikit-learn's StratifiedGroupKFold, so no group straddles splits. A manifest ``split`` column
(or ``split=`` given by the caller) is used as given instead; only then is leakage an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from visionops.core.config import PreprocessConfig, ValidateConfig
from visionops.data.grouping import components, cut_components, find_duplicates, near_copy_pairs
from visionops.data.quality import Quarantine, quarantine

SPLITS = ("train", "val", "test")
_MAX_FOLDS = 20


@dataclass(frozen=True)
class SplitPlan:
    """Per manifest row: split (None = left out), group id (-1 = left out), the kept copy it
    duplicates, label conflict, and for held-out rows the closest near-copy in train."""

    split: np.ndarray  # object: "train" | "val" | "test" | None
    group: np.ndarray  # int64
    duplicate_of: list[str | None]
    conflict: list[str | None]
    leak_partner: np.ndarray  # int64 row position of the closest train near-copy, -1 if none
    leak_diff: np.ndarray  # float, NaN if none
    leak_bits: np.ndarray  # int64, -1 if none
    forced: bool  # the split came from the user (a `split` column)
    stats: dict[str, Any] = field(default_factory=dict)
    quarantine: Quarantine | None = None  # rows left out for label conflicts and dropped classes
    near_conflict: list[str | None] = field(default_factory=list)  # a near-copy under another label

    @property
    def kept(self) -> np.ndarray:
        return np.array([s is not None for s in self.split], dtype=bool)

    @property
    def near_copy_in_train(self) -> np.ndarray:
        """True for held-out rows with a near-copy in the training split."""
        return self.leak_partner >= 0


def _fold_layout(share: float, n_groups: int, largest_class: int) -> tuple[int, int]:
    """(folds, folds taken) whose ratio comes close to ``share`` with few folds: coarse folds keep a
    class's few groups together, fine ones match the share; 0.002 per fold weighs the two. (sklearn
    refuses more folds than groups, or than images in the largest class.)"""
    top = min(_MAX_FOLDS, n_groups, largest_class)
    options = [
        (abs(m / k - share) + 0.002 * k, k, m) for k in range(2, top + 1) for m in range(1, k)
    ]
    if not options:
        raise ValueError(
            f"{n_groups} group(s) of images are too few to split into train, val and test"
        )
    _, k, m = min(options)
    return k, m


def _hold_out(y: np.ndarray, g: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Rows of a held-out part of about ``share`` of each class, whole groups only.

    StratifiedGroupKFold makes K folds stratified by label; of them the ``m`` folds whose per-class
    shares together come closest to ``share`` are taken (chosen greedily), since with few groups per
    class the folds differ and the first fold holds the largest groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    k, m = _fold_layout(share, len(np.unique(g)), int(np.unique(y, return_counts=True)[1].max()))
    fold = np.empty(len(y), dtype=np.int64)
    with (
        warnings.catch_warnings()
    ):  # "least populated class has fewer members than n_splits": handled
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for f, (_, idx) in enumerate(splitter.split(np.zeros(len(y)), y, g)):
            fold[idx] = f
    classes, yi = np.unique(y, return_inverse=True)
    counts = np.zeros((k, len(classes)))
    np.add.at(counts, (fold, yi), 1)
    taken: list[int] = []
    for _ in range(m):
        rest = [f for f in range(k) if f not in taken]
        errors = [np.abs(counts[[*taken, f]].sum(0) / counts.sum(0) - share).mean() for f in rest]
        taken.append(rest[int(np.argmin(errors))])
    return np.isin(fold, taken)


def stratified_split(
    labels: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Sequence[int] | None = None,
) -> np.ndarray:
    """Split names per row, stratified by label, no group in two splits, reproducible for a seed.

    Like two train_test_split calls, with groups: test is held out of everything, then val out of the
    rest (``_hold_out``). A class missing from a split afterwards gets one of its smallest groups
    moved there.
    """
    y = np.asarray(labels, dtype=str)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    out = np.full(len(y), "train", dtype=object)
    test = _hold_out(y, g, test_fraction, seed)
    out[test] = "test"
    rest = np.flatnonzero(~test)
    out[rest[_hold_out(y[rest], g[rest], val_fraction / (1.0 - test_fraction), seed)]] = "val"
    _every_class_everywhere(out, y, g)
    return out


def _every_class_everywhere(split: np.ndarray, y: np.ndarray, g: np.ndarray) -> None:
    """Move a smallest group of a class into each split that lacks the class, from the split that
    holds most of it, as long as that split keeps at least one group of the class."""
    for label in np.unique(y):
        for target in SPLITS:
            mine = y == label
            if (mine & (split == target)).any():
                continue
            donors = sorted(SPLITS, key=lambda s: -int((mine & (split == s)).sum()))
            for donor in donors:
                cand = np.unique(g[mine & (split == donor)])
                if donor == target or len(cand) < 2:
                    continue
                sizes = [(int((g == c).sum()), c) for c in cand]
                split[g == min(sizes)[1]] = target
                break


def usable_rows(manifest: pd.DataFrame) -> np.ndarray:
    label = manifest["label"]
    ok = label.notna() & label.astype("string").str.strip().ne("").fillna(False)
    if "decode_error" in manifest.columns:
        ok &= manifest["decode_error"].isna()
    return ok.to_numpy(dtype=bool)


def _forced_split(manifest: pd.DataFrame, split: Sequence[str] | None) -> np.ndarray | None:
    if split is None and "split" in manifest.columns and manifest["split"].notna().any():
        split = manifest["split"].tolist()
    if split is None:
        return None
    given = np.asarray(split, dtype=object)
    bad = [i for i, s in enumerate(given) if s not in SPLITS]
    if bad:
        raise ValueError(
            f"split column: row(s) {bad[:10]} are not one of {list(SPLITS)} "
            f"(e.g. {given[bad[0]]!r} for {manifest['path'].iloc[bad[0]]})"
        )
    return given


def plan_split(
    manifest: pd.DataFrame,
    preprocess: PreprocessConfig | None = None,
    validate: ValidateConfig | None = None,
    *,
    split: Sequence[str] | None = None,
) -> SplitPlan:
    """The one split of a manifest that validate checks and preprocess writes (see module doc).

    Raises ValueError when the kept images are too few to split.
    """
    pre, val = preprocess or PreprocessConfig(), validate or ValidateConfig()
    n = len(manifest)
    forced = _forced_split(manifest, split)
    dups = find_duplicates(manifest, forced)
    usable = usable_rows(manifest)
    held = quarantine(manifest, val, dups, usable)
    kept = usable & ~dups.dropped & ~held.mask
    labels = manifest["label"].astype("string").fillna("").to_numpy(dtype=object)
    pi, pj, pdiff, pbits = (np.zeros(0, np.int64),) * 4
    if {"dhash", "thumb"} <= set(manifest.columns):
        pi, pj, pdiff, pbits = near_copy_pairs(
            manifest["dhash"],
            manifest["thumb"],
            val.near_duplicate_bits,
            val.near_duplicate_max_diff,
        )
        both = kept[pi] & kept[pj]
        pi, pj, pdiff, pbits = pi[both], pj[both], pdiff[both], pbits[both]
    near_conflict = _near_conflicts(manifest, labels, pi, pj)
    # The bound: a group may hold at most this many images of its class, so that every class still
    # has a group small enough for each held-out split.
    fraction = pre.max_group_fraction or min(pre.val_fraction, pre.test_fraction)
    class_size = pd.Series(labels[kept]).value_counts()
    bound = np.array([max(1, int(fraction * class_size.get(lab, 1))) for lab in labels])
    near_group, n_cut = cut_components(n, pi, pj, bound)
    group = near_group
    if "group" in manifest.columns and manifest["group"].notna().any():
        # A user group is never cut: its rows are joined to each other and to their near-copy pieces.
        user = manifest["group"].astype("string").to_numpy(dtype=object)
        ei, ej = [np.arange(n)], [near_group_first(near_group)]
        for _, rows in pd.Series(np.arange(n))[kept & pd.notna(user)].groupby(
            user[kept & pd.notna(user)]
        ):
            ei.append(rows.to_numpy()[:-1])
            ej.append(rows.to_numpy()[1:])
        group = components(n, np.concatenate(ei), np.concatenate(ej))
    pos = np.flatnonzero(kept)
    out = np.full(n, None, dtype=object)
    if forced is not None:
        out[pos] = forced[pos]
    elif len(pos):
        _, dense = np.unique(group[pos], return_inverse=True)
        out[pos] = stratified_split(
            labels[pos], pre.val_fraction, pre.test_fraction, pre.seed, groups=dense
        )
    else:
        raise ValueError("no usable images to split")
    partner, diff, bits = _train_partners(n, out, pi, pj, pdiff, pbits)
    cross = out[pi] != out[pj]
    stats = {
        "forced_split": forced is not None,
        "n_kept": int(kept.sum()),
        "n_duplicates_dropped": int(dups.dropped.sum()),
        "n_label_conflicts": sum(c is not None for c in dups.conflict),
        "n_quarantined": int(held.mask.sum()),
        "dropped_classes": sorted(held.dropped_classes),
        "n_near_copy_label_conflicts": sum(c is not None for c in near_conflict),
        "n_near_copy_pairs": int(len(pi)),
        "n_cut_groups": int(n_cut),
        "n_links_across_split": int(cross.sum()),
        "n_held_out_with_train_copy": int((partner >= 0).sum()),
        "max_group_fraction": float(fraction),
        "split_counts": {s: int((out == s).sum()) for s in SPLITS},
    }
    return SplitPlan(
        out,
        np.where(kept, group, -1).astype(np.int64),
        dups.duplicate_of,
        dups.conflict,
        partner,
        diff,
        bits,
        forced is not None,
        stats,
        held,
        near_conflict,
    )


def _near_conflicts(
    manifest: pd.DataFrame, labels: np.ndarray, pi: np.ndarray, pj: np.ndarray
) -> list[str | None]:
    """Per row, the near-copies it has under another label (reported, kept: unlike exact copies,
    two near-copies may still differ where it matters, e.g. a 1 and a 7 drawn alike)."""
    out: list[str | None] = [None] * len(manifest)
    paths = manifest["path"].astype(str).to_numpy()
    for a, b in zip(pi.tolist(), pj.tolist(), strict=True):
        if labels[a] != labels[b]:
            for me, other in ((a, b), (b, a)):
                if out[me] is None:
                    out[me] = f"{paths[other]} ({labels[other]})"
    return out


def near_group_first(group: np.ndarray) -> np.ndarray:
    """For each row, the first row of its group: edges row -> first keep a group connected."""
    first: dict[int, int] = {}
    return np.array([first.setdefault(int(gid), r) for r, gid in enumerate(group)], dtype=np.int64)


def _train_partners(
    n: int, split: np.ndarray, pi: np.ndarray, pj: np.ndarray, pdiff: np.ndarray, pbits: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each held-out row, its closest (smallest thumbnail difference) near-copy in train."""
    partner, diff, bits = np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, -1, np.int64)
    held = np.isin(split, ["val", "test"])
    train = split == "train"
    for a, b in ((pi, pj), (pj, pi)):
        for k in np.flatnonzero(held[a] & train[b]):
            row = a[k]
            if partner[row] < 0 or pdiff[k] < diff[row]:
                partner[row], diff[row], bits[row] = b[k], pdiff[k], pbits[k]
    return partner, diff, bits
