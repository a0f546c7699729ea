"""Classification metrics over a class set: accuracy, macro-F1, per class, top-k, calibration, the clean subset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score, top_k_accuracy_score


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and the per-class report, over the class set ``labels``."""
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    labels = list(labels)
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "n": int(len(y_true)),
        "per_class": {label: {k: float(v) for k, v in report[label].items()} for label in labels},
    }


def top_k_accuracy(
    y_true: Sequence[str], probs: np.ndarray, labels: Sequence[str], k: int
) -> float:
    """Share of images whose true class is among the ``k`` most probable (columns of ``probs`` = ``labels``)."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[str(t)] for t in y_true])
    if k >= len(labels):
        return 1.0  # every class is in the top k (scikit-learn warns and says the same)
    return float(top_k_accuracy_score(y, probs, k=k, labels=np.arange(len(labels))))


def expected_calibration_error(
    y_true: Sequence[str], y_pred: Sequence[str], confidence: Sequence[float], n_bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the bins (for the reliability plot).

    Written here because scikit-learn's calibration_curve is binary only; this is the usual
    multi-class top-label ECE: sum over bins of |accuracy - mean confidence| weighted by bin size.
    """
    correct = np.asarray(y_true, dtype=str) == np.asarray(y_pred, dtype=str)
    conf = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins so that confidence 1.0 lands in the last bin and 0 < p is never dropped.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else 0.0
        mean_conf = float(conf[mask].mean()) if count else 0.0
        ece += count / max(len(conf), 1) * abs(acc - mean_conf)
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    return float(ece), bins


def clean_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], clean: np.ndarray
) -> dict[str, float]:
    """Accuracy and macro-F1 on the clean test subset (no near-copy in train); NaN when it is empty."""
    keep = np.flatnonzero(clean)
    if len(keep) == 0:
        return {"clean_accuracy": float("nan"), "clean_macro_f1": float("nan"), "n_test_clean": 0}
    true, pred = [y_true[i] for i in keep], [y_pred[i] for i in keep]
    # Macro-F1 over the classes the subset holds (or that were predicted on it): a class whose every
    # test image has a near-copy in training is absent here, and would otherwise count as F1 = 0.
    present = [lab for lab in labels if lab in set(true) | set(pred)]
    sub = classification_metrics(true, pred, present)
    return {
        "clean_accuracy": sub["accuracy"],
        "clean_macro_f1": sub["macro_f1"],
        "n_test_clean": len(keep),
    }


def default_top_k(cfg_top_k: int | None, n_classes: int) -> int | None:
    return cfg_top_k if cfg_top_k is not None else (3 if n_classes > 3 else None)


def group_recalls(
    y_true: np.ndarray, predicted: np.ndarray, groups: np.ndarray
) -> dict[str, tuple[int, float]]:
    """Per group: its number of test images and the share of them labelled right (recall for classes,
    accuracy for a slice)."""
    out: dict[str, tuple[int, float]] = {}
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        out[str(group)] = (int(rows.sum()), float(np.mean(predicted[rows] == y_true[rows])))
    return out


def slice_figures(
    y_true: list[str],
    predicted: list[str],
    champion: list[str] | None,
    slices: dict[str, np.ndarray],
) -> dict[str, list[dict[str, Any]]]:
    """Per slice, per value: its test images and the accuracy on them (the champion's beside it),
    lowest first: the evaluation report's slice tables."""
    y = np.asarray(y_true, dtype=str)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, values in sorted(slices.items()):
        groups = np.asarray(values, dtype=str)
        mine = group_recalls(y, np.asarray(predicted, dtype=str), groups)
        theirs = (
            group_recalls(y, np.asarray(champion, dtype=str), groups)
            if champion is not None
            else {}
        )
        rows = [
            {
                "value": value,
                "n": n,
                "accuracy": acc,
                **({"champion_accuracy": theirs[value][1]} if value in theirs else {}),
            }
            for value, (n, acc) in mine.items()
        ]
        out[name] = sorted(rows, key=lambda r: (r["accuracy"], r["value"]))
    return out
