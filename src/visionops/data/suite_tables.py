"""The tables a manifest is validated on beyond its files, and ``suite_tables``, which assembles them
all: usable images per class (classes left too small are dropped, ``data.quality``), one usable face
per photo (face use), classes against the champion's (schema) and drift against its training data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from visionops.core.config import ValidateConfig
from visionops.data.checks import Table, usable_labels
from visionops.data.drift import drift_table
from visionops.data.sources import label_key

if TYPE_CHECKING:
    from visionops.data.split import SplitPlan


def suite_tables(
    manifest: pd.DataFrame,
    cfg: ValidateConfig,
    plan: SplitPlan | None,
    reference: dict[str, Any] | None,
    faces: dict[str, Any] | None,
) -> tuple[list[Table], dict[str, Any]]:
    """The tables to validate, and what the policy's warnings name (``details``): each dropped
    class with why, the pairs of classes that share images."""
    from visionops.data.checks import file_table
    from visionops.data.grouping import Duplicates, find_duplicates
    from visionops.data.quality import class_loss, conflict_lines, quarantine
    from visionops.data.split import usable_rows

    if plan is not None and plan.quarantine is not None:  # what preprocess will leave out
        dups, held = Duplicates(plan.duplicate_of, plan.conflict), plan.quarantine
    else:
        dups = find_duplicates(manifest)
        held = quarantine(manifest, cfg, dups, usable_rows(manifest))
    per_class = dict(held.usable_per_class)
    for label in (faces or {}).get("per_class", {}):  # a person who lost every photo has no rows
        per_class.setdefault(str(label), 0)
    per_class = dict(sorted(per_class.items()))
    small = [k for k, n in per_class.items() if n < cfg.min_images_per_class]
    whys = {k: class_loss(k, manifest, dups, cfg.min_images_per_class, faces) for k in small}
    details = {
        "label_conflicts": conflict_lines(manifest, dups),
        "small_classes": list(whys.values()),
        "dropped_classes": whys,
    }
    tables = [
        file_table(manifest, cfg, plan),
        class_table(per_class, whys, cfg.min_images_per_class, cfg),
    ]
    if faces and faces.get("photos"):
        tables.append(photo_table(faces, cfg))
    if reference and reference.get("labels"):
        tables.append(schema_table(manifest, reference["labels"], cfg, set(small)))
    if reference and reference.get("profile"):
        drift = drift_table_for(manifest, reference["profile"], cfg)
        if drift is not None:
            tables.append(drift)
    return tables, details


def class_table(
    per_class: dict[str, int], whys: dict[str, str], min_per_class: int, cfg: ValidateConfig
) -> Table:
    """Usable images per class (after faces, exact copies and label conflicts): a class below
    ``min_per_class`` is dropped, and the run stops when more than
    ``validate.max_dropped_class_fraction`` of the classes are (``mostly``)."""
    import great_expectations.expectations as gxe

    counts = pd.DataFrame(
        {
            "label": pd.array(list(per_class), dtype="string"),
            "count": np.array(list(per_class.values()), dtype=int),
            "why": pd.array([whys.get(k) for k in per_class], dtype="string"),
        }
    )
    # How many times larger the biggest class is than this one: the small classes are the problem.
    # Dropped classes get no ratio (null is skipped): the count check already names them.
    nonzero = counts["count"].where(counts["count"] >= min_per_class)
    counts["imbalance"] = (nonzero.max() / nonzero).round(3).astype("Float64")
    # Labels that are one key apart only by case or Unicode form: the other spellings of each.
    spellings: dict[str, list[str]] = {}
    for label in per_class:
        spellings.setdefault(label_key(str(label)), []).append(str(label))
    counts["variant_of"] = pd.array(
        [
            ", ".join(o for o in spellings[label_key(str(k))] if o != str(k)) or None
            for k in per_class
        ],
        dtype="string",
    )
    mostly = 1.0 - cfg.max_dropped_class_fraction
    if len(counts) and (counts["count"] < min_per_class).all():
        mostly = 1.0  # never every class: nothing would be left to learn
    return Table(
        "class_counts",
        counts,
        ["label", "why"],
        [
            (
                gxe.ExpectColumnValuesToBeBetween(
                    column="count", min_value=min_per_class, mostly=mostly
                ),
                "error",
            ),
            (
                gxe.ExpectColumnValuesToBeBetween(column="imbalance", max_value=cfg.max_imbalance),
                cfg.imbalance_severity,
            ),
            (gxe.ExpectColumnValuesToBeNull(column="variant_of"), cfg.label_variant_severity),
        ],
    )


def photo_table(faces: dict[str, Any], cfg: ValidateConfig) -> Table:
    """One row per photo given to face detection: the reason it has no usable face (null when it
    has one). More than ``validate.max_rejected_photo_fraction`` of such photos stops the run."""
    import great_expectations.expectations as gxe

    rejected = {str(r["path"]): r for r in faces.get("rejected", [])}
    kept = int(faces.get("photos", 0)) - len(rejected)
    frame = pd.DataFrame(
        {
            "path": pd.array(
                [*rejected, *[f"(face found) #{i}" for i in range(max(kept, 0))]], dtype="string"
            ),
            "label": pd.array(
                [str(r.get("label")) for r in rejected.values()] + [None] * max(kept, 0),
                dtype="string",
            ),
            "face_problem": pd.array(
                [r["reason"] for r in rejected.values()] + [None] * max(kept, 0), dtype="string"
            ),
        }
    )
    return Table(
        "photos",
        frame,
        ["path", "label"],
        [
            (
                gxe.ExpectColumnValuesToBeNull(
                    column="face_problem", mostly=1.0 - cfg.max_rejected_photo_fraction
                ),
                "error",
            )
        ],
    )


def _change(label: str, current: set[str], before: set[str], dropped: set[str]) -> str:
    if label in current:
        return "unchanged" if label in before else "added"
    return "dropped" if label in dropped else "removed"


def schema_table(
    manifest: pd.DataFrame,
    champion_labels: list[str],
    cfg: ValidateConfig,
    dropped: set[str] | None = None,
) -> Table:
    """Classes against the champion's: ``dropped`` ones are in the data but left out of this run
    (too few usable images), ``removed`` ones are no longer in the data at all."""
    import great_expectations.expectations as gxe

    labels = manifest["label"]
    dropped = dropped or set()
    current = set(labels[usable_labels(labels)].astype(str)) - dropped
    before = set(map(str, champion_labels))
    rows = [
        {"label": lab, "change": _change(lab, current, before, dropped)}
        for lab in sorted(current | before)
    ]
    frame = pd.DataFrame(rows, columns=["label", "change"])
    return Table(
        "schema",
        frame,
        ["label"],
        [
            (
                gxe.ExpectColumnValuesToBeInSet(column="change", value_set=["unchanged"]),
                cfg.schema_change_severity,
            )
        ],
    )


def drift_table_for(manifest: pd.DataFrame, profile: dict, cfg: ValidateConfig) -> Table | None:
    import great_expectations.expectations as gxe

    rows = drift_table(manifest, profile)
    if not rows:
        return None
    return Table(
        "drift",
        pd.DataFrame(rows),
        ["feature"],
        [
            (
                gxe.ExpectColumnValuesToBeBetween(column="psi", max_value=cfg.max_drift_psi),
                cfg.drift_severity,
            )
        ],
    )
