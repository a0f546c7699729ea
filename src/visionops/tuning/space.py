"""The search space declared in ``tune.*``: each key a range or a list of choices, each optional."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from visionops.core.config import TuneConfig

LOG_SCALE = ("learning_rate", "weight_decay", "width")
RANGES = (
    "learning_rate",
    "weight_decay",
    "dropout",
    "width",
    "augment_strength",
    "label_smoothing",
)
CHOICES = ("batch_size", "optimizer")


def distributions(tune: TuneConfig) -> dict[str, BaseDistribution]:
    """The searched parameters and their distributions (the keys left null are not searched)."""
    out: dict[str, BaseDistribution] = {}
    for key in RANGES:
        bounds = getattr(tune, key)
        if bounds is not None:
            out[key] = FloatDistribution(bounds[0], bounds[1], log=key in LOG_SCALE)
    for key in CHOICES:
        choices = getattr(tune, key)
        if choices is not None:
            out[key] = CategoricalDistribution(list(choices))
    return out


def suggest(trial: optuna.Trial, tune: TuneConfig) -> dict[str, Any]:
    """Draw one point of the space for ``trial``."""
    params: dict[str, Any] = {}
    for key, dist in distributions(tune).items():
        if isinstance(dist, FloatDistribution):
            params[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        else:
            params[key] = trial.suggest_categorical(key, dist.choices)
    return params


def in_space(params: dict[str, Any], tune: TuneConfig) -> dict[str, Any]:
    """The values of ``params`` (e.g. a champion's run params, as strings) that lie in the space, typed."""
    out: dict[str, Any] = {}
    for key, dist in distributions(tune).items():
        if key not in params:
            continue
        raw = params[key]
        try:
            if isinstance(dist, FloatDistribution):
                value: Any = float(raw)
                if not dist.low <= value <= dist.high:
                    continue
            else:
                value = next(c for c in dist.choices if str(c) == str(raw))
        except (TypeError, ValueError, StopIteration):
            continue
        out[key] = value
    return out
