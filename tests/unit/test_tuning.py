"""Tuning: the search space, pruning and plots, on Optuna journal files in tmp_path.

(Trials as MLflow child runs, warm start from the registry's champion, and studies shared by worker
processes over a journal file or PostgreSQL: tests/integration/test_tuning_runs_and_workers.py.)
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from testkit import run_tuning as _run
from testkit import tuning_config as _cfg
from visionops.core.config import ConfigError
from visionops.tuning import (
    distributions,
    in_space,
    journal_storage,
    make_pruner,
    open_study,
    write_plots,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_space_comes_from_the_config() -> None:
    cfg = _cfg(
        **{
            "tune.batch_size": [16, 32],
            "tune.optimizer": ["adamw", "sgd"],
            "tune.width": [0.5, 2.0],
            "tune.augment_strength": [0.0, 0.5],
            "tune.label_smoothing": [0.0, 0.2],
            "tune.dropout": None,
        }
    )
    dists = distributions(cfg.tune)
    assert set(dists) == {
        "learning_rate",
        "weight_decay",
        "width",
        "augment_strength",
        "label_smoothing",
        "batch_size",
        "optimizer",
    }
    assert dists["learning_rate"].log and dists["width"].log and not dists["augment_strength"].log
    assert dists["optimizer"].choices == ("adamw", "sgd")
    # A champion's params arrive as strings; only those inside the space are kept.
    assert in_space(
        {"learning_rate": "0.001", "batch_size": "32", "optimizer": "adam", "width": "9"}, cfg.tune
    ) == {"learning_rate": 0.001, "batch_size": 32}
    with pytest.raises(
        ConfigError, match="tune.learning_rate is searched on a log scale: low must be > 0"
    ):
        _cfg(**{"tune.learning_rate": [0.0, 0.1]})
    with pytest.raises(ConfigError, match="tune.optimizer: give at least one choice"):
        _cfg(**{"tune.optimizer": []})


@pytest.mark.parametrize("pruner", ["successive_halving", "median", "hyperband"])
def test_the_pruner_prunes_hopeless_trials(tmp_path: Path, pruner: str) -> None:
    # Half the learning-rate range cannot learn anything in 4 epochs: those trials should be stopped early.
    cfg = _cfg(
        **{
            "tune.n_trials": 10,
            "tune.epochs_per_trial": 4,
            "tune.pruner": pruner,
            "tune.objective": "val_accuracy",  # the bar below is an accuracy
            "tune.learning_rate": [1e-9, 1e-2],
            "tune.dropout": None,
            "tune.weight_decay": None,
        }
    )
    storage = journal_storage(tmp_path / "journal.log")
    result = _run(cfg, storage, "prune")
    assert result.n_complete + result.n_pruned == 10
    assert result.n_pruned >= 1
    study = optuna.load_study(study_name="prune", storage=storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 or pruner == "hyperband" for t in pruned)
    assert result.best_value >= 0.9


@pytest.mark.parametrize(
    ("settings", "cls", "attrs"),
    [
        (
            {
                "tune.pruner": "median",
                "tune.pruner_startup_trials": 3,
                "tune.pruner_warmup_epochs": 2,
            },
            optuna.pruners.MedianPruner,
            {"_percentile": 50.0, "_n_startup_trials": 3, "_n_warmup_steps": 2},
        ),
        (
            {
                "tune.pruner": "percentile",
                "tune.pruner_percentile": 25.0,
                "tune.pruner_startup_trials": 0,
            },
            optuna.pruners.PercentilePruner,
            {"_percentile": 25.0, "_n_startup_trials": 0, "_n_warmup_steps": 1},
        ),
        (
            {
                "tune.pruner": "successive_halving",
                "tune.pruner_min_epochs": 2,
                "tune.pruner_reduction_factor": 4,
            },
            optuna.pruners.SuccessiveHalvingPruner,
            {"_min_resource": 2, "_reduction_factor": 4},
        ),
        (
            {
                "tune.pruner": "hyperband",
                "tune.pruner_min_epochs": 2,
                "tune.pruner_reduction_factor": 2,
            },
            optuna.pruners.HyperbandPruner,
            {"_min_resource": 2, "_max_resource": 6, "_reduction_factor": 2},
        ),
        ({"tune.pruner": "none"}, optuna.pruners.NopPruner, {}),
    ],
)
def test_make_pruner_builds_optunas_pruner_from_the_config(
    settings: dict, cls: type, attrs: dict
) -> None:
    pruner = make_pruner(_cfg(**{"tune.epochs_per_trial": 6, **settings}).tune)
    assert type(pruner) is cls
    assert {name: getattr(pruner, name) for name in attrs} == attrs


@pytest.mark.parametrize(
    "settings",
    [
        {"tune.pruner": "median", "tune.pruner_startup_trials": 1, "tune.pruner_warmup_epochs": 2},
        {
            "tune.pruner": "percentile",
            "tune.pruner_percentile": 25.0,
            "tune.pruner_startup_trials": 1,
        },
        {"tune.pruner": "successive_halving", "tune.pruner_min_epochs": 2},
    ],
)
def test_the_configured_pruner_stops_a_hopeless_trial_at_its_first_check(
    tmp_path: Path, settings: dict
) -> None:
    # A learning trial, then one that cannot learn (lr 1e-9): the second stops at the configured first epoch.
    cfg = _cfg(
        **{
            "tune.n_trials": 2,
            "tune.epochs_per_trial": 4,
            "tune.learning_rate": [1e-9, 1e-1],
            "tune.dropout": None,
            "tune.weight_decay": None,
            **settings,
        }
    )
    storage = journal_storage(tmp_path / "journal.log")
    study = open_study(cfg.tune, storage, "hopeless")
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-9})
    _run(cfg, storage, "hopeless")
    good, hopeless = optuna.load_study(study_name="hopeless", storage=storage).trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 4
    first_check = settings.get(
        "tune.pruner_warmup_epochs", settings.get("tune.pruner_min_epochs", 1)
    )
    assert hopeless.state == TrialState.PRUNED
    assert sorted(hopeless.intermediate_values) == list(range(1, first_check + 1))


def test_plots_are_written_as_html(tmp_path: Path) -> None:
    storage = journal_storage(tmp_path / "j.log")
    _run(_cfg(**{"tune.n_trials": 3, "tune.pruner": "none"}), storage, "plots")
    path = tmp_path / "plots.html"
    done = write_plots(optuna.load_study(study_name="plots", storage=storage), path)
    assert done == ["optimization_history", "param_importances", "parallel_coordinate"]
    html = path.read_text()
    assert html.count("plotly-graph-div") >= 3 and "parallel coordinate" in html


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path: Path) -> None:
    # Pruning after the last epoch saves nothing and would throw the finished result away.
    cfg = _cfg(
        **{
            "tune.n_trials": 2,
            "tune.epochs_per_trial": 1,
            "tune.learning_rate": [1e-9, 1e-1],
            "tune.dropout": None,
            "tune.weight_decay": None,
            "tune.pruner": "successive_halving",
        }
    )
    storage = journal_storage(tmp_path / "journal.log")
    study = open_study(cfg.tune, storage, "last-epoch")
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-9})
    _run(cfg, storage, "last-epoch")
    trials = optuna.load_study(study_name="last-epoch", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].value > trials[0].value  # the default objective is a loss: lower is better


def test_the_default_objective_ranks_trials_by_their_lowest_validation_loss(
    tmp_path: Path,
) -> None:
    # Validation accuracy saturates at 1.0 on easy sets; the loss keeps ranking the candidates.
    cfg = _cfg(
        **{
            "tune.n_trials": 3,
            "tune.epochs_per_trial": 3,
            "tune.learning_rate": [1e-9, 1e-1],
            "tune.dropout": None,
            "tune.weight_decay": None,
            "tune.pruner": "none",
        }
    )
    assert cfg.tune.objective == "val_loss"
    storage = journal_storage(tmp_path / "journal.log")
    study = open_study(cfg.tune, storage, "loss")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    for lr in (1e-9, 3e-3, 1e-2):
        study.enqueue_trial({"learning_rate": lr})
    result = _run(cfg, storage, "loss")
    trials = optuna.load_study(study_name="loss", storage=storage).trials
    # Each trial's value is the lowest loss it reported, and the study's best is the lowest of them.
    assert all(t.value == min(t.intermediate_values.values()) for t in trials)
    assert result.best_value == min(t.value for t in trials)
    assert result.best_params["learning_rate"] != 1e-9
    assert trials[0].value > max(trials[1].value, trials[2].value)
