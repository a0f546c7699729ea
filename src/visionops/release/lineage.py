"""What the model in service was made from: the data profile and label map it was trained on (the
reference validate compares new data with) and the parameters of its training run (tuning's warm start)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from visionops.core import tracking
from visionops.core.constants import CHAMPION, TAG_PREFIX
from visionops.core.context import RunContext
from visionops.core.contracts import ChangeCheck
from visionops.data.drift import PROFILE_FILE
from visionops.release.registry import get_alias

log = logging.getLogger("visionops")


def champion_params(model_name: str) -> dict[str, str]:
    """The parameters logged by the champion's training run, or {} when there is no champion."""
    from mlflow.tracking import MlflowClient

    version = get_alias(model_name)
    if version is None or not version.run_id:
        return {}
    return dict(MlflowClient().get_run(version.run_id).data.params)


def champion_reference(model_name: str, alias: str = CHAMPION) -> dict[str, Any] | None:
    """Label map and data profile of the model in service, or None when there is none.

    The label map comes from ``preprocessing.json`` inside the pyfunc model; the profile from a
    ``data_profile.json`` stored with the model (absent for models logged before profiles existed,
    in which case only the schema is compared).
    """
    from mlflow.exceptions import MlflowException

    import mlflow

    client = mlflow.tracking.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{model_name}@{alias}", dst_path=tmp
                )
            )
        except MlflowException as exc:
            log.warning(
                "champion %s v%s: cannot download its artifacts (%s)",
                model_name,
                version.version,
                exc,
            )
            return None
        reference: dict[str, Any] = {
            "version": str(version.version),
            "labels": None,
            "profile": None,
        }
        for path in local.rglob("preprocessing.json"):
            reference["labels"] = json.loads(path.read_text()).get("labels")
            break
        for path in local.rglob(PROFILE_FILE):
            reference["profile"] = json.loads(path.read_text())
            break
        if reference["profile"] is None and version.run_id:
            reference["profile"] = _profile_of_pipeline_run(client, version.run_id, tmp)
    if reference["labels"] is None and reference["profile"]:
        reference["labels"] = reference["profile"].get("labels")
    return reference


def _profile_of_pipeline_run(client: Any, train_run_id: str, tmp: str) -> dict[str, Any] | None:
    """The profile the preprocess stage of the champion's pipeline run logged (sibling of its train run)."""
    from mlflow.exceptions import MlflowException

    import mlflow

    try:
        run = client.get_run(train_run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            return None
        siblings = tracking.find_runs(
            {"mlflow.parentRunId": parent, f"{TAG_PREFIX}stage": "preprocess"},
            experiment_ids=[run.info.experiment_id],
        )
        for sibling in siblings:
            got = mlflow.artifacts.download_artifacts(
                run_id=sibling.info.run_id, artifact_path=PROFILE_FILE, dst_path=tmp
            )
            return json.loads(Path(got).read_text())
    except (MlflowException, OSError) as exc:
        log.warning("no data profile for the champion's training run %s: %s", train_run_id, exc)
    return None


# What makes a model: a run whose three equal the champion's would train the same model again.
CHANGE_KEYS = {
    "data_fingerprint": "data fingerprint",
    "config_hash": "config hash",
    "code_fingerprint": "code",  # core.run.code_fingerprint: the files that train, not the commit
}


def changes_since_champion(ctx: RunContext) -> ChangeCheck:
    """This run's data fingerprint (set by ingest), config hash and code fingerprint against those of
    the champion's training run (the version's lineage tags)."""
    from mlflow.tracking import MlflowClient

    model_name = ctx.config().registry.model_name
    champion = get_alias(model_name)
    if champion is None:
        return ChangeCheck(changed=True, differences=[f"no champion of {model_name} in service"])
    mine = MlflowClient().get_run(ctx.parent_run_id).data.tags
    theirs = champion.tags or {}
    differences = []
    for key, what in CHANGE_KEYS.items():
        now, then = mine.get(f"{TAG_PREFIX}{key}"), theirs.get(f"{TAG_PREFIX}{key}")
        if key == "config_hash":
            now = ctx.config_hash
        if not then:
            differences.append(f"champion v{champion.version} records no {what}")
        elif now != then:
            differences.append(f"{what} {then} (champion v{champion.version}) -> {now}")
    changed = bool(differences)
    return ChangeCheck(
        changed=changed or ctx.force,
        forced=ctx.force and not changed,
        champion_version=str(champion.version),
        differences=differences,
    )


def record_changes(ctx: RunContext, check: ChangeCheck) -> None:
    """The check on the parent run: what changed, or that nothing did (the run stops after ingest)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(ctx.parent_run_id, f"{TAG_PREFIX}changes", tracking.clip(check.message()))
    if not check.changed:
        client.set_tag(ctx.parent_run_id, f"{TAG_PREFIX}unchanged_since", check.champion_version)
    log.info("changes since the champion: %s", check.message())
