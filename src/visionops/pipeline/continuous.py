"""The continuous-training tasks outside ``train_pipeline``: watching the data sources
(``watch_sources``) and checking served batches for drift (``monitor``). Like ``stages``, each
adapter parses its contracts and imports its domain code only when it runs."""

from __future__ import annotations

from visionops.core.contracts import DriftChecked, Recorded, SourceChange
from visionops.pipeline.adapter import stage


@stage(uses_mlflow=False)
def watch(config_file: str) -> SourceChange:
    """Compare a config's data source with its last snapshot (file names, sizes, times)."""
    from visionops.core.run import resolve_config
    from visionops.data.watch import watch_source

    cfg, path = resolve_config({"config": config_file})
    return watch_source(path, cfg.data)


@stage
def check_drift(recorded: Recorded) -> DriftChecked:
    """A recorded batch against the reference of the version that answered it; the report to MLflow."""
    from visionops.monitoring.service import check_batch

    return check_batch(recorded)
