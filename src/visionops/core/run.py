"""Starting a pipeline run: its config resolved from the trigger's params, its MLflow parent run, its context."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from visionops import __version__
from visionops.core import tracking
from visionops.core.config import PipelineConfig, load_config
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.run_view import config_name, log_params_once, parent_run_name, start_params
from visionops.core.storage import RunStore, data_root, fingerprint, project_dir, run_key_from

log = logging.getLogger("visionops")

DEFAULT_CONFIG = "conf/digits.yaml"
# DAG params that map onto config keys (the trigger form's shortcuts).
PARAM_KEYS = {"model": "model.name", "max_epochs": "train.max_epochs", "n_trials": "tune.n_trials"}


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
    if (params.get("trigger") or {}).get("kind") == "drift":
        # Retraining because the model in service drifted: a person decides the promotion.
        overrides["gate.require_approval"] = True
    extra = params.get("overrides") or {}
    if not isinstance(extra, dict):
        raise ValueError(
            f"param 'overrides' must be a mapping of dotted keys to values, got {extra!r}"
        )
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
    """The git commit of the project when it is a checkout (``-dirty`` with uncommitted changes to
    tracked files), else the package version: lineage a person reads."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=project_dir(),
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_dir(),
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


# What trains a model: the package, the DAGs and plugins that call it, and the pinned dependencies.
CODE_GLOBS = ("src/visionops/**/*.py", "dags/*.py", "plugins/*.py", "requirements.txt")


def code_fingerprint() -> str:
    """A hash of the code that trains a model (``CODE_GLOBS``, file contents): what "nothing changed
    since the champion" compares. Unlike the commit it ignores documentation and tests, and it sees
    uncommitted edits; it needs no git (an installed copy has the same files)."""
    root = project_dir()
    package = Path(__file__).resolve().parents[1]  # src/visionops, wherever it is installed
    digest = hashlib.sha256()
    files = sorted(
        {p for pattern in CODE_GLOBS[1:] for p in root.glob(pattern)}
        | {p for p in package.rglob("*.py")}
    )
    for path in files:
        if "__pycache__" in path.parts:
            continue
        name = path.relative_to(package.parent) if path.is_relative_to(package) else path.name
        digest.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def write_config(run_key: str, cfg: PipelineConfig, root: str) -> str:
    """Store the resolved config under the run (the copy every later task reads)."""
    store = RunStore(run_key, root)
    fp = fingerprint("config", cfg.to_dict())
    with store.writing("config", fp) as out:
        (out.path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    return f"{out.output.uri}/config.json"


def new_run_key(dag_id: str, airflow_run_id: str) -> str:
    return run_key_from(f"{dag_id}__{airflow_run_id}")


def start_run(params: dict[str, Any], *, dag_id: str, airflow_run_id: str) -> RunContext:
    """Resolve and validate the config, open the MLflow parent run, store the config under the run."""
    cfg, config_file = resolve_config(params)
    tracking.configure()
    run_key = new_run_key(dag_id, airflow_run_id)
    root = data_root()
    config_uri = write_config(run_key, cfg, root)
    exp_id = tracking.experiment_id(cfg.experiment)
    tags = {
        f"{T}dag_id": dag_id,
        f"{T}airflow_run_id": airflow_run_id,
        f"{T}run_key": run_key,
        f"{T}config_hash": cfg.config_hash(),
        f"{T}config_file": config_file,
        f"{T}code_version": code_version(),
        f"{T}code_fingerprint": code_fingerprint(),
        f"{T}model_name": cfg.registry.model_name,
    }
    if params.get("request_id"):
        tags[f"{T}request_id"] = str(params["request_id"])
    trigger = params.get("trigger") or {}
    tags[f"{T}trigger"] = str(trigger.get("kind") or "manual")
    if trigger.get("detail"):
        tags[f"{T}trigger_detail"] = tracking.clip(json.dumps(trigger["detail"], sort_keys=True))
    force = bool(params.get("force"))
    if force:
        tags[f"{T}force"] = "true"
    name = config_name(config_file)
    parent = tracking.start_parent_run(
        exp_id,
        f"{dag_id}/{airflow_run_id}",
        tags,
        run_name=parent_run_name(
            name, cfg.model.name, tags[f"{T}trigger"], datetime.now().astimezone()
        ),
    )
    log_params_once(parent, start_params(cfg, name))  # the whole config: the artifact below
    tracking.log_json(cfg.to_dict(), "config/config.json", run_id=parent)
    log.info(
        "run %s: experiment %s, parent MLflow run %s, config %s (hash %s), started by %s%s",
        run_key,
        cfg.experiment,
        parent,
        config_file,
        cfg.config_hash(),
        tags[f"{T}trigger"],
        " (force)" if force else "",
    )
    tracking.log_run_url(exp_id, parent)
    return RunContext(
        run_key=run_key,
        dag_id=dag_id,
        airflow_run_id=airflow_run_id,
        config_uri=config_uri,
        config_hash=cfg.config_hash(),
        experiment_id=exp_id,
        parent_run_id=parent,
        data_root=root,
        trigger=tags[f"{T}trigger"],
        force=force,
    )
