"""How a pipeline run reads in MLflow: the parent run's name and the few params a person compares.

The whole resolved config stays an artifact of the parent run (``config/config.json``); as params, a
flattened config (over a hundred keys) hides the handful that tell two runs apart. The params come
in three parts, each logged when it is known: what the run is (``start_params``, at start), what it
trained on (``data_params``, after ingest) and the values it trained with (the tuned or configured
hyperparameters, after tuning: ``training.settings.current_params``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from visionops.core.config import PipelineConfig

NAME_SEPARATOR = " · "
MAX_PARAM_CHARS = 6000  # what MLflow keeps of a param value
SHORT_FINGERPRINT = 8  # hex digits: enough to tell data sets apart in a table


def config_name(config_file: str) -> str:
    """The data set a config is for, as its file names it: ``conf/digits.yaml`` -> ``digits``."""
    return PurePath(config_file).stem or config_file


def parent_run_name(config: str, model: str, trigger: str, started: datetime) -> str:
    """``digits · small_cnn · manual · 12-03 09:41``: data set, model, what started it, when."""
    return NAME_SEPARATOR.join([config, model, trigger, started.strftime("%m-%d %H:%M")])


def start_params(cfg: PipelineConfig, config: str) -> dict[str, Any]:
    """What the run is: known at start and not changed by tuning."""
    return {
        "config": config,
        "data_source": cfg.data.source,
        "model": cfg.model.name,
        "image_size": cfg.data.image_size,
        "max_epochs": cfg.train.max_epochs,
        "scheduler": cfg.train.scheduler,
        "n_trials": cfg.tune.n_trials,
        "seed": cfg.train.seed,
        "require_approval": cfg.gate.require_approval,  # a person decides the promotion
    }


def data_params(fingerprint: str, n_images: int, n_classes: int) -> dict[str, Any]:
    """What the run trained on (the full fingerprint is the ``visionops.data_fingerprint`` tag)."""
    return {
        "data_fingerprint": fingerprint[:SHORT_FINGERPRINT],
        "n_images": n_images,
        "n_classes": n_classes,
    }


def params_to_log(params: Mapping[str, Any], logged: Mapping[str, str]) -> dict[str, str]:
    """``params`` as MLflow param values, less those already logged (MLflow refuses a changed value,
    and a retried task must not fail on its own earlier attempt)."""
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items() if k not in logged}


def log_params_once(run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Log the ``params`` that ``run_id`` does not have yet; returns what was logged."""
    client = MlflowClient()
    new = params_to_log(params, client.get_run(run_id).data.params)
    if new:
        client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()])
    return new
