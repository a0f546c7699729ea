"""The ``batch_predict`` tasks: pin a registered model to a version, then score a folder with it."""

from __future__ import annotations

from visionops.core.contracts import BatchScored, ModelRef, Recorded
from visionops.pipeline.adapter import stage


@stage
def resolve(model_name: str, alias: str) -> ModelRef:
    """Pin ``models:/NAME@ALIAS`` to a version when the run starts (a promotion meanwhile cannot mix two models)."""
    from visionops.serving.batch import resolve_model

    return resolve_model(f"{model_name}@{alias}")


@stage
def score(
    model: ModelRef,
    input_dir: str,
    output_path: str | None,
    *,
    run_id: str,
    overwrite: bool = False,
    shadow: bool | None = None,
) -> BatchScored:
    """The pinned version over a folder of images; the CSV under the data root unless ``output_path``
    (refused if it exists, unless ``overwrite``); the challenger in shadow when ``shadow`` (None:
    the version's ``serving.shadow``)."""
    from visionops.serving.batch import batch_predict

    return batch_predict(
        model, input_dir, output_path, run_id=run_id, overwrite=overwrite, shadow=shadow
    )


@stage(uses_mlflow=False)
def record(scored: BatchScored, *, run_id: str) -> Recorded:
    """What the batch held and got, for the monitor (the ``visionops://predictions`` event names it)."""
    from visionops.monitoring.service import record_scored

    return record_scored(scored, run_id)
