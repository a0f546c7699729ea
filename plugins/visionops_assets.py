"""The assets of the continuous-training loop (in plugins/, which Airflow puts on sys.path).

* ``visionops://source/<config>``: a configured data source. ``watch_sources`` emits an event when
  its files change (extra: what changed, the source fingerprint, the config file); so does
  ``visionops data add``'s next watch, or a REST call (README, "Continuous training").
* ``visionops://predictions``: what ``batch_predict`` saw and answered (extra: the model version and
  the stored predictions); ``monitor`` is scheduled on it.
* ``visionops://drift``: emitted by ``monitor`` only when the model in service drifted (extra: what
  drifted, the model version, the config that trained it).

``train_pipeline`` runs daily, or sooner on an event of a source or of drift; ``trigger_of`` says
which started a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Asset

PROJECT = Path(__file__).resolve().parents[1]
GROUP = "visionops"
PREDICTIONS = Asset(name="visionops_predictions", uri="visionops://predictions", group=GROUP)
DRIFT = Asset(name="visionops_drift", uri="visionops://drift", group=GROUP)


def watched_configs() -> list[Path]:
    """The configs whose sources are watched: ``VISIONOPS_WATCH_CONFIGS`` (paths separated by
    ``os.pathsep``, relative to the project), else every ``conf/*.yaml``."""
    raw = os.environ.get("VISIONOPS_WATCH_CONFIGS", "")
    if raw.strip():
        paths = [Path(p) for p in raw.split(os.pathsep) if p.strip()]
        return [p if p.is_absolute() else PROJECT / p for p in paths]
    return sorted((PROJECT / "conf").glob("*.yaml"))


def source_asset(config: Path) -> Asset:
    """The asset of the data source a config reads (named after the config file)."""
    return Asset(
        name=f"visionops_source_{config.stem}", uri=f"visionops://source/{config.stem}", group=GROUP
    )


def trigger_of(context: Any) -> dict[str, Any]:
    """Why this DAG run started: ``manual``, ``schedule``, ``new_data`` or ``drift``, with what the
    asset events said (drift first: its run asks a person before promoting)."""
    run_type = str(getattr(context["dag_run"], "run_type", "manual")).lower()
    if "asset" not in run_type:
        return {
            "kind": "schedule" if "scheduled" in run_type or "backfill" in run_type else "manual"
        }
    events = [e for per_asset in context["triggering_asset_events"].values() for e in per_asset]
    drift = [e for e in events if e.asset.name == DRIFT.name]
    chosen = drift or [e for e in events if e.asset.name.startswith("visionops_source_")]
    if not chosen:
        return {"kind": "manual"}
    latest = max(chosen, key=lambda e: e.timestamp)
    detail = {k: v for k, v in (latest.extra or {}).items() if v is not None}
    detail["asset"] = latest.asset.uri
    if len(events) > 1:
        detail["events"] = len(events)
    return {"kind": "drift" if drift else "new_data", "detail": detail}
