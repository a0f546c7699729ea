"""The gate and the smoke test of one registered version, outside a pipeline run: what promoting a
version by hand (``visionops registry promote``) and a later approval (``promote_challenger``) need.

The version's own test split and the gate config of the run that trained it are read back from the
registry tags and the run folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionops.errors import InputError

if TYPE_CHECKING:  # the CLI imports this module: scipy and scikit-learn load only when a gate runs
    from visionops.gate import GateDecision


def version_tags(name: str, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags or {})


def _gate_config(tags: dict[str, str]) -> Any:
    """The gate config of the run that trained the version (the defaults when it cannot be found)."""
    from visionops.config import GateConfig, build_config
    from visionops.storage import RunStore

    run_key = tags.get("visionops.run_key")
    if run_key:
        path = Path(RunStore(run_key).stage_path("config")) / "config.json"
        if path.is_file():
            return build_config(json.loads(path.read_text()), source=str(path)).gate
    return GateConfig()


def gate_for_version(name: str, version: str) -> tuple[Any, str | None]:
    """The gate's decision for ``version`` against the champion now, on the version's test split."""
    from visionops import registry
    from visionops.data.preprocess import load_labels
    from visionops.evaluation import (champion_predictions, classification_metrics, clean_metrics,
                                      load_test_clean, load_test_set)
    from visionops.gate import PairedPredictions, decide
    from visionops.storage import StageOutput

    tags = version_tags(name, version)
    if "visionops.test_data_uri" not in tags:
        raise InputError(f"{name} v{version} has no recorded test split (tag visionops.test_data_uri); "
                         "it was not registered by this pipeline: use --force to promote it anyway")
    test_data = StageOutput(tags["visionops.test_data_uri"], tags.get("visionops.test_data_fingerprint", ""), {})
    labels, raw, y_true = load_test_set(test_data)
    clean = load_test_clean(test_data.local_path(), len(y_true))
    cand_pred, _ = champion_predictions(name, version, raw)
    metrics = {**classification_metrics(y_true, cand_pred, labels), **clean_metrics(y_true, cand_pred, labels, clean)}
    current = registry.get_alias(name, registry.CHAMPION)
    champion, paired = None, None
    if current is not None and str(current.version) != str(version):
        champ_pred, champ_labels = champion_predictions(name, str(current.version), raw)
        cm = classification_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)))
        champion = {"version": str(current.version), "accuracy": cm["accuracy"], "macro_f1": cm["macro_f1"],
                    **clean_metrics(y_true, champ_pred, sorted(set(labels) | set(champ_labels)), clean)}
        paired = PairedPredictions(y_true, cand_pred, champ_pred, load_labels(test_data.local_path()), champ_labels,
                                   clean.tolist())
    decision = decide(metrics, champion, _gate_config(tags), paired)
    return decision, (champion or {}).get("version")


def smoke_for_version(name: str, version: str, n_images: int = 8) -> Any:
    """The post-promotion smoke test for a version: its first test images, labelled as in this process."""
    def check() -> None:
        from visionops.evaluation import champion_predictions, load_test_set
        from visionops.serving import smoke_test
        from visionops.storage import StageOutput

        tags = version_tags(name, version)
        if "visionops.test_data_uri" not in tags:
            return  # no held-out images recorded (a version registered outside the pipeline)
        _, raw, _ = load_test_set(StageOutput(tags["visionops.test_data_uri"],
                                              tags.get("visionops.test_data_fingerprint", ""), {}))
        expected, _ = champion_predictions(name, version, raw[:n_images])
        smoke_test(f"models:/{name}@champion", raw[:n_images], expected)
    return check


def recheck_version(name: str, version: str) -> Callable[[str], GateDecision]:
    """For promotions by hand: the full gate of ``version`` against the champion, on the version's test split."""
    def recheck(current: str) -> GateDecision:
        return gate_for_version(name, version)[0]
    return recheck
