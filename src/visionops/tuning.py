"""Tuning: an Optuna study (seeded TPE, median pruner); each trial is a nested MLflow run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna

from visionops.config import PipelineConfig
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.engine import fit, seed_everything, select_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, float]
    best_value: float | None
    n_complete: int
    n_pruned: int
    n_failed: int
    study_name: str


def journal_storage(path: Path) -> optuna.storages.JournalStorage:
    """Optuna's journal file: safe for several processes on one machine, survives task retries."""
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def suggest(trial: optuna.Trial, cfg: PipelineConfig) -> dict[str, float]:
    t = cfg.tune
    return {
        "learning_rate": trial.suggest_float("learning_rate", *t.learning_rate, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *t.weight_decay, log=True),
        "dropout": trial.suggest_float("dropout", *t.dropout),
    }


def run_study(cfg: PipelineConfig, train: Split, val: Split, *, mean: list[float], std: list[float],
              num_classes: int, storage: Any, study_name: str, tuning_run_id: str) -> TuneResult:
    """Run (or resume) the study until ``tune.n_trials`` trials have finished; log each as a child run."""
    device = select_device(cfg.train.device)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    experiment_id = mlflow.get_run(tuning_run_id).info.experiment_id

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg)
        with mlflow.start_run(run_name=f"trial-{trial.number}", experiment_id=experiment_id,
                              parent_run_id=tuning_run_id, nested=True,
                              tags={"visionops.stage": "tune.trial", "optuna.trial": str(trial.number),
                                    "optuna.study": study_name}) as run:
            mlflow.log_params(params)

            def report(m) -> None:
                mlflow.log_metrics({"val_accuracy": m.val_accuracy, "train_loss": m.train_loss,
                                    "val_loss": m.val_loss}, step=m.epoch)
                trial.report(m.val_accuracy, m.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {m.epoch} (val_accuracy {m.val_accuracy:.4f})")

            seed_everything(cfg.train.seed + trial.number)
            net = NormalizedNet(build_model(cfg.model.name, in_channels=cfg.data.channels,
                                            image_size=cfg.data.image_size, num_classes=num_classes,
                                            dropout=params["dropout"]), mean, std)
            try:
                result = fit(net, train, val, max_epochs=cfg.tune.epochs_per_trial,
                             batch_size=cfg.train.batch_size, learning_rate=params["learning_rate"],
                             weight_decay=params["weight_decay"], patience=cfg.tune.epochs_per_trial,
                             seed=cfg.train.seed + trial.number, device=device, on_epoch=report)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "PRUNED")
                mlflow.end_run(status="KILLED")
                raise
            mlflow.set_tag("optuna.state", "COMPLETE")
            mlflow.log_metric("best_val_accuracy", result.best_val_accuracy)
            log.info("trial %d: %s -> %.4f (run %s)", trial.number, params, result.best_val_accuracy,
                     run.info.run_id)
            return result.best_val_accuracy

    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    remaining = cfg.tune.n_trials - sum(t.state in finished for t in study.trials)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=(RuntimeError, ValueError))
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tuning study {study_name}: no trial completed "
                           f"({states.count(optuna.trial.TrialState.FAIL)} failed, "
                           f"{states.count(optuna.trial.TrialState.PRUNED)} pruned)")
    return TuneResult(
        best_params=dict(study.best_params), best_value=study.best_value,
        n_complete=len(complete), n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL), study_name=study_name,
    )
