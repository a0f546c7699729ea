"""The gate's rule per class (per person, in a face service): no judged class left much worse off.

A candidate better on average can still stop recognising one class: its recall on that class falls
while the others rise. ``class_rule`` compares each class's recall with the champion's on the same
test images (``gate.max_class_regression`` points at most), and, when ``gate.min_class_recall`` is
set, holds every judged class to that floor whether or not a champion is in service. A class with
fewer than ``gate.min_class_support`` test images is listed as not judged: on three images one
mistake is 33 points, which says nothing about the model.

The same rule serves slices of the data (``slice_rule``: lighting, camera, session...), where the
groups are the slice's values instead of the classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionops.core.config import GateConfig
from visionops.evaluation.metrics import group_recalls

# A recall is compared in points (0-100) rounded to this many digits: a tie is not a regression.
_DIGITS = 6


def judge_groups(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    groups: np.ndarray,
    cfg: GateConfig,
    what: str,
    against: str,
    measure: str = "recall",
) -> tuple[bool, list[str], list[dict[str, Any]]]:
    """The per-group rule (``what``: "class" or "slice lighting"; ``measure``: what the share of
    right answers in a group is called, recall for a class, accuracy for a slice's value): whether it
    passed, its reasons, and one row per group, worst first (the largest drop against the champion,
    else the lowest share), for the report and the model card."""
    cand = group_recalls(y_true, candidate, groups)
    champ = group_recalls(y_true, champion, groups) if champion is not None else {}
    rows: list[dict[str, Any]] = []
    for group, (support, recall) in cand.items():
        judged = support >= cfg.min_class_support
        row: dict[str, Any] = {
            "group": group,
            "support": support,
            "recall": recall,
            "judged": judged,
        }
        if group in champ:
            row["champion_recall"] = champ[group][1]
            row["delta_points"] = round(100 * (recall - champ[group][1]), _DIGITS)
        rows.append(row)
    rows.sort(key=lambda r: (r.get("delta_points", 0.0), r["recall"], r["group"]))
    ok, reasons = True, []
    judged = [r for r in rows if r["judged"]]
    margin = cfg.max_class_regression
    if champion is not None and margin is not None and judged:
        worse = [r for r in judged if -r["delta_points"] > margin]
        for r in worse:
            reasons.append(
                f"{what} {r['group']!r}: {measure} {100 * r['recall']:.1f}% against "
                f"{100 * r['champion_recall']:.1f}% for {against} on the same {r['support']} test "
                f"images, {-r['delta_points']:.1f} points down > gate.max_class_regression {margin:g}"
            )
        if not worse:
            low = judged[0]
            reasons.append(
                f"no {what} fell more than {margin:g} points of {measure} below {against} "
                f"({len(judged)} judged, the largest change {low['delta_points']:+.1f} points "
                f"on {low['group']!r})"
            )
        ok = not worse
    floor = cfg.min_class_recall
    if floor is not None and judged:
        low = [r for r in judged if r["recall"] < floor - 1e-9]
        reasons += [
            f"{what} {r['group']!r}: {measure} {100 * r['recall']:.1f}% < gate.min_class_recall "
            f"{100 * floor:.1f}% ({r['support']} test images)"
            for r in low
        ]
        ok = ok and not low
    unjudged = [r for r in rows if not r["judged"]]
    if unjudged and (floor is not None or (champion is not None and margin is not None)):
        listed = ", ".join(f"{r['group']} ({r['support']})" for r in unjudged[:20])
        more = f" and {len(unjudged) - 20} more" if len(unjudged) > 20 else ""
        reasons.append(
            f"not judged, fewer than gate.min_class_support={cfg.min_class_support} test images: "
            f"{what} {listed}{more}"
        )
    return ok, reasons, rows


def class_rule(
    y_true: list[str],
    candidate: list[str],
    champion: list[str] | None,
    shared: list[str] | None,
    cfg: GateConfig,
    against: str,
    reasons: list[str],
    record: dict[str, Any],
) -> bool:
    """Each class's recall against the champion's and the floor (``shared``: the classes both models
    know, None when there is no champion); ``record["classes"]`` gets the table."""
    y = np.asarray(y_true, dtype=str)
    cand = np.asarray(candidate, dtype=str)
    champ = None if champion is None else np.asarray(champion, dtype=str)
    if shared is not None:  # a class only one model knows has no recall to compare
        keep = np.isin(y, shared)
        y, cand, champ = y[keep], cand[keep], None if champ is None else champ[keep]
    ok, why, rows = judge_groups(y, cand, champ, y, cfg, "class", against)
    reasons += why
    record["classes"] = rows
    return ok


def slice_rule(
    y_true: list[str],
    candidate: list[str],
    champion: list[str] | None,
    slices: dict[str, list[str]],
    cfg: GateConfig,
    against: str,
    reasons: list[str],
    record: dict[str, Any],
) -> bool:
    """The per-class rules applied to each value of each slice (accuracy on that value's test
    images); ``record["slices"]`` gets one table per slice."""
    y = np.asarray(y_true, dtype=str)
    cand = np.asarray(candidate, dtype=str)
    champ = None if champion is None else np.asarray(champion, dtype=str)
    ok = True
    record["slices"] = {}
    for name, values in sorted(slices.items()):
        passed, why, rows = judge_groups(
            y, cand, champ, np.asarray(values, dtype=str), cfg, f"slice {name}", against, "accuracy"
        )
        reasons += why
        record["slices"][name] = rows
        ok = ok and passed
    return ok
