"""The tables the validation suite runs on, derived from the manifest, and the expectations on each.

Each check is a real GX expectation on one of these tables: per file (decode, label, size, mode,
exact duplicates dropped, copies with two labels, near-copies across the split and under two
labels). The per-class, per-photo, schema and drift tables are in ``data.suite_tables``.
``severity`` says whether a failure stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from visionops.core.config import ValidateConfig

if TYPE_CHECKING:
    from visionops.data.split import SplitPlan


# What each failed expectation means for a person fixing the data, keyed by (type, column).
ADVICE: dict[tuple[str, str], str] = {
    (
        "expect_column_values_to_be_null",
        "decode_error",
    ): "{n} file(s) do not decode as images; repair or remove them from the source",
    (
        "expect_column_values_to_not_be_null",
        "label",
    ): "{n} image(s) have no label; label them or remove them from the source",
    (
        "expect_column_values_to_match_regex",
        "label",
    ): "{n} image(s) have an empty or blank label; label them or remove them from the source",
    (
        "expect_column_values_to_be_null",
        "duplicate_of",
    ): "{n} file(s) have the same content (sha256) and label as another file (observed: the copy kept); "
    "they are dropped from the training data",
    (
        "expect_column_values_to_be_null",
        "label_conflict",
    ): "{n} file(s) have the same content (sha256) as a file with another label, more than "
    "validate.max_label_conflict_fraction={cfg.max_label_conflict_fraction} of the images; keep one "
    "copy of each, correctly labelled",
    (
        "expect_column_values_to_be_between",
        "count",
    ): "{n} class(es) have fewer than {min} usable images, more than "
    "validate.max_dropped_class_fraction={cfg.max_dropped_class_fraction} of the classes (or all of "
    "them); add images or remove the classes from the source",
    (
        "expect_column_values_to_be_null",
        "face_problem",
    ): "{n} photo(s) have no single usable face, more than "
    "validate.max_rejected_photo_fraction={cfg.max_rejected_photo_fraction} of the photos; check the "
    "photos and the faces.* settings",
    (
        "expect_column_values_to_be_null",
        "near_copy_other_label",
    ): "{n} image(s) are near-copies of an image with another label (kept; check their labels)",
    (
        "expect_column_values_to_be_between",
        "imbalance",
    ): "{n} class(es) are more than {cfg.max_imbalance}x smaller than the largest class "
    "(observed: largest/this); add images or rebalance",
    (
        "expect_column_values_to_be_null",
        "variant_of",
    ): "{n} class(es) have a label that differs from another class's only in case or Unicode form "
    "(observed: the other spelling); rename one so that they are one class, or keep both and set "
    "validate.label_variant_severity",
    (
        "expect_column_values_to_be_in_set",
        "label",
    ): "{n} image(s) have a label outside the declared classes (validate.classes)",
    (
        "expect_column_values_to_be_in_set",
        "mode",
    ): "{n} image(s) are not in the configured mode(s) {cfg.modes}",
    (
        "expect_column_values_to_be_between",
        "width",
    ): "{n} image(s) have a width outside [{cfg.min_side}, {cfg.max_side}]",
    (
        "expect_column_values_to_be_between",
        "height",
    ): "{n} image(s) have a height outside [{cfg.min_side}, {cfg.max_side}]",
    (
        "expect_column_values_to_be_between",
        "leak_pixel_diff",
    ): "{n} held-out image(s) are near-copies of a training image (dHash within "
    "{cfg.near_duplicate_bits} bits, thumbnails differ by <= {cfg.near_duplicate_max_diff}/255): "
    "leakage across the user-given split (the manifest's split column)",
    (
        "expect_column_values_to_be_between",
        "cut_link_pixel_diff",
    ): "{n} held-out image(s) are near-copies of a training image across a cut of an over-large near-copy "
    "group (preprocess.max_group_fraction); they are left out of the clean test figures",
    (
        "expect_column_values_to_be_in_set",
        "change",
    ): "{n} class(es) were added, removed or dropped (too few usable images in this run) compared "
    "with the champion's label map",
    (
        "expect_column_values_to_be_between",
        "psi",
    ): "{n} feature(s) drifted from the champion's training data (PSI > {cfg.max_drift_psi})",
    (
        "expect_table_row_count_to_be_between",
        "",
    ): "the manifest has no images; check the data source",
}


@dataclass
class Table:
    """A frame, the column that names its rows, and its expectations with their severities."""

    name: str
    frame: pd.DataFrame
    index_columns: list[str]
    expectations: list[tuple[Any, str]] = field(default_factory=list)  # (GX expectation, severity)


def usable_labels(labels: pd.Series) -> pd.Series:
    return labels.notna() & labels.astype("string").str.strip().ne("").fillna(False)


def nearest_train(
    manifest: pd.DataFrame, splits: Sequence[str], max_bits: int
) -> tuple[list[Any], list[Any], list[Any]]:
    """For each held-out row, its closest training image among those whose 64-bit dHash is within
    ``max_bits``: (mean absolute difference of their 16x16 grey thumbnails, 0-255; that image's row
    position; the Hamming distance). None where no training image is that close.

    The hash finds candidates fast; the thumbnail confirms them, because on small or simple images
    (8x8 digits, objects on black) unrelated pictures share a dHash within a few bits.
    """
    n = len(manifest)
    split = np.asarray(splits, dtype=object)
    hashes = manifest["dhash"].reset_index(drop=True)
    valid = hashes.notna().to_numpy() & manifest["thumb"].notna().to_numpy()
    as_int = np.array(
        [int(h, 16) if ok else 0 for h, ok in zip(hashes, valid, strict=True)], dtype=np.uint64
    )
    diff: list[Any] = [None] * n
    partner: list[Any] = [None] * n
    bits_out: list[Any] = [None] * n
    train_pos = np.flatnonzero((split == "train") & valid)
    if len(train_pos) == 0:
        return diff, partner, bits_out
    thumbs = manifest["thumb"].reset_index(drop=True)
    train_hashes = as_int[train_pos]
    for i in np.flatnonzero(
        np.isin(split, ["val", "test"]) & valid
    ):  # rows left out are not held out
        bits = np.bitwise_count(train_hashes ^ as_int[i])
        close = np.flatnonzero(bits <= max_bits)
        if len(close) == 0:
            continue
        mine = np.frombuffer(thumbs[i], np.uint8).astype(np.float32)
        mads = [
            float(np.abs(np.frombuffer(thumbs[train_pos[j]], np.uint8) - mine).mean())
            for j in close
        ]
        best = close[int(np.argmin(mads))]
        diff[i], partner[i], bits_out[i] = (
            round(min(mads), 3),
            int(train_pos[best]),
            int(bits[best]),
        )
    return diff, partner, bits_out


def file_table(manifest: pd.DataFrame, cfg: ValidateConfig, plan: SplitPlan | None) -> Table:
    import great_expectations.expectations as gxe

    from visionops.data.grouping import find_duplicates

    cols = [
        c
        for c in ("path", "label", "sha256", "decode_error", "width", "height", "mode")
        if c in manifest.columns
    ]
    frame = manifest.loc[:, cols].reset_index(drop=True)
    dups = plan if plan is not None else find_duplicates(manifest)
    # A copy under another label is reported once, as the conflict (an error), not also as dropped.
    frame["duplicate_of"] = pd.array(
        [
            None if c is not None else d
            for d, c in zip(dups.duplicate_of, dups.conflict, strict=True)
        ],
        dtype="string",
    )
    frame["label_conflict"] = pd.array(dups.conflict, dtype="string")
    exp: list[tuple[Any, str]] = [
        (gxe.ExpectTableRowCountToBeBetween(min_value=1), "error"),
        (gxe.ExpectColumnValuesToBeNull(column="decode_error"), "error"),
        (gxe.ExpectColumnValuesToNotBeNull(column="label"), "error"),
        (gxe.ExpectColumnValuesToMatchRegex(column="label", regex=r"\S"), "error"),
        (gxe.ExpectColumnValuesToBeNull(column="duplicate_of"), cfg.duplicate_severity),
        (
            gxe.ExpectColumnValuesToBeNull(
                column="label_conflict", mostly=1.0 - cfg.max_label_conflict_fraction
            ),
            "error",
        ),
    ]
    if cfg.classes is not None:
        exp.append(
            (gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.classes)), "error")
        )
    for col in ("width", "height"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Float64")
            exp.append(
                (
                    gxe.ExpectColumnValuesToBeBetween(
                        column=col, min_value=cfg.min_side, max_value=cfg.max_side
                    ),
                    "error",
                )
            )
    if cfg.modes is not None and "mode" in frame.columns:
        exp.append(
            (
                gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(cfg.modes)),
                "warning" if cfg.convert_modes else "error",
            )
        )
    index = ["path"] if plan is None else _leak_columns(frame, plan, cfg, exp)
    return Table("files", frame, index, exp)


def _leak_columns(
    frame: pd.DataFrame, plan: SplitPlan, cfg: ValidateConfig, exp: list[tuple[Any, str]]
) -> list[str]:
    """The split plan's columns on the file table, and their expectations appended to ``exp``;
    returns the table's index columns. Under a user-given split a leak is the user's to fix
    (leakage_severity); a planned split keeps near-copies together, so what remains are cut links:
    reported, never fatal."""
    import great_expectations.expectations as gxe

    column = "leak_pixel_diff" if plan.forced else "cut_link_pixel_diff"
    paths = frame["path"].tolist()
    frame["split"] = pd.array(list(plan.split), dtype="string")
    frame[column] = pd.array(
        [None if np.isnan(d) else float(d) for d in plan.leak_diff], dtype="Float64"
    )
    frame["leaks_train_file"] = pd.array(
        [paths[p] if p >= 0 else None for p in plan.leak_partner], dtype="string"
    )
    frame["dhash_bits"] = pd.array(
        [b if b >= 0 else None for b in plan.leak_bits.tolist()], dtype="Int64"
    )
    exp.append(
        (
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=cfg.near_duplicate_max_diff, strict_min=True
            ),
            cfg.leakage_severity if plan.forced else "warning",
        )
    )
    if plan.near_conflict:
        frame["near_copy_other_label"] = pd.array(plan.near_conflict, dtype="string")
        exp.append((gxe.ExpectColumnValuesToBeNull(column="near_copy_other_label"), "warning"))
    return ["path", "split", "leaks_train_file", "dhash_bits"]
