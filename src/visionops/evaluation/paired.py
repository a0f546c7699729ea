"""Paired predictions: both models' labels on the same test images, and the evidence they give.

McNemar's exact test on the images only one model gets right, and a paired bootstrap confidence
interval of the accuracy difference. The evaluate stage stores them under the run
(``predictions.parquet``); the gate and a later re-check read them back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from visionops.core.storage import RunStore, StageOutput, fingerprint

if (
    TYPE_CHECKING
):  # scoring loads served models (torch): the gate reads paired predictions without it
    from visionops.evaluation.scoring import TestSplit, VersionScore

PREDICTIONS_FILE = "predictions.parquet"
LABELS_FILE = "labels.json"
BASELINE_COLUMN = "baseline:"  # + the baseline's name: its label per test image
SLICE_COLUMN = "slice:"  # + a slice's name: its value per test image


@dataclass(frozen=True)
class PairedPredictions:
    """Both models' predicted labels on the same test images, and each model's class set."""

    y_true: list[str]
    candidate: list[str]
    champion: list[str]
    candidate_labels: list[str]
    champion_labels: list[str]
    clean: list[bool] | None = (
        None  # per image: no near-copy in the training split (None: not recorded)
    )
    slices: dict[str, list[str]] = field(default_factory=dict)  # slice -> value per image

    def clean_subset(self) -> PairedPredictions:
        """The same predictions on the clean test images only."""
        return self.rows([i for i, ok in enumerate(self.clean or []) if ok])

    def rows(self, keep: list[int]) -> PairedPredictions:
        """The same predictions on the test images at positions ``keep``."""
        pick = lambda values: [values[i] for i in keep]  # noqa: E731 - every list, one rule
        return PairedPredictions(
            pick(self.y_true),
            pick(self.candidate),
            pick(self.champion),
            self.candidate_labels,
            self.champion_labels,
            None if self.clean is None else pick(self.clean),
            {name: pick(values) for name, values in self.slices.items()},
        )


@dataclass(frozen=True)
class BaselinePredictions:
    """The model's and each fitted baseline's labels on the same test images."""

    y_true: list[str]
    candidate: list[str]
    baselines: dict[str, list[str]]  # name -> label per test image
    clean: list[bool] | None = None
    slices: dict[str, list[str]] = field(default_factory=dict)  # slice -> value per image

    def clean_subset(self) -> BaselinePredictions:
        """The same predictions on the clean test images only."""
        keep = [i for i, ok in enumerate(self.clean or []) if ok]
        pick = lambda values: [values[i] for i in keep]  # noqa: E731 - one rule for every list
        return BaselinePredictions(
            pick(self.y_true),
            pick(self.candidate),
            {name: pick(labels) for name, labels in self.baselines.items()},
            [True] * len(keep),
            {name: pick(values) for name, values in self.slices.items()},
        )


def paired_statistics(
    y_true: Sequence[str],
    candidate: Sequence[str],
    champion: Sequence[str],
    *,
    alpha: float,
    n_bootstrap: int,
    seed: int = 0,
) -> dict[str, Any]:
    """McNemar's exact test and a paired bootstrap (1 - alpha) CI of accuracy(candidate) - accuracy(champion)."""
    y = np.asarray(y_true, dtype=str)
    cand_ok = np.asarray(candidate, dtype=str) == y
    champ_ok = np.asarray(champion, dtype=str) == y
    n = len(y)
    wins = int(np.sum(cand_ok & ~champ_ok))  # candidate right, champion wrong
    losses = int(np.sum(~cand_ok & champ_ok))  # candidate wrong, champion right
    discordant = wins + losses
    if discordant:
        p_two = float(binomtest(wins, discordant, 0.5).pvalue)
        p_better = float(binomtest(wins, discordant, 0.5, alternative="greater").pvalue)
    else:
        p_two = p_better = 1.0
    diff = cand_ok.astype(np.int8) - champ_ok.astype(np.int8)
    rng = np.random.default_rng(seed)
    if n:
        # Resampling images keeps each image's pair together: that is what makes it paired.
        boot = diff[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
        low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    else:
        low = high = math.nan
    return {
        "n": n,
        "candidate_only_correct": wins,
        "champion_only_correct": losses,
        "accuracy_delta": float(diff.mean()) if n else math.nan,
        "mcnemar_p_two_sided": p_two,
        "mcnemar_p_candidate_better": p_better,
        "ci_level": 1 - alpha,
        "ci_low": low,
        "ci_high": high,
    }


def class_change(
    candidate_labels: Sequence[str], champion_labels: Sequence[str]
) -> dict[str, list[str]]:
    """Classes the candidate added and removed relative to the champion (empty dict when unchanged)."""
    added = sorted(set(candidate_labels) - set(champion_labels))
    removed = sorted(set(champion_labels) - set(candidate_labels))
    return {"added": added, "removed": removed} if added or removed else {}


def store_predictions(
    store: RunStore,
    preprocessed: StageOutput,
    model_uri: str,
    split: TestSplit,
    y_pred: list[str],
    confidence: np.ndarray,
    champion: VersionScore | None,
    baselines: dict[str, list[str]] | None = None,
) -> StageOutput:
    """Write the model's, the champion's and the baselines' predictions on the test split under the
    run (the ``evaluate`` output)."""
    champion_version = champion.score.version if champion else None
    baselines = baselines or {}
    fp = fingerprint(
        "evaluate", preprocessed.fingerprint, model_uri, champion_version, sorted(baselines)
    )
    with store.writing("evaluate", fp) as pending:
        frame = pd.DataFrame(
            {"y_true": split.y_true, "candidate": y_pred, "candidate_probability": confidence}
        )
        frame["champion"] = champion.predictions if champion else None
        for name, labels in baselines.items():
            frame[f"{BASELINE_COLUMN}{name}"] = labels
        frame["clean"] = np.asarray(
            split.clean, dtype=bool
        )  # no near-copy in train: gate.judge_on = clean
        for name, values in split.slices.items():
            frame[f"{SLICE_COLUMN}{name}"] = values
        frame.to_parquet(pending.path / PREDICTIONS_FILE, index=False)
        (pending.path / LABELS_FILE).write_text(
            json.dumps(
                {
                    "candidate_labels": split.labels,
                    "champion_labels": champion.labels if champion else None,
                    "champion_version": champion_version,
                }
            )
        )
        pending.meta = {"n": len(split.y_true), "champion_version": champion_version}
    return pending.output


def candidate_predictions(predictions: StageOutput) -> list[str]:
    """The candidate's labels on the test split, as the evaluate stage stored them."""
    return (
        pd.read_parquet(predictions.local_path() / PREDICTIONS_FILE)["candidate"]
        .astype(str)
        .tolist()
    )


def load_paired(predictions: StageOutput) -> PairedPredictions | None:
    """The paired predictions stored by the evaluate stage (None when there was no champion)."""
    folder = predictions.local_path()
    frame = pd.read_parquet(folder / PREDICTIONS_FILE)
    meta = json.loads((folder / LABELS_FILE).read_text())
    if meta.get("champion_labels") is None:
        return None
    clean = frame["clean"].astype(bool).tolist() if "clean" in frame.columns else None
    return PairedPredictions(
        frame["y_true"].tolist(),
        frame["candidate"].tolist(),
        frame["champion"].tolist(),
        meta["candidate_labels"],
        meta["champion_labels"],
        clean,
        _slices(frame),
    )


def _slices(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {
        c.removeprefix(SLICE_COLUMN): frame[c].astype(str).tolist()
        for c in frame.columns
        if c.startswith(SLICE_COLUMN)
    }


def load_answers(predictions: StageOutput) -> BaselinePredictions:
    """The model's labels stored by the evaluate stage, with the baselines' (none when none was
    fitted): what the gate's per-class rules read when no champion is in service."""
    frame = pd.read_parquet(predictions.local_path() / PREDICTIONS_FILE)
    columns = [c for c in frame.columns if c.startswith(BASELINE_COLUMN)]
    return BaselinePredictions(
        frame["y_true"].astype(str).tolist(),
        frame["candidate"].astype(str).tolist(),
        {c.removeprefix(BASELINE_COLUMN): frame[c].astype(str).tolist() for c in columns},
        frame["clean"].astype(bool).tolist() if "clean" in frame.columns else None,
        _slices(frame),
    )


def load_baselines(predictions: StageOutput) -> BaselinePredictions | None:
    """The model's and the baselines' labels stored by the evaluate stage (None when none was fitted)."""
    answers = load_answers(predictions)
    return answers if answers.baselines else None
