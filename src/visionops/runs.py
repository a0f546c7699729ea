"""A pipeline run: its context (passed between tasks as small JSON), its resolved config, its summary."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fsspec

from visionops import __version__
from visionops.config import PipelineConfig, build_config, load_config
from visionops.storage import RunStore, fingerprint, project_dir, run_key_from

log = logging.getLogger("visionops")

DEFAULT_CONFIG = "conf/digits.yaml"
# DAG params that map onto config keys (the trigger form's shortcuts).
PARAM_KEYS = {"model": "model.name", "max_epochs": "train.max_epochs", "n_trials": "tune.n_trials"}


@dataclass(frozen=True)
class RunContext:
    """What every task needs to find its run: small, JSON-serialisable, passed by XCom."""

    run_key: str
    dag_id: str
    airflow_run_id: str
    config_uri: str
    config_hash: str
    experiment_id: str
    parent_run_id: str
    data_root: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunContext:
        return cls(**data)

    def store(self) -> RunStore:
        return RunStore(self.run_key, self.data_root)

    def config(self) -> PipelineConfig:
        with fsspec.open(self.config_uri, "r") as fh:
            return build_config(json.load(fh), source=self.config_uri)


def resolve_path(value: str | None) -> str | None:
    """Relative paths in configs and params are relative to the project directory."""
    if not value or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (project_dir() / path).resolve())


def overrides_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The run's params as dotted config overrides: the one place where the DAG run changes the config."""
    overrides: dict[str, Any] = {}
    for param, key in PARAM_KEYS.items():
        if params.get(param) not in (None, ""):
            overrides[key] = params[param]
    extra = params.get("overrides") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"param 'overrides' must be a mapping of dotted keys to values, got {extra!r}")
    overrides.update(extra)
    if "data.path" in overrides:
        overrides["data.path"] = resolve_path(overrides["data.path"])
    return overrides


def resolve_config(params: dict[str, Any]) -> tuple[PipelineConfig, str]:
    """Load the config file named by the params, apply the overrides, validate once."""
    config_file = resolve_path(params.get("config") or DEFAULT_CONFIG)
    cfg = load_config(config_file, overrides_from_params(params))
    if cfg.data.path:
        cfg.data.path = resolve_path(cfg.data.path)
    return cfg, config_file


def code_version() -> str:
    """The git commit of the project when it is a checkout, else the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=project_dir(),
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_dir(),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def write_config(run_key: str, cfg: PipelineConfig, root: str) -> str:
    """Store the resolved config under the run (the copy every later task reads)."""
    store = RunStore(run_key, root)
    fp = fingerprint("config", cfg.to_dict())
    with store.writing("config", fp) as out:
        (out.path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    return f"{out.output.uri}/config.json"


def new_run_key(dag_id: str, airflow_run_id: str) -> str:
    return run_key_from(f"{dag_id}__{airflow_run_id}")
