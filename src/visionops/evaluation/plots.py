"""Evaluation figures (PNG): confusion matrix, reliability diagram, misclassified test images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], path: Path, title: str
) -> np.ndarray:
    """Draw the confusion matrix to ``path`` (PNG) and return it."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    cm = confusion_matrix(
        np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str), labels=list(labels)
    )
    side = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay(cm, display_labels=list(labels)).plot(
        ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return cm


def save_reliability_plot(bins: list[dict[str, float]], ece: float, path: Path) -> None:
    """Accuracy against mean confidence per bin; the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    used = [b for b in bins if b["count"] > 0]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(
        [b["low"] for b in used],
        [b["accuracy"] for b in used],
        width=width,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence (winning class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability, ECE {ece:.4f}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_misclassified_grid(
    images: np.ndarray,
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidence: Sequence[float],
    path: Path,
    limit: int = 36,
) -> int:
    """A grid of the most confidently wrong test images, titled ``true -> predicted (p)``; returns how many."""
    plt = _pyplot()
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    wrong = np.flatnonzero(y_true != y_pred)
    wrong = wrong[np.argsort(-np.asarray(confidence, dtype=float)[wrong], kind="stable")][:limit]
    cols = max(1, min(6, len(wrong)))
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
        ax.set_title(f"{y_true[i]} -> {y_pred[i]} ({confidence[i]:.2f})", fontsize=7)
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return int(len(wrong))
