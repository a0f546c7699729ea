"""Around the study: warm start from the champion, Optuna plots for the tuning run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna

from visionops.core.config import PipelineConfig
from visionops.tuning.space import in_space

log = logging.getLogger(__name__)


def warm_start(
    study: optuna.Study, cfg: PipelineConfig, champion_params: dict[str, Any]
) -> dict[str, Any]:
    """Enqueue the champion's parameters (those inside the space) as the next trial; returns them.

    ``champion_params`` are the params its training run logged (``release.lineage.champion_params``).
    """
    if not cfg.tune.warm_start or study.get_trials(deepcopy=False):
        return {}  # only into a fresh study: a resumed one already had its chance
    params = in_space(champion_params, cfg.tune)
    if params:
        study.enqueue_trial(params, user_attrs={"warm_start": "champion"}, skip_if_exists=True)
        log.info("tune: warm start from the champion's parameters %s", params)
    return params


def write_plots(study: optuna.Study, path: Path) -> list[str]:
    """Optimization history, parameter importances and parallel coordinates in one HTML file.

    Returns the names of the plots written; a plot that the trials cannot support (importances
    need two completed trials and a varied space) is left out with a log line.
    """
    from optuna import visualization as vis

    makers = {
        "optimization_history": vis.plot_optimization_history,
        "param_importances": vis.plot_param_importances,
        "parallel_coordinate": vis.plot_parallel_coordinate,
    }
    parts, done = [], []
    for name, make in makers.items():
        try:
            fig = make(study)
        except (ValueError, RuntimeError) as exc:
            log.info("tune: no %s plot (%s)", name, exc)
            continue
        # plotly.js is embedded once, so the file opens offline (the MLflow UI shows it as is).
        parts.append(
            f"<h2>{name.replace('_', ' ')}</h2>"
            + fig.to_html(full_html=False, include_plotlyjs=not parts)
        )
        done.append(name)
    if parts:
        path.write_text(
            f"<html><head><meta charset='utf-8'><title>{study.study_name}</title></head><body>"
            + "".join(parts)
            + "</body></html>"
        )
    return done
