"""The run context: what every task needs to find its run (its store, its resolved config, its MLflow parent run)."""

from __future__ import annotations

import json
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict

from visionops.core.config import PipelineConfig, read_stored_config
from visionops.core.storage import RunStore


class RunContext(BaseModel):
    """Small and JSON-serialisable: the ``start`` task returns it and every later task receives it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_key: str
    dag_id: str
    airflow_run_id: str
    config_uri: str
    config_hash: str
    experiment_id: str
    parent_run_id: str
    data_root: str
    trigger: str = "manual"  # why the run started: manual, schedule, new_data, drift
    force: bool = False  # train even when nothing changed since the champion

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunContext:
        return cls.model_validate(data)

    def store(self) -> RunStore:
        return RunStore(self.run_key, self.data_root)

    def config(self) -> PipelineConfig:
        with fsspec.open(self.config_uri, "r") as fh:
            return read_stored_config(json.load(fh), source=self.config_uri)
