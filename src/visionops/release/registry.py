"""The MLflow model registry: register versions with lineage tags, move aliases (never stages)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from visionops.core.constants import CHAMPION, PREVIOUS_CHAMPION, TAG_PREFIX


def get_alias(name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The version behind ``name@alias``, or None when the model or alias does not exist."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        # A server with MLflow's basic-auth app answers 403, not 404, to an account other than the
        # admin when the model does not exist (it does not tell names apart). A model the account
        # cannot see is absent from a search too; one it can see but not read is a real refusal.
        if exc.error_code == "PERMISSION_DENIED" and not _model_exists(name):
            return None
        raise


def _model_exists(name: str) -> bool:
    quoted = name.replace("'", "\\'")
    return bool(MlflowClient().search_registered_models(filter_string=f"name = '{quoted}'"))


def champion_version(name: str) -> str | None:
    """The version in service (``name@champion``), or None."""
    version = get_alias(name, CHAMPION)
    return str(version.version) if version is not None else None


def ensure_registered_model(name: str, description: str) -> None:
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=description)
        except MlflowException:
            client.get_registered_model(
                name
            )  # created concurrently; re-raise only if still missing


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def register_version(
    name: str, model_uri: str, run_id: str, tags: dict[str, Any], description: str
) -> str:
    """Create a version of ``name`` from ``model_uri``; returns the version number."""
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    client = MlflowClient()
    ensure_registered_model(name, f"Image classifier trained by the visionops pipeline ({name}).")
    # A tracking server accepts a models:/<model_id> source only with its model_id (a local store does
    # not check); mlflow.register_model does the same, but cannot set tags and description at once.
    version = client.create_model_version(
        name,
        source=model_uri,
        run_id=run_id,
        description=description,
        tags={k: _tag_value(v)[:5000] for k, v in tags.items()},
        model_id=_parse_model_id_if_present(model_uri),
    )
    return str(version.version)


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def link_version_to_run(run_id: str, name: str, version: str, model_uri: str) -> bool:
    """Make MLflow's page of ``run_id`` list ``name`` ``version`` under "Registered models": the run
    page reads the versions of the logged models among a run's outputs. So the logged model behind
    ``model_uri`` becomes an output of the run, and names the version in its ``mlflow.modelVersions``
    tag (``mlflow.register_model`` and a tracking server write that tag;
    ``MlflowClient.create_model_version`` against a local store does not). Both once: a retried task
    adds nothing. False when ``model_uri`` names no logged model."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    model_id = _parse_model_id_if_present(model_uri)
    if not model_id:
        return False
    client = MlflowClient()
    known = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if not any(v.get("name") == name and str(v.get("version")) == version for v in known):
        entry = {"name": name, "version": version}
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*known, entry])})
    outputs = client.get_run(run_id).outputs
    if not any(o.model_id == model_id for o in (outputs.model_outputs if outputs else [])):
        client.log_outputs(run_id, [LoggedModelOutput(model_id=model_id, step=0)])
    return True


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def promote_to_champion(name: str, version: str, *, run_key: str) -> str | None:
    """Move ``champion`` to ``version``; the replaced champion keeps a ``previous_champion`` alias.

    Returns the replaced version (None when there was none).
    """
    client = MlflowClient()
    previous = get_alias(name, CHAMPION)
    if previous is not None and str(previous.version) == str(version):
        return None
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, f"{TAG_PREFIX}promoted_by_run", run_key)
    # The full sequence of champions, oldest first (previous_champion only keeps the last one).
    history = client.get_registered_model(name).tags.get(f"{TAG_PREFIX}champion_history", "")
    client.set_registered_model_tag(
        name,
        f"{TAG_PREFIX}champion_history",
        ",".join([*filter(None, history.split(",")), str(version)])[-5000:],
    )
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous.version)
        client.set_model_version_tag(
            name, previous.version, f"{TAG_PREFIX}replaced_by_version", str(version)
        )
        client.set_model_version_tag(
            name, version, f"{TAG_PREFIX}replaced_version", str(previous.version)
        )
        return str(previous.version)
    return None


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    accuracy: str
    macro_f1: str
    gate: str
    run_key: str
    created: int


def list_versions(name: str) -> list[VersionRow]:
    """All versions of ``name``, newest first, with aliases and key metrics."""
    client = MlflowClient()
    model = client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=sorted(aliases.get(str(mv.version), [])),
                accuracy=tags.get(f"{TAG_PREFIX}accuracy", ""),
                macro_f1=tags.get(f"{TAG_PREFIX}macro_f1", ""),
                gate=tags.get(f"{TAG_PREFIX}gate", ""),
                run_key=tags.get(f"{TAG_PREFIX}run_key", ""),
                created=mv.creation_timestamp,
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)
