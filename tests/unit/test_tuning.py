"""Tuning: the search space, pruning, trials as MLflow child runs, warm start, plots, shared studies."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import mlflow
import optuna
import pytest
from testkit import left_right_split
from optuna.trial import TrialState

from visionops.config import ConfigError, PipelineConfig, build_config
from visionops.tuning import (
    distributions,
    in_space,
    journal_storage,
    make_pruner,
    open_study,
    run_study,
    run_worker,
    warm_start,
    write_plots,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


_split = left_right_split  # two classes: bright left half (0) or right half (1), with noise


def _cfg(**overrides) -> PipelineConfig:
    base = {"data.image_size": 8, "train.batch_size": 16, "train.device": "cpu", "tune.n_trials": 4,
            "tune.epochs_per_trial": 3}
    return build_config(PipelineConfig().to_dict(), {**base, **overrides})


def _run(cfg: PipelineConfig, storage, name: str, tuning_run_id: str | None = None, n: int = 64):
    return run_study(cfg, _split(n, 0), _split(32, 1), mean=[0.3], std=[0.3], num_classes=2, storage=storage,
                     study_name=name, tuning_run_id=tuning_run_id)


def test_search_space_comes_from_the_config() -> None:
    cfg = _cfg(**{"tune.batch_size": [16, 32], "tune.optimizer": ["adamw", "sgd"], "tune.width": [0.5, 2.0],
                  "tune.augment_strength": [0.0, 0.5], "tune.label_smoothing": [0.0, 0.2], "tune.dropout": None})
    dists = distributions(cfg.tune)
    assert set(dists) == {"learning_rate", "weight_decay", "width", "augment_strength", "label_smoothing",
                          "batch_size", "optimizer"}
    assert dists["learning_rate"].log and dists["width"].log and not dists["augment_strength"].log
    assert dists["optimizer"].choices == ("adamw", "sgd")
    # A champion's params arrive as strings; only those inside the space are kept.
    assert in_space({"learning_rate": "0.001", "batch_size": "32", "optimizer": "adam", "width": "9"},
                    cfg.tune) == {"learning_rate": 0.001, "batch_size": 32}
    with pytest.raises(ConfigError, match="tune.learning_rate is searched on a log scale: low must be > 0"):
        _cfg(**{"tune.learning_rate": [0.0, 0.1]})
    with pytest.raises(ConfigError, match="tune.optimizer: give at least one choice"):
        _cfg(**{"tune.optimizer": []})


@pytest.mark.parametrize("pruner", ["successive_halving", "median", "hyperband"])
def test_the_pruner_prunes_hopeless_trials(tmp_path: Path, pruner: str) -> None:
    # Half the learning-rate range cannot learn anything in 4 epochs: those trials should be stopped early.
    cfg = _cfg(**{"tune.n_trials": 10, "tune.epochs_per_trial": 4, "tune.pruner": pruner,
                  "tune.learning_rate": [1e-9, 1e-2], "tune.dropout": None, "tune.weight_decay": None})
    storage = journal_storage(tmp_path / "journal.log")
    result = _run(cfg, storage, "prune")
    assert result.n_complete + result.n_pruned == 10
    assert result.n_pruned >= 1
    study = optuna.load_study(study_name="prune", storage=storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 or pruner == "hyperband" for t in pruned)
    assert result.best_value >= 0.9


@pytest.mark.parametrize(("settings", "cls", "attrs"), [
    ({"tune.pruner": "median", "tune.pruner_startup_trials": 3, "tune.pruner_warmup_epochs": 2},
     optuna.pruners.MedianPruner, {"_percentile": 50.0, "_n_startup_trials": 3, "_n_warmup_steps": 2}),
    ({"tune.pruner": "percentile", "tune.pruner_percentile": 25.0, "tune.pruner_startup_trials": 0},
     optuna.pruners.PercentilePruner, {"_percentile": 25.0, "_n_startup_trials": 0, "_n_warmup_steps": 1}),
    ({"tune.pruner": "successive_halving", "tune.pruner_min_epochs": 2, "tune.pruner_reduction_factor": 4},
     optuna.pruners.SuccessiveHalvingPruner, {"_min_resource": 2, "_reduction_factor": 4}),
    ({"tune.pruner": "hyperband", "tune.pruner_min_epochs": 2, "tune.pruner_reduction_factor": 2},
     optuna.pruners.HyperbandPruner, {"_min_resource": 2, "_max_resource": 6, "_reduction_factor": 2}),
    ({"tune.pruner": "none"}, optuna.pruners.NopPruner, {}),
])
def test_make_pruner_builds_optunas_pruner_from_the_config(settings: dict, cls: type, attrs: dict) -> None:
    pruner = make_pruner(_cfg(**{"tune.epochs_per_trial": 6, **settings}).tune)
    assert type(pruner) is cls
    assert {name: getattr(pruner, name) for name in attrs} == attrs


@pytest.mark.parametrize("settings", [
    {"tune.pruner": "median", "tune.pruner_startup_trials": 1, "tune.pruner_warmup_epochs": 2},
    {"tune.pruner": "percentile", "tune.pruner_percentile": 25.0, "tune.pruner_startup_trials": 1},
    {"tune.pruner": "successive_halving", "tune.pruner_min_epochs": 2},
])
def test_the_configured_pruner_stops_a_hopeless_trial_at_its_first_check(tmp_path: Path, settings: dict) -> None:
    # A learning trial, then one that cannot learn (lr 1e-9): the second stops at the configured first epoch.
    cfg = _cfg(**{"tune.n_trials": 2, "tune.epochs_per_trial": 4, "tune.learning_rate": [1e-9, 1e-1],
                  "tune.dropout": None, "tune.weight_decay": None, **settings})
    storage = journal_storage(tmp_path / "journal.log")
    study = open_study(cfg.tune, storage, "hopeless")
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-9})
    _run(cfg, storage, "hopeless")
    good, hopeless = optuna.load_study(study_name="hopeless", storage=storage).trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 4
    first_check = settings.get("tune.pruner_warmup_epochs", settings.get("tune.pruner_min_epochs", 1))
    assert hopeless.state == TrialState.PRUNED
    assert sorted(hopeless.intermediate_values) == list(range(1, first_check + 1))


def test_trials_are_child_runs_marked_complete_pruned_or_failed(mlflow_store: Path, tmp_path: Path) -> None:
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.set_experiment("tuning-test").experiment_id
    parent = client.create_run(exp, run_name="tune").info.run_id
    cfg = _cfg(**{"tune.n_trials": 6, "tune.epochs_per_trial": 4, "tune.learning_rate": [1e-9, 1e-2]})
    result = _run(cfg, journal_storage(tmp_path / "j.log"), "nested", tuning_run_id=parent)
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(trials) == 6 == result.n_complete + result.n_pruned
    states = {t.data.tags["optuna.state"]: t.info.status for t in trials}
    assert states["COMPLETE"] == "FINISHED"
    if result.n_pruned:
        assert states["PRUNED"] == "KILLED"
    assert mlflow.active_run() is None
    # Every trial fails (the network cannot take 8x8 images): marked FAILED, and the study says why.
    bad = _cfg(**{"model.name": "face_cnn", "tune.n_trials": 2})
    with pytest.raises(RuntimeError, match="no trial completed \\(2 failed"):
        _run(bad, journal_storage(tmp_path / "j.log"), "failing", tuning_run_id=parent)
    failed = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}' and tags.`optuna.state` = 'FAIL'")
    assert len(failed) == 2 and all(r.info.status == "FAILED" for r in failed)
    assert "too small" in failed[0].data.tags["optuna.error"]


def test_warm_start_enqueues_the_champions_parameters(mlflow_store: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.set_experiment("warm-start").experiment_id
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params({"learning_rate": 0.0042, "weight_decay": 1e-5, "dropout": 0.11, "model": "small_cnn"})
    client.create_registered_model("warm-model")
    version = client.create_model_version("warm-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("warm-model", "champion", version.version)
    cfg = _cfg(**{"registry.model_name": "warm-model", "tune.n_trials": 2})
    storage = journal_storage(tmp_path / "j.log")
    study = open_study(cfg.tune, storage, "warm")
    assert warm_start(study, cfg) == {"learning_rate": 0.0042, "weight_decay": 1e-5, "dropout": 0.11}
    assert warm_start(study, cfg) == {}  # the study is no longer fresh: nothing enqueued twice
    _run(cfg, storage, "warm")
    first = optuna.load_study(study_name="warm", storage=storage).trials[0]
    assert first.params == {"learning_rate": 0.0042, "weight_decay": 1e-5, "dropout": 0.11}
    assert first.user_attrs["warm_start"] == "champion"
    # No champion: nothing enqueued.
    other = open_study(cfg.tune, storage, "cold")
    assert warm_start(other, _cfg(**{"registry.model_name": "no-such-model"})) == {}


def test_plots_are_written_as_html(tmp_path: Path) -> None:
    storage = journal_storage(tmp_path / "j.log")
    _run(_cfg(**{"tune.n_trials": 3, "tune.pruner": "none"}), storage, "plots")
    path = tmp_path / "plots.html"
    done = write_plots(optuna.load_study(study_name="plots", storage=storage), path)
    assert done == ["optimization_history", "param_importances", "parallel_coordinate"]
    html = path.read_text()
    assert html.count("plotly-graph-div") >= 3 and "parallel coordinate" in html


N_SHARED = 6


def _worker(storage_spec: str, study: str, worker: int, barrier, out) -> None:  # noqa: ANN001
    """One tuning worker process; the barrier makes both start on the study together."""
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # two processes on a small machine: no oversubscription
    storage = journal_storage(Path(storage_spec)) if not storage_spec.startswith("postgresql") else storage_spec
    cfg = _cfg(**{"tune.n_trials": N_SHARED, "tune.epochs_per_trial": 2, "tune.pruner": "none"})
    barrier.wait(timeout=120)
    out.put((worker, run_worker(cfg, _split(128, 0), _split(32, 1), mean=[0.3], std=[0.3], num_classes=2,
                                storage=storage, study_name=study, tuning_run_id=None, worker=worker)))


def _two_workers(storage_spec: str, study: str) -> dict[int, int]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(storage_spec, study, i, barrier, out)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return dict(out.get(timeout=5) for _ in procs)


def _check_shared(counts: dict[int, int], study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sum(counts.values()) == len(trials)          # the workers' counts add up to the study's
    assert N_SHARED <= len(finished) <= N_SHARED + 1    # the budget is shared (one in flight may overshoot)
    assert all(counts[w] >= 1 for w in (0, 1)), counts  # both really worked on it
    by_worker = {w: sum(t.user_attrs.get("worker") == w for t in trials) for w in (0, 1)}
    assert by_worker == counts
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no twin proposals


def test_two_worker_processes_share_one_journal_study(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    counts = _two_workers(str(journal), "shared")
    _check_shared(counts, optuna.load_study(study_name="shared", storage=journal_storage(journal)))


def test_two_worker_processes_share_one_postgres_study(postgres_url: str) -> None:
    from visionops.tuning import make_storage

    cfg = _cfg(**{"tune.storage_url": postgres_url})
    storage = make_storage(cfg.tune, Path("/nonexistent"))
    assert isinstance(storage, optuna.storages.RDBStorage)
    open_study(cfg.tune, storage, "shared-pg")  # created once, before the workers race to load it
    counts = _two_workers(postgres_url, "shared-pg")
    _check_shared(counts, optuna.load_study(study_name="shared-pg", storage=postgres_url))


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path: Path) -> None:
    # Pruning after the last epoch saves nothing and would throw the finished result away.
    cfg = _cfg(**{"tune.n_trials": 2, "tune.epochs_per_trial": 1, "tune.learning_rate": [1e-9, 1e-1],
                  "tune.dropout": None, "tune.weight_decay": None, "tune.pruner": "successive_halving"})
    storage = journal_storage(tmp_path / "journal.log")
    study = open_study(cfg.tune, storage, "last-epoch")
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-9})
    _run(cfg, storage, "last-epoch")
    trials = optuna.load_study(study_name="last-epoch", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].value < trials[0].value
