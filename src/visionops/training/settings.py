"""From the config to the loop: tuned parameters applied to a config, FitOptions from train.*."""

from __future__ import annotations

from typing import Any

from visionops.core.config import PipelineConfig, build_config
from visionops.training.engine import FitOptions

# Tunable parameter -> the config key it sets.
PARAM_KEYS: dict[str, str] = {
    "learning_rate": "train.learning_rate",
    "weight_decay": "train.weight_decay",
    "dropout": "model.dropout",
    "batch_size": "train.batch_size",
    "optimizer": "train.optimizer",
    "width": "model.width",
    "augment_strength": "train.augment.strength",
    "label_smoothing": "train.label_smoothing",
}


def current_params(cfg: PipelineConfig) -> dict[str, Any]:
    """The values of every tunable parameter in ``cfg`` (the defaults when tuning is off)."""
    out: dict[str, Any] = {}
    for name, dotted in PARAM_KEYS.items():
        node: Any = cfg
        for part in dotted.split("."):
            node = getattr(node, part)
        out[name] = node
    return out


def apply_params(cfg: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """A copy of ``cfg`` with tuned ``params`` set, validated like any override."""
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise ValueError(f"unknown tuned parameters {unknown}; known: {sorted(PARAM_KEYS)}")
    return build_config(
        cfg.to_dict(), {PARAM_KEYS[k]: v for k, v in params.items()}, source="tuned parameters"
    )


def fit_options(cfg: PipelineConfig) -> FitOptions:
    # faces.balance=weights keeps every photo and samples so that each person is seen equally often.
    sampling = "balanced" if cfg.faces.enabled and cfg.faces.balance == "weights" else "uniform"
    return FitOptions(train=cfg.train, sampling=sampling)
