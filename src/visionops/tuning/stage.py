"""The tune stage in three steps, so that the DAG can map N workers over one study:

plan (open the tuning run and the study, warm start) -> N x worker (trials) -> reduce (best
parameters, counts, plots). ``tune_stage`` runs the three in one process (CLI, tests).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from visionops.core import tracking
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import Tuned, TuneReport, TuneTask
from visionops.core.storage import StageOutput, visionops_home
from visionops.data.preprocess import load_labels, load_split, load_stats
from visionops.training.inputs import check_feature_options, training_output
from visionops.training.settings import current_params
from visionops.tuning.report import warm_start, write_plots
from visionops.tuning.study import make_storage, open_study, run_worker, summarize

log = logging.getLogger("visionops")


def _storage(cfg):  # noqa: ANN001, ANN202
    return make_storage(cfg.tune, visionops_home() / "optuna" / "journal.log")


def plan_stage(
    ctx: RunContext, preprocessed: StageOutput, champion_params: dict[str, Any]
) -> list[TuneTask]:
    """Open the tuning run and the study (named after the pipeline run); one task per worker.

    ``champion_params`` (the champion's training params, {} when there is none) warm-start the study.
    """
    cfg = ctx.config()
    check_feature_options(cfg)  # before any run is opened: a bad combination names its key
    tracking.configure()
    study_name = f"{ctx.run_key}__{preprocessed.fingerprint[:12]}"
    with tracking.stage_run(ctx.parent_run_id, "tune") as run_id:
        if cfg.tune.n_trials == 0:
            mlflow.set_tag(f"{T}tuning", "skipped (tune.n_trials = 0)")
            return [TuneTask(worker=0, skip=True, tuning_run_id=run_id, study_name=study_name)]
        training_output(ctx, cfg, preprocessed)  # embeddings once here, not by every worker at once
        study = open_study(cfg.tune, _storage(cfg), study_name)
        warm = warm_start(study, cfg, champion_params)
        mlflow.set_tags(
            {
                f"{T}study": study_name,
                f"{T}tune_workers": str(cfg.tune.workers),
                f"{T}tune_storage": "rdb" if cfg.tune.storage_url else "journal",
                f"{T}warm_start": str(bool(warm)).lower(),
            }
        )
        mlflow.log_params(
            {
                "n_trials": cfg.tune.n_trials,
                "epochs_per_trial": cfg.tune.epochs_per_trial,
                "pruner": cfg.tune.pruner,
                "objective": cfg.tune.objective,
                "workers": cfg.tune.workers,
            }
        )
    return [
        TuneTask(worker=i, skip=False, tuning_run_id=run_id, study_name=study_name)
        for i in range(cfg.tune.workers)
    ]


def worker_stage(ctx: RunContext, preprocessed: StageOutput, task: TuneTask) -> TuneReport:
    """Run trials of the shared study until it has ``tune.n_trials``; each a child of the tuning run."""
    if task.skip:
        return TuneReport(**task.model_dump(), trials=0)
    cfg = ctx.config()
    tracking.configure()
    tracking.log_run_url(ctx.experiment_id, task.tuning_run_id)  # the trials are its children
    folder = training_output(ctx, cfg, preprocessed).local_path()  # embeddings for face_embedding
    stats = load_stats(folder)
    n = run_worker(
        cfg,
        load_split(folder, "train"),
        load_split(folder, "val"),
        mean=stats["mean"],
        std=stats["std"],
        num_classes=len(load_labels(folder)),
        storage=_storage(cfg),
        study_name=task.study_name,
        tuning_run_id=task.tuning_run_id,
        worker=task.worker,
    )
    log.info("tune worker %d: %d trials", task.worker, n)
    return TuneReport(**task.model_dump(), trials=n)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def reduce_stage(ctx: RunContext, workers: list[TuneReport]) -> Tuned:
    """Best parameters of the study (merged over the configured values), counts and plots."""
    cfg = ctx.config()
    tracking.configure()
    defaults = current_params(cfg)
    first = workers[0]
    run_id = first.tuning_run_id
    tracking.log_run_url(ctx.experiment_id, run_id)
    client = mlflow.tracking.MlflowClient()
    if first.skip:
        client.log_batch(
            run_id, params=[mlflow.entities.Param(f"best.{k}", str(v)) for k, v in defaults.items()]
        )
        client.set_tag(ctx.parent_run_id, f"{T}tuning", "off (tune.n_trials = 0)")
        return Tuned(best_params=defaults, best_value=None, tuning_run_id=run_id)
    study = open_study(cfg.tune, _storage(cfg), first.study_name)
    result = summarize(study)
    # One line for the run summary: what the search did and what it chose.
    chosen = ", ".join(f"{k} {_short(v)}" for k, v in sorted(result.best_params.items()))
    client.set_tag(
        ctx.parent_run_id,
        f"{T}tuning",
        f"{result.n_complete + result.n_pruned} trials ({result.n_pruned} pruned, "
        f"{result.n_failed} failed), best {cfg.tune.objective} {result.best_value:.4f}: {chosen}",
    )
    for key, value in result.best_params.items():
        client.log_param(run_id, f"best.{key}", value)
    for key, value in {
        f"best_{cfg.tune.objective}": result.best_value,
        "n_complete": result.n_complete,
        "n_pruned": result.n_pruned,
        "n_failed": result.n_failed,
        "trials_per_worker_max": max(w.trials for w in workers),
    }.items():
        client.log_metric(run_id, key, value)
    if cfg.tune.plots:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tuning_plots.html"
            if write_plots(study, path):
                client.log_artifact(run_id, str(path), "tuning")
    log.info(
        "tune: best %s -> %s %.4f (%d complete, %d pruned, %d failed)",
        result.best_params,
        cfg.tune.objective,
        result.best_value,
        result.n_complete,
        result.n_pruned,
        result.n_failed,
    )
    return Tuned(
        best_params={**defaults, **result.best_params},
        best_value=result.best_value,
        tuning_run_id=run_id,
    )


def tune_stage(
    ctx: RunContext, preprocessed: StageOutput, champion_params: dict[str, Any]
) -> Tuned:
    """Plan, every worker one after the other, reduce: the whole tune stage in one process."""
    tasks = plan_stage(ctx, preprocessed, champion_params)
    return reduce_stage(ctx, [worker_stage(ctx, preprocessed, task) for task in tasks])
