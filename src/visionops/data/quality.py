"""One policy for imperfect data: quarantine what touches a few percent, stop only when much is broken.

Real collections are never clean: a person whose photos mostly have no usable face, two classes drawn
identically, exact copies, near-copies under two labels. Each such problem is a *minority problem*
with a count, a share of the data, a threshold (the largest share handled without stopping) and a
severity. Below its threshold the affected images or classes are left out of train, val and test
(quarantined) and named in the validation report, the run summary and the model card; above it the
run stops with an error that names them. The thresholds are Great Expectations' ``mostly`` on the
expectation that checks the problem (``1 - threshold``), so the decision is GX's, in one place.

What is left out, row by row, is decided here (``quarantine``) from the manifest alone, so that
validate (which reports it) and preprocess (which writes the splits) leave out the same rows.

| problem | unit | left out | threshold |
|---|---|---|---|
| same content under two labels | images | every copy | ``validate.max_label_conflict_fraction`` |
| classes too small (after faces, copies) | classes | the class | ``validate.max_dropped_class_fraction`` |
| photos without one usable face | photos | the photo | ``validate.max_rejected_photo_fraction`` |
| exact copies under one label | images | all but one | never fatal (``validate.duplicate_severity``) |
| near-copies under two labels | images | nothing (kept) | never fatal: reported |
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from visionops.core.config import ValidateConfig
from visionops.data.grouping import Duplicates

CONFLICT = "label conflict"
CLASS_DROPPED = "class too small"
_SINGULAR = {"images": "image", "classes": "class", "photos": "photo"}
_MOST_SHARED = (
    0.5  # two classes sharing more than this share of the smaller one: "cannot be told apart"
)


@dataclass(frozen=True)
class Quarantine:
    """Rows left out of the splits beyond dropped copies (``reason`` per row, None when kept), and
    the classes dropped because too few usable images remained (label -> usable images)."""

    reason: list[str | None]
    dropped_classes: dict[str, int]
    usable_per_class: dict[str, int]

    @property
    def mask(self) -> np.ndarray:
        return np.array([r is not None for r in self.reason], dtype=bool)


def quarantine(
    manifest: pd.DataFrame, cfg: ValidateConfig, dups: Duplicates, usable: np.ndarray
) -> Quarantine:
    """Every copy of a content under two labels, then every class left below
    ``cfg.min_images_per_class`` usable images (after copies and conflicts), left out with a reason.

    ``usable``: rows with a label that decode. Declared classes (``cfg.classes``) without a usable
    image are dropped classes too (with 0 images).
    """
    conflict = np.array([c is not None for c in dups.conflict], dtype=bool)
    labels = manifest["label"].astype("string").fillna("").to_numpy(dtype=object)
    remaining = usable & ~dups.dropped & ~conflict
    counts = Counter(str(lab) for lab in labels[remaining])
    every = set(map(str, labels[usable])) | set(cfg.classes or [])
    per_class = {lab: counts.get(lab, 0) for lab in sorted(every)}
    dropped = {lab: n for lab, n in per_class.items() if n < cfg.min_images_per_class}
    if len(dropped) == len(per_class):  # never every class: validation stops the run naming them
        dropped = {}
    reason: list[str | None] = [None] * len(manifest)
    for i in range(len(manifest)):
        if conflict[i]:
            reason[i] = CONFLICT
        elif usable[i] and str(labels[i]) in dropped:
            reason[i] = CLASS_DROPPED
    return Quarantine(reason, dropped, per_class)


def class_loss(
    label: str,
    manifest: pd.DataFrame,
    dups: Duplicates,
    min_images: int,
    faces: dict[str, Any] | None = None,
) -> str:
    """Why a class has too few usable images, in one line a person can act on, e.g.
    ``s2: 5 usable of 10 photos (3 no face found, 2 face too small); needs validate.min_images_per_class=6``."""
    mine = (manifest["label"].astype("string") == label).fillna(False).to_numpy(dtype=bool)
    lost: Counter[str] = Counter()
    face_stats = (faces or {}).get("per_class", {}).get(label)
    if face_stats:
        total, unit = int(face_stats["photos"]), "photos"
        lost.update({k: int(v) for k, v in face_stats.get("lost", {}).items()})
    else:
        total, unit = int(mine.sum()), "images"
    conflicts = int(sum(1 for i in np.flatnonzero(mine) if dups.conflict[i] is not None))
    copies = int((mine & dups.dropped).sum()) - int(
        sum(1 for i in np.flatnonzero(mine & dups.dropped) if dups.conflict[i] is not None)
    )
    if conflicts:
        lost["label conflicts" if conflicts > 1 else "label conflict"] += conflicts
    if copies:
        lost["exact copies" if copies > 1 else "exact copy"] += copies
    if "decode_error" in manifest.columns:
        broken = int((mine & manifest["decode_error"].notna().to_numpy()).sum())
        if broken:
            lost["undecodable"] += broken
    usable = total - sum(lost.values())
    why = ", ".join(f"{n} {kind}" for kind, n in sorted(lost.items(), key=lambda kv: -kv[1]))
    return (
        f"{label}: {max(usable, 0)} usable of {total} {unit}"
        + (f" ({why})" if why else "")
        + f"; needs validate.min_images_per_class={min_images}"
    )


def conflict_lines(manifest: pd.DataFrame, dups: Duplicates, max_lines: int = 10) -> list[str]:
    """Label conflicts summed up per pair of classes: one line a pair, not one a file.

    Two classes that share most of their images cannot be told apart by the pixels (the same glyph
    drawn under two names): the line says so and suggests merging them.
    """
    labels = manifest["label"].astype("string").fillna("<none>").to_numpy(dtype=object)
    sizes = Counter(map(str, labels))
    shared: dict[tuple[str, str], set[str]] = defaultdict(set)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    frame = pd.DataFrame(
        {
            "sha": manifest["sha256"].to_numpy(),
            "label": labels,
            "path": manifest["path"].astype(str),
        }
    )
    rows = [i for i, c in enumerate(dups.conflict) if c is not None]
    for sha, same in frame.iloc[rows].groupby("sha", sort=False):
        names = sorted(set(map(str, same["label"])))
        first = {lab: path for lab, path in zip(same["label"], same["path"], strict=True)}
        for a_pos, a in enumerate(names):
            for b in names[a_pos + 1 :]:
                shared[(a, b)].add(str(sha))
                examples[(a, b)].append(f"{first[a]} = {first[b]}")
    lines = []
    for (a, b), shas in sorted(shared.items(), key=lambda kv: -len(kv[1])):
        smaller = min(sizes[a], sizes[b])
        if len(shas) > _MOST_SHARED * smaller:
            lines.append(
                f"classes {a!r} and {b!r} share {len(shas)} of their {smaller} images: the labels "
                "cannot be told apart by the pixels; consider merging them"
            )
        else:  # a few slips: name the files, so a person can fix the labels
            shown = ", ".join(examples[(a, b)][:3]) + (", ..." if len(shas) > 3 else "")
            lines.append(f"classes {a!r} and {b!r} share {len(shas)} image(s): {shown}")
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... and {len(lines) - max_lines} more pair(s) of classes"]
    return lines


@dataclass(frozen=True)
class Problem:
    """One minority problem as the report, the summary and the model card show it."""

    kind: str  # e.g. "label_conflicts"
    title: str  # what it is, for a person
    count: int
    total: int
    unit: str  # what is counted: images, classes, photos
    action: str  # what happens below the threshold: quarantined, dropped, left out, reported
    threshold: float | None  # largest share handled without stopping; None: never stops the run
    setting: str | None  # the config key of the threshold (or of the severity)
    severity: str  # ok | warning | error
    names: list[str]  # what is affected (classes, pairs of classes), first few

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": round(self.share, 4)}

    def phrase(self) -> str:
        """``1 class dropped (s2)``: how the run summary says it."""
        unit = _SINGULAR.get(self.unit, self.unit) if self.count == 1 else self.unit
        if self.names and self.unit == "classes":
            more = ", ..." if len(self.names) > 5 else ""
            return f"{self.count} {unit} {self.action} ({', '.join(self.names[:5])}{more})"
        return f"{self.count} {unit} {self.action} ({self.title})"


def summary_line(problems: list[dict[str, Any]]) -> str:
    """``1 class dropped (s2), 78 images quarantined (label conflicts), 1 image dropped (exact copies)``,
    or ``clean`` when no minority problem was seen."""
    seen = [Problem(**{k: v for k, v in p.items() if k != "share"}) for p in problems if p["count"]]
    order = [kind for kind, *_ in POLICY.values()]
    seen.sort(key=lambda p: order.index(p.kind) if p.kind in order else len(order))
    return ", ".join(p.phrase() for p in seen) or "clean"


def table_lines(problems: list[dict[str, Any]]) -> list[str]:
    """The severity table in Markdown (model card, run note)."""
    lines = [
        "| problem | count | share | stops the run above | severity | below the threshold |",
        "|---|---|---|---|---|---|",
    ]
    for p in problems:
        limit = (
            f"{100 * p['threshold']:.0f}% (`{p['setting']}`)"
            if p["threshold"] is not None
            else f"never (`{p['setting']}`)"
            if p["setting"]
            else "never"
        )
        lines.append(
            f"| {p['title']} | {p['count']} of {p['total']} {p['unit']} | {100 * p['share']:.1f}% | "
            f"{limit} | {p['severity']} | {p['action']} |"
        )
    return lines


# The expectations that carry the policy, keyed by (GX type, column): (kind, title, unit, action, setting).
POLICY: dict[tuple[str, str], tuple[str, str, str, str, str | None]] = {
    ("expect_column_values_to_be_between", "count"): (
        "small_classes",
        "classes too small",
        "classes",
        "dropped",
        "validate.max_dropped_class_fraction",
    ),
    ("expect_column_values_to_be_null", "label_conflict"): (
        "label_conflicts",
        "label conflicts",
        "images",
        "quarantined",
        "validate.max_label_conflict_fraction",
    ),
    ("expect_column_values_to_be_null", "face_problem"): (
        "faceless_photos",
        "photos without one usable face",
        "photos",
        "left out",
        "validate.max_rejected_photo_fraction",
    ),
    ("expect_column_values_to_be_null", "duplicate_of"): (
        "exact_copies",
        "exact copies",
        "images",
        "dropped",
        "validate.duplicate_severity",
    ),
    ("expect_column_values_to_be_null", "near_copy_other_label"): (
        "near_copy_label_conflicts",
        "near-copies under two labels",
        "images",
        "reported",
        None,
    ),
}


def problem_from_result(
    key: tuple[str, str], result: Any, severity: str, names: list[str]
) -> Problem | None:
    """The policy row of one GX result (None for an expectation outside the policy)."""
    if key not in POLICY:
        return None
    kind, title, unit, action, setting = POLICY[key]
    res = result.result or {}
    count = int(res.get("unexpected_count") or 0)
    mostly = result.expectation_config.kwargs.get("mostly")
    return Problem(
        kind=kind,
        title=title,
        count=count,
        total=int(res.get("element_count") or 0),
        unit=unit,
        action=action,
        threshold=None if mostly is None else round(1.0 - float(mostly), 6),
        setting=setting,
        severity=severity if not result.success else ("warning" if count else "ok"),
        names=names,
    )


def handled_text(p: Problem, detail: list[str]) -> str:
    """The warning of a problem handled below its threshold, for the task log and the report;
    ``detail``: a line per class or pair of classes affected."""
    limit = (
        f"; the run stops above {100 * p.threshold:g}% ({p.setting}={p.threshold:g})"
        if p.threshold is not None
        else ""
    )
    return (
        f"{p.count} of {p.total} {p.unit} ({100 * p.share:.1f}%) {p.action}: {p.title}{limit}"
        + (": " + "; ".join(detail) if detail else "")
    )
