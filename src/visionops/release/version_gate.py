"""The gate and the smoke test of one registered version, outside a pipeline run: what promoting a
version by hand (``visionops registry promote``) and a later approval (``promote_challenger``) need.

The version's own test split and the gate config of the run that trained it are read back from the
registry tags and the run folder.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.tracking import MlflowClient

from visionops.core.config import GateConfig
from visionops.core.constants import CHAMPION
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import GateDecision
from visionops.core.errors import InputError
from visionops.core.storage import StageOutput
from visionops.evaluation.paired import BaselinePredictions, PairedPredictions, load_baselines
from visionops.evaluation.scoring import TestSplit, load_test_split, predict_labels, score_version
from visionops.release import registry
from visionops.release.gate import decide
from visionops.serving.shadow import stored_config
from visionops.serving.smoke import smoke_test


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags or {})


def _gate_config(tags: dict[str, str]) -> GateConfig:
    """The gate config of the run that trained the version (the defaults when it cannot be found)."""
    cfg = stored_config(tags)
    return cfg.gate if cfg is not None else GateConfig()


def _test_split(tags: dict[str, str]) -> TestSplit | None:
    """The test split the version was evaluated on (None for a version registered outside the pipeline)."""
    if f"{T}test_data_uri" not in tags:
        return None
    return load_test_split(
        StageOutput(tags[f"{T}test_data_uri"], tags.get(f"{T}test_data_fingerprint", ""), {})
    )


def _baselines(tags: dict[str, str], candidate: list[str]) -> BaselinePredictions | None:
    """The simple baselines' labels stored when the version was evaluated, beside its labels now."""
    uri = tags.get(f"{T}predictions_uri")
    if not uri:
        return None
    stored = load_baselines(StageOutput(uri, "", {}))
    if stored is None:
        return None
    return BaselinePredictions(stored.y_true, candidate, stored.baselines, stored.clean)


def gate_for_version(name: str, version: str) -> tuple[GateDecision, str | None]:
    """The gate's decision for ``version`` against the champion now, on the version's test split."""
    tags = version_tags(name, version)
    split = _test_split(tags)
    if split is None:
        raise InputError(
            f"{name} v{version} has no recorded test split (tag {T}test_data_uri); "
            "it was not registered by this pipeline: use --force to promote it anyway"
        )
    candidate = score_version(name, version, split)
    current = registry.get_alias(name, CHAMPION)
    champion, paired = None, None
    if current is not None and str(current.version) != str(version):
        champion = score_version(name, str(current.version), split)
        paired = PairedPredictions(
            split.y_true,
            candidate.predictions,
            champion.predictions,
            split.labels,
            champion.labels,
            split.clean.tolist(),
            {key: values.tolist() for key, values in split.slices.items()},
        )
    decision = decide(
        candidate.score.model_dump(),
        champion.score.model_dump() if champion else None,
        _gate_config(tags),
        paired,
        _baselines(tags, candidate.predictions),
    )
    return decision, champion.score.version if champion else None


def smoke_for_version(name: str, version: str, n_images: int = 8) -> Callable[[], None]:
    """The post-promotion smoke test for a version: its first test images, labelled as in this process."""

    def check() -> None:
        split = _test_split(version_tags(name, version))
        if split is None:
            return  # no held-out images recorded (a version registered outside the pipeline)
        images = split.head(n_images).images
        expected, _ = predict_labels(f"models:/{name}/{version}", images)
        smoke_test(f"models:/{name}@{CHAMPION}", images, expected)

    return check


def recheck_version(name: str, version: str) -> Callable[[str], GateDecision]:
    """For promotions by hand: the full gate of ``version`` against the champion, on the version's test split."""

    def recheck(current: str) -> GateDecision:
        return gate_for_version(name, version)[0]

    return recheck
