"""One Optuna study shared by any number of workers: storage, pruner, the trial objective."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

import mlflow
from visionops.core.config import PipelineConfig, TuneConfig
from visionops.data.preprocess import Split
from visionops.training.engine import EpochMetrics, fit, seed_everything, select_device
from visionops.training.inputs import build_network
from visionops.training.settings import apply_params, fit_options
from visionops.tuning.space import suggest

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The direction of each ``tune.objective``: a loss is minimised, an accuracy maximised.
DIRECTION = {"val_loss": "minimize", "val_accuracy": "maximize"}


def epoch_value(m: EpochMetrics, objective: str) -> float:
    """The figure of one epoch that ``tune.objective`` ranks trials by."""
    return float(m.val_loss if objective == "val_loss" else m.val_accuracy)


def trial_value(history: list[EpochMetrics], objective: str) -> float:
    """A trial's result: its best epoch by ``tune.objective`` (lowest loss or highest accuracy)."""
    values = [epoch_value(m, objective) for m in history]
    return min(values) if DIRECTION[objective] == "minimize" else max(values)


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
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


def make_storage(tune: TuneConfig, journal_path: Path) -> BaseStorage:
    """RDBStorage (PostgreSQL) when ``tune.storage_url`` is set, else the journal file."""
    if tune.storage_url:
        # The heartbeat lets a retried worker see trials of a killed worker as failed, not running forever.
        return optuna.storages.RDBStorage(tune.storage_url, heartbeat_interval=60, grace_period=180)
    return journal_storage(journal_path)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruner named by ``tune.pruner``, with the ``tune.pruner_*`` settings; steps are epochs (from 1)."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_epochs
        )
    if tune.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            tune.pruner_percentile,
            n_startup_trials=tune.pruner_startup_trials,
            n_warmup_steps=tune.pruner_warmup_epochs,
        )
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=tune.pruner_min_epochs, reduction_factor=tune.pruner_reduction_factor
        )
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=tune.pruner_min_epochs,
            max_resource=tune.epochs_per_trial,
            reduction_factor=tune.pruner_reduction_factor,
        )
    return optuna.pruners.NopPruner()


def open_study(
    tune: TuneConfig, storage: BaseStorage | str, study_name: str, worker: int = 0
) -> optuna.Study:
    """Create or load the study; each worker seeds its sampler differently so they do not propose twins."""
    # Optuna's records go through Python logging, like every other library's: its own handler writes
    # them to stderr, which an Airflow task logs at level error whatever their level.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction=DIRECTION[tune.objective],
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=tune.seed + worker),
        pruner=make_pruner(tune),
    )


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _start_trial_run(
    trial: optuna.Trial, params: dict[str, Any], tuning_run_id: str, worker: int
) -> Any:
    """The trial's MLflow run, a child of the tuning run, with its parameters."""
    run = mlflow.start_run(
        run_name=f"trial-{trial.number}",
        experiment_id=mlflow.get_run(tuning_run_id).info.experiment_id,
        parent_run_id=tuning_run_id,
        nested=True,
        tags={
            "visionops.stage": "tune.trial",
            "optuna.trial": str(trial.number),
            "optuna.study": trial.study.study_name,
            "optuna.worker": str(worker),
        },
    )
    mlflow.log_params(params)
    return run


def _end_pruned_run(why: str, epoch: int) -> None:
    """Pruning is the pruner doing its job, not a failure: the run ends FINISHED and says so."""
    mlflow.set_tags(
        {
            "optuna.state": "PRUNED",
            "optuna.pruned_at_epoch": str(epoch),
            "visionops.pruned": "true",
            "mlflow.note.content": (
                f"{why[:1].upper()}{why[1:]}: Optuna's pruner stopped this trial early "
                "because it trailed the others; not a failure."
            ),
        }
    )
    mlflow.log_metric("pruned_at_epoch", epoch)
    mlflow.end_run()


def _objective(
    cfg: PipelineConfig,
    train: Split,
    val: Split,
    mean: list[float],
    std: list[float],
    num_classes: int,
    tuning_run_id: str | None,
    worker: int,
    ran: list[int],
):
    device = select_device(cfg.train.device)
    ranked_by = cfg.tune.objective
    last_epoch = cfg.tune.epochs_per_trial

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.tune)
        trial.set_user_attr("worker", worker)
        ran.append(trial.number)
        run = _start_trial_run(trial, params, tuning_run_id, worker) if tuning_run_id else None
        epochs = [0]

        def report(m: EpochMetrics) -> None:
            epochs[0] = m.epoch
            if run is not None:
                metrics = {"val_accuracy": m.val_accuracy, "train_loss": m.train_loss}
                mlflow.log_metrics({**metrics, "val_loss": m.val_loss}, step=m.epoch)
            trial.report(epoch_value(m, ranked_by), m.epoch)
            # After the last epoch there is nothing left to save: the trial completes with its result.
            if m.epoch < last_epoch and trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at epoch {m.epoch} of {last_epoch} "
                    f"({ranked_by} {epoch_value(m, ranked_by):.4f})"
                )

        try:
            trial_cfg = apply_params(cfg, params)
            seed = cfg.train.seed + trial.number
            seed_everything(seed)
            net = build_network(trial_cfg, num_classes, {"mean": mean, "std": std})
            t = trial_cfg.train
            result = fit(
                net,
                train,
                val,
                max_epochs=last_epoch,
                batch_size=t.batch_size,
                learning_rate=t.learning_rate,
                weight_decay=t.weight_decay,
                patience=last_epoch,
                seed=seed,
                device=device,
                on_epoch=report,
                options=fit_options(trial_cfg),
            )
            trial.set_user_attr("epochs", len(result.history))
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("epochs", epochs[0])
            if run is not None:
                _end_pruned_run(str(pruned), epochs[0])
            raise
        except BaseException as exc:
            if run is not None:
                mlflow.set_tags({"optuna.state": "FAIL", "optuna.error": str(exc)[:4000]})
                mlflow.end_run(status="FAILED")
            raise
        value = trial_value(result.history, ranked_by)
        if run is not None:
            mlflow.set_tag("optuna.state", "COMPLETE")
            best = {"best_val_accuracy": result.best_val_accuracy, f"best_{ranked_by}": value}
            mlflow.log_metrics(best)
            mlflow.end_run()
        log.info(
            "trial %d (worker %d): %s -> %s %.4f", trial.number, worker, params, ranked_by, value
        )
        return value

    return objective


def run_worker(
    cfg: PipelineConfig,
    train: Split,
    val: Split,
    *,
    mean: list[float],
    std: list[float],
    num_classes: int,
    storage: BaseStorage | str,
    study_name: str,
    tuning_run_id: str | None,
    worker: int = 0,
) -> int:
    """Run trials of the shared study until ``tune.n_trials`` have finished (by any worker).

    Returns the number of trials this worker ran. A retried worker resumes the same study.
    """
    study = open_study(cfg.tune, storage, study_name, worker)
    remaining = cfg.tune.n_trials - n_finished(study)
    if remaining <= 0:
        return 0
    ran: list[int] = []  # counted here: an enqueued (warm-start) trial predates this worker
    stop = optuna.study.MaxTrialsCallback(cfg.tune.n_trials, states=FINISHED)
    objective = _objective(cfg, train, val, mean, std, num_classes, tuning_run_id, worker, ran)
    study.optimize(
        objective, n_trials=remaining, callbacks=[stop], catch=(RuntimeError, ValueError)
    )
    return len(ran)


def summarize(study: optuna.Study) -> TuneResult:
    """Best parameters and trial counts; an error when no trial completed."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    n_complete = states.count(TrialState.COMPLETE)
    if not n_complete:
        raise RuntimeError(
            f"tuning study {study.study_name}: no trial completed "
            f"({states.count(TrialState.FAIL)} failed, {states.count(TrialState.PRUNED)} pruned)"
        )
    return TuneResult(
        best_params=dict(study.best_params),
        best_value=study.best_value,
        n_complete=n_complete,
        n_pruned=states.count(TrialState.PRUNED),
        n_failed=states.count(TrialState.FAIL),
        study_name=study.study_name,
    )


def run_study(
    cfg: PipelineConfig,
    train: Split,
    val: Split,
    *,
    mean: list[float],
    std: list[float],
    num_classes: int,
    storage: Any,
    study_name: str,
    tuning_run_id: str | None,
) -> TuneResult:
    """One worker, then the summary: tuning in a single process."""
    run_worker(
        cfg,
        train,
        val,
        mean=mean,
        std=std,
        num_classes=num_classes,
        storage=storage,
        study_name=study_name,
        tuning_run_id=tuning_run_id,
    )
    return summarize(open_study(cfg.tune, storage, study_name))
