"""Shadow scoring: the challenger answers the same batches as the champion, unseen by anyone.

With ``serving.shadow`` (the champion's training config, or the batch_predict run's ``shadow``
param), every batch the champion scores is scored by the version behind ``challenger`` too, on the
same files. What is recorded per batch: how often the two agree, the challenger's mean confidence
beside the champion's, and the label pairs where they disagree, as metrics and an artifact of the
batch's MLflow run and as one entry of the tag ``visionops.shadow_batches`` on the challenger's
version. ``promote_challenger`` reads those entries (``shadow_evidence``) when
``registry.min_shadow_batches`` asks for them.

What agreement proves: live traffic has no labels, so agreement says how much the challenger would
change what users get, not whether it is right. A high agreement with a better test score is a safe
promotion; a low one means users will see different answers, for better or worse (the disagreement
table says where), and is worth a look before promoting.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from visionops.core.config import PipelineConfig, read_stored_config
from visionops.core.constants import CHALLENGER
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import ModelRef

SHADOW_TAG = f"{T}shadow_batches"
KEEP_BATCHES = 50  # entries kept on a version's tag (MLflow tags hold 8,000 characters)


def stored_config(tags: dict[str, str]) -> PipelineConfig | None:
    """The resolved config of the run that trained a version (its tags name the run), or None."""
    from visionops.core.storage import RunStore

    run_key = tags.get(f"{T}run_key")
    if not run_key:
        return None
    path = Path(RunStore(run_key).stage_path("config")) / "config.json"
    if not path.is_file():
        return None
    return read_stored_config(json.loads(path.read_text()), source=str(path))


def shadow_wanted(name: str, version: str) -> bool:
    """Whether the champion's training config asks for shadow scoring (``serving.shadow``)."""
    from mlflow.tracking import MlflowClient

    cfg = stored_config(dict(MlflowClient().get_model_version(name, version).tags or {}))
    return bool(cfg and cfg.serving.shadow)


def challenger_beside(champion: ModelRef) -> ModelRef | None:
    """The version behind ``challenger``, pinned now; None when there is none or it is the champion."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        mv = MlflowClient().get_model_version_by_alias(champion.name, CHALLENGER)
    except MlflowException:
        return None
    if str(mv.version) == str(champion.version):
        return None
    return ModelRef(
        name=champion.name, version=str(mv.version), requested=f"{champion.name}@{CHALLENGER}"
    )


def compare(champion: pd.DataFrame, challenger: pd.DataFrame) -> dict[str, Any]:
    """Agreement of two models' answers on the same files (rows in the same order): over the files
    both labelled, the share with the same label, each one's mean confidence, and the label pairs
    where they differ (most frequent first)."""
    both = champion["label"].notna() & challenger["label"].notna()
    a, b = champion.loc[both, "label"].astype(str), challenger.loc[both, "label"].astype(str)
    same = a.to_numpy() == b.to_numpy()
    pairs = (
        pd.DataFrame({"champion": a[~same], "challenger": b[~same]})
        .value_counts()
        .rename("images")
        .reset_index()
    )
    n = int(both.sum())
    return {
        "n": n,
        "agreement": float(same.mean()) if n else float("nan"),
        "champion_confidence": float(champion.loc[both, "probability"].mean())
        if n
        else float("nan"),
        "challenger_confidence": float(challenger.loc[both, "probability"].mean())
        if n
        else float("nan"),
        "disagreements": pairs.to_dict("records"),
    }


def record_on_version(
    challenger: ModelRef, champion: ModelRef, figures: dict[str, Any], run_id: str
) -> None:
    """One entry per batch on the challenger's version (the latest ``KEEP_BATCHES``) and a summary."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = dict(client.get_model_version(challenger.name, challenger.version).tags or {})
    entries = json.loads(tags.get(SHADOW_TAG, "[]"))
    entries.append(
        {
            "run_id": run_id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "champion_version": champion.version,
            "n": figures["n"],
            "agreement": round(figures["agreement"], 4),
            "challenger_confidence": round(figures["challenger_confidence"], 4),
            "champion_confidence": round(figures["champion_confidence"], 4),
            "top_disagreements": figures["disagreements"][:3],
        }
    )
    entries = entries[-KEEP_BATCHES:]
    client.set_model_version_tag(
        challenger.name, challenger.version, SHADOW_TAG, json.dumps(entries)
    )
    n_batches, n_images, agreement = shadow_evidence(entries, champion.version)
    client.set_model_version_tag(
        challenger.name,
        challenger.version,
        f"{T}shadow_summary",
        f"{n_batches} batch(es) beside champion v{champion.version}: {n_images} images, "
        f"agreement {agreement:.1%}",
    )


def shadow_evidence(entries: list[dict[str, Any]], champion_version: str) -> tuple[int, int, float]:
    """Batches scored beside ``champion_version``, their images, and the pooled agreement."""
    mine = [
        e for e in entries if str(e.get("champion_version")) == str(champion_version) and e["n"]
    ]
    n_images = sum(int(e["n"]) for e in mine)
    agreed = sum(float(e["agreement"]) * int(e["n"]) for e in mine)
    return len(mine), n_images, (agreed / n_images if n_images else float("nan"))


def shadow_rule(
    tags: dict[str, str], champion_version: str | None, min_batches: int, min_agreement: float
) -> tuple[bool, str | None]:
    """``registry.min_shadow_batches`` and ``registry.min_shadow_agreement`` for a version's tags:
    whether it may be promoted, and the reason (None when shadow scoring is not asked for)."""
    if min_batches <= 0:
        return True, None
    if champion_version is None:
        return True, "shadow scoring: no champion in service to shadow, nothing required"
    entries = json.loads(tags.get(SHADOW_TAG, "[]"))
    n_batches, n_images, agreement = shadow_evidence(entries, champion_version)
    seen = f"{n_batches} batch(es) scored beside champion v{champion_version}" + (
        f" ({n_images} images, agreement {agreement:.1%})" if n_images else ""
    )
    if n_batches < min_batches:
        return False, f"shadow scoring: {seen}, registry.min_shadow_batches={min_batches} needed"
    if agreement < min_agreement:
        return False, (
            f"shadow scoring: {seen}, below registry.min_shadow_agreement {min_agreement:.1%}"
        )
    return True, f"shadow scoring: {seen}, at least {min_batches} and {min_agreement:.1%}"


def shadow_batch(
    champion: ModelRef,
    challenger: ModelRef,
    answers: pd.DataFrame,
    theirs: pd.DataFrame,
    run_id: str,
) -> dict:
    """The challenger's answers ``theirs`` on the files the champion answered (``answers``): their
    agreement as metrics, tags and the disagreement table of the active (batch) run, and on the
    challenger's version."""
    import mlflow

    figures = compare(answers, theirs)
    mlflow.set_tag(f"{T}shadow_version", challenger.version)
    mlflow.log_metrics(
        {
            "shadow_agreement": figures["agreement"],
            "shadow_n_images": figures["n"],
            "shadow_challenger_mean_probability": figures["challenger_confidence"],
        }
    )
    mlflow.log_table(
        pd.DataFrame(figures["disagreements"], columns=["champion", "challenger", "images"]),
        "shadow/disagreements.json",
    )
    record_on_version(challenger, champion, figures, run_id)
    return {
        "version": challenger.version,
        "n": figures["n"],
        "agreement": figures["agreement"],
        "challenger_confidence": figures["challenger_confidence"],
    }
