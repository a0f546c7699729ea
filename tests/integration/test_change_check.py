"""Nothing changed since the champion: the check after ingest, against the champion's lineage tags."""

from __future__ import annotations

from pathlib import Path

import mlflow
from visionops.core.context import RunContext
from visionops.pipeline import stages as pipeline

NAME = "change-check"


def _start(
    repo: Path, run_id: str, force: bool = False, **overrides: object
) -> tuple[RunContext, dict]:
    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {"experiment": NAME, "registry.model_name": NAME, **overrides},
        "force": force,
    }
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id=run_id)
    ingested = pipeline.ingest(context)  # records the data fingerprint on the parent run
    return RunContext.from_dict(context), ingested


def _make_champion(ctx: RunContext) -> str:
    """A version whose lineage tags are this run's, as register_stage writes them."""
    client = mlflow.tracking.MlflowClient()
    tags = client.get_run(ctx.parent_run_id).data.tags
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, "file:///nowhere", run_id=ctx.parent_run_id)
    for key in ("data_fingerprint", "code_fingerprint"):
        client.set_model_version_tag(
            NAME, version.version, f"visionops.{key}", tags[f"visionops.{key}"]
        )
    client.set_model_version_tag(NAME, version.version, "visionops.config_hash", ctx.config_hash)
    client.set_registered_model_alias(NAME, "champion", version.version)
    return str(version.version)


def test_the_same_data_config_and_code_is_unchanged_unless_forced(mlflow_store, repo):
    first, first_in = _start(repo, "manual__first")
    no_champion = pipeline.check_changes(first.to_dict(), first_in)
    assert no_champion["changed"] is True
    assert no_champion["differences"] == [f"no champion of {NAME} in service"]
    version = _make_champion(first)

    again, again_in = _start(repo, "manual__again")
    check = pipeline.check_changes(again.to_dict(), again_in)
    assert check["changed"] is False and check["champion_version"] == version
    assert pipeline.after_check(check) == "unchanged"
    assert pipeline.unchanged(check).startswith(f"nothing changed since champion v{version}")
    tags = mlflow.tracking.MlflowClient().get_run(again.parent_run_id).data.tags
    assert tags["visionops.unchanged_since"] == version

    forced, forced_in = _start(repo, "manual__forced", force=True)
    check = pipeline.check_changes(forced.to_dict(), forced_in)
    assert check["changed"] is True and check["forced"] is True
    assert pipeline.after_check(check) == "validate"
    assert (
        mlflow.tracking.MlflowClient().get_run(forced.parent_run_id).data.tags["visionops.force"]
        == "true"
    )

    other, other_in = _start(repo, "manual__other", **{"train.max_epochs": 3})
    check = pipeline.check_changes(other.to_dict(), other_in)
    assert check["changed"] is True and check["forced"] is False
    assert check["differences"] == [
        f"config hash {first.config_hash} (champion v{version}) -> {other.config_hash}"
    ]


def test_a_drift_trigger_is_recorded_and_asks_a_person(mlflow_store, repo):
    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {"experiment": NAME},
        "trigger": {"kind": "drift", "detail": {"drifted": ["brightness"], "model_version": "3"}},
    }
    context = RunContext.from_dict(
        pipeline.start(params, dag_id="train_pipeline", airflow_run_id="asset_triggered__x")
    )
    assert context.trigger == "drift"
    assert context.config().gate.require_approval is True
    tags = mlflow.tracking.MlflowClient().get_run(context.parent_run_id).data.tags
    assert tags["visionops.trigger"] == "drift"
    assert '"drifted": ["brightness"]' in tags["visionops.trigger_detail"]
