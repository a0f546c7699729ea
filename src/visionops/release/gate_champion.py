"""The gate's comparison with the champion (see ``release.gate``): the class-change policy, then
the paired comparison of ``release.gate_compare``, the same one the best simple baseline gets."""

from __future__ import annotations

from typing import Any

import numpy as np

from visionops.core.config import GateConfig
from visionops.evaluation.paired import PairedPredictions, class_change
from visionops.release.gate_compare import Reference, compare_paired


def _class_change_reason(
    change: dict[str, list[str]], version: str, dropped: dict[str, str]
) -> str:
    """The classes added and removed against the champion; a removed class that this run's data had
    but left out (too few usable images) is said to be dropped, with why."""
    gone = [c for c in change["removed"] if c in dropped]
    removed = [c for c in change["removed"] if c not in dropped]
    text = (
        f"class set changed against champion v{version}: added {change['added'] or 'none'}, "
        f"removed {removed or 'none'}"
    )
    if gone:
        # "; " separates reasons in the gate's tag: the reasons a class was dropped use ", " and " / ".
        whys = " / ".join(dropped[c].replace("; ", ", ") for c in gone)
        text += f", dropped from this run's data {gone} ({whys})"
    return text


def paired_comparison(
    paired: PairedPredictions,
    version: str,
    cfg: GateConfig,
    reasons: list[str],
    comparison: dict[str, Any],
    dropped: dict[str, str] | None = None,
) -> bool:
    """Compare on paired predictions; returns whether the comparison passed."""
    change = class_change(paired.candidate_labels, paired.champion_labels)
    y, cand, champ = (
        np.asarray(v, dtype=str) for v in (paired.y_true, paired.candidate, paired.champion)
    )
    labels = list(paired.candidate_labels)
    if change:
        comparison["class_change"] = change
        reasons.append(_class_change_reason(change, version, dropped or {}))
        comparison["on_class_change"] = cfg.on_class_change
        if cfg.on_class_change == "reject":
            reasons.append(
                "gate.on_class_change is 'reject': a model with a different class set is not "
                "promoted automatically (promote it with `visionops registry promote --force`)"
            )
            return False
        if cfg.on_class_change == "skip_comparison":
            reasons.append(
                "comparison with the champion skipped (gate.on_class_change = skip_comparison): "
                "only the absolute thresholds apply"
            )
            return True
        labels = [
            label for label in paired.candidate_labels if label in set(paired.champion_labels)
        ]
        keep = np.isin(y, labels)
        y, cand, champ = y[keep], cand[keep], champ[keep]
        reasons.append(f"compared on the {len(y)} test images of the {len(labels)} shared classes")
    if len(y) == 0:
        reasons.append(f"no test images of classes shared with champion v{version}: cannot compare")
        return False
    return compare_paired(
        y,
        cand,
        champ,
        labels,
        Reference(f"champion v{version}", "champion"),
        cfg,
        reasons,
        comparison,
    )
